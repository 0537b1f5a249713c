// Contexts of closed sessions, kept for the next session of the same shape on the same model.
//
// Why: a new llama_context allocates its KV cache (zeroed at once) and its compute buffer (touched
// by the first llama_decode), hundreds of MiB at n_ctx 8192. Fresh pages are what a restore from a
// snapshot, or a spill and restore under a memory budget, mostly waits for (~3 ms per MiB on a
// small VM); a context whose pages are already there is cleared in a few milliseconds instead.
//
// Bounded: one idle context at most, freed after `idle_ttl` unused (a background thread), or when
// a session of another shape takes its place. The daemon's budget evicts to make room before it
// opens, so the evicted session's context is what the next open takes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <optional>
#include <thread>

#include "llama/llama_handles.h"
#include "modeld/mutex.h"

namespace modeld::llama {

// What two contexts must share for one to serve as the other.
struct ContextShape {
  uint32_t n_ctx = 0, n_batch = 0, n_ubatch = 0;
  int32_t type_k = 0, type_v = 0;
  bool flash_attn = false;
  int32_t threads = 0;
  bool operator==(const ContextShape&) const = default;
};

class ContextPool {
 public:
  // A context with the compute threads attached to it (declared first: freed after the context).
  struct Lent {
    ThreadpoolPtr threadpool;
    ContextPtr ctx;
  };

  explicit ContextPool(std::chrono::milliseconds idle_ttl = std::chrono::seconds(5)) : idle_ttl_(idle_ttl) {}
  ~ContextPool();  // frees the idle context (the owner frees the model after this)
  ContextPool(const ContextPool&) = delete;
  ContextPool& operator=(const ContextPool&) = delete;

  // The idle context if it has this shape, its memory cleared (data too, as a new context's) and no
  // abort callback; nullopt otherwise (an idle context of another shape is freed: its room is
  // for the one the caller makes now).
  std::optional<Lent> Take(const ContextShape& shape) EXCLUDES(mu_);
  // Keeps a closed session's context (replacing an idle one, which is freed). Only a context in
  // known state: a session whose llama_decode failed frees its own.
  void Put(const ContextShape& shape, Lent lent) EXCLUDES(mu_);

  int64_t reused() const EXCLUDES(mu_);  // Takes that returned a context
  bool holds_idle() const EXCLUDES(mu_);
  void set_idle_ttl_for_testing(std::chrono::milliseconds ttl) EXCLUDES(mu_);

 private:
  struct Idle {
    ContextShape shape;
    Lent lent;
    std::chrono::steady_clock::time_point since;
  };
  void Reap(std::stop_token stop) EXCLUDES(mu_);

  mutable Mutex mu_;
  std::condition_variable_any cv_;  // an idle context was put, or the TTL changed
  std::optional<Idle> idle_ GUARDED_BY(mu_);
  std::chrono::milliseconds idle_ttl_ GUARDED_BY(mu_);
  int64_t reused_ GUARDED_BY(mu_) = 0;
  uint64_t changes_ GUARDED_BY(mu_) = 0;  // Puts and TTL changes, for the reaper's wait
  std::jthread reaper_ GUARDED_BY(mu_);   // started by the first Put; stopped and joined first
};

}  // namespace modeld::llama
