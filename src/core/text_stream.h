// Turns a stream of token pieces (raw bytes) into text chunks that are safe to
// emit: never a split UTF-8 character, never a stop string or a part of one.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace modeld {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stops = {});

  // Appends a piece; returns the text that can be emitted now. Bytes that are
  // not valid UTF-8 come out as U+FFFD so every chunk is valid UTF-8.
  std::string Push(std::string_view piece);
  // True once a stop string was seen; the text before it has been returned
  // and everything after it is dropped.
  bool stopped() const { return stopped_; }
  // The held-back remainder at the end of generation (an incomplete
  // character becomes U+FFFD).
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // valid UTF-8 not yet emitted (may be a stop-string prefix)
  std::string partial_;  // bytes of an incomplete UTF-8 character
  bool stopped_ = false;
};

}  // namespace modeld
