// The background writer of snapshots: the daemon hands it encoded files and never waits on the
// disk. One thread writes them to the store in the order their workspaces were first queued; a
// newer file of a workspace replaces a queued older one (latest wins).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "modeld/mutex.h"
#include "snapshot/snapshot_file.h"
#include "snapshot/snapshot_store.h"

namespace modeld::snapshot {

class SnapshotWriter {
 public:
  // log: called with one line per failed write (the daemon logs it), from the writer's thread with no
  // lock held; may be null.
  // on_failure: called with the workspace of each failed write, on the writer's thread, while a
  // WaitIdle of that workspace still waits (it must not call WaitIdle itself); may be null.
  // recycle: given the buffer of each file's state once done with (written, failed or replaced),
  // so the next snapshot can reuse its pages; on the writer's or Submit's thread, no lock held; may
  // be null.
  // max_queued_bytes: what the files queued and under way may hold in memory together (0: no bound).
  SnapshotWriter(SnapshotStore* store, std::function<void(const std::string&)> log,
                 std::function<void(const std::string& workspace)> on_failure = nullptr,
                 std::function<void(std::string&& buffer)> recycle = nullptr, uint64_t max_queued_bytes = 0);
  ~SnapshotWriter();  // finishes what is queued, then stops its thread
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;

  // Queues the encoded file for `workspace`; a newer one replaces a queued older one (latest wins).
  // Blocks on the disk only when the queue would pass max_queued_bytes: then it waits for writes to
  // end (a burst of spills must not hold every evicted state in memory at once). A file alone larger
  // than the bound is queued once the queue is empty.
  void Submit(const std::string& workspace, std::string bytes);
  void Submit(const std::string& workspace, EncodedFile file);
  // Waits until everything submitted before the call is written (or failed, or replaced by a newer
  // file of its workspace that is written or failed).
  void Flush();
  int64_t written() const;             // writes that succeeded
  int64_t failed() const;              // writes that failed (each logged)
  uint64_t peak_queued_bytes() const;  // the most the queue held at once
  // Waits while a write of `workspace` is queued or under way (a restore of it waits for it).
  void WaitIdle(const std::string& workspace);

 private:
  struct Job {
    EncodedFile file;
    uint64_t first_seq = 0;  // the oldest Submit this job stands for (it replaced the ones after)
  };
  void Run();
  // Whether a Submit numbered <= seq is still queued or under way.
  bool PendingUpTo(uint64_t seq) const REQUIRES(mu_);

  SnapshotStore* const store_;
  const std::function<void(const std::string&)> log_;
  const std::function<void(const std::string&)> on_failure_;
  const std::function<void(std::string&&)> recycle_;
  const uint64_t max_queued_bytes_;

  mutable Mutex mu_;
  std::condition_variable_any work_cv_;  // a job was queued, or stop_
  std::condition_variable_any done_cv_;  // a job ended
  std::map<std::string, Job> queued_ GUARDED_BY(mu_);
  std::deque<std::string> order_ GUARDED_BY(mu_);    // the queued workspaces, in order
  std::optional<std::string> busy_ GUARDED_BY(mu_);  // the workspace being written
  uint64_t busy_seq_ GUARDED_BY(mu_) = 0;            // ... its job's first_seq
  uint64_t next_seq_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
  uint64_t queued_bytes_ GUARDED_BY(mu_) = 0;  // of the queued files and the one being written
  uint64_t peak_queued_bytes_ GUARDED_BY(mu_) = 0;
  int64_t written_ GUARDED_BY(mu_) = 0;
  int64_t failed_ GUARDED_BY(mu_) = 0;
  std::thread thread_;  // last: starts once everything above is constructed
};

}  // namespace modeld::snapshot
