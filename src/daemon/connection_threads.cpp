#include "daemon/connection_threads.h"

#include <chrono>
#include <thread>

namespace modeld::daemon {

bool ConnectionThreads::enqueue(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    if (shutdown_) return false;
    const bool start = jobs_.size() >= idle_ && workers_ < max_workers_;  // every idle worker is spoken for
    if (!start && jobs_.size() >= idle_ + max_queued_) return false;
    jobs_.push_back(std::move(fn));
    if (start) {
      ++workers_;
      std::thread([this] { Work(); }).detach();
    }
  }
  work_cv_.notify_one();
  return true;
}

void ConnectionThreads::Work() {
  std::unique_lock lock(mu_);
  for (;;) {
    ++idle_;
    const bool has_job =
        work_cv_.wait_for(lock, std::chrono::seconds(kIdleSeconds), [&] { return !jobs_.empty() || shutdown_; });
    --idle_;
    if (!has_job || jobs_.empty()) break;  // idle too long, or shutting down with nothing left
    auto fn = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    fn();
    lock.lock();
  }
  --workers_;
  // Notified under the lock: once shutdown() sees workers_ == 0 this thread touches nothing more.
  done_cv_.notify_all();
}

void ConnectionThreads::shutdown() {
  std::unique_lock lock(mu_);
  shutdown_ = true;
  work_cv_.notify_all();
  done_cv_.wait(lock, [&] { return workers_ == 0; });
}

}  // namespace modeld::daemon
