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

std::string Conversations::LongestSharedLocked(const std::string& model, const std::vector<int32_t>& tokens,
                                               int64_t* shared) const {
  std::string best;
  *shared = 0;
  for (const auto& [id, c] : convs_) {
    if (c.model != model) continue;
    if (const int64_t n = CommonPrefix(tokens, c.tokens); n > *shared) {
      best = id;
      *shared = n;
    }
  }
  return best;
}

std::string Conversations::NewIdLocked(const std::string& model, const std::string& hint) {
  // Forget conversations whose sessions were evicted or closed, so the records stay bounded by
  // the session table.
  std::erase_if(convs_, [&](const auto& kv) { return !kv.second.opening && !sessions_->Contains(kv.first); });
  std::string id = kConversationPrefix + std::to_string(next_id_++);
  convs_[id] = Conversation{model, hint, {}, true};
  return id;
}

Result<SessionManager::Lease> Conversations::ForkNew(const std::string& donor, const std::string& model,
                                                     const std::string& hint, Placement* out) {
  auto from = sessions_->Acquire(donor, /*wait=*/false);  // never wait: a cold open is the fallback
  if (!from) return Fail(from.error());
  auto room = sessions_->ReserveSpare(*from);
  if (!room) return Fail(room.error());
  auto copy = from->session().Fork();
  if (!copy) return Fail(copy.error());
  const SessionConfig cfg = from->entry().config;
  const int64_t bytes = from->entry().memory_bytes;
  from->Release();
  std::string id;
  {
    std::lock_guard lock(mu_);
    id = NewIdLocked(model, hint);
  }
  auto adopted = sessions_->Adopt(id, model, cfg, bytes, std::move(*copy), std::move(*room), WorkspaceOptions{});
  auto lease = adopted ? sessions_->Acquire(id, /*wait=*/true) : Fail(adopted.error());
  if (!lease) {
    std::lock_guard lock(mu_);
    convs_.erase(id);
    return Fail(lease.error());
  }
  out->id = id;
  out->fresh = true;
  out->forked_from = donor;
  Opened(id);
  return lease;
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
        *out = Placement{id, matched, false, {}};
        return lease;
      }
      // Evicted or closed since: forget it and look again.
      std::lock_guard lock(mu_);
      convs_.erase(id);
      continue;
    }
    int64_t shared = 0;
    {
      std::lock_guard lock(mu_);
      id = LongestSharedLocked(model, tokens, &shared);
    }
    if (shared >= kMinForkTokens) {
      if (auto lease = ForkNew(id, model, hint, out)) {
        out->matched = shared;
        return lease;
      }
    }
    {
      std::lock_guard lock(mu_);
      id = NewIdLocked(model, hint);
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
      *out = Placement{id, 0, true, {}};
      Opened(id);
      return lease;
    }
    std::lock_guard lock(mu_);
    convs_.erase(id);
  }
  return Fail(ErrorCode::kBusy, "no conversation could be kept open: the memory budget is held by others");
}

void Conversations::Opened(const std::string& id) {
  std::lock_guard lock(mu_);
  if (auto it = convs_.find(id); it != convs_.end()) it->second.opening = false;
}

void Conversations::Forget(const std::string& id) {
  std::lock_guard lock(mu_);
  convs_.erase(id);
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
