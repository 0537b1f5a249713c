// The session contract (modeld/session.h) over the wire: a Session bound to one workspace of a
// running daemon, so code written against Session (the demo, product loops) runs unchanged
// against `modeld serve`.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "client/client.h"
#include "modeld/session.h"

namespace modeld::client {

class RemoteSession final : public Session {
 public:
  // Binds to a workspace whose session is already open on the daemon.
  RemoteSession(Client client, std::string workspace);
  // Opens the workspace's session (or attaches to its warm one) and binds to it.
  static Result<std::unique_ptr<RemoteSession>> Open(Client client, std::string workspace, std::string_view model = {},
                                                     const std::optional<SessionConfig>& config = std::nullopt,
                                                     const ProgressFunc& progress = {});

  // Destroying a RemoteSession leaves the daemon's session open (warm for the next client);
  // Close() is what frees it.
  ~RemoteSession() override = default;

  Result<PrefixStatus> EnsurePrefix(const PrefixInput& in) override;
  Result<SuffixStatus> PrefillSuffix(const SuffixInput& in) override;
  Result<DecodeResult> Decode(const DecodeConfig& cfg, const ChunkCallback& on_chunk) override;
  Result<ContextReport> Report() override;
  Result<std::vector<int32_t>> Tokenize(std::string_view text, bool parse_special) override;
  // DELETE on the daemon. Afterwards every call, Close() included, is kSessionClosed.
  Status Close() override;

  const Client& client() const { return client_; }
  const std::string& workspace() const { return workspace_; }
  // Set by Open(): false when the daemon already had a warm session for the workspace.
  bool created() const { return created_; }

 private:
  Status CheckOpen() const;

  Client client_;
  std::string workspace_;
  bool created_ = false;
  bool closed_ = false;
};

}  // namespace modeld::client
