#include "cli/demo.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "cli/demo_corpus.h"
#include "cli/paths.h"
#include "client/remote_session.h"
#include "modeld/service.h"

namespace modeld::cli {
namespace {

constexpr std::string_view kSystem =
    "You are a coding assistant working inside the user's repository. Answer with short, correct code "
    "changes and explain them briefly. Prefer the project's existing helpers and style.";

struct File {
  std::string path;
  std::string content;
};

// Replaces line `line` (0-based, modulo the line count) of `text` with `repl`.
std::string EditLine(const std::string& text, size_t line, const std::string& repl) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  lines[line % lines.size()] = repl;
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) out += lines[i] + (i + 1 < lines.size() ? "\n" : "");
  return out;
}

// Chat-template markers as explicit segments (parse_special), when the vocab has ChatML tokens.
struct Markers {
  bool chatml = false;
  std::string Open(const std::string& role) const {
    return chatml ? "<|im_start|>" + role + "\n" : "### " + role + "\n";
  }
  std::string Close() const { return chatml ? "<|im_end|>\n" : "\n"; }
};

ContextManifest BuildPrefix(const Markers& mk, const std::vector<File>& files) {
  ContextManifest m;
  m.Add("sys-open", SegmentKind::kTemplate, mk.Open("system"), true);
  m.Add("system", SegmentKind::kSystem, std::string(kSystem) + "\n");
  std::string map = "Repository map:\n";
  for (const auto& f : files) map += "  " + f.path + "\n";
  m.Add("repo-map", SegmentKind::kRepoMap, map);
  for (const auto& f : files) m.Add("file:" + f.path, SegmentKind::kFile, "=== " + f.path + " ===\n" + f.content + "\n");
  m.Add("sys-close", SegmentKind::kTemplate, mk.Close(), true);
  return m;
}

// The scripted loop on any Session: in-process or over the wire.
int RunLoop(Session& s, const DemoOptions& opt) {
  Markers mk;
  if (auto t = s.Tokenize("<|im_start|>", true); t && t->size() == 1) mk.chatml = true;

  std::vector<File> files;
  for (const auto& f : DemoCorpus()) files.push_back({std::string(f.path), std::string(f.content)});

  const std::vector<std::string> questions = {
      "Summarize what these files do.",
      "I changed one line; does the code still compile?",
      "Is the edit consistent with the rest of the file?",
      "What would you test next?",
  };
  std::printf("\n%-5s %-28s %9s %10s %11s %9s %11s\n", "turn", "edit", "reused", "prefilled", "prefill_ms",
              "ttft_ms", "decode_t/s");
  // Turns 1..N edit one line of one file; the last turn changes only the question.
  for (int turn = 0; turn <= opt.turns + 1; ++turn) {
    std::string edit = turn == 0 ? "(cold start)" : "(new question only)";
    if (turn > 0 && turn <= opt.turns) {
      File& f = files[static_cast<size_t>(turn - 1) % files.size()];
      const size_t line = 7 + 13 * static_cast<size_t>(turn);
      f.content = EditLine(f.content, line, "// edited in turn " + std::to_string(turn));
      edit = f.path + ":" + std::to_string(line + 1);
    }
    const ContextManifest prefix = BuildPrefix(mk, files);
    auto ps = s.EnsurePrefix({prefix, {}});
    if (!ps) {
      std::fprintf(stderr, "turn %d: %s\n", turn, ps.error().ToString().c_str());
      return 1;
    }
    SuffixInput suffix;
    suffix.prefix_digest = ps->manifest_digest;
    suffix.segments.push_back(ManifestSegment::Make("user-open", SegmentKind::kTemplate, mk.Open("user"), true));
    suffix.segments.push_back(
        ManifestSegment::Make("user", SegmentKind::kUser, questions[static_cast<size_t>(turn) % questions.size()]));
    suffix.segments.push_back(ManifestSegment::Make("assistant-open", SegmentKind::kTemplate,
                                                    mk.Close() + mk.Open("assistant"), true));
    auto ss = s.PrefillSuffix(suffix);
    if (!ss) {
      std::fprintf(stderr, "turn %d: %s\n", turn, ss.error().ToString().c_str());
      return 1;
    }
    DecodeConfig dc;
    dc.max_tokens = opt.decode_tokens;
    auto dr = s.Decode(dc, {});
    if (!dr) {
      std::fprintf(stderr, "turn %d: %s\n", turn, dr.error().ToString().c_str());
      return 1;
    }
    const int64_t reused = ps->tokens_reused + ss->tokens_reused;
    const int64_t prefilled = ps->tokens_prefilled + ss->tokens_prefilled;
    const double prefill_ms = ps->prefill_ms + ss->prefill_ms;
    std::printf("%-5d %-28s %9lld %10lld %11.1f %9.1f %11.1f\n", turn, edit.c_str(), static_cast<long long>(reused),
                static_cast<long long>(prefilled), prefill_ms, prefill_ms + dr->first_token_ms,
                dr->tokens_per_second);
    std::fflush(stdout);
  }
  if (auto report = s.Report()) {
    std::printf("\nresident %lld of n_ctx %lld tokens; totals: reused %lld, prefilled %lld, generated %lld\n",
                static_cast<long long>(report->tokens_resident), static_cast<long long>(report->n_ctx),
                static_cast<long long>(report->total_reused), static_cast<long long>(report->total_prefilled),
                static_cast<long long>(report->total_generated));
  }
  std::printf("(generated models have random weights: their text is noise, their speed is real)\n");
  return s.Close() ? 0 : 1;
}

