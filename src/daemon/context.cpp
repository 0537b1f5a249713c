#include "daemon/context.h"

namespace modeld::daemon {

OpenSessionRequest ServerContext::Request(const ServedModel& m, const SessionConfig& cfg) const {
  OpenSessionRequest req;
  req.model_path = m.info.path;
  req.model_digest = m.info.digest;
  req.config = cfg;
  req.max_ctx = opt.max_ctx;
  req.gate = gate;
  req.cancel = stop.get_token();
  return req;
}

Result<SessionPlan> ServerContext::Plan(const ServedModel& m, const SessionConfig& cfg) const {
  return Service().PlanSession(Request(m, cfg));
}

Result<Embedding> ServerContext::Embed(const ServedModel& m, std::string input) const {
  EmbedRequest er;
  er.model_path = m.info.path;
  er.model_digest = m.info.digest;
  er.input = std::move(input);
  er.threads = opt.threads;
  er.gate = gate;
  return Service().Embed(er);
}

const ServedModel* ServerContext::FindModel(const std::string& name) const {
  if (name.empty()) return models.empty() ? nullptr : &models.front();
  for (const auto& m : models) {
    if (m.name == name || m.info.path == name) return &m;
  }
  return nullptr;
}

Result<const ServedModel*> ServerContext::ModelOrError(const std::string& name) const {
  const ServedModel* m = FindModel(name);
  if (!m) return Fail(ErrorCode::kNotFound, "model '" + name + "' is not served by this daemon (see /v1/models)");
  return m;
}

Result<std::shared_ptr<const ChatFormat>> ServerContext::ChatFormatFor(const ServedModel& m) {
  // Made under the lock: concurrent first requests for one model read its tokenizer once.
  std::lock_guard lock(formats_mu_);
  for (const auto& [name, format] : formats_) {
    if (name == m.name) return format;
  }
  OpenSessionRequest req = Request(m, SessionConfig{});
  req.chat_template = opt.chat_template;
  if (auto it = format_errors_.find(m.name); it != format_errors_.end()) return Fail(it->second);
  auto format = Service().OpenChatFormat(req);
  if (!format) {  // a template that does not parse will not parse next time either
    format_errors_.emplace(m.name, format.error());
    return Fail(format.error());
  }
  formats_.emplace_back(m.name, *format);
  return *format;
}

std::optional<ChatMarkers> ServerContext::MarkersFor(const ServedModel& m) {
  std::lock_guard lock(markers_mu_);
  if (auto it = markers_.find(m.name); it != markers_.end()) return it->second;
  auto format = ChatFormatFor(m);
  if (!format) {
    Log("modeld: %s: no chat template for workspaces (%s); using ChatML or plain markers\n", m.name,
        format.error().message());
    return std::nullopt;  // not cached: a later open tries again
  }
  auto markers = DeriveChatMarkers(**format);
  if (!markers) {
    Log("modeld: %s: workspaces use ChatML or plain markers: %s\n", m.name, markers.error().message());
  }
  return markers_[m.name] = markers ? std::optional<ChatMarkers>(*markers) : std::nullopt;
}

void ServerContext::EndAsk(SessionManager::Lease& lease, const std::string& ws, const Result<AskResult>& r,
                           double seconds) {
  Workspace& w = *lease.entry().assembly;
  if (r) {
    metrics.AddTokens(r->prefix.tokens_reused + r->suffix.tokens_reused,
                      r->prefix.tokens_prefilled + r->suffix.tokens_prefilled, r->decode.tokens_generated);
    metrics.decode_seconds.Observe(seconds);
  }
  const bool compact_due = w.CompactionDue();
  lease.Release();
  if (compact_due) workers->Schedule(ws, /*compact=*/true);
  if (w.Stale()) workers->Schedule(ws);  // its eager prefill found the workspace busy
}

ProgressFunc ServerContext::LoggedProgress(const std::string& ws, ProgressFunc inner) const {
  return [this, ws, inner = std::move(inner), last = int64_t{-1}](const Progress& p) mutable {
    if (inner) inner(p);
    const int64_t quarter = p.total > 0 ? 4 * p.done / p.total : 4;
    if (opt.log_requests && p.total >= 2048 && quarter != last) {
      last = quarter;
      std::fprintf(stderr, "modeld: %s %s: %lld/%lld tokens\n", ws.c_str(), p.stage.c_str(),
                   static_cast<long long>(p.done), static_cast<long long>(p.total));
    }
  };
}

}  // namespace modeld::daemon
