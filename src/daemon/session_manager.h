// The daemon's table of live sessions, keyed by workspace id: opening a
// workspace that has a session returns the warm one; calls on one session
// are serialized (a concurrent call gets kBusy); idle sessions are evicted
// least-recently-used under a memory budget (each session's KV and compute
// buffers, planned before anything is allocated) and a session count. Opens
// of different workspaces run side by side.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/metrics.h"
#include "modeld/session.h"
#include "modeld/workspace.h"

namespace modeld::daemon {

struct SessionEntry {
  std::string workspace;
  std::string model;
  SessionConfig config;
  std::unique_ptr<Session> session;
  std::unique_ptr<Workspace> assembly;  // the workspace layer (edit-aware context) over `session`
  int64_t memory_bytes = 0;             // KV and compute, as planned: what the budget counts
  std::mutex call_mu;                   // held for the whole of a call on the session
  std::atomic<int> holds{0};            // changes under way without the call lock (Hold): not evicted
  // Guarded by the manager's table mutex:
  ContextReport report;                                     // as of the end of the last call
  WorkspaceStats stats;                                     // the workspace's, as of the end of the last call
  std::vector<std::pair<std::string, int64_t>> file_sizes;  // path -> bytes, same
  std::chrono::steady_clock::time_point last_used;
  int64_t changes = 0;             // calls and changes that changed it (Release, Hold; a read does not count)
  int64_t saved_changes = 0;       // ... as of its last save (SaveIdle)
  std::vector<int64_t> signature;  // what Release and Hold compare to tell a change
  bool busy = false;
  std::string gone;  // "" while in the table; else why it left ("evicted", "closed")
};

struct SessionSummary {
  ContextReport report;
  std::string model;
  bool busy = false;
  int64_t idle_ms = 0;
};

class SessionManager;

// Memory of a session outside the table (one being opened, a compaction's fork) counted against
// the budget for as long as this lives.
class KvReservation {
 public:
  KvReservation() = default;
  KvReservation(KvReservation&& o) noexcept;
  KvReservation& operator=(KvReservation&& o) noexcept;
  ~KvReservation();

 private:
  friend class SessionManager;
  void Drop();  // gives the bytes back now; with the manager's mu_ held
  KvReservation(SessionManager* m, int64_t bytes) : manager_(m), bytes_(bytes) {}
  SessionManager* manager_ = nullptr;
  int64_t bytes_ = 0;
};

class SessionManager {
 public:
  using Opener = std::function<Result<std::unique_ptr<Session>>(
      const std::string& workspace, const std::string& model, const SessionConfig& cfg, const ProgressFunc& progress)>;
  // What a session would need (Service::PlanSession): ranges checked, nothing allocated.
  using Planner = std::function<Result<SessionPlan>(const std::string& model, const SessionConfig& cfg)>;
  SessionManager(Planner planner, Opener opener, int64_t memory_budget_bytes, int max_sessions, Metrics* metrics);

  struct Opened {
    std::shared_ptr<SessionEntry> entry;
    bool created = false;
  };
  // Plans the session, makes room for it in the budget (evicting idle sessions), then opens it
  // with no lock held: a slow load or allocation holds up only opens of the same workspace.
  // kInvalidArgument when the session alone exceeds the budget, kBusy when the room is held by
  // busy sessions.
  Result<Opened> Open(const std::string& workspace, const std::string& model, const SessionConfig& cfg,
                      const WorkspaceOptions& wopt, const ProgressFunc& progress);
  // Open with a session made by `open_session` (from a snapshot) and the workspace restored from
  // `state` (Workspace::Restore). A workspace that has a session keeps it (created false).
  using SessionOpener = std::function<Result<std::unique_ptr<Session>>(const SessionConfig&, const ProgressFunc&)>;
  Result<Opened> OpenRestored(const std::string& workspace, const std::string& model, const SessionConfig& cfg,
                              const WorkspaceOptions& wopt, const ProgressFunc& progress,
                              const SessionOpener& open_session, std::optional<WorkspaceState> state, uint64_t epoch);

