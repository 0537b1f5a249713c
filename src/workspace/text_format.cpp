#include "workspace/text_format.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
#include <unordered_map>
#include <utility>

namespace modeld::workspace {
namespace {

constexpr std::string_view kFileOpen = "<file ";
constexpr std::string_view kChangeOpen = "<change ";
constexpr std::string_view kFileClose = "</file>";
constexpr std::string_view kChangeClose = "</change>";
constexpr size_t kMaxPathBytes = 1024;
// kNoNewlineMarker after its backslash: a content line of one or more
// backslashes and then this would read as the marker.
constexpr std::string_view kNoNewlineTail = kNoNewlineMarker.substr(1);

// ---------------------------------------------------------------------------
// Content-line escaping (EscapeContentLine)

// How many backslashes a content line carries in front of the format's markup
// beyond the fewest that would make it markup: 0 for a line that is markup
// as it stands (`</file>`, kNoNewlineMarker), 1 for its escaped form, ...;
// -1 for a line with no markup after its backslashes.
int64_t ContentMarkerDepth(std::string_view line) {
  const size_t k = line.find_first_not_of('\\');
  if (k == std::string_view::npos) return -1;
  const std::string_view rest = line.substr(k);
  for (std::string_view m : {kFileOpen, kFileClose, kChangeOpen, kChangeClose}) {
    if (rest.starts_with(m)) return static_cast<int64_t>(k);
  }
  if (k > 0 && rest.starts_with(kNoNewlineTail)) return static_cast<int64_t>(k) - 1;
  return -1;
}

// Appends a content line (no '\n') escaped.
void AppendEscaped(std::string& out, std::string_view line) {
  if (ContentMarkerDepth(line) >= 0) out += '\\';
  out += line;
}

// ---------------------------------------------------------------------------
// Lines

// Splits text into lines that keep their '\n', so a last line without one is a
// different token from the same text with one (the diff then sees a change).
std::vector<std::string_view> SplitRaw(std::string_view text) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
    out.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

bool Terminated(std::string_view raw) { return !raw.empty() && raw.back() == '\n'; }

std::string_view Body(std::string_view raw) { return Terminated(raw) ? raw.substr(0, raw.size() - 1) : raw; }

// Appends a content line as the format shows it: escaped, always
// '\n'-terminated, followed by the marker line when the original had no '\n'.
void AppendShown(std::string& out, std::string_view raw) {
  AppendEscaped(out, Body(raw));
  out += '\n';
  if (!Terminated(raw)) {
    out += kNoNewlineMarker;
    out += '\n';
  }
}

// ---------------------------------------------------------------------------
// Myers diff, linear-space (middle snake bisection), on interned line ids.

enum class OpKind : uint8_t { kEqual, kDelete, kInsert };
struct Op {
  OpKind kind;
  int64_t count;
};

class Differ {
 public:
  // budget: the most added + removed lines worth finding; beyond it Run() gives up.
  Differ(const std::vector<int>& a, const std::vector<int>& b, int64_t budget) : a_(a), b_(b), budget_(budget) {}

  // False when the edit needs more than `budget` changed lines.
  bool Run() {
    Diff(0, static_cast<int64_t>(a_.size()), 0, static_cast<int64_t>(b_.size()));
    return !exceeded_;
  }
  std::vector<Op>& ops() { return ops_; }

 private:
  void Emit(OpKind kind, int64_t n) {
    if (n <= 0) return;
    if (kind != OpKind::kEqual) {
      cost_ += n;
      if (cost_ > budget_) exceeded_ = true;
    }
    if (!ops_.empty() && ops_.back().kind == kind) {
      ops_.back().count += n;
    } else {
      ops_.push_back({kind, n});
    }
  }

  void Diff(int64_t a0, int64_t a1, int64_t b0, int64_t b1) {
    if (exceeded_) return;
    int64_t prefix = 0;
    while (a0 + prefix < a1 && b0 + prefix < b1 && a_[a0 + prefix] == b_[b0 + prefix]) ++prefix;
    Emit(OpKind::kEqual, prefix);
    a0 += prefix;
    b0 += prefix;
    int64_t suffix = 0;
    while (a0 < a1 - suffix && b0 < b1 - suffix && a_[a1 - 1 - suffix] == b_[b1 - 1 - suffix]) ++suffix;
    a1 -= suffix;
    b1 -= suffix;
    if (a0 == a1) {
      Emit(OpKind::kInsert, b1 - b0);
    } else if (b0 == b1) {
      Emit(OpKind::kDelete, a1 - a0);
    } else {
      Bisect(a0, a1, b0, b1);
    }
    Emit(OpKind::kEqual, suffix);
  }

