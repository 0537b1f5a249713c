#include "daemon/conversations.h"

#include <algorithm>

namespace modeld::daemon {

int64_t Conversations::CommonPrefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  return ia - a.begin();
}

std::string Conversations::BestLocked(const std::string& model, const std::vector<int32_t>& tokens,
                                      const std::string& hint, int64_t* matched) const {
  std::string best;
  int64_t best_n = 0;
  for (const auto& [id, c] : convs_) {
    if (c.model != model || c.tokens.empty()) continue;
    if (!hint.empty() && c.hint != hint) continue;
    const int64_t n = CommonPrefix(tokens, c.tokens);
    // Continues it: keeps its last prompt, but for a tail a template may render differently once
    // the answer follows it (a generation prompt, a stripped reasoning block).
    if (n + kTailSlack < static_cast<int64_t>(c.tokens.size())) continue;
    if (n > best_n) {
      best = id;
      best_n = n;
    }
  }
  *matched = best_n;
  return best;
}

Result<SessionManager::Lease> Conversations::Acquire(const std::string& model, const std::vector<int32_t>& tokens,
                                                     const std::string& hint, const SessionConfig& cfg,
                                                     const ProgressFunc& progress, Placement* out) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string id;
    int64_t matched = 0;
    {
      std::lock_guard lock(mu_);
      id = BestLocked(model, tokens, hint, &matched);
    }
    if (!id.empty()) {
      auto lease = sessions_->Acquire(id, /*wait=*/true);  // a busy conversation: wait our turn
      if (lease) {
        *out = Placement{id, matched, false};
        return lease;
      }
      // Evicted or closed since: forget it and look again.
      std::lock_guard lock(mu_);
      convs_.erase(id);
      continue;
    }
    {
      std::lock_guard lock(mu_);
      // Forget conversations whose sessions were evicted or closed, so the records stay bounded
      // by the session table.
      std::erase_if(convs_,
                    [&](const auto& kv) { return !kv.second.tokens.empty() && !sessions_->Contains(kv.first); });
      id = kConversationPrefix + std::to_string(next_id_++);
      convs_[id] = Conversation{model, hint, {}};
    }
    WorkspaceOptions wopt;
    auto opened = sessions_->Open(id, model, cfg, wopt, progress);
    if (!opened) {
      std::lock_guard lock(mu_);
      convs_.erase(id);
      return Fail(opened.error());
    }
    auto lease = sessions_->Acquire(id, /*wait=*/true);
    if (lease) {
      *out = Placement{id, 0, true};
      return lease;
    }
    std::lock_guard lock(mu_);
    convs_.erase(id);
  }
  return Fail(ErrorCode::kBusy, "no conversation could be kept open: the memory budget is held by others");
}

void Conversations::Record(const std::string& id, std::vector<int32_t> tokens) {
  std::lock_guard lock(mu_);
  if (auto it = convs_.find(id); it != convs_.end()) it->second.tokens = std::move(tokens);
}

size_t Conversations::size() {
  std::lock_guard lock(mu_);
  return convs_.size();
}

}  // namespace modeld::daemon
