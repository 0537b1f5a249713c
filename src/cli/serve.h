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
  int32_t max_ctx = 0;  // 0 = each model's trained context
  int max_connections = 1024;
  int64_t kv_budget_mb = 0;
  int max_sessions = 64;
  int64_t max_body_mb = 32;
  bool verbose = true;             // request and progress log lines on stderr (--quiet turns them off)
  std::string chat_template_file;  // llama-server's --chat-template-file: overrides the models' templates
  int32_t ctx_size = 0;            // llama-server's --ctx-size: n_ctx of an OpenAI conversation; 0 = default
  bool flash_attn = false;         // llama-server's --flash-attn on|off, for OpenAI conversations
  // Durable workspaces (docs/snapshot.md).
  bool snapshots = true;              // --no-snapshots: nothing kept on disk
  std::string snapshot_dir;           // "" = next to the socket: <socket>.snapshots
  int64_t snapshot_budget_mb = 8192;  // least recently used pruned past it; 0 = unlimited
  int64_t snapshot_idle_s = 30;       // a changed workspace is written after this long idle
  int snapshot_warm = 1;              // restored at start, most recently saved first
};

// The largest chat template file read (real templates are under 40 KiB).
inline constexpr int64_t kMaxChatTemplateBytes = 1 << 20;

// After SIGTERM/SIGINT the daemon exits within this many seconds, whatever it was doing.
inline constexpr int kStopDeadlineSeconds = 4;

std::string DefaultSocketPath();
int RunServe(const ServeOptions& opt);

}  // namespace modeld::cli
