// A client for the modeld daemon's HTTP/1.1 + JSON API (docs/protocol.md), over its Unix socket
// or loopback TCP with a bearer token.
//
// Every call opens its own connection, so one Client may be shared by threads and copied freely
// (it holds only the address and options). Errors come back as the daemon sent them (same code,
// message and details); a daemon that cannot be reached is kSessionUnavailable, reason
// "unreachable".
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "modeld/error.h"
#include "modeld/manifest.h"
#include "modeld/model_info.h"
#include "modeld/service.h"
#include "modeld/session.h"
#include "modeld/workspace.h"

namespace modeld::client {

struct ClientOptions {
  std::chrono::seconds connect_timeout{5};
  // Per read: a non-streamed prefill of a long prompt on a big model can take minutes.
  std::chrono::seconds read_timeout{3600};
  // A call refused with `busy` (another call on the session is running, e.g. a decode the daemon
  // has not yet seen cancelled) is retried for this long before busy is returned; 0 = at once.
  // Retrying is safe: a busy call changed nothing.
  std::chrono::milliseconds busy_retry{10000};
};

// GET /v1/health
struct HealthInfo {
  std::string status;
  std::string version;
  int64_t sessions = 0;
  int64_t models = 0;
};

// One entry of GET /v1/models.
struct ModelEntry {
  std::string model;  // served name (file stem)
  std::string path;
  std::string digest;
  std::string architecture;
  int64_t context_length = 0;
  std::string pooling;  // "" for a generative model
  bool loaded = false;  // in memory now (a daemon that does not say: false)
};

// POST /v1/sessions
struct OpenedSession {
  std::string workspace;
  std::string model;
  bool created = false;  // false: the warm session the workspace already had (its KV and config kept)
  SessionConfig config;  // the session's effective config
  ContextReport report;
  AssemblyMode assembly = AssemblyMode::kEditAware;  // the workspace's, which a warm session keeps
};

// POST /v1/workspaces/{ws}/stable: the parts to set; an unset one is left as it is.
struct StableParts {
  std::optional<std::string> system;
  std::optional<std::string> tools;
  std::optional<std::string> repo_map;
};

// GET /v1/workspaces/{ws}: the stats and the files at their current content's size.
struct WorkspaceFile {
  std::string path;
  int64_t bytes = 0;
};
struct WorkspaceState {
  WorkspaceStats stats;
  std::vector<WorkspaceFile> files;  // by path
};

// A session as GET /v1/sessions[/{ws}] describes it: the report plus the daemon's bookkeeping.
struct SessionInfo {
  ContextReport report;
  std::string model;
  bool busy = false;
  int64_t last_used_ms_ago = 0;
};

class Client {
 public:
  // Unix domain socket.
  explicit Client(std::string socket_path, ClientOptions opt = {});
  // TCP; every request carries "Authorization: Bearer <token>".
  Client(std::string host, int port, std::string token, ClientOptions opt = {});

  // "unix:PATH" or "http://HOST:PORT", for messages.
  std::string Address() const;

  Result<HealthInfo> Health() const;
  Result<std::vector<ModelEntry>> Models() const;
  Result<ModelInfo> Describe(std::string_view model) const;

  // Opens the workspace's session, or returns its warm one (created = false). model "" = the
  // daemon's first model. Only the config fields that differ from SessionConfig's defaults are
  // sent; the daemon's defaults (e.g. its --threads) fill in the rest. progress, when set, gets
  // the model-load events.
  // `assembly` applies to a session this call creates; "assembly" is sent only for kInPlace, so
  // the default request is the same as before workspaces existed.
  Result<OpenedSession> OpenSession(std::string_view workspace, std::string_view model = {},
                                    const std::optional<SessionConfig>& config = std::nullopt,
                                    const ProgressFunc& progress = {},
                                    AssemblyMode assembly = AssemblyMode::kEditAware) const;
  Result<std::vector<SessionInfo>> ListSessions() const;
  Result<SessionInfo> Report(std::string_view workspace) const;
  Status CloseSession(std::string_view workspace) const;

  // The session contract over the wire; see modeld/session.h. A set progress callback streams
  // the call's progress events.
  Result<PrefixStatus> EnsurePrefix(std::string_view workspace, const PrefixInput& in) const;
  Result<SuffixStatus> PrefillSuffix(std::string_view workspace, const SuffixInput& in) const;
  // Streams chunks to on_chunk as they arrive. on_chunk returning false, or cfg.cancel being
  // requested, closes the connection (the daemon cancels within one token) and returns what
  // arrived so far with finish kCancelled; tokens_generated then counts the tokens of the chunks
  // received, and the timings are measured here.
  Result<DecodeResult> Decode(std::string_view workspace, const DecodeConfig& cfg,
                              const ChunkCallback& on_chunk = {}) const;
  Result<std::vector<int32_t>> Tokenize(std::string_view workspace, std::string_view text,
                                        bool parse_special = false) const;

