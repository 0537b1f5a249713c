// Large buffers kept between snapshots: the state buffer of the last write or restore, reused by
// the next one so that it does not fault in new pages. On a small VM fresh pages cost ~3 ms per
// MiB, far more than the copy into them; a 5k-token state is ~70 MiB.
//
// At most `max_buffers`, the largest kept; all are freed by TrimIdle once none was taken or given
// for a while, so an idle daemon holds none.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "modeld/mutex.h"

namespace modeld::snapshot {

class SpareBuffers {
 public:
  using Clock = std::chrono::steady_clock;
  explicit SpareBuffers(size_t max_buffers = 2) : max_(max_buffers) {}

  // The largest buffer kept (emptied, its capacity intact), or a new empty one.
  std::string Take() {
    MutexLock lock(&mu_);
    last_use_ = Clock::now();
    if (kept_.empty()) return {};
    auto it = std::max_element(kept_.begin(), kept_.end(),
                               [](const std::string& a, const std::string& b) { return a.capacity() < b.capacity(); });
    std::string out = std::move(*it);
    kept_.erase(it);
    out.clear();
    return out;
  }
  // Keeps `b` when there is room, or in place of a smaller one.
  void Give(std::string&& b) {
    if (b.capacity() <= std::string().capacity()) return;  // nothing beyond the string itself
    std::string dropped;                                   // freed after the lock
    MutexLock lock(&mu_);
    last_use_ = Clock::now();
    if (kept_.size() < max_) {
      kept_.push_back(std::move(b));
      return;
    }
    auto it = std::min_element(kept_.begin(), kept_.end(),
                               [](const std::string& x, const std::string& y) { return x.capacity() < y.capacity(); });
    if (it != kept_.end() && it->capacity() < b.capacity()) {
      dropped = std::move(*it);
      *it = std::move(b);
    }
  }
  // Frees every buffer when none was taken or given for `idle`.
  void TrimIdle(Clock::duration idle) {
    std::vector<std::string> dropped;
    MutexLock lock(&mu_);
    if (Clock::now() - last_use_ >= idle) dropped.swap(kept_);
  }
  int64_t bytes() const {
    MutexLock lock(&mu_);
    int64_t n = 0;
    for (const auto& b : kept_) n += static_cast<int64_t>(b.capacity());
    return n;
  }

 private:
  const size_t max_;
  mutable Mutex mu_;
  std::vector<std::string> kept_ GUARDED_BY(mu_);
  Clock::time_point last_use_ GUARDED_BY(mu_);
};

}  // namespace modeld::snapshot
