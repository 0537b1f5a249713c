// Background work on workspaces: eager prefills of changed contexts and compactions, one worker
// thread each (an eager prefill never waits behind a compaction), and the compactions under way,
// which a call whose context would overflow finishes and adopts instead of starting its own.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "daemon/metrics.h"
#include "daemon/session_manager.h"
#include "modeld/compute_gate.h"
#include "modeld/workspace.h"

namespace modeld::daemon {

class WorkspaceWorkers {
 public:
  WorkspaceWorkers(SessionManager* sessions, ComputeGate* gate, Metrics* metrics, bool log);
  ~WorkspaceWorkers();  // Stop()
  WorkspaceWorkers(const WorkspaceWorkers&) = delete;
  WorkspaceWorkers& operator=(const WorkspaceWorkers&) = delete;

  void Start();
  // Cancels a compaction under way (a waiting call gets kCancelled) and joins the workers.
  // Idempotent.
  void Stop();

  // Queues an eager prefill of `ws` (compact: a background compaction); a task already queued
  // is not queued twice.
  void Schedule(const std::string& ws, bool compact = false);
  // PrefillHooks for a call holding `lease`: `wait` finishes a compaction under way and adopts
  // it (asks, synchronous prefills); otherwise the call only promotes it and gives up with kBusy
  // (eager prefills: the ask behind them will wait for it).
  PrefillHooks Hooks(SessionManager::Lease* lease, bool wait, ProgressFunc progress = {});
  bool Compacting(const std::string& ws);  // a background compaction of `ws` is under way

 private:
  // A background compaction under way.
  struct Job {
    std::thread::id worker;
    std::atomic<bool> urgent{false};  // a call needs it: its compute turns are promoted
    std::mutex mu;
    std::condition_variable cv;
    // Guarded by mu:
    CompactionPlan plan;
    std::unique_ptr<Session> spare;  // being prefilled with plan.manifest
    KvReservation spare_kv;          // its KV, counted in the budget until the job is dropped
    bool done = false;               // the prefill ended (with `status`)
    bool claimed = false;            // a waiting call took plan and spare
    Result<PrefixStatus> status;
    Progress progress;          // the latest, for a waiting call to relay on its own thread
    uint64_t progress_seq = 0;  // bumped with each
  };
  struct Task {
    std::string ws;
    bool compact = false;
    bool operator==(const Task&) const = default;
  };

  void Loop(bool compactions);
  void Compact(const std::string& ws);
  std::shared_ptr<Job> FindJob(const std::string& ws);
  void DropJob(const std::string& ws, const Job* job);
  void Log(const std::string& line) const;

  SessionManager* sessions_;
  ComputeGate* gate_;
  Metrics* metrics_;
  const bool log_;
  std::stop_source stop_;
  std::mutex mu_;  // the queue and stopped_
  std::condition_variable cv_;
  std::vector<Task> queue_;
  bool stopped_ = false;
  std::mutex jobs_mu_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;  // by workspace
  std::thread eager_thread_, compact_thread_;
};

}  // namespace modeld::daemon