  // Finds the middle snake of a[a0,a1) vs b[b0,b1) (both non-empty, first and
  // last elements differ) and recurses on the two halves around it.
  void Bisect(int64_t a0, int64_t a1, int64_t b0, int64_t b1) {
    const int64_t n = a1 - a0, m = b1 - b0;
    const int64_t max_d = (n + m + 1) / 2;
    const int64_t off = max_d, len = 2 * max_d + 2;
    std::vector<int64_t> v1(len, -1), v2(len, -1);
    v1[off + 1] = 0;
    v2[off + 1] = 0;
    const int64_t delta = n - m;
    const bool front = (delta % 2) != 0;  // odd delta: overlap is detected on the forward pass
    int64_t k1start = 0, k1end = 0, k2start = 0, k2end = 0;
    for (int64_t d = 0; d < max_d; ++d) {
      // No overlap before iteration d means this subproblem needs >= 2d-1
      // changes (Myers: the paths meet at iteration ceil(D/2)), and never
      // fewer than the length difference.
      const int64_t at_least = std::max(d == 0 ? 0 : 2 * d - 1, delta < 0 ? -delta : delta);
      if (cost_ + at_least > budget_) {
        exceeded_ = true;
        return;
      }
      for (int64_t k1 = -d + k1start; k1 <= d - k1end; k1 += 2) {
        const int64_t i1 = off + k1;
        int64_t x1 = (k1 == -d || (k1 != d && v1[i1 - 1] < v1[i1 + 1])) ? v1[i1 + 1] : v1[i1 - 1] + 1;
        int64_t y1 = x1 - k1;
        while (x1 < n && y1 < m && a_[a0 + x1] == b_[b0 + y1]) ++x1, ++y1;
        v1[i1] = x1;
        if (x1 > n) {
          k1end += 2;  // ran off the right edge
        } else if (y1 > m) {
          k1start += 2;  // ran off the bottom edge
        } else if (front) {
          const int64_t i2 = off + delta - k1;
          if (i2 >= 0 && i2 < len && v2[i2] != -1 && x1 >= n - v2[i2]) {
            Split(a0, a1, b0, b1, x1, y1);
            return;
          }
        }
      }
      for (int64_t k2 = -d + k2start; k2 <= d - k2end; k2 += 2) {
        const int64_t i2 = off + k2;
        int64_t x2 = (k2 == -d || (k2 != d && v2[i2 - 1] < v2[i2 + 1])) ? v2[i2 + 1] : v2[i2 - 1] + 1;
        int64_t y2 = x2 - k2;
        while (x2 < n && y2 < m && a_[a1 - 1 - x2] == b_[b1 - 1 - y2]) ++x2, ++y2;
        v2[i2] = x2;
        if (x2 > n) {
          k2end += 2;
        } else if (y2 > m) {
          k2start += 2;
        } else if (!front) {
          const int64_t i1 = off + delta - k2;
          if (i1 >= 0 && i1 < len && v1[i1] != -1) {
            const int64_t x1 = v1[i1];
            const int64_t y1 = off + x1 - i1;
            if (x1 >= n - x2) {
              Split(a0, a1, b0, b1, x1, y1);
              return;
            }
          }
        }
      }
    }
    // Unreachable for a minimal search (the paths always meet); kept as a safe answer.
    Emit(OpKind::kDelete, n);
    Emit(OpKind::kInsert, m);
  }

  void Split(int64_t a0, int64_t a1, int64_t b0, int64_t b1, int64_t x, int64_t y) {
    Diff(a0, a0 + x, b0, b0 + y);
    Diff(a0 + x, a1, b0 + y, b1);
  }

