// Durable workspaces: the daemon's side of snapshots (docs/snapshot.md). A workspace is written
// to disk when it is evicted to make room, after it has been idle a while, and when the daemon
// stops; a call to a workspace that is not in memory brings it back from its snapshot. The
// state is copied under the workspace's call lock (a memory copy) and written by a background
// writer, so no request waits on the disk.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "daemon/session_manager.h"
#include "modeld/mutex.h"
#include "snapshot/snapshot_store.h"
#include "snapshot/snapshot_writer.h"
#include "snapshot/spare_buffers.h"

namespace modeld::daemon {

class ServerContext;

class Snapshots {
 public:
  // Opens (creates) the directory and starts the writer and the idle saver; sets the session
  // manager's persistence hooks.
  static Result<std::unique_ptr<Snapshots>> Start(ServerContext& ctx);
  ~Snapshots();  // Stop()

  // Copies a workspace's state and queues its write (SessionManager's save hook); an error (the
  // backend cannot, no memory) is logged and returned.
  Status Save(SessionEntry& e);
  // Drops a workspace's snapshot (SessionManager's forget hook), after any write of it queued.
  void Forget(const std::string& workspace);
  // Brings a workspace back from its snapshot (the restore hook): kNotFound when there is none;
  // a snapshot that cannot be restored (corrupt, another model or config) is logged, left on disk
  // and not tried again until it is rewritten: the workspace starts cold.
  Status Restore(const std::string& workspace);
  // Writes a live workspace now and waits for the disk (list/show/fork see it).
  Status SaveNow(const std::string& workspace);

  std::vector<snapshot::SnapshotInfo> List();
  Result<snapshot::SnapshotInfo> Info(const std::string& workspace);
  Status Delete(const std::string& workspace);
  // A copy of `from`'s snapshot (written first when `from` is live) under `to`, which must have
  // neither a session nor a snapshot; the first call to `to` restores it.
  Status Fork(const std::string& from, const std::string& to);
  int64_t written() const { return writer_->written(); }
  int64_t failed() const { return writer_->failed(); }

  // Stops the idle saver; every changed workspace is written by SessionManager::CloseAll, then
  // Flush() waits for the disk.
  void Stop();
  void Flush() { writer_->Flush(); }

 private:
  Snapshots(ServerContext& ctx, std::unique_ptr<snapshot::SnapshotStore> store);
  void Log(const std::string& line) const;
  void IdleLoop();
  void WriteFailed(const std::string& workspace);  // the writer's failure hook
  Status RestoreOnce(const std::string& workspace);
  Status SaveOrThrow(SessionEntry& e);
  void WarmUp();  // restores the --snapshot-warm most recently saved workspaces

  ServerContext& ctx_;
  // State buffers for the next save or restore: three cover a turn under a budget (a restore reads into
  // one, the spill it makes room with copies into another, the write before it may hold a third).
  snapshot::SpareBuffers spares_{3};
  std::unique_ptr<snapshot::SnapshotStore> store_;
  std::unique_ptr<snapshot::SnapshotWriter> writer_;
  Mutex mu_;
  std::set<std::string> failed_ GUARDED_BY(mu_);  // snapshots that could not be restored (until rewritten)
  std::mutex stop_mu_;                            // the idle saver's stop signal
  bool stop_ = false;                             // guarded by stop_mu_
  std::condition_variable stop_cv_;
  std::thread idle_;
};

}  // namespace modeld::daemon
