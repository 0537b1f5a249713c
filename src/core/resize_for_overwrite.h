// Sizing a buffer that is about to be written over in full, without zeroing it first: zeroing a
// reused buffer is a wasted pass, and zeroing a new one faults in every page before the data does.
#pragma once

#include <cstddef>
#include <string>

namespace modeld {

inline void ResizeForOverwrite(std::string& s, size_t n) {
  // The size is captured rather than taken from the callback's argument: libstdc++ 12 passes the
  // new capacity there when the string grows.
  s.resize_and_overwrite(n, [n](char*, size_t) { return n; });
}

// The same for a buffer reused for contents that grow a little each time (a workspace's state):
// when it must grow, it grows a quarter more than asked, so the next few uses fit. Capacity never
// written costs no pages.
inline void ResizeReusedForOverwrite(std::string& s, size_t n) {
  if (n > s.capacity()) s.reserve(n + n / 4);
  ResizeForOverwrite(s, n);
}

}  // namespace modeld
