// A mutex whose locking rules the compiler checks: clang's -Wthread-safety (on in every clang
// build; the fuzz build in CI is one) reads GUARDED_BY and REQUIRES; other compilers ignore them.
// std::mutex carries no annotations in libstdc++, hence this thin wrapper, as in LevelDB's port.
#pragma once

#include <mutex>

#if defined(__clang__)
#define MODELD_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define MODELD_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) MODELD_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY MODELD_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) MODELD_THREAD_ANNOTATION(guarded_by(x))
#define REQUIRES(...) MODELD_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) MODELD_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) MODELD_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) MODELD_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS MODELD_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace modeld {

class CAPABILITY("mutex") Mutex {
 public:
  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* mu_;
};

// What std::condition_variable_any needs (lock/unlock) over a Mutex the caller already holds
// through a MutexLock: wait() releases it while blocked and takes it again before returning, so to
// the analysis the capability stays held across the wait, as it is whenever the caller's code runs.
class CvLock {
 public:
  explicit CvLock(Mutex* mu) : mu_(mu) {}
  void lock() NO_THREAD_SAFETY_ANALYSIS { mu_->Lock(); }
  void unlock() NO_THREAD_SAFETY_ANALYSIS { mu_->Unlock(); }

 private:
  Mutex* mu_;
};

}  // namespace modeld
