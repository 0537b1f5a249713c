// What every API of the daemon works on: the served models, the session table, the background
// workers, metrics and the stop signal. Owned by the Server; the APIs (native/, openai/) hold a
// reference for as long as their routes are mounted.
#pragma once

#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "daemon/metrics.h"
#include "daemon/server.h"
#include "daemon/session_manager.h"
#include "daemon/snapshots.h"
#include "daemon/workspace_workers.h"
#include "modeld/chat.h"
#include "modeld/compute_gate.h"
#include "modeld/model_info.h"
#include "modeld/service.h"

namespace modeld::daemon {

struct ServedModel {
  std::string name;  // the file's stem: what requests name
  ModelInfo info;
};

class ServerContext {
 public:
  ServerOptions opt;
  Metrics metrics;
  std::shared_ptr<ComputeGate> gate = std::make_shared<ComputeGate>();
  std::vector<ServedModel> models;
  std::unique_ptr<SessionManager> sessions;
  std::unique_ptr<WorkspaceWorkers> workers;  // eager prefills and compactions
  std::unique_ptr<Snapshots> snapshots;       // durable workspaces; null without --snapshot-dir
  std::atomic<bool> stopping{false};
  std::stop_source stop;  // requested by Stop(): model loads and prefills under way end

  // A request to open a session of `m` with the daemon's gate, limits and stop token.
  OpenSessionRequest Request(const ServedModel& m, const SessionConfig& cfg) const;
  Result<SessionPlan> Plan(const ServedModel& m, const SessionConfig& cfg) const;
  // One embedding of `input` on `m`, with the daemon's threads and gate.
  Result<Embedding> Embed(const ServedModel& m, std::string input) const;
  // "" names the first model; a name or a path.
  const ServedModel* FindModel(const std::string& name) const;
  Result<const ServedModel*> ModelOrError(const std::string& name) const;
  // The model's chat format (its template, or the operator's --chat-template-file), made once.
  Result<std::shared_ptr<const ChatFormat>> ChatFormatFor(const ServedModel& m);
  // That template as markers for the workspace layer; nullopt (ChatML or plain lines) when the
  // template is not a plain sequence of messages (logged once per model).
  std::optional<ChatMarkers> MarkersFor(const ServedModel& m);

  // The end of a workspace ask that held `lease` for `seconds`: counts it, releases the lease, then
  // schedules what it left due (a compaction; an eager prefill of changes made while it answered).
  void EndAsk(SessionManager::Lease& lease, const std::string& ws, const Result<AskResult>& r, double seconds);
  // Long prefills show progress in the log (every quarter); `inner` gets all of it.
  ProgressFunc LoggedProgress(const std::string& ws, ProgressFunc inner) const;
  void Log(const char* fmt, const std::string& a, const std::string& b = "") const {
    if (opt.log_requests) std::fprintf(stderr, fmt, a.c_str(), b.c_str());
  }

 private:
  std::mutex formats_mu_;
  std::vector<std::pair<std::string, std::shared_ptr<const ChatFormat>>> formats_;  // model name -> format
  std::map<std::string, Error> format_errors_;                                      // model name -> why none
  std::mutex markers_mu_;
  std::map<std::string, std::optional<ChatMarkers>> markers_;  // model name -> markers, once derived
};

}  // namespace modeld::daemon
