#include "llama/llama_backend.h"

#include <cmath>
#include <optional>
#include <thread>

#include "llama/llama_chat.h"
#include "llama/llama_session.h"

namespace modeld::llama {

Result<std::shared_ptr<LlamaModel>> LlamaBackend::GetModel(const ModelInfo& info, const ProgressFunc& progress,
                                                           std::stop_token cancel) {
  // One load at a time per model: a second opener of the same model waits and shares it, while
  // opens on other (loaded) models go on.
  std::shared_ptr<Slot> slot;
  {
    std::lock_guard lock(mu_);
    std::erase_if(models_, [](const auto& kv) { return kv.second.use_count() == 1 && kv.second->model.expired(); });
    auto& s = models_[info.path + '\n' + info.digest];
    if (!s) s = std::make_shared<Slot>();
    slot = s;
  }
  std::lock_guard load(slot->load_mu);
  if (auto m = slot->model.lock()) return m;
  auto m = LlamaModel::Load(info, progress, std::move(cancel));
  if (!m) return Fail(m.error());
  slot->model = *m;
  return *m;
}

Result<SessionPlan> LlamaBackend::PlanSession(const OpenSessionRequest& req, const ModelInfo& info) {
  return PlanLlamaSession(info, req.config, req.max_ctx);
}

Result<std::unique_ptr<Session>> LlamaBackend::OpenSession(const OpenSessionRequest& req, const ModelInfo& info) {
  auto model = GetModel(info, req.progress, req.cancel);
  if (!model) return Fail(model.error());
  auto s = LlamaSession::Open(std::move(*model), req.workspace_id, req.config, req.gate);
  if (!s) return Fail(s.error());
  return std::unique_ptr<Session>(std::move(*s));
}

Result<std::unique_ptr<Session>> LlamaBackend::RestoreSession(const OpenSessionRequest& req, const ModelInfo& info,
                                                              const SessionSnapshot& snapshot) {
  auto model = GetModel(info, req.progress, req.cancel);
  if (!model) return Fail(model.error());
  auto s = LlamaSession::Restore(std::move(*model), req.workspace_id, req.config, req.gate, snapshot);
  if (!s) return Fail(s.error());
  return std::unique_ptr<Session>(std::move(*s));
}

Result<std::shared_ptr<const ChatFormat>> LlamaBackend::OpenChatFormat(const OpenSessionRequest& req,
                                                                       const ModelInfo& info) {
  return OpenLlamaChatFormat(info, req.chat_template);
}

Result<Embedding> LlamaBackend::Embed(const EmbedRequest& req, const ModelInfo& info) {
  auto model = GetModel(info, {});
  if (!model) return Fail(model.error());
  llama_model* m = (*model)->get();
  const llama_vocab* vocab = (*model)->vocab();

  // Pooling models add their own specials (e.g. BERT's [CLS] ... [SEP]).
  std::vector<llama_token> tokens(req.input.size() + 16);
  int32_t n = llama_tokenize(vocab, req.input.data(), static_cast<int32_t>(req.input.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), /*add_special=*/true, /*parse_special=*/false);
  if (n < 0) return Fail(ErrorCode::kInternal, "tokenizer failed");
  tokens.resize(static_cast<size_t>(n));
  if (tokens.empty()) return Fail(ErrorCode::kInvalidArgument, "embedding input is empty");

  const auto n_ctx = static_cast<int32_t>(std::min(llama_model_n_ctx_train(m), 8192));
  if (n > n_ctx) return Fail(Error::ContextOverflow("embed", 0, n, n_ctx));

  // One embedding at a time, in a context sized to its input (rounded up to 64 tokens), not to
  // the model's limit: a non-causal encoder's one batch costs n_ctx^2 x n_head floats of scores,
  // gigabytes at 8192, which concurrent requests must not be able to multiply.
  std::lock_guard one_at_a_time(embed_mu_);
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(std::min(n_ctx, (n + 63) / 64 * 64));
  // Non-causal encoders need the whole input in one physical batch.
  cp.n_batch = cp.n_ubatch = cp.n_ctx;
  cp.n_seq_max = 1;
  cp.embeddings = true;
  cp.no_perf = true;
  const int32_t threads = req.threads > 0 ? std::min(req.threads, HardwareThreads()) : HardwareThreads();
  cp.n_threads = cp.n_threads_batch = threads;
  ContextPtr ctx(llama_init_from_model(m, cp));
  if (!ctx)
    return Fail(ErrorCode::kInternal, "llama.cpp could not create an embedding context: " + TakeLastLlamaError());
  const enum llama_pooling_type pooling = llama_pooling_type(ctx.get());
  if (pooling == LLAMA_POOLING_TYPE_NONE) {
    return Fail(Error::UnsupportedFeature("embeddings: model '" + info.path + "' declares no pooling type"));
  }

  Batch batch(n);
  for (int32_t i = 0; i < n; ++i) batch.Add(tokens[i], i, true);
  const bool encoder_only = llama_model_has_encoder(m) && !llama_model_has_decoder(m);
  std::optional<ComputeGate::Turn> turn;
  if (req.gate) turn.emplace(req.gate->Acquire());
  const int32_t rc = encoder_only ? llama_encode(ctx.get(), batch.get()) : llama_decode(ctx.get(), batch.get());
  turn.reset();
  if (rc != 0) return Fail(ErrorCode::kInternal, "embedding evaluation failed (code " + std::to_string(rc) + ")");
  const float* e = llama_get_embeddings_seq(ctx.get(), 0);
  if (e == nullptr) return Fail(ErrorCode::kInternal, "no pooled embedding returned");

  Embedding out;
  const int32_t dim = llama_model_n_embd_out(m);
  out.values.assign(e, e + dim);
  double norm = 0;
  for (float v : out.values) norm += static_cast<double>(v) * v;
  norm = std::sqrt(norm);
  if (norm > 0) {
    for (float& v : out.values) v = static_cast<float>(v / norm);
  }
  out.normalized = true;
  out.n_tokens = n;
  switch (pooling) {
    case LLAMA_POOLING_TYPE_MEAN:
      out.pooling = "mean";
      break;
    case LLAMA_POOLING_TYPE_CLS:
      out.pooling = "cls";
      break;
    case LLAMA_POOLING_TYPE_LAST:
      out.pooling = "last";
      break;
    case LLAMA_POOLING_TYPE_RANK:
      out.pooling = "rank";
      break;
    default:
      out.pooling = "other";
      break;
  }
  return out;
}

namespace {
// Registers the backend when this adapter is linked in (it is an object
// library, so the linker keeps this initializer).
const bool kRegistered = [] {
  RegisterBackend(std::make_shared<LlamaBackend>());
  return true;
}();
}  // namespace

}  // namespace modeld::llama
