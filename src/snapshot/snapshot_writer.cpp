#include "snapshot/snapshot_writer.h"

#include <algorithm>
#include <utility>

namespace modeld::snapshot {

SnapshotWriter::SnapshotWriter(SnapshotStore* store, std::function<void(const std::string&)> log,
                               std::function<void(const std::string& workspace)> on_failure,
                               std::function<void(std::string&& buffer)> recycle, uint64_t max_queued_bytes)
    : store_(store),
      log_(std::move(log)),
      on_failure_(std::move(on_failure)),
      recycle_(std::move(recycle)),
      max_queued_bytes_(max_queued_bytes),
      thread_([this] { Run(); }) {}

SnapshotWriter::~SnapshotWriter() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

void SnapshotWriter::Submit(const std::string& workspace, std::string bytes) {
  EncodedFile file;
  file.head = std::move(bytes);
  Submit(workspace, std::move(file));
}

void SnapshotWriter::Submit(const std::string& workspace, EncodedFile file) {
  std::string replaced;
  {
    MutexLock lock(&mu_);
    CvLock cv_lock(&mu_);
    const uint64_t n = file.size();
    while (max_queued_bytes_ > 0 && queued_bytes_ > 0 && queued_bytes_ + n > max_queued_bytes_) {
      done_cv_.wait(cv_lock);
    }
    const uint64_t seq = ++next_seq_;
    auto [it, added] = queued_.try_emplace(workspace);
    if (added) {
      it->second.first_seq = seq;
      order_.push_back(workspace);
    }
    // A replaced job keeps its place in the order and its first_seq: a Flush that waits for it now
    // waits for the file that replaced it.
    if (!added) {
      queued_bytes_ -= it->second.file.size();
      replaced = std::move(it->second.file.state);
    }
    it->second.file = std::move(file);
    queued_bytes_ += n;
    peak_queued_bytes_ = std::max(peak_queued_bytes_, queued_bytes_);
  }
  work_cv_.notify_one();
  if (recycle_ && !replaced.empty()) recycle_(std::move(replaced));
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

uint64_t SnapshotWriter::peak_queued_bytes() const {
  MutexLock lock(&mu_);
  return peak_queued_bytes_;
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
    const std::string_view parts[] = {job.file.head, job.file.state, job.file.trailer};
    const Status st = store_->Write(workspace, parts);
    if (!st && log_) log_("snapshot of workspace '" + workspace + "' not written: " + st.error().ToString());
    if (!st && on_failure_) on_failure_(workspace);  // before WaitIdle's waiters wake
    // The buffer back before the waiters wake too: a restore that waited for this write reuses it.
    const uint64_t bytes = job.file.size();
    if (recycle_ && !job.file.state.empty()) recycle_(std::move(job.file.state));
    {
      MutexLock lock(&mu_);
      busy_.reset();
      ++(st ? written_ : failed_);
      queued_bytes_ -= bytes;
    }
    done_cv_.notify_all();
  }
}

}  // namespace modeld::snapshot
