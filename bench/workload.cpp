#include "workload.h"

#include <algorithm>
#include <fstream>
#include <sstream>

namespace modeld::bench {
namespace {

constexpr std::string_view kSystem =
    "You are a coding assistant working inside the user's repository. Answer with short, correct code "
    "changes and explain them briefly. Prefer the project's existing helpers and style.";

constexpr std::string_view kQuestions[] = {
    "I changed {edit}. Does it still compile?",
    "Look at my edit of {edit}: is it consistent with the rest of the file?",
    "After editing {edit}, what else has to change?",
    "I touched {edit}. Which tests would catch a mistake there?",
    "Review {edit} for off-by-one errors.",
};

std::string Join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

}  // namespace

std::optional<EditPattern> ParseEditPattern(std::string_view name) {
  if (name == "same") return EditPattern::kSame;
  if (name == "rotating") return EditPattern::kRotating;
  if (name == "random") return EditPattern::kRandom;
  if (name == "working-set") return EditPattern::kWorkingSet;
  return std::nullopt;
}

std::string_view EditPatternName(EditPattern p) {
  switch (p) {
    case EditPattern::kSame:
      return "same";
    case EditPattern::kRotating:
      return "rotating";
    case EditPattern::kRandom:
      return "random";
    case EditPattern::kWorkingSet:
      return "working-set";
  }
  return "?";
}

std::string Prompt::Text() const {
  std::string out;
  for (const auto& s : prefix) out += s.content;
  for (const auto& s : suffix) out += s.content;
  return out;
}

std::string Edit::Label() const {
  // Appends rather than `"-" + std::to_string(...)`, which trips a false -Wrestrict in GCC 12 -O3.
  std::string s = path;
  s.append(":").append(std::to_string(first_line + 1));
  if (n_lines > 1) s.append("-").append(std::to_string(first_line + n_lines));
  return s;
}

std::string Markers::Open(std::string_view role) const {
  return chatml ? "<|im_start|>" + std::string(role) + "\n" : "### " + std::string(role) + "\n";
}
std::string Markers::Close() const { return chatml ? "<|im_end|>\n" : "\n"; }

Workload::Workload(std::vector<SourceFile> files, Options opt)
    : files_(std::move(files)),
      opt_(opt),
      rng_(opt.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(opt.pattern)) {}

std::string Workload::FileText(const SourceFile& f) { return "=== " + f.path + " ===\n" + Join(f.lines) + "\n"; }

Edit Workload::ApplyEdit(int turn) {
  Edit e;
  const size_t n = files_.size();
  switch (opt_.pattern) {
    case EditPattern::kSame:
      e.file = n - 1;
      break;
    case EditPattern::kRotating:
      e.file = static_cast<size_t>(turn - 1) % n;
      break;
    case EditPattern::kRandom:
      e.file = std::uniform_int_distribution<size_t>(0, n - 1)(rng_);
      break;
    case EditPattern::kWorkingSet:
      e.file = static_cast<size_t>(turn - 1) % std::min<size_t>(2, n);
      break;
  }
  SourceFile& f = files_[e.file];
  e.path = f.path;
  e.n_lines = std::min<size_t>(static_cast<size_t>(std::max(1, opt_.lines_per_edit)), f.lines.size());
  e.first_line = std::uniform_int_distribution<size_t>(0, f.lines.size() - e.n_lines)(rng_);
  // A small in-place change on each line, as an agent's patch hunk would make.
  for (size_t i = e.first_line; i < e.first_line + e.n_lines; ++i) {
    f.lines[i] += " // edit " + std::to_string(turn);
  }
  return e;
}

std::string Workload::Question(int turn, const Edit* edit) const {
  if (edit == nullptr) return "Summarize what these files do.";
  std::string q(kQuestions[static_cast<size_t>(turn) % std::size(kQuestions)]);
  q.replace(q.find("{edit}"), 6, edit->Label());
  return q;
}

Prompt Workload::Build(const std::string& question) const {
  const Markers& mk = opt_.markers;
  Prompt p;
  p.prefix.push_back({"sys-open", SegmentKind::kTemplate, mk.Open("system")});
  p.prefix.push_back({"system", SegmentKind::kSystem, std::string(kSystem) + "\n"});
  std::string map = "Repository map:\n";
  for (const auto& f : files_) map += "  " + f.path + " (" + std::to_string(f.lines.size()) + " lines)\n";
  p.prefix.push_back({"repo-map", SegmentKind::kRepoMap, map});
  for (const auto& f : files_) p.prefix.push_back({"file:" + f.path, SegmentKind::kFile, FileText(f)});
  p.prefix.push_back({"sys-close", SegmentKind::kTemplate, mk.Close()});
  for (size_t i = 0; i < conversation_.size(); ++i) {
    const auto& [q, a] = conversation_[i];
    p.prefix.push_back({"turn:" + std::to_string(i), SegmentKind::kConversation,
                        mk.Open("user") + q + "\n" + mk.Close() + mk.Open("assistant") + a + "\n" + mk.Close()});
  }
  p.suffix.push_back(
      {"user", SegmentKind::kUser, mk.Open("user") + question + "\n" + mk.Close() + mk.Open("assistant")});
  return p;
}

void Workload::AddExchange(std::string question, std::string answer) {
  conversation_.emplace_back(std::move(question), std::move(answer));
}

Result<std::vector<SourceFile>> FitWorkspace(const std::vector<std::string>& paths, const std::string& path_root,
                                             int n_files, int64_t ctx_tokens, const Workload::Options& opt,
                                             const CountTokens& count) {
  std::vector<SourceFile> full;
  for (const auto& p : paths) {
    if (static_cast<int>(full.size()) >= n_files) break;
    std::ifstream in(p, std::ios::binary);
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    SourceFile f;
    f.path = p.starts_with(path_root) ? p.substr(path_root.size()) : p;
    while (!f.path.empty() && f.path.front() == '/') f.path.erase(0, 1);
    f.lines = SplitLines(ss.str());
    if (f.lines.size() >= 2) full.push_back(std::move(f));
  }
  if (full.empty()) return Fail(ErrorCode::kNotFound, "none of the workspace files could be read");

  // What the prompt costs with every file empty: system text, map, headers, first question.
  std::vector<SourceFile> empty = full;
  for (auto& f : empty) f.lines.clear();
  Workload probe(empty, opt);
  auto overhead = count(probe.Build(probe.Question(0, nullptr)).Text());
  if (!overhead) return Fail(overhead.error());
  int64_t remaining = ctx_tokens - *overhead;
  if (remaining <= 0) return Fail(ErrorCode::kInvalidArgument, "--ctx is smaller than the prompt's fixed part");

  std::vector<SourceFile> out;
  for (size_t i = 0; i < full.size(); ++i) {
    const int64_t share = remaining / static_cast<int64_t>(full.size() - i);
    SourceFile& f = full[i];
    SourceFile cut{f.path, {}};
    auto base = count(Workload::FileText(cut));
    if (!base) return Fail(base.error());
    // The most whole lines whose tokens fit the share (token count grows with the line count).
    size_t lo = 0, hi = f.lines.size();
    int64_t used = 0;
    while (lo < hi) {
      const size_t mid = (lo + hi + 1) / 2;
      cut.lines.assign(f.lines.begin(), f.lines.begin() + static_cast<std::ptrdiff_t>(mid));
      auto n = count(Workload::FileText(cut));
      if (!n) return Fail(n.error());
      if (*n - *base <= share) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    cut.lines.assign(f.lines.begin(), f.lines.begin() + static_cast<std::ptrdiff_t>(lo));
    if (lo > 0) {
      auto n = count(Workload::FileText(cut));
      if (!n) return Fail(n.error());
      used = *n - *base;
    }
    remaining -= used;
    if (cut.lines.size() >= 1) out.push_back(std::move(cut));
  }
  if (out.empty()) return Fail(ErrorCode::kInvalidArgument, "no file fits in --ctx");
  return out;
}

}  // namespace modeld::bench
