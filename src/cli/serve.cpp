#include "cli/serve.h"

#include <malloc.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli/paths.h"
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
  daemon::ServerOptions opt;
  opt.socket_path = o.socket_path.empty() ? DefaultSocketPath() : o.socket_path;
  opt.host = o.host;
  opt.port = o.port;
  opt.allow_remote = o.allow_remote;
  opt.threads = o.threads;
  opt.kv_budget_bytes = o.kv_budget_mb << 20;
  opt.max_sessions = o.max_sessions;
  opt.max_body_bytes = o.max_body_mb << 20;
  opt.log_requests = o.verbose;
  if (o.port != 0) {
    if (o.token_file.empty()) {
      std::fprintf(stderr, "modeld serve: --port needs --token-file FILE (its first line is the bearer token)\n");
      return 2;
    }
    std::ifstream tf(o.token_file);
    std::getline(tf, opt.token);
    if (!tf && opt.token.empty()) {
      std::fprintf(stderr, "modeld serve: cannot read a token from %s\n", o.token_file.c_str());
      return 2;
    }
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
  (*server)->Stop();
  std::fprintf(stderr, "modeld: stopped\n");
  return 0;
}

}  // namespace modeld::cli
