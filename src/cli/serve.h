// `modeld serve`: runs the daemon until SIGINT/SIGTERM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace modeld::cli {

struct ServeOptions {
  std::string socket_path;  // "" = DefaultSocketPath()
  std::string host = "127.0.0.1";
  int port = 0;
  bool allow_remote = false;
  std::string token_file;
  std::vector<std::string> models;  // files or folders; empty = the built-in default model
  int threads = 0;
  int64_t kv_budget_mb = 0;
  int max_sessions = 64;
  int64_t max_body_mb = 32;
  bool verbose = true;  // request and progress log lines on stderr (--quiet turns them off)
};

std::string DefaultSocketPath();
int RunServe(const ServeOptions& opt);

}  // namespace modeld::cli
