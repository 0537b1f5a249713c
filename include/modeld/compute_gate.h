// One backend computation at a time, granted fairly.
//
// Sessions take a turn for every backend computation (each prefill batch,
// each decoded token). A FIFO gate means a long prefill in one workspace
// delays another workspace's next token by at most one batch, and the cores
// are never oversubscribed. Backend-neutral: an adapter calls Acquire()
// around its own compute call.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>

namespace modeld {

class ComputeGate {
 public:
  class Turn {
   public:
    explicit Turn(ComputeGate* gate) : gate_(gate) {}
    ~Turn() {
      if (gate_) gate_->Release();
    }
    Turn(Turn&& o) noexcept : gate_(std::exchange(o.gate_, nullptr)) {}
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;
    Turn& operator=(Turn&&) = delete;

   private:
    ComputeGate* gate_;
  };

  // Blocks until it is this caller's turn (first come, first served).
  Turn Acquire();

  // For tests and metrics: called at each grant, under the lock, with how
  // many turns were still ahead of this one when it was requested (the
  // computations it had to wait for).
  void SetObserver(std::function<void(uint64_t waited_turns)> observer);
  uint64_t granted() const;

 private:
  void Release();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_ticket_ = 0;
  uint64_t serving_ = 0;
  std::function<void(uint64_t)> observer_;
};

}  // namespace modeld
