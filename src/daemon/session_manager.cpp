#include "daemon/session_manager.h"

#include <algorithm>
#include <utility>

namespace modeld::daemon {

using Clock = std::chrono::steady_clock;

namespace {

std::string MiB(int64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

}  // namespace

SessionManager::SessionManager(Planner planner, Opener opener, int64_t memory_budget_bytes, int max_sessions,
                               Metrics* metrics)
    : planner_(std::move(planner)),
      opener_(std::move(opener)),
      budget_(memory_budget_bytes),
      max_sessions_(max_sessions),
      metrics_(metrics) {}

Result<SessionManager::Opened> SessionManager::Open(const std::string& workspace, const std::string& model,
                                                    const SessionConfig& cfg, const WorkspaceOptions& wopt,
                                                    const ProgressFunc& progress) {
  auto open = [&](const SessionConfig& planned, const ProgressFunc& p) {
    return opener_(workspace, model, planned, p);
  };
  return OpenWith(workspace, model, cfg, wopt, progress, open, std::nullopt, std::nullopt);
}

Result<SessionManager::Opened> SessionManager::OpenRestored(const std::string& workspace, const std::string& model,
                                                            const SessionConfig& cfg, const WorkspaceOptions& wopt,
                                                            const ProgressFunc& progress,
                                                            const SessionOpener& open_session,
                                                            std::optional<WorkspaceState> state, uint64_t epoch) {
  return OpenWith(workspace, model, cfg, wopt, progress, open_session, std::move(state), epoch);
}

void SessionManager::SetPersistence(Saver save, Restorer restore, Forgetter forget) {
  save_ = std::move(save);
  restore_ = std::move(restore);
  forget_ = std::move(forget);
}

bool SessionManager::MarkUnsaved(const std::string& workspace) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(workspace);
  if (it == sessions_.end()) return false;
  it->second->saved_changes = it->second->changes - 1;
  return true;
}

void SessionManager::ClearTombstone(const std::string& workspace) {
  std::lock_guard lock(mu_);
  tombstones_.erase(workspace);
}

uint64_t SessionManager::Epoch(const std::string& workspace) {
  std::lock_guard lock(mu_);
  auto it = epochs_.find(workspace);
  return it == epochs_.end() ? 0 : it->second;
}

int SessionManager::SaveIdle(std::chrono::milliseconds idle) {
  if (!save_) return 0;
  std::vector<std::shared_ptr<SessionEntry>> due;
  {
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    for (const auto& [_, e] : sessions_) {
      if (!e->busy && e->holds == 0 && e->changes != e->saved_changes && now - e->last_used >= idle) due.push_back(e);
    }
  }
  int saved = 0;
  for (auto& e : due) {
    std::unique_lock call(e->call_mu, std::try_to_lock);
    if (!call.owns_lock()) continue;  // a call began: it is not idle
    int64_t changes = 0;
    {
      std::lock_guard lock(mu_);
      if (!e->gone.empty()) continue;
      changes = e->changes;
    }
    // A failure is logged, and tried again after the next change (not every idle period: a
    // backend that cannot snapshot would fill the log).
    if (save_(*e)) ++saved;
    std::lock_guard lock(mu_);
    e->saved_changes = changes;
  }
  return saved;
}

Result<SessionManager::Opened> SessionManager::OpenWith(const std::string& workspace, const std::string& model,
                                                        const SessionConfig& cfg, const WorkspaceOptions& wopt,
                                                        const ProgressFunc& progress, const SessionOpener& open_session,
                                                        std::optional<WorkspaceState> state,
                                                        std::optional<uint64_t> epoch) {
  {
    std::unique_lock lock(mu_);
    opened_cv_.wait(lock, [&] { return !opening_.contains(workspace); });
    if (epoch && epochs_[workspace] != *epoch) {
      return Fail(ErrorCode::kBusy, "workspace '" + workspace + "' changed while it was being restored");
    }
    if (auto it = sessions_.find(workspace); it != sessions_.end()) {
      if (it->second->model != model) {
        return Fail(ErrorCode::kInvalidArgument, "workspace '" + workspace + "' is open on model '" +
                                                     it->second->model + "'; close it first to use '" + model + "'");
      }
      it->second->last_used = Clock::now();
      return Opened{it->second, false};
    }
    opening_.insert(workspace);
  }
  struct EndOpen {
    SessionManager* m;
    const std::string& ws;
    ~EndOpen() {
      {
        std::lock_guard lock(m->mu_);
        m->opening_.erase(ws);
      }
      m->opened_cv_.notify_all();
    }
  } end_open{this, workspace};

  // Everything is checked, and room made, before anything is loaded or allocated.
  auto plan = planner_(model, cfg);
  if (!plan) return Fail(plan.error());
  KvReservation room;
  {
    std::lock_guard lock(mu_);
    if (budget_ > 0 && plan->bytes() > budget_) {
      return Fail(Error(ErrorCode::kInvalidArgument, "a session with n_ctx " + std::to_string(plan->config.n_ctx) +
                                                         " needs " + MiB(plan->bytes()) + " (KV " +
                                                         MiB(plan->kv_bytes) + ", compute " + MiB(plan->compute_bytes) +
                                                         "), more than the daemon's budget of " + MiB(budget_) +
                                                         " (--kv-budget-mb): ask for a smaller config.n_ctx")
                      .WithField("config.n_ctx"));
    }
    auto r = ReserveLocked(plan->bytes(), nullptr, "a session for workspace '" + workspace + "'");
    if (!r) return Fail(r.error());
    room = std::move(*r);
  }
  auto s = open_session(plan->config, progress);
  if (!s) return Fail(s.error());
  return Insert(workspace, model, plan->config, plan->bytes(), std::move(*s), std::move(room), wopt, std::move(state));
}

Result<SessionManager::Opened> SessionManager::Adopt(const std::string& workspace, const std::string& model,
                                                     const SessionConfig& cfg, int64_t memory_bytes,
                                                     std::unique_ptr<Session> session, KvReservation room,
                                                     const WorkspaceOptions& wopt) {
  {
    std::lock_guard lock(mu_);
    if (sessions_.contains(workspace) || opening_.contains(workspace)) {
      return Fail(ErrorCode::kInvalidArgument, "workspace '" + workspace + "' already has a session");
    }
  }
  return Insert(workspace, model, cfg, memory_bytes, std::move(session), std::move(room), wopt);
}

Result<SessionManager::Opened> SessionManager::Insert(const std::string& workspace, const std::string& model,
                                                      const SessionConfig& cfg, int64_t memory_bytes,
                                                      std::unique_ptr<Session> session, KvReservation room,
                                                      const WorkspaceOptions& wopt,
                                                      std::optional<WorkspaceState> state) {
  auto e = std::make_shared<SessionEntry>();
  e->workspace = workspace;
  e->model = model;
  e->session = std::move(session);
  if (state) {
    auto ws = Workspace::Restore(e->session.get(), wopt, std::move(*state));
    if (!ws) return Fail(ws.error());
    e->assembly = std::move(*ws);
  } else {
    e->assembly = std::make_unique<Workspace>(e->session.get(), wopt);
  }
  auto rep = e->session->Report();
  if (!rep) return Fail(rep.error());
  e->config = cfg;
  e->config.n_ctx = static_cast<int32_t>(rep->n_ctx);
  e->memory_bytes = memory_bytes;
  e->report = *rep;
  e->stats = e->assembly->Stats();
  e->file_sizes = e->assembly->FileSizes();  // a restored workspace has files from the start
  e->last_used = Clock::now();
  std::lock_guard lock(mu_);
  if (sessions_.contains(workspace)) {  // never replace a live entry: its memory would go uncounted
    return Fail(ErrorCode::kInvalidArgument, "workspace '" + workspace + "' already has a session");
  }
  sessions_[workspace] = e;
  tombstones_.erase(workspace);
  ++epochs_[workspace];
  room.Drop();  // the entry counts itself now
  EnforceLimits(e.get());
  return Opened{e, true};
}

Result<SessionManager::Lease> SessionManager::Acquire(const std::string& workspace, bool wait, bool restore) {
  auto found = restore ? FindOrRestore(workspace) : [&] {
    std::lock_guard lock(mu_);
    return FindLocked(workspace);
  }();
  if (!found) return Fail(found.error());
  std::shared_ptr<SessionEntry> e = std::move(*found);
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

Result<std::shared_ptr<SessionEntry>> SessionManager::FindOrRestore(const std::string& workspace) {
  {
    std::lock_guard lock(mu_);
    auto found = FindLocked(workspace);
    if (found || !restore_ || found.error().Is(ErrorCode::kSessionClosed)) return found;
  }
  if (!restore_(workspace)) {
    std::lock_guard lock(mu_);
    return FindLocked(workspace);  // the miss's own error
  }
  std::lock_guard lock(mu_);
  return FindLocked(workspace);
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
  auto e = FindOrRestore(workspace);
  if (!e) return Fail(e.error());
  std::lock_guard lock(mu_);
  return Snapshot{(*e)->stats, (*e)->file_sizes};
}

Result<SessionManager::Hold> SessionManager::HoldWorkspace(const std::string& workspace) {
  auto e = FindOrRestore(workspace);
  if (!e) return Fail(e.error());
  std::lock_guard lock(mu_);
  if (!(*e)->gone.empty()) {
    return Fail(Error(ErrorCode::kSessionUnavailable, "the session of workspace '" + workspace + "' was " + (*e)->gone)
                    .WithReason("evicted"));
  }
  if (!(*e)->assembly) return Fail(ErrorCode::kInvalidArgument, "'" + workspace + "' is not a workspace");
  ++(*e)->holds;
  (*e)->last_used = Clock::now();
  return Hold(this, std::move(*e));
}

Status SessionManager::Hold::StillThere() const {
  std::lock_guard lock(manager_->mu_);
  if (entry_->gone.empty()) return {};
  return Fail(Error(ErrorCode::kSessionUnavailable, "workspace '" + entry_->workspace + "' was " + entry_->gone +
                                                        " while the change was made; open it again")
                  .WithReason("evicted"));
}

SessionManager::Hold::~Hold() {
  if (!entry_) return;
  manager_->RefreshWorkspace(*entry_);
  --entry_->holds;
}

void SessionManager::RefreshWorkspace(SessionEntry& e, const Result<ContextReport>* report) {
  if (!e.assembly) return;
  WorkspaceStats stats = e.assembly->Stats();
  std::vector<std::pair<std::string, int64_t>> sizes = e.assembly->FileSizes();
  std::vector<int64_t> sig = {stats.files,          stats.log_entries, stats.notes, stats.compactions,
                              stats.context_tokens, stats.log_tokens,  0,           0};
  std::optional<Result<ContextReport>> own;
  if (report == nullptr) report = &own.emplace(e.session->Report());
  if (const auto& rep = *report) {
    sig[6] = rep->total_prefilled + rep->total_reused;
    sig[7] = rep->total_generated + rep->tokens_resident;
  }
  for (const auto& [path, bytes] : sizes) sig.push_back(bytes + static_cast<int64_t>(std::hash<std::string>{}(path)));
  std::lock_guard lock(mu_);
  e.stats = std::move(stats);
  e.file_sizes = std::move(sizes);
  if (sig != e.signature) {  // a read (a report, a show) changes nothing: no new snapshot for it
    e.signature = std::move(sig);
    ++e.changes;
  }
}

void SessionManager::Release(SessionEntry& e) {
  auto rep = e.session->Report();
  RefreshWorkspace(e, &rep);
  std::lock_guard lock(mu_);
  e.busy = false;
  e.last_used = Clock::now();
  if (rep) e.report = *rep;
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
  ++epochs_[e->workspace];
  if (why == "lru" && save_) {
    // Made room for another: it goes to disk, not lost. Unless the copy failed: then the older
    // snapshot must not come back in its place.
    if (e->changes != e->saved_changes && !save_(*e) && forget_) forget_(e->workspace);
  } else if (why != "closed" && forget_) {
    forget_(e->workspace);  // a fatal session's state is unknown: the next call gets "evicted"
  }
  (void)e->session->Close();
  // Bound the epochs like the tombstones: forget those of workspaces long gone.
  for (auto it = epochs_.begin(); epochs_.size() > 4096 + sessions_.size() && it != epochs_.end();) {
    it = sessions_.contains(it->first) || it->first == e->workspace ? std::next(it) : epochs_.erase(it);
  }
  if (why != "closed" && metrics_) metrics_->CountEviction(why);
  // Bound the tombstones: forget the oldest-named ones beyond 4096.
  while (tombstones_.size() > 4096) tombstones_.erase(tombstones_.begin());
}

int64_t SessionManager::BytesLocked() const {
  int64_t bytes = reserved_kv_;
  for (const auto& [_, e] : sessions_) bytes += e->memory_bytes;
  return bytes;
}

bool SessionManager::OverLimits() const {
  return (max_sessions_ > 0 && static_cast<int>(sessions_.size()) > max_sessions_) ||
         (budget_ > 0 && BytesLocked() > budget_);
}

void SessionManager::EnforceLimits(const SessionEntry* keep) {
  std::set<const SessionEntry*> tried;
  while (OverLimits()) {
    std::shared_ptr<SessionEntry> victim;
    for (const auto& [_, e] : sessions_) {
      if (e.get() == keep || e->busy || e->holds > 0 || tried.contains(e.get())) continue;
      if (!victim || e->last_used < victim->last_used) victim = e;
    }
    if (!victim) return;  // everything else is busy: over the limit until a call ends
    std::unique_lock call(victim->call_mu, std::try_to_lock);
    if (!call.owns_lock()) {  // being saved (the idle saver): try the next least recently used
      tried.insert(victim.get());
      continue;
    }
    Remove(victim, "lru");
  }
}

Status SessionManager::Close(const std::string& workspace) {
  auto lease = Acquire(workspace, /*wait=*/false, /*restore=*/false);
  if (!lease) return Fail(lease.error());
  // Its snapshot goes too, while the lease keeps the idle saver from writing a new one.
  if (forget_) forget_(workspace);
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

Result<KvReservation> SessionManager::ReserveLocked(int64_t bytes, const SessionEntry* keep, const std::string& what) {
  reserved_kv_ += bytes;
  EnforceLimits(keep);
  if (budget_ > 0 && BytesLocked() > budget_) {  // memory only: a reservation is not a session in the table
    reserved_kv_ -= bytes;
    return Fail(ErrorCode::kBusy, "no room in the memory budget for " + what + " (" + MiB(bytes) +
                                      "): the other sessions are busy; retry when one is done");
  }
  return KvReservation(this, bytes);
}

Result<KvReservation> SessionManager::ReserveSpare(Lease& lease) {
  std::lock_guard lock(mu_);
  return ReserveLocked(lease.entry().memory_bytes, &lease.entry(),
                       "a second session of workspace '" + lease.entry().workspace + "'");
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
  Drop();
}

void KvReservation::Drop() {
  if (manager_) manager_->reserved_kv_ -= bytes_;
  manager_ = nullptr;
  bytes_ = 0;
}

void SessionManager::SwapSession(Lease& lease, std::unique_ptr<Session> fresh) {
  std::unique_ptr<Session> old = std::exchange(lease.entry().session, std::move(fresh));
  (void)old->Close();
}

bool SessionManager::Contains(const std::string& workspace) {
  std::lock_guard lock(mu_);
  return sessions_.contains(workspace) || opening_.contains(workspace);
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

int64_t SessionManager::TotalBytes() {
  std::lock_guard lock(mu_);
  return BytesLocked();
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
      ++epochs_[e->workspace];
      if (save_ && e->changes != e->saved_changes) (void)save_(*e);  // a failure is logged; the older copy stays
      (void)e->session->Close();
    }
  }
}

}  // namespace modeld::daemon
