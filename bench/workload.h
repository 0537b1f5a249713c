// The coding-agent workload: a workspace of real source files in the prompt, and turns that each
// edit a few lines of one file, ask a question and append the exchange to the conversation.
//
// Every system gets the same Prompt: segments for modeld, their byte-exact concatenation for
// llama-server.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "modeld/error.h"
#include "modeld/manifest.h"

namespace modeld::bench {

enum class EditPattern { kSame, kRotating, kRandom, kWorkingSet };
std::optional<EditPattern> ParseEditPattern(std::string_view name);
std::string_view EditPatternName(EditPattern p);

struct Segment {
  std::string id;
  SegmentKind kind = SegmentKind::kOther;
  std::string content;
  // llama-server's /completion reads special-token text everywhere in the prompt; modeld is told
  // to do the same on every segment, so both see the same tokens.
  bool parse_special = true;
};

// One turn's prompt: the stable part (prefix) and what is new this turn (suffix).
struct Prompt {
  std::vector<Segment> prefix;
  std::vector<Segment> suffix;
  std::string Text() const;  // byte-exact concatenation of prefix then suffix
};

struct SourceFile {
  std::string path;  // as shown in the prompt
  std::vector<std::string> lines;
};

struct Edit {
  size_t file = 0;
  std::string path;
  size_t first_line = 0;  // 0-based
  size_t n_lines = 0;
  std::string Label() const;  // "path:12-14"
};

// Chat-template markers; ChatML when the vocabulary has its special tokens.
struct Markers {
  bool chatml = false;
  std::string Open(std::string_view role) const;
  std::string Close() const;
};

class Workload {
 public:
  struct Options {
    EditPattern pattern = EditPattern::kRotating;
    int lines_per_edit = 1;
    uint64_t seed = 0;
    Markers markers;
  };
  Workload(std::vector<SourceFile> files, Options opt);

  // Applies turn `turn`'s edit (turn >= 1): `lines_per_edit` consecutive lines of one file, the
  // file chosen by the pattern (same: the last file, the one being worked on; rotating: in
  // order; random: seeded; working-set: the first two files in turn, a few files being worked on
  // among many that are only read, sent early as open files are), the lines at a seeded random
  // place.
  Edit ApplyEdit(int turn);
  // The user's question for a turn (turn 0: no edit yet).
  std::string Question(int turn, const Edit* edit) const;
  Prompt Build(const std::string& question) const;
  // Appends a finished exchange to the conversation (part of every later prefix).
  void AddExchange(std::string question, std::string answer);

  const std::vector<SourceFile>& files() const { return files_; }
  static std::string FileText(const SourceFile& f);

 private:
  std::vector<SourceFile> files_;
  Options opt_;
  std::mt19937_64 rng_;
  std::vector<std::pair<std::string, std::string>> conversation_;
};

// Reads `paths` and keeps the first `n_files` that exist, each cut to whole lines so that the
// whole first prompt comes to about `ctx_tokens` (counted with `count`). `path_root` is removed
// from the front of the shown paths.
using CountTokens = std::function<Result<int64_t>(const std::string& text)>;
Result<std::vector<SourceFile>> FitWorkspace(const std::vector<std::string>& paths, const std::string& path_root,
                                             int n_files, int64_t ctx_tokens, const Workload::Options& opt,
                                             const CountTokens& count);

}  // namespace modeld::bench
