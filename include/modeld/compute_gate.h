// One backend computation at a time: foreground first, each class in arrival order.
//
// Sessions take a turn for every backend computation (each prefill batch,
// each decoded token), so the cores are never oversubscribed. Foreground
// turns (requests a client waits on) are granted first come, first served: a
// long prefill in one workspace delays another workspace's next token by at
// most one batch. Background turns (work nobody waits on, such as building a
// compacted context) are granted only when no foreground turn is waiting and
// none was released within the grace period, which spans the short gaps
// inside a request (between decoded tokens, between its prefill and decode
// calls); so background work delays a foreground request by at most the one
// batch it is running when the request arrives; less where the adapter stops a
// background computation midway when a foreground turn arrives (Turn::ShouldYield)
// and runs it again on its next turn. A thread marks itself as
// background with a BackgroundScope. Background work that a request comes to
// wait on (a compaction the request needs) is promoted: its turns then
// alternate with the foreground's. Backend-neutral: an adapter calls
// Acquire() around its own compute call.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace modeld {

class ComputeGate {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kDefaultGrace{50};

  explicit ComputeGate(std::chrono::milliseconds background_grace = kDefaultGrace) : grace_(background_grace) {}

  class Turn {
   public:
    Turn(ComputeGate* gate, bool background, bool yieldable = false)
        : gate_(gate), background_(background), yieldable_(yieldable) {}
    ~Turn() {
      if (gate_) gate_->Release(background_);
    }
    Turn(Turn&& o) noexcept
        : gate_(std::exchange(o.gate_, nullptr)), background_(o.background_), yieldable_(o.yieldable_) {}
    // A background turn (not promoted) while a foreground turn waits: the computation should stop
    // where it can, release the turn, and redo its work on a later one. Cheap (one atomic load):
    // an adapter may poll it between the steps of one computation.
    bool ShouldYield() const { return yieldable_ && gate_ && gate_->fg_pending_.load(std::memory_order_relaxed) > 0; }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;
    Turn& operator=(Turn&&) = delete;

   private:
    ComputeGate* gate_;
    bool background_;
    bool yieldable_;
  };

  // While alive, the computations of the thread that made it are background turns.
  class BackgroundScope {
   public:
    explicit BackgroundScope(ComputeGate& gate);
    ~BackgroundScope();
    BackgroundScope(const BackgroundScope&) = delete;
    BackgroundScope& operator=(const BackgroundScope&) = delete;

   private:
    ComputeGate& gate_;
  };

  // Blocks until it is this caller's turn.
  Turn Acquire();

  // From now until its BackgroundScope ends, the background thread `id` computes for a waiting
  // request: each of its turns is granted as soon as the gate is free and the last turn was not
  // its own (so it alternates with foreground turns, and other requests still make progress).
  // No-op when `id` is not in a BackgroundScope. Callable from any thread.
  void Promote(std::thread::id id);

  // For tests and metrics: called at each grant, under the lock, with how
  // many turns ran or were granted between this one's request and its grant
  // (the computations it had to wait for), and whether it is a background turn.
  void SetObserver(std::function<void(uint64_t waited_turns, bool background)> observer);
  uint64_t granted() const;
  uint64_t waiting() const;  // callers blocked in Acquire() (tests wait on it, not on time)

 private:
  void Release(bool background);
  struct BackgroundThread {
    std::thread::id id;
    bool promoted = false;
  };
  BackgroundThread* FindBackground(std::thread::id id);  // under mu_; null when not background

  const std::chrono::milliseconds grace_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  uint64_t granted_ = 0;
  uint64_t fg_next_ = 0, fg_serving_ = 0;  // foreground tickets
  // Foreground tickets not yet served (the running turn's included when it is one): what a
  // yieldable background turn polls without the lock.
  std::atomic<uint64_t> fg_pending_{0};
  uint64_t bg_next_ = 0, bg_serving_ = 0;  // background tickets
  Clock::time_point last_fg_release_{};
  bool promoted_waiting_ = false;  // the next background turn is a promoted one, and it waits
  bool last_promoted_ = false;     // the last turn granted was a promoted background turn
  std::vector<BackgroundThread> background_threads_;
  std::function<void(uint64_t, bool)> observer_;
};

}  // namespace modeld
