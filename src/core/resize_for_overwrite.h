// Sizing a buffer that is about to be written over in full, without zeroing it first: zeroing a
// reused buffer is a wasted pass, and zeroing a new one faults in every page before the data does.
#pragma once

#include <cstddef>
#include <string>

namespace modeld {

inline void ResizeForOverwrite(std::string& s, size_t n) {
  // A reused buffer whose contents grow a little each time (a workspace's state) is made a quarter
  // larger than asked when it must grow, so the next few uses fit. Untouched capacity costs no pages.
  if (n > s.capacity()) s.reserve(n + n / 4);
  // The size is captured rather than taken from the callback's argument: libstdc++ 12 passes the
  // new capacity there when the string grows.
  s.resize_and_overwrite(n, [n](char*, size_t) { return n; });
}

}  // namespace modeld
