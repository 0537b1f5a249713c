#include "daemon/connection_threads.h"

#include <algorithm>

namespace modeld::daemon {

bool ConnectionThreads::enqueue(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  if (shutdown_) return false;
  JoinFinishedLocked();
  if (running_ < max_threads_) {
    ++running_;
    threads_.emplace_back([this, f = std::move(fn)]() mutable { Run(std::move(f)); });
    return true;
  }
  if (queued_.size() >= max_queued_) return false;
  queued_.push_back(std::move(fn));
  return true;
}

void ConnectionThreads::Run(std::function<void()> fn) {
  for (;;) {
    fn();
    std::lock_guard lock(mu_);
    if (queued_.empty()) {
      --running_;
      finished_.push_back(std::this_thread::get_id());
      idle_cv_.notify_all();
      return;
    }
    fn = std::move(queued_.front());
    queued_.pop_front();
  }
}

void ConnectionThreads::JoinFinishedLocked() {
  for (const auto id : finished_) {
    auto it = std::find_if(threads_.begin(), threads_.end(), [&](const std::thread& t) { return t.get_id() == id; });
    if (it == threads_.end()) continue;
    it->join();  // it has returned from Run, or is about to
    threads_.erase(it);
  }
  finished_.clear();
}

void ConnectionThreads::shutdown() {
  std::unique_lock lock(mu_);
  shutdown_ = true;
  idle_cv_.wait(lock, [&] { return running_ == 0; });
  JoinFinishedLocked();
}

}  // namespace modeld::daemon
