// Owning handles of llama.cpp objects: each freed with its own llama.cpp call.
#pragma once

#include <memory>

#include "ggml-cpu.h"
#include "llama.h"

namespace modeld::llama {

struct ModelDeleter {
  void operator()(llama_model* m) const { llama_model_free(m); }
};
struct ContextDeleter {
  void operator()(llama_context* c) const { llama_free(c); }
};
struct SamplerDeleter {
  void operator()(llama_sampler* s) const { llama_sampler_free(s); }
};
struct ThreadpoolDeleter {
  void operator()(ggml_threadpool* t) const { ggml_threadpool_free(t); }
};
using ModelPtr = std::unique_ptr<llama_model, ModelDeleter>;
using ContextPtr = std::unique_ptr<llama_context, ContextDeleter>;
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;
using ThreadpoolPtr = std::unique_ptr<ggml_threadpool, ThreadpoolDeleter>;

}  // namespace modeld::llama