  const std::vector<int>& a_;
  const std::vector<int>& b_;
  const int64_t budget_;
  int64_t cost_ = 0;
  bool exceeded_ = false;
  std::vector<Op> ops_;
};

// One run of changes: a[i, i+del) replaced by b[j, j+ins).
struct Change {
  int64_t i, del, j, ins;
};

// Diff with a cap on changed lines; nullopt when the cap is exceeded.
std::optional<std::vector<Hunk>> DiffBounded(std::string_view old_text, std::string_view new_text, int context,
                                             int64_t budget) {
  const std::vector<std::string_view> a = SplitRaw(old_text), b = SplitRaw(new_text);
  // Intern lines (with their '\n') so the diff compares ints.
  std::unordered_map<std::string_view, int> ids;
  auto intern = [&ids](const std::vector<std::string_view>& lines) {
    std::vector<int> out;
    out.reserve(lines.size());
    for (std::string_view l : lines) out.push_back(ids.emplace(l, static_cast<int>(ids.size())).first->second);
    return out;
  };
  const std::vector<int> ai = intern(a), bi = intern(b);
  Differ differ(ai, bi, budget);
  if (!differ.Run()) return std::nullopt;

  // Collapse the edit script into change runs (deletes before inserts in each).
  std::vector<Change> changes;
  int64_t i = 0, j = 0;
  for (const Op& op : differ.ops()) {
    if (op.kind == OpKind::kEqual) {
      i += op.count;
      j += op.count;
      continue;
    }
    if (changes.empty() || changes.back().i + changes.back().del != i || changes.back().j + changes.back().ins != j) {
      changes.push_back({i, 0, j, 0});
    }
    if (op.kind == OpKind::kDelete) {
      changes.back().del += op.count;
      i += op.count;
    } else {
      changes.back().ins += op.count;
      j += op.count;
    }
  }

  const int64_t ctx = std::max(context, 0);
  const int64_t n = static_cast<int64_t>(a.size());
  std::vector<Hunk> hunks;
  size_t c = 0;
  while (c < changes.size()) {
    // Changes whose gap of unchanged lines is at most 2*context share a hunk:
    // separate hunks would be adjacent or overlapping and cost a header.
    size_t last = c;
    while (last + 1 < changes.size() && changes[last + 1].i - (changes[last].i + changes[last].del) <= 2 * ctx) {
      ++last;
    }
    const Change& first = changes[c];
    const int64_t start_i = std::max<int64_t>(0, first.i - ctx);
    const int64_t start_j = first.j - (first.i - start_i);
    const int64_t end_i = std::min(n, changes[last].i + changes[last].del + ctx);
    Hunk h;
    auto add_old = [&](char tag, int64_t from, int64_t to) {
      for (int64_t k = from; k < to; ++k) {
        h.lines.push_back(tag + std::string(Body(a[k])));
        if (!Terminated(a[k])) h.lines.emplace_back(kNoNewlineMarker);
      }
    };
    add_old(' ', start_i, first.i);
    for (size_t k = c; k <= last; ++k) {
      const Change& ch = changes[k];
      add_old('-', ch.i, ch.i + ch.del);
      for (int64_t x = ch.j; x < ch.j + ch.ins; ++x) {
        h.lines.push_back('+' + std::string(Body(b[x])));
        if (!Terminated(b[x])) h.lines.emplace_back(kNoNewlineMarker);
      }
      const int64_t next = k < last ? changes[k + 1].i : end_i;
      add_old(' ', ch.i + ch.del, next);
    }
    h.old_count = end_i - start_i;
    h.new_count = 0;
    for (const std::string& l : h.lines) h.new_count += (l[0] == ' ' || l[0] == '+') ? 1 : 0;
    h.old_start = h.old_count > 0 ? start_i + 1 : start_i;
    h.new_start = h.new_count > 0 ? start_j + 1 : start_j;
    hunks.push_back(std::move(h));
    c = last + 1;
  }
  return hunks;
}

// ---------------------------------------------------------------------------
// Rendering helpers

std::string RangeText(int64_t start, int64_t count) {
  // Unified diff omits ",1".
  return count == 1 ? std::to_string(start) : std::to_string(start) + "," + std::to_string(count);
}

void AppendContentBody(std::string& out, std::string_view content) {
  for (std::string_view raw : SplitRaw(content)) AppendShown(out, raw);
}

std::string_view KindName(NoteKind kind) {
  switch (kind) {
    case NoteKind::kEdit:
      return "edit";
    case NoteKind::kFull:
      return "full";
    case NoteKind::kAdd:
      return "add";
    case NoteKind::kRemove:
      return "remove";
    case NoteKind::kRename:
      return "rename";
  }
  return "edit";
}

// ---------------------------------------------------------------------------
// Parsing helpers

Error ParseError(size_t offset, std::string what) {
  return Error::AtOffset(ErrorCode::kInvalidArgument, "assembled context", offset, std::move(what));
}

// One line of the assembled text, without its '\n'; `terminated` says whether a '\n' ended it.
struct Line {
  std::string_view text;
  size_t offset = 0;
  bool terminated = false;
};

class LineReader {
 public:
  LineReader(std::string_view s, size_t pos) : s_(s), pos_(pos) {}
  bool AtEnd() const { return pos_ >= s_.size(); }
  size_t pos() const { return pos_; }
  std::optional<Line> Peek() const {
    if (AtEnd()) return std::nullopt;
    const size_t nl = s_.find('\n', pos_);
    Line l;
    l.offset = pos_;
    l.terminated = nl != std::string_view::npos;
    l.text = s_.substr(pos_, (l.terminated ? nl : s_.size()) - pos_);
    return l;
  }
  std::optional<Line> Next() {
    std::optional<Line> l = Peek();
    if (l) pos_ = l->offset + l->text.size() + (l->terminated ? 1 : 0);
    return l;
  }
  // A line inside a block: it must exist and end in '\n' (a closing tag follows).
  Result<Line> NextInBlock(std::string_view what) {
    std::optional<Line> l = Next();
    if (!l) return Fail(ParseError(pos_, "text ends inside a block (expected " + std::string(what) + ")"));
    if (!l->terminated) return Fail(ParseError(l->offset, "text ends inside a block (unterminated line)"));
    return *l;
  }

