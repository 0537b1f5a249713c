// The llama.cpp backend: opens sessions and embeds on GGUF models, sharing
// each loaded model among all sessions on it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>

#include "llama/llama_model.h"
#include "modeld/registry.h"

namespace modeld::llama {

class LlamaBackend final : public Backend {
 public:
  std::string_view kind() const override { return "gguf"; }
  Result<SessionPlan> PlanSession(const OpenSessionRequest& req, const ModelInfo& info) override;
  Result<std::unique_ptr<Session>> OpenSession(const OpenSessionRequest& req, const ModelInfo& info) override;
  Result<std::unique_ptr<Session>> RestoreSession(const OpenSessionRequest& req, const ModelInfo& info,
                                                  const SessionSnapshot& snapshot) override;
  bool CanEmbed() const override { return true; }
  Result<Embedding> Embed(const EmbedRequest& req, const ModelInfo& info) override;
  Result<std::shared_ptr<const ChatFormat>> OpenChatFormat(const OpenSessionRequest& req,
                                                           const ModelInfo& info) override;

  // The loaded model for (path, digest), loading it on first use. A model
  // stays loaded while a session (or a caller) holds it.
  // A requested stop ends a load under way (kCancelled).
  Result<std::shared_ptr<LlamaModel>> GetModel(const ModelInfo& info, const ProgressFunc& progress,
                                               std::stop_token cancel = {});

 private:
  struct Slot {
    std::mutex load_mu;  // held for a load of this model
    std::weak_ptr<LlamaModel> model;
  };
  std::mutex mu_;        // guards models_ only, never held during a load
  std::mutex embed_mu_;  // held for one embedding: their contexts are made one at a time
  std::map<std::string, std::shared_ptr<Slot>> models_;  // key: path + '\n' + digest
};

}  // namespace modeld::llama
