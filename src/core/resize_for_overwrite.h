// Sizing a buffer that is about to be written over in full, without zeroing it first: zeroing a
// reused buffer is a wasted pass, and zeroing a new one faults in every page before the data does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace modeld {

inline void ResizeForOverwrite(std::string& s, size_t n) {
  // The size is captured rather than taken from the callback's argument: libstdc++ 12 passes the
  // new capacity there when the string grows.
  s.resize_and_overwrite(n, [n](char*, size_t) { return n; });
}

// The same for a buffer reused for contents that grow a little each time (a workspace's state):
// when it must grow, it grows a quarter more than asked, so the next few uses fit (capacity never
// written costs no pages), and its new pages are asked to be huge ones. Where transparent huge pages
// are on request (`madvise`, the usual default), faulting in a fresh 70 MiB state buffer then took
// 9 ms instead of 140 ms on the VM of docs/BENCHMARKS.md.
inline void ResizeReusedForOverwrite(std::string& s, size_t n) {
  if (n > s.capacity()) {
    s.reserve(n + n / 4);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Advice only, on whole pages inside the buffer: a refusal changes nothing.
    const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto begin = (reinterpret_cast<uintptr_t>(s.data()) + page - 1) & ~(page - 1);
    const auto end = (reinterpret_cast<uintptr_t>(s.data()) + s.capacity()) & ~(page - 1);
    if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
  }
  ResizeForOverwrite(s, n);
}

}  // namespace modeld
