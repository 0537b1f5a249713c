// The backend registry: the one piece of process-wide mutable state.
//
// A backend adapter (e.g. the llama.cpp one) registers itself at static
// initialization; product code never includes an adapter header. A build
// without adapters has an empty registry: SessionAvailable() is false and
// Service::OpenSession returns kSessionUnavailable.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "modeld/error.h"
#include "modeld/model_info.h"
#include "modeld/service.h"
#include "modeld/session.h"

namespace modeld {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view kind() const = 0;  // "gguf"
  // `info` is the model's header, already read and checked to be this backend's.
  // Checks the request's config against the model and this backend before anything is created.
  virtual Result<SessionPlan> PlanSession(const OpenSessionRequest& req, const ModelInfo& info) = 0;
  virtual Result<std::unique_ptr<Session>> OpenSession(const OpenSessionRequest& req, const ModelInfo& info) = 0;
  // A session opened from a snapshot (Session::Snapshot) of a session on this model: the
  // snapshot's identity checked against the model, this build and req.config first
  // (kSnapshotMismatch), its content (kCorruptSnapshot), then its state loaded.
  virtual Result<std::unique_ptr<Session>> RestoreSession(const OpenSessionRequest& req, const ModelInfo& info,
                                                          const SessionSnapshot& snapshot) {
    (void)req, (void)info, (void)snapshot;
    return Fail(Error::UnsupportedFeature("snapshot restore"));
  }
  virtual bool CanEmbed() const = 0;
  virtual Result<Embedding> Embed(const EmbedRequest& req, const ModelInfo& info) = 0;
  virtual Result<std::shared_ptr<const ChatFormat>> OpenChatFormat(const OpenSessionRequest& req,
                                                                   const ModelInfo& info) {
    (void)req, (void)info;
    return Fail(Error::UnsupportedFeature("chat templates"));
  }
};

// Registers (or replaces) the backend for its kind. Thread-safe.
void RegisterBackend(std::shared_ptr<Backend> backend);
std::shared_ptr<Backend> FindBackend(std::string_view kind);
std::vector<std::string> BackendKinds();

// Whether a session / embedding backend is compiled into this build.
bool SessionAvailable();
bool EmbedAvailable();

}  // namespace modeld
