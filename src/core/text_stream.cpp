#include "core/text_stream.h"

#include <algorithm>

namespace modeld {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Length of the UTF-8 sequence that starts with byte c; 0 if c cannot start one.
int SequenceLength(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Moves the complete characters of `in` to `out` (invalid bytes as U+FFFD) and
// leaves a trailing incomplete sequence in `in`.
void TakeValid(std::string& in, std::string& out) {
  size_t i = 0;
  while (i < in.size()) {
    const auto c = static_cast<unsigned char>(in[i]);
    const int len = SequenceLength(c);
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    if (i + len > in.size()) {
      // Maybe incomplete: keep it if what is there so far is a valid start.
      bool ok = true;
      for (size_t j = i + 1; j < in.size(); ++j) ok = ok && IsContinuation(static_cast<unsigned char>(in[j]));
      if (ok) break;
      out += kReplacement;
      ++i;
      continue;
    }
    bool ok = true;
    for (int j = 1; j < len; ++j) ok = ok && IsContinuation(static_cast<unsigned char>(in[i + j]));
    // Overlong or surrogate forms of 3/4-byte sequences.
    const auto c1 = len > 1 ? static_cast<unsigned char>(in[i + 1]) : 0;
    if (ok && c == 0xE0 && c1 < 0xA0) ok = false;
    if (ok && c == 0xED && c1 > 0x9F) ok = false;
    if (ok && c == 0xF0 && c1 < 0x90) ok = false;
    if (ok && c == 0xF4 && c1 > 0x8F) ok = false;
    if (!ok) {
      out += kReplacement;
      ++i;
      continue;
    }
    out.append(in, i, len);
    i += len;
  }
  in.erase(0, i);
}

}  // namespace

TextStream::TextStream(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string TextStream::Push(std::string_view piece) {
  if (stopped_) return {};
  partial_.append(piece);
  TakeValid(partial_, pending_);

  // The earliest stop string ends generation; text before it is emitted.
  size_t stop_at = std::string::npos;
  for (const auto& s : stops_) stop_at = std::min(stop_at, pending_.find(s));
  if (stop_at != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, stop_at);
    pending_.clear();
    partial_.clear();
    return out;
  }

  // Hold back the longest tail that could still grow into a stop string.
  size_t hold = 0;
  for (const auto& s : stops_) {
    for (size_t n = std::min(s.size() - 1, pending_.size()); n > hold; --n) {
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  // Never cut a character: move the cut back to a character boundary.
  size_t cut = pending_.size() - hold;
  while (cut > 0 && cut < pending_.size() && IsContinuation(static_cast<unsigned char>(pending_[cut]))) --cut;
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string TextStream::Flush() {
  if (stopped_) return {};
  std::string out = std::move(pending_);
  pending_.clear();
  if (!partial_.empty()) out += kReplacement;
  partial_.clear();
  return out;
}

}  // namespace modeld
