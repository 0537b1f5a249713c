#include "snapshot/snapshot_writer.h"

#include <utility>

namespace modeld::snapshot {
namespace {

#if defined(__clang__)
#define MODELD_NO_THREAD_SAFETY_ANALYSIS __attribute__((no_thread_safety_analysis))
#else
#define MODELD_NO_THREAD_SAFETY_ANALYSIS
#endif

// What std::condition_variable_any needs (lock/unlock) over a Mutex the caller already holds
// through a MutexLock: wait() releases it while blocked and takes it again before returning, so to
// the analysis the capability stays held across the wait, as it is whenever the caller's code runs.
class CvLock {
 public:
  explicit CvLock(Mutex* mu) : mu_(mu) {}
  void lock() MODELD_NO_THREAD_SAFETY_ANALYSIS { mu_->Lock(); }
  void unlock() MODELD_NO_THREAD_SAFETY_ANALYSIS { mu_->Unlock(); }

 private:
  Mutex* mu_;
};

}  // namespace

SnapshotWriter::SnapshotWriter(SnapshotStore* store, std::function<void(const std::string&)> log,
                               std::function<void(const std::string& workspace)> on_failure)
    : store_(store), log_(std::move(log)), on_failure_(std::move(on_failure)), thread_([this] { Run(); }) {}

SnapshotWriter::~SnapshotWriter() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

void SnapshotWriter::Submit(const std::string& workspace, std::string bytes) {
  {
    MutexLock lock(&mu_);
    const uint64_t seq = ++next_seq_;
    auto [it, added] = queued_.try_emplace(workspace);
    if (added) {
      it->second.first_seq = seq;
      order_.push_back(workspace);
    }
    // A replaced job keeps its place in the order and its first_seq: a Flush that waits for it now
    // waits for the file that replaced it.
    it->second.bytes = std::move(bytes);
  }
  work_cv_.notify_one();
}

bool SnapshotWriter::PendingUpTo(uint64_t seq) const {
  if (busy_ && busy_seq_ <= seq) return true;
  for (const auto& [ws, job] : queued_) {
    if (job.first_seq <= seq) return true;
  }
  return false;
}

void SnapshotWriter::Flush() {
  MutexLock lock(&mu_);
  CvLock cv_lock(&mu_);
  const uint64_t upto = next_seq_;
  while (PendingUpTo(upto)) done_cv_.wait(cv_lock);
}

void SnapshotWriter::WaitIdle(const std::string& workspace) {
  MutexLock lock(&mu_);
  CvLock cv_lock(&mu_);
  while (queued_.contains(workspace) || busy_ == workspace) done_cv_.wait(cv_lock);
}

int64_t SnapshotWriter::written() const {
  MutexLock lock(&mu_);
  return written_;
}

int64_t SnapshotWriter::failed() const {
  MutexLock lock(&mu_);
  return failed_;
}

void SnapshotWriter::Run() {
  for (;;) {
    std::string workspace;
    Job job;
    {
      MutexLock lock(&mu_);
      CvLock cv_lock(&mu_);
      while (order_.empty() && !stop_) work_cv_.wait(cv_lock);
      if (order_.empty()) return;  // stopped, and the queue is drained
      workspace = std::move(order_.front());
      order_.pop_front();
      auto it = queued_.find(workspace);
      job = std::move(it->second);
      queued_.erase(it);
      busy_ = workspace;
      busy_seq_ = job.first_seq;
    }
    // The disk, with no lock held: Submit never waits for it.
    const Status st = store_->Write(workspace, job.bytes);
    if (!st && log_) log_("snapshot of workspace '" + workspace + "' not written: " + st.error().ToString());
    if (!st && on_failure_) on_failure_(workspace);  // before WaitIdle's waiters wake
    {
      MutexLock lock(&mu_);
      busy_.reset();
      ++(st ? written_ : failed_);
    }
    done_cv_.notify_all();
  }
}

}  // namespace modeld::snapshot