// A `modeld serve` child process on a private socket, stopped with SIGTERM.
class DaemonProcess {
 public:
  static Result<std::unique_ptr<DaemonProcess>> Start(const std::string& model, int threads) {
    auto d = std::make_unique<DaemonProcess>();
    char dir_tmpl[] = "/tmp/modeld-demo-XXXXXX";
    if (::mkdtemp(dir_tmpl) == nullptr) return Fail(ErrorCode::kIoError, "cannot make a temporary folder");
    d->dir_ = dir_tmpl;
    d->socket_ = d->dir_ + "/modeld.sock";
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    std::vector<std::string> args = {self, "serve", "--socket", d->socket_, "--model", model, "--quiet"};
    if (threads > 0) {
      args.push_back("--threads");
      args.push_back(std::to_string(threads));
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&d->pid_, self.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
      return Fail(ErrorCode::kIoError, "cannot start " + self + " serve");
    }
    // Wait until it answers (model description happens before it listens).
    client::Client c(d->socket_);
    for (int i = 0; i < 600; ++i) {
      if (c.Health()) return d;
      int status = 0;
      if (::waitpid(d->pid_, &status, WNOHANG) == d->pid_) {
        d->pid_ = 0;
        return Fail(ErrorCode::kSessionUnavailable, "modeld serve exited during start-up");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return Fail(ErrorCode::kSessionUnavailable, "modeld serve did not answer on " + d->socket_);
  }

  ~DaemonProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      std::fprintf(stderr, "daemon stopped (%s)\n",
                   WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "exit 0" : "abnormal exit");
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  const std::string& socket() const { return socket_; }

 private:
  pid_t pid_ = 0;
  std::string dir_;
  std::string socket_;
};

}  // namespace

int RunDemo(const DemoOptions& opt) {
  std::string model = opt.model_path;
  if (model.empty()) {
    auto p = EnsureDefaultModel(true);
    if (!p) {
      std::fprintf(stderr, "modeld demo: %s\n", p.error().ToString().c_str());
      return 1;
    }
    model = *p;
  }
  OpenSessionRequest req;
  req.model_path = model;
  req.workspace_id = "demo";
  req.config.n_ctx = opt.n_ctx;
  req.config.threads = opt.threads;
  auto info = Service().Describe(req);
  if (!info) {
    std::fprintf(stderr, "modeld demo: %s\n", info.error().ToString().c_str());
    return 1;
  }
  std::printf("model: %s (%s, %u layers, n_embd %u, %s)\n", model.c_str(), info->architecture.c_str(),
              info->block_count, info->embedding_length, info->file_type_name.c_str());
  int last_pct = -1;
  auto progress = [&](const Progress& p) {
    const int pct = p.total > 0 ? static_cast<int>(100 * p.done / p.total) : 100;
    if (pct / 25 != last_pct / 25) std::fprintf(stderr, "loading model: %d%%\n", pct);
    last_pct = pct;
  };

  if (opt.via_daemon) {
    auto daemon = DaemonProcess::Start(model, opt.threads);
    if (!daemon) {
      std::fprintf(stderr, "modeld demo: %s\n", daemon.error().ToString().c_str());
      return 1;
    }
    std::printf("daemon: modeld serve on %s (the loop below runs through the wire protocol)\n",
                (*daemon)->socket().c_str());
    auto s = client::RemoteSession::Open(client::Client((*daemon)->socket()), "demo", {}, req.config, progress);
    if (!s) {
      std::fprintf(stderr, "modeld demo: %s\n", s.error().ToString().c_str());
      return 1;
    }
    return RunLoop(**s, opt);
  }
  req.progress = progress;
  auto session = Service().OpenSession(req);
  if (!session) {
    std::fprintf(stderr, "modeld demo: %s\n", session.error().ToString().c_str());
    return 1;
  }
  return RunLoop(**session, opt);
}

}  // namespace modeld::cli