 private:
  std::string_view s_;
  size_t pos_;
};

// A non-negative decimal without sign or leading zeros, at most 18 digits.
std::optional<int64_t> ParseCount(std::string_view s) {
  if (s.empty() || s.size() > 18 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

// An opening tag line: `<name a="v" b="w">` or `.../>`, attributes in the given
// order, single spaces, nothing after the '>'.
struct Tag {
  std::vector<std::pair<std::string_view, std::string_view>> attrs;
  bool self_closing = false;
  std::string_view Get(std::string_view name) const {
    for (const auto& [k, v] : attrs) {
      if (k == name) return v;
    }
    return {};
  }
};

std::optional<Tag> ParseTag(std::string_view line, std::string_view open) {
  if (!line.starts_with(open)) return std::nullopt;
  std::string_view rest = line.substr(open.size());
  Tag tag;
  while (true) {
    const size_t eq = rest.find("=\"");
    if (eq == std::string_view::npos || eq == 0) return std::nullopt;
    const std::string_view name = rest.substr(0, eq);
    for (char c : name) {
      if (c < 'a' || c > 'z') return std::nullopt;
    }
    rest.remove_prefix(eq + 2);
    const size_t q = rest.find('"');
    if (q == std::string_view::npos) return std::nullopt;
    tag.attrs.emplace_back(name, rest.substr(0, q));
    rest.remove_prefix(q + 1);
    if (rest == ">") return tag;
    if (rest == "/>") {
      tag.self_closing = true;
      return tag;
    }
    if (!rest.starts_with(' ')) return std::nullopt;
    rest.remove_prefix(1);
  }
}

bool HasAttrs(const Tag& tag, std::initializer_list<std::string_view> names) {
  if (tag.attrs.size() != names.size()) return false;
  size_t k = 0;
  for (std::string_view n : names) {
    if (tag.attrs[k++].first != n) return false;
  }
  return true;
}

// Reads `count` content lines, an optional marker and the closing tag line.
Result<std::string> ParseContent(LineReader& r, int64_t count, std::string_view close) {
  std::string content;
  for (int64_t k = 0; k < count; ++k) {
    auto line = r.NextInBlock("content line");
    if (!line) return std::unexpected(line.error());
    std::optional<std::string_view> text = UnescapeContentLine(line->text);
    if (!text) return Fail(ParseError(line->offset, "unescaped markup in a content line"));
    content += *text;
    content += '\n';
  }
  std::optional<Line> next = r.Peek();
  if (count > 0 && next && next->terminated && next->text == kNoNewlineMarker) {
    content.pop_back();
    r.Next();
  }
  std::optional<Line> end = r.Next();
  if (!end) return Fail(ParseError(r.pos(), "text ends before " + std::string(close)));
  if (end->text != close) {
    return Fail(ParseError(end->offset,
                           "expected " + std::string(close) + " after " + std::to_string(count) + " content lines"));
  }
  return content;
}

// `@@ -A[,B] +C[,D] @@`
std::optional<Hunk> ParseHunkHeader(std::string_view line) {
  if (!line.starts_with("@@ -") || !line.ends_with(" @@")) return std::nullopt;
  std::string_view mid = line.substr(4, line.size() - 7);
  const size_t sp = mid.find(" +");
  if (sp == std::string_view::npos) return std::nullopt;
  auto range = [](std::string_view s, int64_t& start, int64_t& count) {
    const size_t comma = s.find(',');
    std::optional<int64_t> a = ParseCount(s.substr(0, comma));
    std::optional<int64_t> b =
        comma == std::string_view::npos ? std::optional<int64_t>(1) : ParseCount(s.substr(comma + 1));
    if (!a || !b) return false;
    start = *a;
    count = *b;
    return true;
  };
  Hunk h;
  if (!range(mid.substr(0, sp), h.old_start, h.old_count) || !range(mid.substr(sp + 2), h.new_start, h.new_count)) {
    return std::nullopt;
  }
  return h;
}

Result<std::vector<Hunk>> ParseHunks(LineReader& r) {
  std::vector<Hunk> hunks;
  while (true) {
    auto line = r.Next();
    if (!line) return Fail(ParseError(r.pos(), "text ends before </change>"));
    if (line->text == kChangeClose) return hunks;
    std::optional<Hunk> h = ParseHunkHeader(line->text);
    if (!h || !line->terminated) return Fail(ParseError(line->offset, "expected a hunk header or </change>"));
    int64_t old_seen = 0, new_seen = 0;
    while (old_seen < h->old_count || new_seen < h->new_count) {
      auto body = r.NextInBlock("hunk line");
      if (!body) return std::unexpected(body.error());
      const char tag = body->text.empty() ? '\0' : body->text[0];
      if (tag == ' ') {
        ++old_seen, ++new_seen;
      } else if (tag == '-') {
        ++old_seen;
      } else if (tag == '+') {
        ++new_seen;
      } else {
        return Fail(ParseError(body->offset, "hunk line must start with ' ', '-' or '+'"));
      }
      if (old_seen > h->old_count || new_seen > h->new_count) {
        return Fail(ParseError(body->offset, "hunk has more lines than its header counts"));
      }
      std::optional<std::string_view> text = UnescapeContentLine(body->text.substr(1));
      if (!text) return Fail(ParseError(body->offset, "unescaped markup in a hunk line"));
      h->lines.push_back(tag + std::string(*text));
      std::optional<Line> next = r.Peek();
      if (next && next->terminated && next->text == kNoNewlineMarker) {
        h->lines.emplace_back(kNoNewlineMarker);
        r.Next();
      }
    }
    hunks.push_back(std::move(*h));
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Public API

std::vector<Hunk> DiffLines(std::string_view old_text, std::string_view new_text, int context) {
  return *DiffBounded(old_text, new_text, context, std::numeric_limits<int64_t>::max());
}

Result<std::string> ApplyHunks(std::string_view old_text, const std::vector<Hunk>& hunks) {
  const std::vector<std::string_view> old = SplitRaw(old_text);
  const int64_t n = static_cast<int64_t>(old.size());
  std::string out;
  int64_t cursor = 0;     // next old line not yet consumed
  int64_t out_lines = 0;  // lines written to out
  bool closed = false;    // out ends with a line that has no '\n': nothing may follow
  auto fail = [](size_t hunk, const std::string& what) {
    return Fail(ErrorCode::kInvalidArgument, "hunk " + std::to_string(hunk + 1) + ": " + what);
  };
  auto emit = [&](std::string_view body, bool newline) {
    if (closed) return false;
    out += body;
    if (newline) {
      out += '\n';
    } else {
      closed = true;
    }
    ++out_lines;
    return true;
  };
  auto copy_old = [&](int64_t to) {
    for (; cursor < to; ++cursor) {
      if (!emit(Body(old[cursor]), Terminated(old[cursor]))) return false;
    }
    return true;
  };

  for (size_t hi = 0; hi < hunks.size(); ++hi) {
    const Hunk& h = hunks[hi];
    if (h.old_start < 0 || h.old_count < 0 || h.new_start < 0 || h.new_count < 0) return fail(hi, "negative range");
    if ((h.old_count > 0 && h.old_start == 0) || (h.new_count > 0 && h.new_start == 0)) {
      return fail(hi, "line numbers of a non-empty range start at 1");
    }
    const int64_t old0 = h.old_count == 0 ? h.old_start : h.old_start - 1;
    if (old0 < cursor) return fail(hi, "out of order or overlapping the previous hunk");
    if (old0 > n || h.old_count > n - old0) return fail(hi, "extends past the end of the file");
    if (!copy_old(old0)) return fail(hi, "text after a line with no final newline");
    const int64_t new0 = h.new_count == 0 ? h.new_start : h.new_start - 1;
    if (new0 != out_lines)
      return fail(hi, "new start " + std::to_string(h.new_start) + " does not match the old start");

    int64_t p = old0, old_seen = 0, new_seen = 0;
    for (size_t k = 0; k < h.lines.size(); ++k) {
      const std::string& line = h.lines[k];
      if (line.empty() || (line[0] != ' ' && line[0] != '-' && line[0] != '+')) {
        return fail(hi, "line " + std::to_string(k + 1) + " is not a context, removed or added line");
      }
      const bool nonl = k + 1 < h.lines.size() && h.lines[k + 1] == kNoNewlineMarker;
      const std::string_view body = std::string_view(line).substr(1);
      if (line[0] != '+') {
        if (p >= old0 + h.old_count) return fail(hi, "more old lines than old_count");
        if (Body(old[p]) != body || Terminated(old[p]) == nonl) {
          return fail(hi, "does not match old line " + std::to_string(p + 1));
        }
        ++p, ++old_seen;
      }
      if (line[0] != '-') {
        if (new_seen >= h.new_count) return fail(hi, "more new lines than new_count");
        if (!emit(body, !nonl)) return fail(hi, "text after a line with no final newline");
        ++new_seen;
      }
      if (nonl) ++k;  // the marker belongs to this line
    }
    if (old_seen != h.old_count || new_seen != h.new_count) return fail(hi, "line counts disagree with the header");
    cursor = old0 + h.old_count;
  }
  if (!copy_old(n)) return Fail(ErrorCode::kInvalidArgument, "text after a line with no final newline");
  return out;
}

int64_t CountLines(std::string_view text) {
  int64_t n = std::count(text.begin(), text.end(), '\n');
  if (!text.empty() && text.back() != '\n') ++n;
  return n;
}

ChangeNote MakeChange(const std::string& path, std::string_view old_text, std::string_view new_text, int context) {
  ChangeNote full;
  full.kind = NoteKind::kFull;
  full.path = path;
  full.content = std::string(new_text);
  // Changed lines allowed: a third of the new line count, at least 1. The
  // bounded diff stops as soon as it knows it will exceed that.
  const int64_t budget = std::max<int64_t>(1, CountLines(new_text) / 3);
  std::optional<std::vector<Hunk>> hunks = DiffBounded(old_text, new_text, context, budget);
  if (!hunks) return full;
  ChangeNote edit;
  edit.path = path;
  edit.hunks = std::move(*hunks);
  if (RenderNote(edit).size() > RenderNote(full).size()) return full;
  return edit;
}

std::string RenderFile(const std::string& path, std::string_view content) {
  std::string out = "<file path=\"" + path + "\" lines=\"" + std::to_string(CountLines(content)) + "\">\n";
  AppendContentBody(out, content);
  out += kFileClose;
  out += '\n';
  return out;
}

std::string RenderNote(const ChangeNote& note) {
  std::string out = "<change path=\"" + note.path + "\" kind=\"" + std::string(KindName(note.kind)) + "\"";
  switch (note.kind) {
    case NoteKind::kRemove:
      return out + "/>\n";
    case NoteKind::kRename:
      return out + " to=\"" + note.new_path + "\"/>\n";
    case NoteKind::kFull:
    case NoteKind::kAdd:
      out += " lines=\"" + std::to_string(CountLines(note.content)) + "\">\n";
      AppendContentBody(out, note.content);
      break;
    case NoteKind::kEdit:
      out += ">\n";
      for (const Hunk& h : note.hunks) {
        out += "@@ -" + RangeText(h.old_start, h.old_count) + " +" + RangeText(h.new_start, h.new_count) + " @@\n";
        for (const std::string& l : h.lines) {
          if (l.empty() || l == kNoNewlineMarker) {
            out += l;
          } else {  // tag, then the content line escaped
            out += l[0];
            AppendEscaped(out, std::string_view(l).substr(1));
          }
          out += '\n';
        }
      }
      break;
  }
  out += kChangeClose;
  out += '\n';
  return out;
}

std::string RenderMessageChange(int64_t index, std::string_view old_text, std::string_view new_text, int context) {
  // A file note's body under a header of its own: the body's lines are escaped as in any note,
  // and the header is no block marker, so the files read back the same.
  const std::string rendered = RenderNote(MakeChange("m", old_text, new_text, context));
  const size_t header_end = rendered.find('\n');
  const std::string_view kind = rendered.find("kind=\"full\"") < header_end ? "full" : "edit";
  std::string out = "<message-change index=\"" + std::to_string(index) + "\" kind=\"" + std::string(kind) + "\">\n";
  out.append(rendered, header_end + 1, rendered.size() - (header_end + 1) - (kChangeClose.size() + 1));
  out += "</message-change>\n";
  return out;
}

namespace {

std::unexpected<Error> BadPath(std::string_view why) {
  return Fail(ErrorCode::kInvalidArgument, "invalid path (" + std::string(why) + ")");
}

bool IsAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// Byte offset of the first byte that does not start a valid UTF-8 sequence
// (overlong forms, surrogates and code points past U+10FFFF are invalid); npos when all is valid.
size_t InvalidUtf8At(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    utf8proc_int32_t cp = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + pos),
                                                static_cast<utf8proc_ssize_t>(s.size() - pos), &cp);
    if (n <= 0) return pos;
    pos += static_cast<size_t>(n);
  }
  return std::string_view::npos;
}

// NFC of valid UTF-8 (utf8proc); nullopt when utf8proc refuses it.
std::optional<std::string> Nfc(std::string_view s) {
  if (IsAscii(s)) return std::string(s);  // ASCII is its own NFC
  utf8proc_uint8_t* raw = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()), &raw,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  const std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(raw, &std::free);
  if (n < 0 || raw == nullptr) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(raw), static_cast<size_t>(n));
}

}  // namespace

Status ValidatePath(std::string_view path) {
  auto bad = [](std::string_view why) { return BadPath(why); };
  if (path.empty()) return bad("empty");
  if (path.size() > kMaxPathBytes) return bad("longer than 1024 bytes");
  if (path[0] == '/') return bad("absolute");
  for (char ch : path) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) return bad("control character");
    if (c == '\\' || c == '"' || c == '<' || c == '>') return bad("contains \\, \", < or >");
  }
  size_t pos = 0;
  while (pos <= path.size()) {
    const size_t slash = std::min(path.find('/', pos), path.size());
    const std::string_view part = path.substr(pos, slash - pos);
    if (part.empty()) return bad("empty component");
    if (part == "." || part == "..") return bad("'.' or '..' component");
    pos = slash + 1;
  }
  if (const size_t at = InvalidUtf8At(path); at != std::string_view::npos) {
    return bad("not valid UTF-8 at byte " + std::to_string(at));
  }
  if (!IsAscii(path)) {
    std::optional<std::string> nfc = Nfc(path);
    if (!nfc || *nfc != path) return bad("not in Unicode NFC");
  }
  return {};
}

