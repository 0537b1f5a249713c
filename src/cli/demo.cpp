#include "cli/demo.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cli/demo_corpus.h"
#include "cli/paths.h"
#include "client/remote_session.h"
#include "client/watcher.h"
#include "modeld/service.h"
#include "modeld/workspace.h"

namespace modeld::cli {
namespace {

constexpr std::string_view kSystem =
    "You are a coding assistant working inside the user's repository. Answer with short, correct code "
    "changes and explain them briefly. Prefer the project's existing helpers and style.";

struct File {
  std::string path;
  std::string content;
};

int Report(const Error& e) {
  std::fprintf(stderr, "modeld demo: %s\n", e.ToString().c_str());
  return 1;
}

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

double TtftMs(const AskResult& r) { return r.prefix.prefill_ms + r.suffix.prefill_ms + r.decode.first_token_ms; }

// The scripted loop, side by side: the same edits and questions in place
// (plain prefix reuse) and edit-aware, each on its own session.
int RunLoop(Session& in_place_session, Session& edit_aware_session, const DemoOptions& opt) {
  WorkspaceOptions ip;
  ip.mode = AssemblyMode::kInPlace;
  Workspace in_place(&in_place_session, ip);
  Workspace edit_aware(&edit_aware_session);
  std::vector<File> files;
  for (const auto& f : DemoCorpus()) files.push_back({std::string(f.path), std::string(f.content)});
  std::string map = "Repository map:\n";
  for (const auto& f : files) map += "  " + f.path + "\n";
  for (Workspace* w : {&in_place, &edit_aware}) {
    if (auto ok = w->SetSystem(std::string(kSystem)); !ok) return Report(ok.error());
    if (auto ok = w->SetRepoMap(map); !ok) return Report(ok.error());
    for (const auto& f : files) {
      if (auto ok = w->PutFile(f.path, f.content); !ok) return Report(ok.error());
    }
  }
  const std::vector<std::string> questions = {
      "Summarize what these files do.",
      "I changed one line; does the code still compile?",
      "Is the edit consistent with the rest of the file?",
      "What would you test next?",
  };
  std::printf("\n%-5s %-28s | %-26s | %-26s | %s\n", "", "", "in place (prefix reuse)", "edit-aware", "");
  std::printf("%-5s %-28s | %9s %16s | %9s %16s | %s\n", "turn", "edit", "prefilled", "ttft_ms", "prefilled", "ttft_ms",
              "decode_t/s");
  // Turns 1..N edit one line of one file; the last turn changes only the question.
  for (int turn = 0; turn <= opt.turns + 1; ++turn) {
    std::string edit = turn == 0 ? "(cold start)" : "(new question only)";
    if (turn > 0 && turn <= opt.turns) {
      File& f = files[static_cast<size_t>(turn - 1) % files.size()];
      const size_t line = 7 + 13 * static_cast<size_t>(turn);
      f.content = EditLine(f.content, line, "// edited in turn " + std::to_string(turn));
      edit = f.path + ":" + std::to_string(line + 1);
      for (Workspace* w : {&in_place, &edit_aware}) {
        if (auto ok = w->PutFile(f.path, f.content); !ok) return Report(ok.error());
      }
    }
    DecodeConfig dc;
    dc.max_tokens = opt.decode_tokens;
    const std::string& q = questions[static_cast<size_t>(turn) % questions.size()];
    auto a = in_place.Ask(q, dc, {});
    if (!a) return Report(a.error());
    auto b = edit_aware.Ask(q, dc, {});
    if (!b) return Report(b.error());
    std::printf("%-5d %-28s | %9lld %16.1f | %9lld %16.1f | %.1f\n", turn, edit.c_str(),
                static_cast<long long>(a->prefix.tokens_prefilled + a->suffix.tokens_prefilled), TtftMs(*a),
                static_cast<long long>(b->prefix.tokens_prefilled + b->suffix.tokens_prefilled), TtftMs(*b),
                b->decode.tokens_per_second);
    std::fflush(stdout);
  }
  const WorkspaceStats st = edit_aware.Stats();
  std::printf("\nedit-aware context: %lld tokens, of which %lld in the log (%lld change notes, %lld compactions)\n",
              static_cast<long long>(st.context_tokens), static_cast<long long>(st.log_tokens),
              static_cast<long long>(st.notes), static_cast<long long>(st.compactions));
  std::printf("(generated models have random weights: their text is noise, their speed is real)\n");
  const bool closed = in_place_session.Close().has_value() && edit_aware_session.Close().has_value();
  return closed ? 0 : 1;
}

// Polls `done` (state on the daemon) every 50 ms for up to `seconds`.
template <class F>
bool WaitUntil(F done, int seconds) {
  for (int i = 0; i < seconds * 20; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

Status WriteFileAtomically(const std::filesystem::path& path, const std::string& content) {
  std::filesystem::create_directories(path.parent_path());
  const auto tmp = path.string() + ".tmp~";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << content;
    if (!out) return Fail(ErrorCode::kIoError, "cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);  // as editors save: the watcher sees the whole new file
  if (ec) return Fail(ErrorCode::kIoError, "cannot rename " + tmp + ": " + ec.message());
  return {};
}

// The corpus as a folder on disk, kept in workspace "demo" by the watcher (`modeld ws watch`), and
// questions through the OpenAI API on the model "ws:demo", as an editor and an unchanged OpenAI
// tool would use it: a saved edit costs its change note, not the files.
int RunWatchedFolder(const client::Client& c, const std::string& dir, const DemoOptions& opt, int32_t n_ctx) {
  namespace fs = std::filesystem;
  const fs::path repo = fs::path(dir) / "repo";
  std::vector<File> files;
  for (const auto& f : DemoCorpus()) {
    files.push_back({std::string(f.path), std::string(f.content)});
    if (auto ok = WriteFileAtomically(repo / files.back().path, files.back().content); !ok) return Report(ok.error());
  }
  client::WatcherOptions wo;
  wo.dir = repo.string();
  wo.workspace = "demo";
  wo.config.emplace();
  wo.config->n_ctx = n_ctx;
  wo.config->threads = opt.threads;
  wo.log = [](const std::string& line) { std::fprintf(stderr, "watch: %s\n", line.c_str()); };
  client::Watcher watcher(c, wo);
  std::stop_source stop;
  Status watched;
  std::atomic<bool> watch_ended{false};
  std::thread watch([&] {
    watched = watcher.Run(stop.get_token());
    watch_ended = true;
  });
  struct StopWatch {
    std::stop_source& stop;
    std::thread& t;
    ~StopWatch() {
      stop.request_stop();
      t.join();
    }
  } stop_at_exit{stop, watch};
  std::printf("\nwatched folder: %s -> workspace demo (modeld ws watch); questions on the OpenAI API, model ws:demo\n",
              repo.string().c_str());
  const auto stats = [&]() -> std::optional<WorkspaceStats> {
    auto info = c.WorkspaceInfo("demo");
    if (!info) return std::nullopt;
    return info->stats;
  };
  if (!WaitUntil([&] { return watch_ended || (stats() && stats()->files == static_cast<int64_t>(files.size())); },
                 120) ||
      watch_ended) {
    stop.request_stop();  // joined by stop_at_exit; `watched` is read after the thread ended
    if (watch_ended && !watched) return Report(watched.error());
    return Report(Error(ErrorCode::kSessionUnavailable, "the watcher did not fill workspace demo"));
  }

  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  messages.push_back({{"role", "system"}, {"content", std::string(kSystem)}});
  std::printf("%-5s %-34s | %7s %7s %9s %10s\n", "turn", "before the question", "prompt", "cached", "prefilled",
              "prompt_ms");
  const std::vector<std::string> questions = {"Summarize what these files do.", "Does the edit I saved compile?",
                                              "And this one?"};
  for (size_t turn = 0; turn < questions.size(); ++turn) {
    std::string before = "(first: the system prompt, files)";
    if (turn > 0) {  // the demo saves an edit, as an editor would
      File& f = files[turn % files.size()];
      const size_t line = 5 + 11 * turn;
      f.content = EditLine(f.content, line, "// saved in the editor before turn " + std::to_string(turn + 1));
      const int64_t context_before = stats() ? stats()->context_tokens : 0;
      if (auto ok = WriteFileAtomically(repo / f.path, f.content); !ok) return Report(ok.error());
      // The watcher puts it, the daemon prefills its change note at once (eager prefill).
      if (!WaitUntil([&] { return stats() && stats()->context_tokens > context_before; }, 120)) {
        return Report(Error(ErrorCode::kSessionUnavailable, "the saved edit did not reach workspace demo"));
      }
      before = "saved " + f.path + ":" + std::to_string(line + 1);
    }
    messages.push_back({{"role", "user"}, {"content", questions[turn]}});
    auto r = c.ChatCompletion(
        {{"model", "ws:demo"}, {"messages", messages}, {"max_tokens", opt.decode_tokens}, {"temperature", 0}});
    if (!r) return Report(r.error());
    const auto& usage = (*r)["usage"];
    const int64_t prompt = usage.value("prompt_tokens", 0);
    const int64_t cached = usage["prompt_tokens_details"].value("cached_tokens", 0);
    std::printf("%-5zu %-34s | %7lld %7lld %9lld %10.1f\n", turn + 1, before.c_str(), static_cast<long long>(prompt),
                static_cast<long long>(cached), static_cast<long long>(prompt - cached),
                (*r)["timings"].value("prompt_ms", 0.0));
    std::fflush(stdout);
    messages.push_back({{"role", "assistant"}, {"content", (*r)["choices"][0]["message"].value("content", "")}});
  }
  std::printf(
      "(an edit saved a moment before a question is prefilled in the background: the question pays for "
      "itself only)\n");
  std::fflush(stdout);
  return 0;
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
  const std::string& dir() const { return dir_; }

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
  // Within the model's trained context, as the daemon requires.
  if (info->context_length > 0 && static_cast<uint32_t>(req.config.n_ctx) > info->context_length) {
    req.config.n_ctx = static_cast<int32_t>(info->context_length);
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
    if (!daemon) return Report(daemon.error());
    std::printf("daemon: modeld serve on %s (the loop below runs through the wire protocol)\n",
                (*daemon)->socket().c_str());
    client::Client c((*daemon)->socket());
    auto a = client::RemoteSession::Open(c, "demo-in-place", {}, req.config, progress);
    if (!a) return Report(a.error());
    auto b = client::RemoteSession::Open(c, "demo-edit-aware", {}, req.config, progress);
    if (!b) return Report(b.error());
    if (int rc = RunLoop(**a, **b, opt); rc != 0) return rc;
    return RunWatchedFolder(c, (*daemon)->dir(), opt, req.config.n_ctx);
  }
  req.progress = progress;
  auto a = Service().OpenSession(req);
  if (!a) return Report(a.error());
  req.workspace_id = "demo-edit-aware";
  auto b = Service().OpenSession(req);
  if (!b) return Report(b.error());
  return RunLoop(**a, **b, opt);
}

}  // namespace modeld::cli
