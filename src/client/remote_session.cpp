#include "client/remote_session.h"

#include <utility>

namespace modeld::client {

RemoteSession::RemoteSession(Client client, std::string workspace)
    : client_(std::move(client)), workspace_(std::move(workspace)) {}

Result<std::unique_ptr<RemoteSession>> RemoteSession::Open(Client client, std::string workspace, std::string_view model,
                                                           const std::optional<SessionConfig>& config,
                                                           const ProgressFunc& progress) {
  auto opened = client.OpenSession(workspace, model, config, progress);
  if (!opened) return Fail(opened.error());
  auto s = std::make_unique<RemoteSession>(std::move(client), std::move(workspace));
  s->created_ = opened->created;
  return s;
}

// Closed locally as well as on the daemon, so a closed RemoteSession answers like a closed
// in-process session whatever the daemon later does with the workspace id.
Status RemoteSession::CheckOpen() const {
  if (closed_) return Fail(ErrorCode::kSessionClosed, "session '" + workspace_ + "' is closed");
  return {};
}

Result<PrefixStatus> RemoteSession::EnsurePrefix(const PrefixInput& in) {
  if (auto ok = CheckOpen(); !ok) return Fail(ok.error());
  return client_.EnsurePrefix(workspace_, in);
}

Result<SuffixStatus> RemoteSession::PrefillSuffix(const SuffixInput& in) {
  if (auto ok = CheckOpen(); !ok) return Fail(ok.error());
  return client_.PrefillSuffix(workspace_, in);
}

Result<DecodeResult> RemoteSession::Decode(const DecodeConfig& cfg, const ChunkCallback& on_chunk) {
  if (auto ok = CheckOpen(); !ok) return Fail(ok.error());
  return client_.Decode(workspace_, cfg, on_chunk);
}

Result<ContextReport> RemoteSession::Report() {
  if (auto ok = CheckOpen(); !ok) return Fail(ok.error());
  auto info = client_.Report(workspace_);
  if (!info) return Fail(info.error());
  return std::move(info->report);
}

Result<std::vector<int32_t>> RemoteSession::Tokenize(std::string_view text, bool parse_special) {
  if (auto ok = CheckOpen(); !ok) return Fail(ok.error());
  return client_.Tokenize(workspace_, text, parse_special);
}

Status RemoteSession::Close() {
  if (closed_) return Fail(ErrorCode::kSessionClosed, "session '" + workspace_ + "' is already closed");
  auto st = client_.CloseSession(workspace_);
  // A daemon that no longer has it (evicted, restarted) leaves nothing to free: closed either way.
  if (st || st.error().Is(ErrorCode::kNotFound) || st.error().Is(ErrorCode::kSessionClosed) ||
      (st.error().Is(ErrorCode::kSessionUnavailable) && st.error().reason() == "evicted")) {
    closed_ = true;
    return {};
  }
  return st;
}

}  // namespace modeld::client
