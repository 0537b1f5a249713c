// The daemon's HTTP task queue: a thread per connection, so a connection that is silent or sends
// a byte at a time holds only its own thread, never one of a few shared workers.
//
// httplib's ThreadPool grows only when it counts no idle worker, and it counts a worker woken for
// a job as idle until that worker runs: in a burst of connections the jobs queued up behind a few
// workers, each held by a silent connection until its timeout, and /v1/health waited with them.
#pragma once

#include <httplib.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <thread>

namespace modeld::daemon {

class ConnectionThreads final : public httplib::TaskQueue {
 public:
  // Up to `max_threads` connections served at once; past that up to `max_queued` wait (first in,
  // first out) for a thread; the rest are refused (httplib closes them at once).
  ConnectionThreads(size_t max_threads, size_t max_queued) : max_threads_(max_threads), max_queued_(max_queued) {}
  ~ConnectionThreads() override { shutdown(); }

  bool enqueue(std::function<void()> fn) override;
  // Refuses new work, then waits for the running connections to end (httplib's stop() has made
  // each of them end at its next read).
  void shutdown() override;

 private:
  void Run(std::function<void()> fn);
  void JoinFinishedLocked();  // with mu_ held

  const size_t max_threads_;
  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable idle_cv_;           // running_ reached 0
  bool shutdown_ = false;                     // guarded by mu_
  size_t running_ = 0;                        // guarded by mu_: threads between start and their last job
  std::deque<std::function<void()>> queued_;  // guarded by mu_
  std::list<std::thread> threads_;            // guarded by mu_
  std::list<std::thread::id> finished_;       // guarded by mu_: ended, to be joined
};

}  // namespace modeld::daemon
