#include "cli/serve.h"

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli/paths.h"
#include "cli/token_file.h"
#include "daemon/server.h"

namespace modeld::cli {

namespace fs = std::filesystem;

std::string DefaultSocketPath() { return HomeDir() + "/modeld.sock"; }

int RunServe(const ServeOptions& o) {
  // Session contexts (KV and compute buffers, MiBs to hundreds of MiBs) are made and freed on
  // threads of their own (a compaction's fork, a swap). glibc raises its mmap threshold after
  // each such free, so later ones came from per-thread heaps that fragmented and never shrank:
  // RSS grew with every compaction (tiny model, 33 compactions: 118 -> 298 MiB). A fixed
  // threshold keeps them mmapped and returned on free (same run: 116-152 MiB); at 4 MiB, per-token
  // buffers (a sampler's candidates: 1.8 MB at a 152k vocabulary) stay on the heap.
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  // Each connection holds a descriptor: take the hard limit, so --max-connections is reachable.
  if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  daemon::ServerOptions opt;
  opt.socket_path = o.socket_path.empty() ? DefaultSocketPath() : o.socket_path;
  opt.host = o.host;
  opt.port = o.port;
  opt.allow_remote = o.allow_remote;
  opt.threads = o.threads;
  opt.max_ctx = o.max_ctx;
  opt.max_connections = o.max_connections;
  opt.kv_budget_bytes = o.kv_budget_mb << 20;
  opt.max_sessions = o.max_sessions;
  opt.max_body_bytes = o.max_body_mb << 20;
  opt.log_requests = o.verbose;
  opt.chat_ctx = o.ctx_size;
  opt.chat_flash_attn = o.flash_attn;
  if (o.snapshots) {
    opt.snapshot_dir = o.snapshot_dir.empty() ? opt.socket_path + ".snapshots" : o.snapshot_dir;
    opt.snapshot_budget_bytes = o.snapshot_budget_mb << 20;
    opt.snapshot_idle = std::chrono::seconds(o.snapshot_idle_s);
    opt.snapshot_warm = o.snapshot_warm;
  }
  if (!o.chat_template_file.empty()) {
    auto t = ReadSmallFile(o.chat_template_file, kMaxChatTemplateBytes);
    if (!t) {
      std::fprintf(stderr, "modeld serve: --chat-template-file: %s\n", t.error().message().c_str());
      return 2;
    }
    opt.chat_template = std::move(*t);
  }
  if (o.port != 0) {
    if (o.token_file.empty()) {
      std::fprintf(stderr, "modeld serve: --port needs --token-file FILE (its first line is the bearer token)\n");
      return 2;
    }
    auto token = ReadTokenFile(o.token_file);
    if (!token) {
      std::fprintf(stderr, "modeld serve: %s\n", token.error().message().c_str());
      return 2;
    }
    opt.token = std::move(*token);
  }
  // Models: files, or every *.gguf in a folder; none = the built-in default.
  for (const auto& m : o.models) {
    std::error_code ec;
    if (fs::is_directory(m, ec)) {
      for (const auto& e : fs::directory_iterator(m, ec)) {
        if (e.path().extension() == ".gguf") opt.models.push_back(e.path().string());
      }
    } else {
      opt.models.push_back(m);
    }
  }
  if (o.models.empty()) {
    auto p = EnsureDefaultModel(true);
    if (!p) {
      std::fprintf(stderr, "modeld serve: %s\n", p.error().ToString().c_str());
      return 1;
    }
    opt.models.push_back(*p);
  }

  // Signals are taken by a waiting thread, not a handler: Stop() is not async-signal-safe.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto server = daemon::Server::Start(opt);
  if (!server) {
    std::fprintf(stderr, "modeld serve: %s\n", server.error().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "modeld: serving %zu model(s) on %s", opt.models.size(), opt.socket_path.c_str());
  if ((*server)->port() > 0) std::fprintf(stderr, " and %s:%d", opt.host.c_str(), (*server)->port());
  std::fprintf(stderr, "\n");
  std::fflush(stderr);

  int sig = 0;
  sigwait(&set, &sig);
  std::fprintf(stderr, "modeld: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  // Stop() cancels what can be cancelled (decodes and prefills between batches, model loads,
  // background work, idle connections); a step that cannot be interrupted (one llama.cpp batch,
  // a context allocation) is bounded by this deadline, and a second signal ends it at once:
  // either way the socket is removed and the exit status is 0 (docs/RELIABILITY.md).
  std::thread([socket = opt.socket_path, set] {
    timespec deadline{kStopDeadlineSeconds, 0};
    const bool signalled = sigtimedwait(&set, nullptr, &deadline) > 0;
    std::fprintf(stderr, "modeld: %s: exiting without waiting further\n",
                 signalled ? "second signal" : "stop took too long");
    ::unlink(socket.c_str());
    std::_Exit(0);
  }).detach();
  (*server)->Stop();
  std::fprintf(stderr, "modeld: stopped\n");
  return 0;
}

}  // namespace modeld::cli
