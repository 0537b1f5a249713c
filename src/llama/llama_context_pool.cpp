#include "llama/llama_context_pool.h"

#include <system_error>
#include <utility>

namespace modeld::llama {

ContextPool::~ContextPool() {
  reaper_.request_stop();  // wakes its wait (a stop_token wait)
  if (reaper_.joinable()) reaper_.join();
}

std::optional<ContextPool::Lent> ContextPool::Take(const ContextShape& shape) {
  std::optional<Idle> idle;
  {
    MutexLock lock(&mu_);
    idle = std::exchange(idle_, std::nullopt);
    if (idle && idle->shape == shape) ++reused_;
  }
  if (!idle || !(idle->shape == shape)) return std::nullopt;  // one of another shape is freed here, unlocked
  // As a new context starts: no cells, and zeroed buffers (padded cells are read under the mask,
  // so nothing of the last session's values may stay).
  llama_memory_clear(llama_get_memory(idle->lent.ctx.get()), /*data=*/true);
  return std::move(idle->lent);
}

void ContextPool::Put(const ContextShape& shape, Lent lent) {
  // The callback points into the session that set it, which is going away.
  llama_set_abort_callback(lent.ctx.get(), nullptr, nullptr);
  std::optional<Idle> replaced;
  {
    MutexLock lock(&mu_);
    if (!reaper_.joinable()) {
      try {
        reaper_ = std::jthread([this](std::stop_token stop) { Reap(stop); });
      } catch (const std::system_error&) {
        return;  // no thread to free it later: `lent` is freed now (this runs in destructors)
      }
    }
    replaced = std::exchange(idle_, Idle{shape, std::move(lent), std::chrono::steady_clock::now()});
    ++changes_;
  }
  cv_.notify_all();
}  // `replaced` is freed here, unlocked

void ContextPool::Reap(std::stop_token stop) {
  MutexLock lock(&mu_);
  CvLock cv_lock(&mu_);
  while (!stop.stop_requested()) {
    if (!idle_) {
      cv_.wait(cv_lock, stop, [&]() NO_THREAD_SAFETY_ANALYSIS { return idle_.has_value(); });
      continue;
    }
    const auto deadline = idle_->since + idle_ttl_;
    if (std::chrono::steady_clock::now() < deadline) {
      const uint64_t seen = changes_;  // a Put or a new TTL moves the deadline
      cv_.wait_until(cv_lock, stop, deadline, [&]() NO_THREAD_SAFETY_ANALYSIS { return changes_ != seen; });
      continue;
    }
    std::optional<Idle> expired = std::exchange(idle_, std::nullopt);
    mu_.Unlock();
    expired.reset();  // llama_free and the thread pool's join, unlocked
    mu_.Lock();
  }
}

int64_t ContextPool::reused() const {
  MutexLock lock(&mu_);
  return reused_;
}

bool ContextPool::holds_idle() const {
  MutexLock lock(&mu_);
  return idle_.has_value();
}

void ContextPool::set_idle_ttl_for_testing(std::chrono::milliseconds ttl) {
  {
    MutexLock lock(&mu_);
    idle_ttl_ = ttl;
    ++changes_;
  }
  cv_.notify_all();
}

}  // namespace modeld::llama
