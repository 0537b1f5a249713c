// The daemon's HTTP task queue: every connection is served as soon as it is accepted, on a worker
// of its own, so a connection that is silent or sends a byte at a time holds only its own worker,
// never one that others wait for.
//
// httplib's ThreadPool grows only when it counts no idle worker, and it counts a worker woken for
// a job as idle until that worker runs: in a burst of connections the jobs queued up behind a few
// workers, each held by a silent connection until its timeout, and /v1/health waited with them.
// Here a worker is started whenever the queued jobs outnumber the idle workers. Workers stay for
// the next connection (a burst's threads are reused, not made and joined on the accept path) and
// end after kIdleSeconds without work; they are detached, and shutdown() waits for them all.
#pragma once

#include <httplib.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>

namespace modeld::daemon {

class ConnectionThreads final : public httplib::TaskQueue {
 public:
  static constexpr int kIdleSeconds = 30;

  // Up to `max_workers` connections served at once; past that up to `max_queued` wait (first in,
  // first out) for a worker; the rest are refused (httplib closes them at once).
  ConnectionThreads(size_t max_workers, size_t max_queued) : max_workers_(max_workers), max_queued_(max_queued) {}
  ~ConnectionThreads() override { shutdown(); }

  bool enqueue(std::function<void()> fn) override;
  // Refuses new work, then waits for every worker to end (httplib's stop() has made each
  // connection end at its next read).
  void shutdown() override;

 private:
  void Work();

  const size_t max_workers_;
  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable work_cv_;         // a job was queued, or shutdown
  std::condition_variable done_cv_;         // a worker ended
  bool shutdown_ = false;                   // guarded by mu_
  size_t workers_ = 0;                      // guarded by mu_: started and not ended
  size_t idle_ = 0;                         // guarded by mu_: waiting for a job
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
};

}  // namespace modeld::daemon
