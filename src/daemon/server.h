// `modeld serve`: the daemon. HTTP/1.1 + JSON over a Unix socket (and
// optionally loopback TCP with a bearer token). docs/protocol.md is the spec.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "modeld/error.h"

namespace modeld::daemon {

struct ServerOptions {
  std::string socket_path;          // "" = no Unix socket
  std::string host = "127.0.0.1";   // TCP host, used when port > 0
  int port = 0;                     // 0 = no TCP listener; -1 = pick a free loopback port
  bool allow_remote = false;        // permit a non-loopback host
  std::string token;                // required for TCP
  std::vector<std::string> models;  // GGUF files served; name = file stem
  int threads = 0;                  // per computation; 0 = all cores
  int32_t max_ctx = 0;              // largest n_ctx a session may have; 0 = each model's trained context
  int64_t kv_budget_bytes = 0;      // sessions' KV and compute buffers; 0 = unlimited
  int max_sessions = 64;
  int64_t max_body_bytes = 32LL << 20;
  int max_connections = 1024;  // per listener, each served on a thread of its own; more wait in a queue
  bool log_requests = true;    // one log line per request on stderr
  // Background work (compaction) computes only after this long without a request's compute turn
  // (ComputeGate's grace); tests that need it held back make it long.
  std::chrono::milliseconds background_grace{50};
  // OpenAI API (docs/openai.md):
  std::string chat_template;     // --chat-template-file's text: used instead of every model's own template
  int32_t chat_ctx = 0;          // --ctx-size: n_ctx of a conversation's session; 0 = kDefaultChatCtx or the model's
  bool chat_flash_attn = false;  // --flash-attn on: conversations' sessions use flash attention
  // Durable workspaces (docs/snapshot.md): "" = none kept on disk.
  std::string snapshot_dir;
  int64_t snapshot_budget_bytes = 0;                // 0 = unlimited; least recently used pruned past it
  std::chrono::milliseconds snapshot_idle{30'000};  // a changed workspace is written after this long idle
  int snapshot_warm = 1;  // at start, the most recently saved workspaces restored in the background
};

// n_ctx of an OpenAI conversation's session unless --ctx-size says otherwise (the model's
// trained context when that is smaller).
inline constexpr int32_t kDefaultChatCtx = 16384;

// Bearer tokens shorter than this are refused (a token is a secret, not a password).
inline constexpr size_t kMinTokenBytes = 16;

class Server {
 public:
  // Validates options, describes the models, binds and starts serving on
  // background threads. Returns once the listeners accept connections.
  static Result<std::unique_ptr<Server>> Start(const ServerOptions& opt);
  ~Server();

  // Stops accepting, cancels in-flight decodes, closes all sessions. Idempotent.
  void Stop();
  // Blocks until Stop() (e.g. from a signal handler thread).
  void Wait();

  const std::string& socket_path() const;
  int port() const;  // the bound TCP port, 0 when none

  struct Impl;  // defined in server.cpp; only Start() can make one
  explicit Server(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace modeld::daemon
