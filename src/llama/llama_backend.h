// The llama.cpp backend: opens sessions and embeds on GGUF models, sharing
// each loaded model among all sessions on it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "llama/llama_model.h"
#include "modeld/registry.h"

namespace modeld::llama {

class LlamaBackend final : public Backend {
 public:
  std::string_view kind() const override { return "gguf"; }
  Result<std::unique_ptr<Session>> OpenSession(const OpenSessionRequest& req, const ModelInfo& info) override;
  bool CanEmbed() const override { return true; }
  Result<Embedding> Embed(const EmbedRequest& req, const ModelInfo& info) override;

  // The loaded model for (path, digest), loading it on first use. A model
  // stays loaded while a session (or a caller) holds it.
  Result<std::shared_ptr<LlamaModel>> GetModel(const ModelInfo& info, const ProgressFunc& progress);

 private:
  std::mutex mu_;
  std::map<std::string, std::weak_ptr<LlamaModel>> models_;  // key: path + '\n' + digest
};

}  // namespace modeld::llama
