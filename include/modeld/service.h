// The service boundary: describe a model, open sessions on it, embed.
// Backends register themselves in the registry (modeld/registry.h); the
// Service dispatches on the request's backend kind.
#pragma once

#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "modeld/chat.h"
#include "modeld/compute_gate.h"
#include "modeld/error.h"
#include "modeld/model_info.h"
#include "modeld/session.h"

namespace modeld {

struct OpenSessionRequest {
  std::string model_path;
  std::string model_digest;  // "" = take the file's digest; else must match it
  std::string backend = "gguf";
  std::string workspace_id;
  SessionConfig config;
  // The largest n_ctx allowed; 0 = the model's trained context (an operator may allow more).
  int32_t max_ctx = 0;
  ProgressFunc progress;   // model load progress, when the model is not loaded yet
  std::stop_token cancel;  // a model load under way stops at its next progress step (kCancelled)
  // Shared by sessions that must take turns computing (the daemon's); null = no gate.
  std::shared_ptr<ComputeGate> gate;
  // OpenChatFormat: a chat template used instead of the model's own (e.g. one with tool support).
  std::string chat_template;
};

struct EmbedRequest {
  std::string model_path;
  std::string model_digest;
  std::string backend = "gguf";
  std::string input;
  int32_t threads = 0;
  // Taken around the evaluation, as sessions do, so an embedding never runs beside a decode.
  std::shared_ptr<ComputeGate> gate;
};

struct Embedding {
  std::vector<float> values;
  bool normalized = true;  // L2-normalized
  int32_t n_tokens = 0;
  std::string pooling;
};

class Service {
 public:
  // Reads the model's header only; refuses a file of another backend.
  Result<ModelInfo> Describe(const OpenSessionRequest& req) const;
  // What a session of this request would need, from the model's header alone: the config's
  // ranges checked (ValidateSessionConfig and the backend's own), n_ctx and threads resolved.
  // Nothing is loaded or allocated. OpenSession with the plan's config opens that session.
  Result<SessionPlan> PlanSession(const OpenSessionRequest& req) const;
  // Refuses a model of another backend before loading anything.
  Result<std::unique_ptr<Session>> OpenSession(const OpenSessionRequest& req) const;
  // A session that continues exactly where the snapshot's left off (a fork, when the request
  // names another workspace). req.config must match the snapshot's n_ctx, kv_type and flash_attn.
  // kSnapshotMismatch (another model, backend build or config), kCorruptSnapshot; never a
  // session with a wrong KV.
  Result<std::unique_ptr<Session>> RestoreSession(const OpenSessionRequest& req, const SessionSnapshot& snapshot) const;
  Result<Embedding> Embed(const EmbedRequest& req) const;
  // The model's chat template (or req.chat_template), ready to render requests for sessions of
  // this model. Reads the tokenizer, not the weights. kInvalidArgument for a template that does
  // not parse. A model without a template gets ChatML, as llama-server gives it. The prompt's
  // special-token text is read as special tokens, message text included (llama-server does the same).
  Result<std::shared_ptr<const ChatFormat>> OpenChatFormat(const OpenSessionRequest& req) const;
};

}  // namespace modeld
