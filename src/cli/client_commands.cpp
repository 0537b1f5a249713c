#include "cli/client_commands.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "cli/args.h"
#include "cli/paths.h"
#include "cli/token_file.h"
#include "client/client.h"
#include "client/watcher.h"
#include "wire/codec.h"

namespace modeld::cli {
namespace {

using client::Client;
using client::StableParts;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kUsage =
    R"(  health [CONN]
        is the daemon up: its version, sessions and models
  sessions [CONN] [--json]
        the daemon's sessions: workspace, model, resident tokens, reuse totals, busy
  run [CONN] --workspace WS [--model M] [--ctx N] [--system TEXT] [--file PATH]... [--max-tokens N]
      [--temperature T] [--raw] PROMPT
        one turn on the workspace's warm session: the system text and files as the prefix, the
        prompt (or stdin) as the suffix; streams the reply, then a summary on stderr; Ctrl-C
        cancels. --raw: no chat-template markers
  report [CONN] [--json] WS
        a session's context report
  close [CONN] WS
        close a session and free its memory (its snapshot on disk is deleted too)
  snapshots [CONN] [--json] | snapshots show|delete [CONN] WS | snapshots fork [CONN] WS NEW
        the workspaces the daemon keeps on disk (docs/snapshot.md): list them; one, written
        first when live; delete one; copy one as workspace NEW (its first call restores it)
  ws open [CONN] WS [--model M] [--in-place] [--ctx N] [--system TEXT]
        open a workspace (edit-aware context assembly; --in-place rewrites files where they stand)
  ws put [CONN] WS PATH [--as NAME]
        send a local file's content as workspace file NAME (default PATH; relative); prints the
        change (add, edit, full, unchanged) and the bytes it added to the context
  ws rm [CONN] WS PATH | ws mv [CONN] WS FROM TO
        remove or rename a workspace file
  ws show [CONN] WS | ws context [CONN] WS | ws compact [CONN] WS [--keep-turns N]
        the workspace's stats and files; its assembled context; fold its change notes into the files
        (--keep-turns N: and keep only the last N conversation turns, once the conversation fills it)
  ws watch [CONN] DIR [--workspace WS] [--model M] [--ctx N] [--include GLOB]... [--exclude GLOB]...
      [--budget-tokens N] [--debounce-ms N] [--max-file-kb N]
        keep workspace WS (default: DIR's name) in sync with DIR until Ctrl-C: its git-tracked and
        untracked-not-ignored files (all files outside git), text only, in path order while they fit
        the token budget (default half of n_ctx); see docs/watch.md
  ask [CONN] WS [--max-tokens N] [--temperature T] QUESTION
        ask about the workspace (QUESTION or stdin); streams the answer, then a summary on stderr;
        Ctrl-C cancels
  CONN: --socket PATH (default $MODELD_HOME/modeld.sock) | --port N --token-file FILE [--host H]
)";

int Fatal(const std::string& msg) {
  std::fprintf(stderr, "modeld: %s\n", msg.c_str());
  return 1;
}

int Fatal(const Error& e) {
  if (e.Is(ErrorCode::kSessionUnavailable) && e.reason() == "unreachable") {
    return Fatal(e.message() + "\n  (is the daemon running? start it with `modeld serve`)");
  }
  return Fatal(e.ToString());
}

int UsageError(std::string_view cmd, const std::string& why) {
  if (!why.empty()) std::fprintf(stderr, "modeld %.*s: %s\n", static_cast<int>(cmd.size()), cmd.data(), why.c_str());
  std::fprintf(stderr, "usage:\n%.*s", static_cast<int>(kUsage.size()), kUsage.data());
  return 2;
}

// --socket PATH | --port N --token-file F [--host H]
std::optional<Client> Connect(Args& a, std::string* why) {
  const auto socket = a.Value("--socket");
  const auto port = a.Int("--port", 0);
  const auto token_file = a.Value("--token-file");
  const auto host = a.Value("--host").value_or("127.0.0.1");
  if (!a.error().empty()) {
    *why = a.error();
    return std::nullopt;
  }
  if (port == 0) {
    if (token_file) {
      *why = "--token-file goes with --port";
      return std::nullopt;
    }
    return Client(socket.value_or(HomeDir() + "/modeld.sock"));
  }
  if (socket || port < 0 || port > 65535 || !token_file) {
    *why = socket ? "use either --socket or --port" : !token_file ? "--port needs --token-file" : "bad --port";
    return std::nullopt;
  }
  auto token = ReadTokenFile(*token_file);
  if (!token) {
    *why = token.error().message();
    return std::nullopt;
  }
  return Client(host, static_cast<int>(port), *token);
}

std::string Idle(int64_t ms) {
  char buf[32];
  if (ms < 60'000) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000);
  } else if (ms < 3'600'000) {
    std::snprintf(buf, sizeof buf, "%lldm", static_cast<long long>(ms / 60'000));
  } else {
    std::snprintf(buf, sizeof buf, "%.1fh", static_cast<double>(ms) / 3'600'000);
  }
  return buf;
}

wire::Json InfoJson(const client::SessionInfo& s) {
  wire::Json j = wire::ToJson(s.report);
  j["model"] = s.model;
  j["busy"] = s.busy;
  j["last_used_ms_ago"] = s.last_used_ms_ago;
  return j;
}

int CmdHealth(const Client& c, Args& a) {
  if (!a.rest().empty()) return UsageError("health", "unexpected argument " + a.rest()[0]);
  auto h = c.Health();
  if (!h) return Fatal(h.error());
  std::printf("modeld %s at %s: %s, %lld session%s, %lld model%s\n", h->version.c_str(), c.Address().c_str(),
              h->status.c_str(), static_cast<long long>(h->sessions), h->sessions == 1 ? "" : "s",
              static_cast<long long>(h->models), h->models == 1 ? "" : "s");
  auto models = c.Models();
  if (!models) return Fatal(models.error());
  for (const auto& m : *models) {
    const std::string kind = m.pooling.empty() ? "generative" : "embedding (" + m.pooling + ")";
    std::printf("  %-24s %-10s ctx %-7lld %-18s %s\n", m.model.c_str(), m.architecture.c_str(),
                static_cast<long long>(m.context_length), kind.c_str(), m.path.c_str());
  }
  return h->status == "ok" ? 0 : 1;
}

int CmdSessions(const Client& c, Args& a) {
  const bool json = a.Flag("--json");
  if (!a.rest().empty()) return UsageError("sessions", "unexpected argument " + a.rest()[0]);
  auto list = c.ListSessions();
  if (!list) return Fatal(list.error());
  if (json) {
    wire::Json arr = wire::Json::array();
    for (const auto& s : *list) arr.push_back(InfoJson(s));
    std::printf("%s\n", wire::Dump(wire::Json{{"sessions", arr}}, 2).c_str());
    return 0;
  }
  if (list->empty()) {
    std::printf("no sessions\n");
    return 0;
  }
  int ws_w = 9, model_w = 5;
  for (const auto& s : *list) {
    ws_w = std::max(ws_w, static_cast<int>(s.report.workspace_id.size()));
    model_w = std::max(model_w, static_cast<int>(s.model.size()));
  }
  std::printf("%-*s  %-*s  %9s  %7s  %10s  %10s  %-4s  %s\n", ws_w, "WORKSPACE", model_w, "MODEL", "RESIDENT", "N_CTX",
              "REUSED", "PREFILLED", "BUSY", "IDLE");
  for (const auto& s : *list) {
    const auto& r = s.report;
    std::printf("%-*s  %-*s  %9lld  %7lld  %10lld  %10lld  %-4s  %s\n", ws_w, r.workspace_id.c_str(), model_w,
                s.model.c_str(), static_cast<long long>(r.tokens_resident), static_cast<long long>(r.n_ctx),
                static_cast<long long>(r.total_reused), static_cast<long long>(r.total_prefilled),
                s.busy ? "yes" : "no", s.busy ? "-" : Idle(s.last_used_ms_ago).c_str());
  }
  return 0;
}

int CmdReport(const Client& c, Args& a) {
  const bool json = a.Flag("--json");
  if (a.rest().size() != 1) return UsageError("report", "needs one workspace");
  auto info = c.Report(a.rest()[0]);
  if (!info) return Fatal(info.error());
  if (json) {
    std::printf("%s\n", wire::Dump(InfoJson(*info), 2).c_str());
    return 0;
  }
  const ContextReport& r = info->report;
  auto ll = [](int64_t v) { return static_cast<long long>(v); };
  std::printf("workspace   %s (model %s, backend %s)\n", r.workspace_id.c_str(), info->model.c_str(),
              r.backend.c_str());
  std::printf("resident    %lld of %lld tokens (prefix %lld, suffix %lld, generated %lld)\n", ll(r.tokens_resident),
              ll(r.n_ctx), ll(r.prefix_tokens), ll(r.suffix_tokens), ll(r.generated_tokens));
  std::printf("totals      reused %lld, prefilled %lld, generated %lld; reuse fallbacks %lld\n", ll(r.total_reused),
              ll(r.total_prefilled), ll(r.total_generated), ll(r.reuse_fallbacks));
  std::printf("kv cache    %.1f MiB%s\n", static_cast<double>(r.kv_bytes) / (1 << 20),
              r.partial_trim ? "" : " (cannot trim: an edit re-prefills from token 0)");
  std::printf("state       %s\n", r.fatal      ? "fatal"
                                  : info->busy ? "busy"
                                               : ("idle " + Idle(info->last_used_ms_ago)).c_str());
  std::printf("manifest    %s\n", r.manifest_digest.empty() ? "(no prefix)" : r.manifest_digest.c_str());
  std::printf("model       %s\n", r.model_digest.c_str());
  if (!r.segments.empty()) {
    std::printf("segments\n  %7s %7s  %-12s %s\n", "START", "TOKENS", "KIND", "ID");
    for (const auto& s : r.segments) {
      const std::string kind(SegmentKindName(s.kind));
      std::printf("  %7lld %7lld  %-12s %s\n", ll(s.start), ll(s.n_tokens), kind.c_str(), s.id.c_str());
    }
  }
  return 0;
}

int CmdSnapshots(const Client& c, Args& a) {
  const bool json = a.Flag("--json");
  auto rest = a.rest();
  const std::string sub = rest.empty() ? "list" : rest[0];
  if (!rest.empty()) rest.erase(rest.begin());
  auto ll = [](const wire::Json& v) { return static_cast<long long>(v.get<int64_t>()); };
  if (sub == "list" && rest.empty()) {
    auto list = c.ListSnapshots();
    if (!list) return Fatal(list.error());
    if (json) {
      std::printf("%s\n", wire::Dump(*list, 2).c_str());
      return 0;
    }
    const auto& arr = (*list)["snapshots"];
    if (arr.empty()) {
      std::printf("no snapshots\n");
      return 0;
    }
    std::printf("%-24s  %-16s  %8s  %9s  %6s  %-4s  %s\n", "WORKSPACE", "MODEL", "TOKENS", "MIB", "FILES", "LIVE",
                "SAVED");
    for (const auto& s : arr) {
      const auto saved = static_cast<time_t>(s["saved_unix_ms"].get<int64_t>() / 1000);
      char when[32];
      std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&saved));
      std::printf("%-24s  %-16s  %8lld  %9.1f  %6lld  %-4s  %s\n", s["workspace"].get<std::string>().c_str(),
                  s["model"].get<std::string>().c_str(), ll(s["tokens"]),
                  static_cast<double>(s["file_bytes"].get<int64_t>()) / (1 << 20), ll(s["files"]),
                  s["live"].get<bool>() ? "yes" : "no", when);
    }
    return 0;
  }
  if ((sub == "show" || sub == "delete") && rest.size() == 1) {
    if (sub == "delete") {
      if (auto ok = c.DeleteSnapshot(rest[0]); !ok) return Fatal(ok.error());
      std::printf("deleted the snapshot of %s\n", rest[0].c_str());
      return 0;
    }
    auto s = c.ShowSnapshot(rest[0]);
    if (!s) return Fatal(s.error());
    std::printf("%s\n", wire::Dump(*s, 2).c_str());
    return 0;
  }
  if (sub == "fork" && rest.size() == 2) {
    auto s = c.ForkSnapshot(rest[0], rest[1]);
    if (!s) return Fatal(s.error());
    std::printf("forked %s as %s (%lld tokens)\n", rest[0].c_str(), rest[1].c_str(), ll((*s)["tokens"]));
    return 0;
  }
  return UsageError("snapshots", "list | show WS | delete WS | fork WS NEW");
}

int CmdClose(const Client& c, Args& a) {
  if (a.rest().size() != 1) return UsageError("close", "needs one workspace");
  if (auto ok = c.CloseSession(a.rest()[0]); !ok) return Fatal(ok.error());
  std::printf("closed %s\n", a.rest()[0].c_str());
  return 0;
}

// Ctrl-C as a stop request: the first SIGINT (or SIGTERM) cancels the run cleanly, a second one
// quits at once. Signals are taken by a thread with sigtimedwait, because requesting a stop is
// not async-signal-safe.
class InterruptToStop {
 public:
  InterruptToStop() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
    watcher_ = std::jthread([this](std::stop_token done) {
      while (!done.stop_requested()) {
        const timespec tick{0, 50'000'000};
        if (sigtimedwait(&set_, nullptr, &tick) < 0) continue;
        if (source_.stop_requested()) std::_Exit(130);
        std::fprintf(stderr, "\nmodeld: cancelling (Ctrl-C again to quit)\n");
        source_.request_stop();
      }
    });
  }
  ~InterruptToStop() {
    watcher_.request_stop();
    watcher_.join();
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  InterruptToStop(const InterruptToStop&) = delete;
  InterruptToStop& operator=(const InterruptToStop&) = delete;

  std::stop_token token() const { return source_.get_token(); }
  bool stopped() const { return source_.stop_requested(); }

 private:
  sigset_t set_{};
  sigset_t old_{};
  std::stop_source source_;
  std::jthread watcher_;  // last: started after, and joined before, the members it uses go
};

// Progress on stderr, rewritten in place; only on a terminal.
class ProgressLine {
 public:
  ProgressLine() : on_(isatty(STDERR_FILENO) != 0) {}
  ~ProgressLine() { Clear(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  ProgressFunc Func() {
    if (!on_) return {};
    return [this](const Progress& p) {
      std::fprintf(stderr, "\r\033[K%s %lld/%lld", p.stage.c_str(), static_cast<long long>(p.done),
                   static_cast<long long>(p.total));
      shown_ = true;
    };
  }
  void Clear() {
    if (shown_) std::fprintf(stderr, "\r\033[K");
    shown_ = false;
  }

 private:
  bool on_;
  bool shown_ = false;
};

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int CmdRun(const Client& c, Args& a) {
  const auto ws = a.Value("--workspace");
  const std::string model = a.Value("--model").value_or("");
  const auto system = a.Value("--system");
  const std::vector<std::string> files = a.Values("--file");
  const long long ctx = a.Int("--ctx", 0);
  DecodeConfig dc;
  dc.max_tokens = static_cast<int32_t>(a.Int("--max-tokens", dc.max_tokens));
  dc.temperature = static_cast<float>(a.Double("--temperature", dc.temperature));
  const bool raw = a.Flag("--raw");
  if (!a.error().empty()) return UsageError("run", a.error());
  if (!ws) return UsageError("run", "needs --workspace WS");
  std::string prompt;
  for (const auto& p : a.rest()) prompt += (prompt.empty() ? "" : " ") + p;
  if (a.rest().empty() && isatty(STDIN_FILENO) == 0) {
    prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  if (prompt.empty()) return UsageError("run", "needs a prompt");

  ContextManifest prefix;
  if (system) prefix.Add("system", SegmentKind::kSystem, *system + "\n");
  for (const auto& path : files) {
    auto content = ReadFile(path);
    if (!content) return Fatal("cannot read " + path);
    prefix.Add("file:" + path, SegmentKind::kFile, "=== " + path + " ===\n" + *content + "\n");
  }

  InterruptToStop interrupt;
  ProgressLine progress;
  std::optional<SessionConfig> config;
  if (ctx > 0) {
    config.emplace();
    config->n_ctx = static_cast<int32_t>(ctx);
  }
  auto opened = c.OpenSession(*ws, model, config, progress.Func());
  progress.Clear();
  if (!opened) return Fatal(opened.error());
  if (interrupt.stopped()) return Fatal("cancelled"), 130;

  // Chat-template markers as explicit segments, when the model's vocab has ChatML tokens.
  bool chatml = false;
  if (!raw) {
    auto t = c.Tokenize(*ws, "<|im_start|>", true);
    if (!t) return Fatal(t.error());
    chatml = t->size() == 1;
  }
  if (chatml && !prefix.empty()) {
    std::vector<ManifestSegment> segs;
    segs.push_back(ManifestSegment::Make("sys-open", SegmentKind::kTemplate, "<|im_start|>system\n", true));
    for (auto& s : prefix.mutable_segments()) segs.push_back(std::move(s));
    segs.push_back(ManifestSegment::Make("sys-close", SegmentKind::kTemplate, "<|im_end|>\n", true));
    prefix = ContextManifest(std::move(segs));
  }
  SuffixInput suffix;
  if (chatml) {
    suffix.segments.push_back(ManifestSegment::Make("user-open", SegmentKind::kTemplate, "<|im_start|>user\n", true));
  }
  suffix.segments.push_back(ManifestSegment::Make("user", SegmentKind::kUser, prompt));
  if (chatml) {
    suffix.segments.push_back(
        ManifestSegment::Make("assistant-open", SegmentKind::kTemplate, "<|im_end|>\n<|im_start|>assistant\n", true));
  }

  const auto t0 = Clock::now();
  auto ps = c.EnsurePrefix(*ws, PrefixInput{prefix, progress.Func()});
  progress.Clear();
  if (!ps) return Fatal(ps.error());
  if (interrupt.stopped()) return Fatal("cancelled after the prefix"), 130;
  suffix.prefix_digest = ps->manifest_digest;
  suffix.progress = progress.Func();
  auto ss = c.PrefillSuffix(*ws, suffix);
  progress.Clear();
  if (!ss) return Fatal(ss.error());
  if (interrupt.stopped()) return Fatal("cancelled after the suffix"), 130;

  dc.cancel = interrupt.token();
  std::optional<Clock::time_point> first;
  bool ends_in_newline = true;
  auto dr = c.Decode(*ws, dc, [&](const StreamChunk& chunk) {
    if (!first && chunk.n_tokens > 0) first = Clock::now();
    if (!chunk.text.empty()) {
      std::fwrite(chunk.text.data(), 1, chunk.text.size(), stdout);
      std::fflush(stdout);
      ends_in_newline = chunk.text.back() == '\n';
    }
    return true;
  });
  if (!ends_in_newline) std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!dr) return Fatal(dr.error());

  const std::string ttft =
      first ? std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(*first - t0).count()) + " ms" : "-";
  const std::string finish(FinishReasonName(dr->finish));
  std::fprintf(stderr,
               "modeld: %s: %lld tokens reused, %lld prefilled (prefix %lld + %lld, suffix %lld + %lld); "
               "TTFT %s; %d tokens at %.1f tok/s (%s)\n",
               ws->c_str(), static_cast<long long>(ps->tokens_reused + ss->tokens_reused),
               static_cast<long long>(ps->tokens_prefilled + ss->tokens_prefilled),
               static_cast<long long>(ps->tokens_reused), static_cast<long long>(ps->tokens_prefilled),
               static_cast<long long>(ss->tokens_reused), static_cast<long long>(ss->tokens_prefilled), ttft.c_str(),
               dr->tokens_generated, dr->tokens_per_second, finish.c_str());
  return dr->finish == FinishReason::kCancelled ? 130 : 0;
}

// A workspace call failed. When the workspace itself is gone (never opened, closed, evicted: its
// files went with it), say how to recover; not_found alone may also mean a missing file.
int WorkspaceFatal(const Client& c, const std::string& ws, const Error& e) {
  auto is_gone = [](const Error& x) {
    return x.Is(ErrorCode::kSessionClosed) || (x.Is(ErrorCode::kSessionUnavailable) && x.reason() == "evicted");
  };
  bool gone = is_gone(e);
  if (e.Is(ErrorCode::kNotFound)) {
    auto info = c.WorkspaceInfo(ws);
    gone = !info && (info.error().Is(ErrorCode::kNotFound) || is_gone(info.error()));
  }
  if (gone) return Fatal(e.ToString() + "\n  (open it with `modeld ws open " + ws + "` and put its files again)");
  return Fatal(e);
}

std::string StatsLine(const WorkspaceStats& st) {
  const std::string mode(AssemblyModeName(st.mode));
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%s, %lld files, %lld log entries (%lld notes), %lld compactions; context %lld tokens"
                " (log %lld)",
                mode.c_str(), static_cast<long long>(st.files), static_cast<long long>(st.log_entries),
                static_cast<long long>(st.notes), static_cast<long long>(st.compactions),
                static_cast<long long>(st.context_tokens), static_cast<long long>(st.log_tokens));
  return buf;
}

int WsOpen(const Client& c, Args& a) {
  const std::string model = a.Value("--model").value_or("");
  const bool in_place = a.Flag("--in-place");
  const long long ctx = a.Int("--ctx", 0);
  const auto system = a.Value("--system");
  if (!a.error().empty()) return UsageError("ws open", a.error());
  if (a.rest().size() != 1) return UsageError("ws open", "needs one workspace");
  const std::string& ws = a.rest()[0];
  std::optional<SessionConfig> config;
  if (ctx > 0) {
    config.emplace();
    config->n_ctx = static_cast<int32_t>(ctx);
  }
  const AssemblyMode mode = in_place ? AssemblyMode::kInPlace : AssemblyMode::kEditAware;
  ProgressLine progress;
  auto opened = c.OpenSession(ws, model, config, progress.Func(), mode);
  progress.Clear();
  if (!opened) return Fatal(opened.error());
  const std::string assembly(AssemblyModeName(opened->assembly));
  std::printf("%s %s (model %s, %s, n_ctx %lld)\n", opened->created ? "opened" : "attached to warm", ws.c_str(),
              opened->model.c_str(), assembly.c_str(), static_cast<long long>(opened->report.n_ctx));
  if (!opened->created && opened->assembly != mode) {
    std::fprintf(stderr, "modeld: %s was already open as %s; close it first to change the assembly\n", ws.c_str(),
                 assembly.c_str());
  }
  if (system) {
    StableParts parts;
    parts.system = *system;
    if (auto ok = c.SetStable(ws, parts); !ok) return WorkspaceFatal(c, ws, ok.error());
  }
  return 0;
}

int WsPut(const Client& c, Args& a) {
  auto name = a.Value("--as");
  if (!a.error().empty()) return UsageError("ws put", a.error());
  if (a.rest().size() != 2) return UsageError("ws put", "needs a workspace and a file");
  const std::string& ws = a.rest()[0];
  const std::string& path = a.rest()[1];
  if (!name) {
    name = path;
    while (name->starts_with("./")) name->erase(0, 2);  // the daemon refuses "." components
  }
  if (name->starts_with("/")) {
    return UsageError("ws put", "workspace paths are relative: give one with --as NAME (e.g. --as src/main.c)");
  }
  auto content = ReadFile(path);
  if (!content) return Fatal("cannot read " + path);
  auto r = c.PutFile(ws, *name, *content);
  if (!r) return WorkspaceFatal(c, ws, r.error());
  if (r->change == "unchanged") {
    std::printf("%s: unchanged\n", name->c_str());
  } else {
    std::printf("%s: %s (%lld bytes added to the context)\n", name->c_str(), r->change.c_str(),
                static_cast<long long>(r->note_bytes));
  }
  return 0;
}

int WsRemove(const Client& c, Args& a) {
  if (a.rest().size() != 2) return UsageError("ws rm", "needs a workspace and a path");
  if (auto ok = c.RemoveFile(a.rest()[0], a.rest()[1]); !ok) return WorkspaceFatal(c, a.rest()[0], ok.error());
  std::printf("removed %s\n", a.rest()[1].c_str());
  return 0;
}

int WsRename(const Client& c, Args& a) {
  if (a.rest().size() != 3) return UsageError("ws mv", "needs a workspace, a path and its new path");
  if (auto ok = c.RenameFile(a.rest()[0], a.rest()[1], a.rest()[2]); !ok) {
    return WorkspaceFatal(c, a.rest()[0], ok.error());
  }
  std::printf("renamed %s -> %s\n", a.rest()[1].c_str(), a.rest()[2].c_str());
  return 0;
}

int WsShow(const Client& c, Args& a) {
  if (a.rest().size() != 1) return UsageError("ws show", "needs one workspace");
  auto info = c.WorkspaceInfo(a.rest()[0]);
  if (!info) return WorkspaceFatal(c, a.rest()[0], info.error());
  std::printf("%s: %s\n", a.rest()[0].c_str(), StatsLine(info->stats).c_str());
  for (const auto& f : info->files) std::printf("  %10lld  %s\n", static_cast<long long>(f.bytes), f.path.c_str());
  return 0;
}

int WsContext(const Client& c, Args& a) {
  if (a.rest().size() != 1) return UsageError("ws context", "needs one workspace");
  auto text = c.Context(a.rest()[0]);
  if (!text) return WorkspaceFatal(c, a.rest()[0], text.error());
  std::fwrite(text->data(), 1, text->size(), stdout);
  return 0;
}

int WsCompact(const Client& c, Args& a) {
  const int64_t keep_turns = a.Int("--keep-turns", -1);
  if (!a.error().empty()) return UsageError("ws compact", a.error());
  if (a.rest().size() != 1) return UsageError("ws compact", "needs one workspace");
  WorkspaceStats st;
  auto ps = c.Compact(a.rest()[0], &st, keep_turns);
  if (!ps) return WorkspaceFatal(c, a.rest()[0], ps.error());
  std::printf("compacted %s: %lld tokens reused, %lld prefilled, %lld resident\n  %s\n", a.rest()[0].c_str(),
              static_cast<long long>(ps->tokens_reused), static_cast<long long>(ps->tokens_prefilled),
              static_cast<long long>(ps->tokens_resident), StatsLine(st).c_str());
  return 0;
}

int WsWatch(const Client& c, Args& a) {
  client::WatcherOptions opt;
  const auto ws = a.Value("--workspace");
  opt.model = a.Value("--model").value_or("");
  const long long ctx = a.Int("--ctx", 0);
  opt.include = a.Values("--include");
  opt.exclude = a.Values("--exclude");
  opt.budget_tokens = a.Int("--budget-tokens", 0);
  const long long debounce_ms = a.Int("--debounce-ms", opt.debounce.count());
  const long long max_kb = a.Int("--max-file-kb", opt.max_file_bytes >> 10);
  if (!a.error().empty()) return UsageError("ws watch", a.error());
  if (a.rest().size() != 1) return UsageError("ws watch", "needs one directory");
  if (opt.budget_tokens < 0) return UsageError("ws watch", "--budget-tokens must be positive (0: half of n_ctx)");
  if (debounce_ms < 0 || debounce_ms > 60'000) return UsageError("ws watch", "--debounce-ms must be 0 to 60000");
  if (max_kb < 1 || max_kb > 1024) return UsageError("ws watch", "--max-file-kb must be 1 to 1024");
  opt.dir = a.rest()[0];
  opt.workspace = ws.value_or(client::WorkspaceIdForDir(opt.dir));
  if (!client::ValidWorkspaceId(opt.workspace)) return UsageError("ws watch", "invalid workspace id " + opt.workspace);
  opt.debounce = std::chrono::milliseconds(debounce_ms);
  opt.max_file_bytes = max_kb << 10;
  if (ctx > 0) {
    opt.config.emplace();
    opt.config->n_ctx = static_cast<int32_t>(ctx);
  }
  opt.log = [](const std::string& line) { std::fprintf(stderr, "modeld: %s\n", line.c_str()); };
  InterruptToStop interrupt;
  client::Watcher watcher(c, std::move(opt));
  if (auto ok = watcher.Run(interrupt.token()); !ok) return Fatal(ok.error());
  return 0;
}

int CmdAsk(const Client& c, Args& a) {
  DecodeConfig dc;
  dc.max_tokens = static_cast<int32_t>(a.Int("--max-tokens", dc.max_tokens));
  dc.temperature = static_cast<float>(a.Double("--temperature", dc.temperature));
  if (!a.error().empty()) return UsageError("ask", a.error());
  if (a.rest().empty()) return UsageError("ask", "needs a workspace and a question");
  const std::string ws = a.rest()[0];
  std::string question;
  for (size_t i = 1; i < a.rest().size(); ++i) question += (question.empty() ? "" : " ") + a.rest()[i];
  if (a.rest().size() == 1 && isatty(STDIN_FILENO) == 0) {
    question.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  if (question.empty()) return UsageError("ask", "needs a question");

  InterruptToStop interrupt;
  dc.cancel = interrupt.token();
  const auto t0 = Clock::now();
  std::optional<Clock::time_point> first;
  bool ends_in_newline = true;
  WorkspaceStats st;
  ProgressLine progress;  // e.g. a compaction the ask waits for
  auto r = c.Ask(
      ws, question, dc,
      [&](const StreamChunk& chunk) {
        progress.Clear();
        if (!first && chunk.n_tokens > 0) first = Clock::now();
        if (!chunk.text.empty()) {
          std::fwrite(chunk.text.data(), 1, chunk.text.size(), stdout);
          std::fflush(stdout);
          ends_in_newline = chunk.text.back() == '\n';
        }
        return true;
      },
      &st, progress.Func());
  progress.Clear();
  if (!ends_in_newline) std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!r) return WorkspaceFatal(c, ws, r.error());

  // TTFT as the user saw it: from the request, so it includes the context and question prefill.
  const std::string ttft =
      first ? std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(*first - t0).count()) + " ms" : "-";
  const std::string finish(FinishReasonName(r->decode.finish));
  if (r->decode.finish == FinishReason::kCancelled) {
    std::fprintf(stderr, "modeld: %s: cancelled after %d tokens; TTFT %s\n", ws.c_str(), r->decode.tokens_generated,
                 ttft.c_str());
    return 130;
  }
  std::fprintf(stderr,
               "modeld: %s: prefix %lld reused + %lld prefilled, suffix %lld prefilled; TTFT %s; "
               "%d tokens at %.1f tok/s (%s)%s; context %lld tokens\n",
               ws.c_str(), static_cast<long long>(r->prefix.tokens_reused),
               static_cast<long long>(r->prefix.tokens_prefilled), static_cast<long long>(r->suffix.tokens_prefilled),
               ttft.c_str(), r->decode.tokens_generated, r->decode.tokens_per_second, finish.c_str(),
               r->compacted ? "; compacted first" : "", static_cast<long long>(r->suffix.tokens_resident));
  return 0;
}

// `modeld ws SUB ...`: the subcommand is argv[2].
int RunWorkspaceCommand(int argc, char** argv) {
  const std::string_view sub = argc > 2 ? std::string_view(argv[2]) : std::string_view();
  using Handler = int (*)(const Client&, Args&);
  Handler h = nullptr;
  if (sub == "open") h = WsOpen;
  if (sub == "put") h = WsPut;
  if (sub == "rm") h = WsRemove;
  if (sub == "mv") h = WsRename;
  if (sub == "show") h = WsShow;
  if (sub == "context") h = WsContext;
  if (sub == "compact") h = WsCompact;
  if (sub == "watch") h = WsWatch;
  if (!h) return UsageError("ws", sub.empty() ? "needs a subcommand" : "unknown subcommand '" + std::string(sub) + "'");
  Args args(argc, argv, 3);
  std::string why;
  auto c = Connect(args, &why);
  if (!c) return UsageError("ws " + std::string(sub), why);
  return h(*c, args);
}

}  // namespace

std::string_view ClientCommandsUsage() { return kUsage; }

int RunClientCommand(std::string_view cmd, int argc, char** argv) {
  using Handler = int (*)(const Client&, Args&);
  Handler h = nullptr;
  if (cmd == "health") h = CmdHealth;
  if (cmd == "sessions") h = CmdSessions;
  if (cmd == "run") h = CmdRun;
  if (cmd == "report") h = CmdReport;
  if (cmd == "close") h = CmdClose;
  if (cmd == "snapshots") h = CmdSnapshots;
  if (cmd == "ask") h = CmdAsk;
  if (cmd == "ws") return RunWorkspaceCommand(argc, argv);
  if (!h) return -1;
  Args args(argc, argv, 2);
  std::string why;
  auto c = Connect(args, &why);
  if (!c) return UsageError(cmd, why);
  return h(*c, args);
}

}  // namespace modeld::cli