  // Workspaces: edit-aware context assembly (docs/protocol.md, "Workspaces"). The workspace is
  // the session of the same id, opened with OpenSession. Calls on one workspace queue behind each
  // other on the daemon. A change (SetStable, PutFile, RemoveFile, RenameFile, AddTurn) makes the
  // daemon prefill the new context in the background unless `prefill` is false; `stats`, when
  // set, gets the workspace's stats from the reply.
  Status SetStable(std::string_view workspace, const StableParts& parts, bool prefill = true,
                   WorkspaceStats* stats = nullptr) const;
  // The file's whole new content; the daemon computes the change ("add", "edit", "full",
  // "unchanged"). Paths are relative, content is text (no NUL) of at most 1 MiB.
  Result<PutResult> PutFile(std::string_view workspace, std::string_view path, std::string_view content,
                            bool prefill = true, WorkspaceStats* stats = nullptr) const;
  Status RemoveFile(std::string_view workspace, std::string_view path, bool prefill = true,
                    WorkspaceStats* stats = nullptr) const;
  Status RenameFile(std::string_view workspace, std::string_view from, std::string_view to, bool prefill = true,
                    WorkspaceStats* stats = nullptr) const;
  // role: "user" or "assistant".
  Status AddTurn(std::string_view workspace, std::string_view role, std::string_view text, bool prefill = true,
                 WorkspaceStats* stats = nullptr) const;
  // Prefills the current context now and waits for it (a no-op when the eager prefill did it).
  Result<PrefixStatus> WorkspacePrefill(std::string_view workspace, WorkspaceStats* stats = nullptr) const;
  // Folds the change notes into the files (conversation kept) and prefills that; keep_turns >= 0
  // keeps only the last keep_turns conversation turns (Workspace::Compact).
  Result<PrefixStatus> Compact(std::string_view workspace, WorkspaceStats* stats = nullptr,
                               int64_t keep_turns = -1) const;
  // Prefills the context and the question, then streams the answer like Decode: on_chunk
  // returning false, or cfg.cancel, closes the connection and returns what arrived with
  // decode.finish kCancelled; prefix and suffix are then unknown (zero), as the daemon sends them
  // only at the end. The daemon records the question and the answer as turns. progress gets the
  // long work before the first token: the context's prefill ("ensure_prefix") and a compaction
  // the ask waits for ("compaction").
  Result<AskResult> Ask(std::string_view workspace, std::string_view question, const DecodeConfig& cfg,
                        const ChunkCallback& on_chunk = {}, WorkspaceStats* stats = nullptr,
                        const ProgressFunc& progress = {}) const;
  Result<WorkspaceState> WorkspaceInfo(std::string_view workspace) const;
  // The assembled context as the model sees it (workspace::ReconstructFiles reads the files back).
  Result<std::string> Context(std::string_view workspace) const;

  Result<Embedding> Embed(std::string_view model, std::string_view input) const;
  // POST /v1/chat/completions (docs/openai.md), not streamed: the reply object as sent.
  Result<nlohmann::ordered_json> ChatCompletion(const nlohmann::ordered_json& request) const;
  // Prometheus text of GET /metrics.
  Result<std::string> Metrics() const;
  // Durable workspaces (docs/snapshot.md): the snapshots on the daemon's disk, as sent; one
  // (a live workspace is written first); deleting one; forking one under another workspace id.
  Result<nlohmann::ordered_json> ListSnapshots() const;
  Result<nlohmann::ordered_json> ShowSnapshot(std::string_view workspace) const;
  Status DeleteSnapshot(std::string_view workspace) const;
  Result<nlohmann::ordered_json> ForkSnapshot(std::string_view workspace, std::string_view to) const;

 private:
  // Gets each NDJSON line of a stream as it arrives; false closes the connection.
  using LineFunc = std::function<bool(std::string_view line)>;

  // One request, retried while the daemon answers busy. HTTP 200: the body (empty when on_line
  // is set: a stream goes to on_line). Else the daemon's error. A stream closed by on_line or by
  // `cancel` is kCancelled.
  Result<std::string> Send(const char* method, const std::string& path, const std::string* body,
                           const LineFunc* on_line = nullptr, std::stop_token cancel = {}) const;
  // A JSON call: the 200 reply's object.
  Result<nlohmann::ordered_json> Call(const char* method, const std::string& path,
                                      const nlohmann::ordered_json* body = nullptr) const;
  // POSTs a workspace call; fills `stats` from the reply's "workspace" object.
  Result<nlohmann::ordered_json> WorkspaceCall(std::string_view workspace, const char* op,
                                               const nlohmann::ordered_json& body, WorkspaceStats* stats) const;
  // POSTs body; with progress set, as a stream whose progress events go to it. The reply object,
  // or the stream's `done` result.
  Result<nlohmann::ordered_json> CallWithProgress(const std::string& path, nlohmann::ordered_json body,
                                                  const ProgressFunc& progress) const;

  std::string socket_path_;  // "" = TCP
  std::string host_;
  int port_ = 0;
  std::string token_;
  ClientOptions opt_;
};

// Whether `id` is a workspace id the protocol accepts (1-128 of A-Z a-z 0-9 . _ - : @ +).
bool ValidWorkspaceId(std::string_view id);

}  // namespace modeld::client