  // Persistence (docs/snapshot.md). `save` copies an entry's state for the disk; it is called with
  // the entry's call lock held (and the table's: it must not call back) when the entry leaves
  // memory in good state (evicted to make room, the daemon stopping) and by SaveIdle. `restore`
  // brings a workspace back from disk when a call finds it missing (never opened here, or
  // evicted; not closed): ok when it is in the table afterwards, else the call's own error
  // stands. Set once, before serving.
  // `forget` drops the workspace's snapshot when the state in memory leaves it without a good copy
  // on disk (a fatal session, a failed save, a close), so no call brings back an older state.
  using Saver = std::function<Status(SessionEntry&)>;
  using Restorer = std::function<Status(const std::string& workspace)>;
  using Forgetter = std::function<void(const std::string& workspace)>;
  void SetPersistence(Saver save, Restorer restore, Forgetter forget);
  // Bumped whenever the workspace enters or leaves the table: a restore read from disk at one epoch
  // is refused (kBusy) by OpenRestored at another, so it never brings back a state older than one
  // written meanwhile, nor a workspace closed meanwhile.
  uint64_t Epoch(const std::string& workspace);
  // Forgets that the workspace was closed or evicted: a snapshot forked into its id is then what
  // its next call finds.
  void ClearTombstone(const std::string& workspace);
  // A save of the workspace did not reach the disk: it is saved again (idle, eviction, stop).
  // false when it is not in memory.
  bool MarkUnsaved(const std::string& workspace);
  // Saves the workspaces changed since their last save and idle for `idle` (none busy or held);
  // returns how many.
  int SaveIdle(std::chrono::milliseconds idle);

  // Puts a session made elsewhere (a Fork of another's) in the table under `workspace`, its memory
  // counted from `room` (taken with ReserveSpare) on. kInvalidArgument when the workspace has one.
  Result<Opened> Adopt(const std::string& workspace, const std::string& model, const SessionConfig& cfg,
                       int64_t memory_bytes, std::unique_ptr<Session> session, KvReservation room,
                       const WorkspaceOptions& wopt);

  // Exclusive use of a session for one call. Release() after the call
  // refreshes the cached report and evicts the session if it turned fatal.
  class Lease {
   public:
    Session& session() { return *entry_->session; }
    SessionEntry& entry() { return *entry_; }
    // Ends the call now (refreshes the cached report) rather than at
    // destruction: a stream releases before its final event, so a client
    // that reads the report right after sees this call's effect.
    void Release();
    ~Lease() { Release(); }
    Lease(Lease&&) = default;

   private:
    friend class SessionManager;
    Lease(SessionManager* m, std::shared_ptr<SessionEntry> e, std::unique_lock<std::mutex> lock)
        : manager_(m), entry_(std::move(e)), lock_(std::move(lock)) {}
    SessionManager* manager_;
    std::shared_ptr<SessionEntry> entry_;
    std::unique_lock<std::mutex> lock_;
  };
  // kNotFound (never opened), kSessionUnavailable/"evicted", kSessionClosed,
  // and kBusy when another call holds the session, unless `wait`: then it
  // queues behind that call (workspace calls do, so an ask waits for the
  // eager prefill it would otherwise redo).
  // `restore` false: a workspace not in memory is not brought back from disk for this.
  Result<Lease> Acquire(const std::string& workspace, bool wait = false, bool restore = true);

  // A workspace for a change that needs no computation (a put, a rename): the workspace takes it
  // at once, also while a call holds the session (Workspace's own lock), so it never waits on a
  // prefill or an ask. The session is not evicted while held; at the end the cached stats
  // (GetSnapshot) are refreshed.
  class Hold {
   public:
    Workspace& workspace() { return *entry_->assembly; }
    // The workspace left the table (closed, or evicted as fatal) while held: a change made to it
    // is lost. kSessionUnavailable then, else ok.
    Status StillThere() const;
    ~Hold();
    Hold(Hold&& o) noexcept : manager_(o.manager_), entry_(std::move(o.entry_)) {}
    Hold& operator=(Hold&&) = delete;

