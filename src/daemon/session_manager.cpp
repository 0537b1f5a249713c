#include "daemon/session_manager.h"

#include <algorithm>
#include <utility>

namespace modeld::daemon {

using Clock = std::chrono::steady_clock;

SessionManager::SessionManager(Opener opener, int64_t kv_budget_bytes, int max_sessions, Metrics* metrics)
    : opener_(std::move(opener)), kv_budget_(kv_budget_bytes), max_sessions_(max_sessions), metrics_(metrics) {}

Result<SessionManager::Opened> SessionManager::Open(const std::string& workspace, const std::string& model,
                                                    const SessionConfig& cfg, const WorkspaceOptions& wopt,
                                                    const ProgressFunc& progress) {
  std::lock_guard open_lock(open_mu_);
  {
    std::lock_guard lock(mu_);
    if (auto it = sessions_.find(workspace); it != sessions_.end()) {
      if (it->second->model != model) {
        return Fail(ErrorCode::kInvalidArgument, "workspace '" + workspace + "' is open on model '" +
                                                     it->second->model + "'; close it first to use '" + model + "'");
      }
      it->second->last_used = Clock::now();
      return Opened{it->second, false};
    }
  }
  auto s = opener_(workspace, model, cfg, progress);
  if (!s) return Fail(s.error());
  auto e = std::make_shared<SessionEntry>();
  e->workspace = workspace;
  e->model = model;
  e->session = std::move(*s);
  e->assembly = std::make_unique<Workspace>(e->session.get(), wopt);
  auto rep = e->session->Report();
  if (!rep) return Fail(rep.error());
  e->config = cfg;
  e->config.n_ctx = static_cast<int32_t>(rep->n_ctx);
  e->report = *rep;
  e->stats = e->assembly->Stats();
  e->last_used = Clock::now();
  if (kv_budget_ > 0 && rep->kv_bytes > kv_budget_) {
    (void)e->session->Close();
    return Fail(ErrorCode::kInvalidArgument,
                "a session with n_ctx " + std::to_string(rep->n_ctx) + " needs " + std::to_string(rep->kv_bytes >> 20) +
                    " MiB of KV, more than the daemon's budget of " + std::to_string(kv_budget_ >> 20) + " MiB");
  }
  std::lock_guard lock(mu_);
  sessions_[workspace] = e;
  tombstones_.erase(workspace);
  EnforceLimits(e.get());
  return Opened{e, true};
}

Result<SessionManager::Lease> SessionManager::Acquire(const std::string& workspace, bool wait) {
  std::shared_ptr<SessionEntry> e;
  {
    std::lock_guard lock(mu_);
    auto found = FindLocked(workspace);
    if (!found) return Fail(found.error());
    e = std::move(*found);
  }
  std::unique_lock call(e->call_mu, std::defer_lock);
  if (wait) {
    call.lock();
  } else if (!call.try_lock()) {
    return Fail(ErrorCode::kBusy, "workspace '" + workspace + "' is busy with another call; retry when it is done");
  }
  std::lock_guard lock(mu_);
  if (!e->gone.empty()) {  // evicted or closed between the lookup and the lock
    return Fail(Error(ErrorCode::kSessionUnavailable, "the session of workspace '" + workspace + "' was " + e->gone)
                    .WithReason("evicted"));
  }
  e->busy = true;
  e->last_used = Clock::now();
  return Lease(this, std::move(e), std::move(call));
}

void SessionManager::Lease::Release() {
  if (entry_ && lock_.owns_lock()) {
    manager_->Release(*entry_);
    lock_.unlock();
  }
}

Result<std::shared_ptr<SessionEntry>> SessionManager::FindLocked(const std::string& workspace) {
  auto it = sessions_.find(workspace);
  if (it != sessions_.end()) return it->second;
  auto t = tombstones_.find(workspace);
  if (t == tombstones_.end()) {
    return Fail(ErrorCode::kNotFound, "no session for workspace '" + workspace + "': open it first");
  }
  if (t->second == "closed") {
    return Fail(ErrorCode::kSessionClosed, "the session of workspace '" + workspace + "' was closed");
  }
  return Fail(Error(ErrorCode::kSessionUnavailable,
                    "the session of workspace '" + workspace + "' was evicted (" + t->second + "): open it again")
                  .WithReason("evicted"));
}

Result<SessionManager::Snapshot> SessionManager::GetSnapshot(const std::string& workspace) {
  std::lock_guard lock(mu_);
  auto e = FindLocked(workspace);
  if (!e) return Fail(e.error());
  return Snapshot{(*e)->stats, (*e)->file_sizes};
}

void SessionManager::Release(SessionEntry& e) {
  auto rep = e.session->Report();
  WorkspaceStats stats;
  std::vector<std::pair<std::string, int64_t>> sizes;
  if (e.assembly) {
    stats = e.assembly->Stats();
    for (const auto& [path, content] : e.assembly->files()) sizes.emplace_back(path, content.size());
  }
  std::lock_guard lock(mu_);
  e.busy = false;
  e.last_used = Clock::now();
  if (rep) e.report = *rep;
  e.stats = std::move(stats);
  e.file_sizes = std::move(sizes);
  if (e.gone.empty() && rep && rep->fatal) {
    // A fatal session is never reused: evict it now.
    auto it = sessions_.find(e.workspace);
    if (it != sessions_.end()) {
      auto keep = it->second;
      Remove(keep, "fatal");
    }
  }
}

void SessionManager::Remove(const std::shared_ptr<SessionEntry>& e, const std::string& why) {
  e->gone = why == "closed" ? "closed" : "evicted";
  tombstones_[e->workspace] = why == "closed" ? "closed" : why;
  sessions_.erase(e->workspace);
  (void)e->session->Close();
  if (why != "closed" && metrics_) metrics_->CountEviction(why);
  // Bound the tombstones: forget the oldest-named ones beyond 4096.
  while (tombstones_.size() > 4096) tombstones_.erase(tombstones_.begin());
}

int64_t SessionManager::KvBytesLocked() const {
  int64_t kv = reserved_kv_;
  for (const auto& [_, e] : sessions_) kv += e->report.kv_bytes;
  return kv;
}

bool SessionManager::OverLimits() const {
  return (max_sessions_ > 0 && static_cast<int>(sessions_.size()) > max_sessions_) ||
         (kv_budget_ > 0 && KvBytesLocked() > kv_budget_);
}

void SessionManager::EnforceLimits(const SessionEntry* keep) {
  while (OverLimits()) {
    std::shared_ptr<SessionEntry> victim;
    for (const auto& [_, e] : sessions_) {
      if (e.get() == keep || e->busy) continue;
      if (!victim || e->last_used < victim->last_used) victim = e;
    }
    if (!victim) return;  // everything else is busy: over the limit until a call ends
    std::unique_lock call(victim->call_mu, std::try_to_lock);
    if (!call.owns_lock()) return;
    Remove(victim, "lru");
  }
}

Status SessionManager::Close(const std::string& workspace) {
  auto lease = Acquire(workspace);
  if (!lease) return Fail(lease.error());
  std::lock_guard lock(mu_);
  auto it = sessions_.find(workspace);
  if (it != sessions_.end()) {
    auto e = it->second;
    Remove(e, "closed");
  }
  lease->lock_.unlock();  // removed: nothing to release (the lease still owns the entry)
  return {};
}

Result<std::unique_ptr<Session>> SessionManager::OpenSpare(const std::string& workspace) {
  std::string model;
  SessionConfig cfg;
  {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(workspace);
    if (it == sessions_.end()) return Fail(ErrorCode::kNotFound, "no session for workspace '" + workspace + "'");
    model = it->second->model;
    cfg = it->second->config;
  }
  return opener_(workspace, model, cfg, {});
}

Result<KvReservation> SessionManager::ReserveSpare(Lease& lease) {
  std::lock_guard lock(mu_);
  const int64_t bytes = lease.entry().report.kv_bytes;
  reserved_kv_ += bytes;
  EnforceLimits(&lease.entry());
  if (kv_budget_ > 0 && KvBytesLocked() > kv_budget_) {  // KV only: a spare is not a session in the table
    reserved_kv_ -= bytes;
    return Fail(ErrorCode::kBusy, "no room in the KV budget for a second session of workspace '" +
                                      lease.entry().workspace + "' (" + std::to_string(bytes >> 20) + " MiB)");
  }
  return KvReservation(this, bytes);
}

KvReservation::KvReservation(KvReservation&& o) noexcept
    : manager_(std::exchange(o.manager_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

KvReservation& KvReservation::operator=(KvReservation&& o) noexcept {
  if (this != &o) {
    KvReservation old(std::move(*this));
    manager_ = std::exchange(o.manager_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

KvReservation::~KvReservation() {
  if (!manager_) return;
  std::lock_guard lock(manager_->mu_);
  manager_->reserved_kv_ -= bytes_;
}

void SessionManager::SwapSession(Lease& lease, std::unique_ptr<Session> fresh) {
  std::unique_ptr<Session> old = std::exchange(lease.entry().session, std::move(fresh));
  (void)old->Close();
}

std::vector<SessionSummary> SessionManager::List() {
  std::lock_guard lock(mu_);
  std::vector<SessionSummary> out;
  const auto now = Clock::now();
  for (const auto& [_, e] : sessions_) {
    out.push_back({e->report, e->model, e->busy,
                   std::chrono::duration_cast<std::chrono::milliseconds>(now - e->last_used).count()});
  }
  return out;
}

int64_t SessionManager::TotalKvBytes() {
  std::lock_guard lock(mu_);
  return KvBytesLocked();
}

void SessionManager::CloseAll() {
  std::vector<std::shared_ptr<SessionEntry>> all;
  {
    std::lock_guard lock(mu_);
    for (const auto& [_, e] : sessions_) all.push_back(e);
  }
  for (auto& e : all) {
    std::lock_guard call(e->call_mu);  // waits for an in-flight call (decodes are cancelled first)
    std::lock_guard lock(mu_);
    if (e->gone.empty()) {
      e->gone = "closed";
      sessions_.erase(e->workspace);
      (void)e->session->Close();
    }
  }
}

}  // namespace modeld::daemon