Result<std::string> NormalizePath(std::string_view path) {
  // Normalized first and then validated: NFC can change the length, and what is checked (the
  // 1024-byte limit, the forbidden characters) is the path the workspace will use.
  if (const size_t at = InvalidUtf8At(path); at != std::string_view::npos) {
    return BadPath("not valid UTF-8 at byte " + std::to_string(at));
  }
  std::optional<std::string> nfc = Nfc(path);
  if (!nfc) return BadPath("cannot be normalized to Unicode NFC");
  if (Status s = ValidatePath(*nfc); !s) return Fail(s.error());
  return std::move(*nfc);
}

std::string EscapeContentLine(std::string_view line) {
  std::string out;
  out.reserve(line.size() + 1);
  AppendEscaped(out, line);
  return out;
}

std::optional<std::string_view> UnescapeContentLine(std::string_view line) {
  const int64_t depth = ContentMarkerDepth(line);
  if (depth == 0) return std::nullopt;
  return depth > 0 ? line.substr(1) : line;
}

namespace {

// The number of leading backslashes when the line after them opens a block; -1 otherwise.
int64_t EscapedBlockDepth(std::string_view line) {
  const size_t k = line.find_first_not_of('\\');
  if (k == std::string_view::npos) return -1;
  const std::string_view rest = line.substr(k);
  return rest.starts_with(kFileOpen) || rest.starts_with(kChangeOpen) ? static_cast<int64_t>(k) : -1;
}

template <class F>
std::string MapLines(std::string_view text, F&& f) {
  std::string out;
  out.reserve(text.size() + 16);
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
    f(out, text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

}  // namespace

std::string EscapeFreeText(std::string_view text) {
  return MapLines(text, [](std::string& out, std::string_view line) {
    if (EscapedBlockDepth(line) >= 0) out += '\\';
    out += line;
  });
}

std::string UnescapeFreeText(std::string_view text) {
  return MapLines(text, [](std::string& out, std::string_view line) {
    out += EscapedBlockDepth(line) > 0 ? line.substr(1) : line;
  });
}

Result<std::map<std::string, std::string>> ReconstructFiles(std::string_view assembled) {
  std::map<std::string, std::string> files;
  LineReader r(assembled, 0);
  while (!r.AtEnd()) {
    const Line line = *r.Next();
    const size_t at = line.offset;
    const bool is_file = line.text.starts_with(kFileOpen);
    if (!is_file && !line.text.starts_with(kChangeOpen)) continue;  // free text
    if (!line.terminated) return Fail(ParseError(at, "text ends inside a block header"));

    std::optional<Tag> tag = ParseTag(line.text, is_file ? kFileOpen : kChangeOpen);
    if (!tag) return Fail(ParseError(at, "malformed block header"));
    std::string path(tag->Get("path"));
    if (tag->attrs.empty() || tag->attrs[0].first != "path") return Fail(ParseError(at, "block header needs path"));
    if (Status s = ValidatePath(path); !s) return Fail(ParseError(at, s.error().message()));

    if (is_file) {
      if (!HasAttrs(*tag, {"path", "lines"}) || tag->self_closing)
        return Fail(ParseError(at, "malformed <file> header"));
      std::optional<int64_t> count = ParseCount(tag->Get("lines"));
      if (!count) return Fail(ParseError(at, "bad lines count"));
      auto content = ParseContent(r, *count, kFileClose);
      if (!content) return std::unexpected(content.error());
      files[path] = std::move(*content);
      continue;
    }

    const std::string_view kind = tag->Get("kind");
    const bool exists = files.contains(path);
    auto need = [&](bool ok, std::string_view why) -> Status {
      if (ok) return {};
      return Fail(ParseError(at, path + ": " + std::string(why)));
    };
    if (kind == "edit") {
      if (!HasAttrs(*tag, {"path", "kind"}) || tag->self_closing) return Fail(ParseError(at, "malformed edit header"));
      if (Status s = need(exists, "edit of a file not shown before"); !s) return std::unexpected(s.error());
      auto hunks = ParseHunks(r);
      if (!hunks) return std::unexpected(hunks.error());
      auto applied = ApplyHunks(files[path], *hunks);
      if (!applied) return Fail(ParseError(at, path + ": " + applied.error().message()));
      files[path] = std::move(*applied);
    } else if (kind == "full" || kind == "add") {
      if (!HasAttrs(*tag, {"path", "kind", "lines"}) || tag->self_closing) {
        return Fail(ParseError(at, "malformed full/add header"));
      }
      if (Status s = kind == "full" ? need(exists, "full rewrite of a file not shown before")
                                    : need(!exists, "add of a file that already exists");
          !s) {
        return std::unexpected(s.error());
      }
      std::optional<int64_t> count = ParseCount(tag->Get("lines"));
      if (!count) return Fail(ParseError(at, "bad lines count"));
      auto content = ParseContent(r, *count, kChangeClose);
      if (!content) return std::unexpected(content.error());
      files[path] = std::move(*content);
    } else if (kind == "remove") {
      if (!HasAttrs(*tag, {"path", "kind"}) || !tag->self_closing) return Fail(ParseError(at, "malformed remove"));
      if (Status s = need(exists, "remove of a file not shown before"); !s) return std::unexpected(s.error());
      files.erase(path);
    } else if (kind == "rename") {
      if (!HasAttrs(*tag, {"path", "kind", "to"}) || !tag->self_closing)
        return Fail(ParseError(at, "malformed rename"));
      std::string to(tag->Get("to"));
      if (Status s = ValidatePath(to); !s) return Fail(ParseError(at, s.error().message()));
      if (Status s = need(exists, "rename of a file not shown before"); !s) return std::unexpected(s.error());
      if (Status s = need(!files.contains(to), "rename onto existing " + to); !s) return std::unexpected(s.error());
      auto node = files.extract(path);
      node.key() = std::move(to);
      files.insert(std::move(node));
    } else {
      return Fail(ParseError(at, "unknown change kind"));
    }
  }
  return files;
}

}  // namespace modeld::workspace