   private:
    friend class SessionManager;
    Hold(SessionManager* m, std::shared_ptr<SessionEntry> e) : manager_(m), entry_(std::move(e)) {}
    SessionManager* manager_;
    std::shared_ptr<SessionEntry> entry_;
  };
  Result<Hold> HoldWorkspace(const std::string& workspace);

  // The workspace's stats and files as of its last call, without waiting for a call in progress.
  struct Snapshot {
    WorkspaceStats stats;
    std::vector<std::pair<std::string, int64_t>> file_sizes;
  };
  Result<Snapshot> GetSnapshot(const std::string& workspace);

  Status Close(const std::string& workspace);
  // A second session like the workspace's own (same model and config), for
  // background compaction; and swapping it in (under the workspace's lease),
  // which closes the old one.
  Result<std::unique_ptr<Session>> OpenSpare(const std::string& workspace);
  void SwapSession(Lease& lease, std::unique_ptr<Session> fresh);
  // Room in the KV budget for a second session as large as the leased one, evicting idle
  // sessions least-recently-used to make it; kBusy when it cannot be made (the others are busy).
  // Take it before forking or opening a spare.
  Result<KvReservation> ReserveSpare(Lease& lease);
  std::vector<SessionSummary> List();
  // The workspace has a session, or one being opened.
  bool Contains(const std::string& workspace);
  void CloseAll();
  int64_t TotalBytes();  // what the budget counts: the sessions' memory and the reservations'

 private:
  void Release(SessionEntry& e);  // with e.call_mu held
  // Caches the workspace's stats and file sizes for GetSnapshot. `report`: the session's, when the
  // caller has it (nullptr: asked for here).
  void RefreshWorkspace(SessionEntry& e, const Result<ContextReport>* report = nullptr);
  // Makes the entry of a session just opened or adopted and puts it in the table.
  Result<Opened> Insert(const std::string& workspace, const std::string& model, const SessionConfig& cfg,
                        int64_t memory_bytes, std::unique_ptr<Session> session, KvReservation room,
                        const WorkspaceOptions& wopt, std::optional<WorkspaceState> state = std::nullopt);
  Result<Opened> OpenWith(const std::string& workspace, const std::string& model, const SessionConfig& cfg,
                          const WorkspaceOptions& wopt, const ProgressFunc& progress, const SessionOpener& open_session,
                          std::optional<WorkspaceState> state, std::optional<uint64_t> epoch);
  // A miss (`why`): brings the workspace back through the restorer when it may; then the entry.
  Result<std::shared_ptr<SessionEntry>> FindOrRestore(const std::string& workspace);
  // The live entry, or why there is none (never opened, closed, evicted). With mu_ held.
  Result<std::shared_ptr<SessionEntry>> FindLocked(const std::string& workspace);
  // Evicts idle sessions (never `keep`) until within the limits. With mu_ held.
  void EnforceLimits(const SessionEntry* keep);
  // Reserves `bytes`, evicting idle sessions (never `keep`) to make room; kBusy when it cannot
  // be made. With mu_ held.
  Result<KvReservation> ReserveLocked(int64_t bytes, const SessionEntry* keep, const std::string& what);
  int64_t BytesLocked() const;  // the sessions' and the reservations'; with mu_ held
  bool OverLimits() const;      // with mu_ held
  friend class KvReservation;
  void Remove(const std::shared_ptr<SessionEntry>& e, const std::string& why);  // with mu_ and e->call_mu held

  Planner planner_;
  Opener opener_;
  Saver save_;
  Restorer restore_;
  Forgetter forget_;
  std::map<std::string, uint64_t> epochs_;  // with mu_ held (bounded like the tombstones)
  int64_t budget_;
  int max_sessions_;
  Metrics* metrics_;
  std::mutex mu_;
  std::condition_variable opened_cv_;  // an open ended: its workspace left opening_
  std::set<std::string> opening_;      // workspaces with an open under way (one at a time each)
  std::map<std::string, std::shared_ptr<SessionEntry>> sessions_;
  std::map<std::string, std::string> tombstones_;  // workspace -> why it left
  int64_t reserved_kv_ = 0;                        // KvReservations alive
};

}  // namespace modeld::daemon
