#include "llama/llama_session.h"

#include <sampling.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <utility>

#include "core/resize_for_overwrite.h"
#include "core/text_stream.h"
#include "llama/llama_chat.h"

namespace modeld::llama {
namespace {

struct CommonSamplerDeleter {
  void operator()(common_sampler* s) const { common_sampler_free(s); }
};

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

Result<ggml_type> KvType(const std::string& name) {
  if (name == "f16") return GGML_TYPE_F16;
  if (name == "f32") return GGML_TYPE_F32;
  if (name == "bf16") return GGML_TYPE_BF16;
  if (name == "q8_0") return GGML_TYPE_Q8_0;
  if (name == "q4_0") return GGML_TYPE_Q4_0;
  return Fail(ErrorCode::kInvalidArgument, "unknown KV cache type '" + name + "' (f16, f32, bf16, q8_0, q4_0)");
}

double KvBytesPerElement(const std::string& kv_type) {
  if (kv_type == "f32") return 4.0;
  if (kv_type == "q8_0") return 34.0 / 32.0;
  if (kv_type == "q4_0") return 18.0 / 32.0;
  return 2.0;  // f16, bf16
}

// Bytes of K and V caches at full n_ctx, from the model's shape: one formula for the plan (the
// GGUF header) and for the report (the loaded model).
int64_t KvBytesForShape(int64_t n_layer, int64_t n_head, int64_t n_head_kv, int64_t n_embd, const SessionConfig& c) {
  const int64_t head_dim = n_embd / std::max<int64_t>(1, n_head);
  const int64_t per_token = 2LL * n_layer * n_head_kv * head_dim;
  return static_cast<int64_t>(static_cast<double>(per_token) * c.n_ctx * KvBytesPerElement(c.kv_type));
}

// What the daemon's memory budget counts of a live session's KV.
int64_t KvBytes(const llama_model* m, const SessionConfig& c) {
  return KvBytesForShape(llama_model_n_layer(m), llama_model_n_head(m), llama_model_n_head_kv(m), llama_model_n_embd(m),
                         c);
}

ContextShape ShapeOf(const llama_context_params& cp) {
  return {cp.n_ctx,
          cp.n_batch,
          cp.n_ubatch,
          static_cast<int32_t>(cp.type_k),
          static_cast<int32_t>(cp.type_v),
          cp.flash_attn_type == LLAMA_FLASH_ATTN_TYPE_ENABLED,
          cp.n_threads};
}

}  // namespace

Result<SessionPlan> PlanLlamaSession(const ModelInfo& info, const SessionConfig& requested, int32_t max_ctx) {
  // The trained context bounds n_ctx unless the operator allowed more; a header without one
  // (never seen in practice) is held to the default.
  if (max_ctx <= 0)
    max_ctx = info.context_length > 0 ? static_cast<int32_t>(std::min<uint32_t>(info.context_length, INT32_MAX))
                                      : kDefaultCtx;
  if (auto ok = ValidateSessionConfig(requested, max_ctx); !ok) return Fail(ok.error());
  auto kv = KvType(requested.kv_type);
  if (!kv) return Fail(kv.error());
  if (ggml_is_quantized(*kv) && !requested.flash_attn) {
    return Fail(OutOfRange("config.kv_type", "f16, f32 or bf16 without flash_attn", "'" + requested.kv_type + "'",
                           "llama.cpp needs flash attention for a quantized V cache"));
  }
  SessionPlan plan;
  plan.config = requested;
  SessionConfig& c = plan.config;
  if (c.n_ctx == 0) c.n_ctx = std::min(kDefaultCtx, max_ctx);
  if (c.threads == 0) c.threads = HardwareThreads();
  c.n_ubatch = std::min(c.n_ubatch, c.n_batch);
  // From the header alone; KvBytes() gives the same from the loaded model.
  const int64_t n_head = std::max<uint32_t>(1, info.head_count);
  plan.kv_bytes =
      KvBytesForShape(info.block_count, n_head, std::max<uint32_t>(1, info.head_count_kv), info.embedding_length, c);
  // The compute buffer, an estimate from llama.cpp's graph: without flash attention the
  // attention scores of one physical batch (n_ctx x n_ubatch x n_head floats) dominate; then a
  // few activations per token and one row of logits (the session asks for one output).
  const int64_t ub = std::min(c.n_ubatch, c.n_ctx);
  const int64_t scores = c.flash_attn ? 0 : static_cast<int64_t>(c.n_ctx) * ub * n_head * 4;
  plan.compute_bytes = scores + ub * static_cast<int64_t>(info.embedding_length) * 4 * 16 +
                       2LL * 4 * static_cast<int64_t>(info.vocab_size);
  return plan;
}

Result<std::unique_ptr<LlamaSession>> LlamaSession::Open(std::shared_ptr<LlamaModel> model, std::string workspace_id,
                                                         const SessionConfig& cfg, std::shared_ptr<ComputeGate> gate) {
  // Service::OpenSession plans first (the model's own bounds); direct callers get the ranges.
  if (auto ok = ValidateSessionConfig(cfg, INT32_MAX); !ok) return Fail(ok.error());
  auto kv = KvType(cfg.kv_type);
  if (!kv) return Fail(kv.error());
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(cfg.n_ctx > 0 ? cfg.n_ctx : kDefaultCtx);
  cp.n_batch = static_cast<uint32_t>(cfg.n_batch);
  cp.n_ubatch = static_cast<uint32_t>(std::min(cfg.n_ubatch, cfg.n_batch));
  cp.n_seq_max = 1;
  // The session reads the logits of one token (the last of a prefill, or the one decoded), so its
  // output buffer holds one row, not n_batch of them (n_vocab floats each).
  cp.n_outputs_max = 1;
  const int32_t threads = cfg.threads > 0 ? cfg.threads : HardwareThreads();
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  cp.type_k = *kv;
  cp.type_v = *kv;
  cp.flash_attn_type = cfg.flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
  // A full-size sliding-window cache keeps every position, so dropping a tail
  // never leaves the window short of tokens it needs.
  cp.swa_full = true;
  cp.no_perf = true;
  cp.embeddings = false;
  const ContextShape shape = ShapeOf(cp);
  ContextPool::Lent lent;
  if (auto pooled = model->contexts().Take(shape)) {
    lent = std::move(*pooled);
  } else {
    TakeLastLlamaError();
    lent.ctx.reset(llama_init_from_model(model->get(), cp));
    if (!lent.ctx) {
      const std::string why = TakeLastLlamaError();
      return Fail(ErrorCode::kInvalidArgument,
                  "llama.cpp could not create a context with this config" + (why.empty() ? std::string() : ": " + why));
    }
    // The session's own compute threads, kept between calls (without one, ggml starts and joins
    // threads on every llama_decode); they spin briefly after work (poll), as llama-bench's do.
    ggml_threadpool_params tpp = ggml_threadpool_params_default(threads);
    tpp.poll = 50;
    lent.threadpool.reset(ggml_threadpool_new(&tpp));
    if (!lent.threadpool) {
      return Fail(ErrorCode::kInternal, "could not start " + std::to_string(threads) + " compute threads");
    }
    llama_attach_threadpool(lent.ctx.get(), lent.threadpool.get(), nullptr);
  }
  ContextPtr ctx = std::move(lent.ctx);
  ThreadpoolPtr threadpool = std::move(lent.threadpool);
  SessionConfig actual = cfg;
  actual.n_ctx = static_cast<int32_t>(llama_n_ctx(ctx.get()));
  actual.threads = threads;
  auto s = std::make_unique<LlamaSession>(Key{}, std::move(model), std::move(workspace_id), actual,
                                          std::move(threadpool), std::move(ctx));
  s->shape_ = shape;
  s->gate_ = std::move(gate);
  // Background work can stop midway for a foreground request only where the batch's earlier
  // ubatches can then be dropped from the memory (DecodeBatch).
  if (s->gate_ && s->model_->partial_trim())
    llama_set_abort_callback(s->ctx_.get(), &LlamaSession::AbortCheck, s.get());
  return s;
}

bool LlamaSession::AbortCheck(void* self) {
  auto* s = static_cast<LlamaSession*>(self);
  const ComputeGate::Turn* turn = s->running_turn_.load(std::memory_order_acquire);
  if (!turn || !turn->ShouldYield()) return false;
  s->yielded_.store(true, std::memory_order_relaxed);
  return true;
}

LlamaSession::LlamaSession(Key, std::shared_ptr<LlamaModel> model, std::string workspace_id, const SessionConfig& cfg,
                           ThreadpoolPtr threadpool, ContextPtr ctx)
    : model_(std::move(model)),
      workspace_id_(std::move(workspace_id)),
      cfg_(cfg),
      threadpool_(std::move(threadpool)),
      ctx_(std::move(ctx)) {}

LlamaSession::~LlamaSession() { ReleaseContext(); }

void LlamaSession::ReleaseContext() {
  if (!ctx_) return;
  // A context in known state serves the next session of its shape; one whose llama_decode failed
  // is freed.
  if (!fatal_ && model_) {
    model_->contexts().Put(shape_, {std::move(threadpool_), std::move(ctx_)});
  } else {
    ctx_.reset();
    threadpool_.reset();
  }
}

Status LlamaSession::CheckUsable() const {
  if (closed_) return Fail(ErrorCode::kSessionClosed, "session '" + workspace_id_ + "' is closed");
  if (fatal_) {
    return Fail(
        ErrorCode::kSessionFatal,
        "session '" + workspace_id_ + "' hit a backend failure; its state is unknown: evict it and open a new one");
  }
  return {};
}

Result<LlamaSession::Layout> LlamaSession::LayOut(const std::vector<ManifestSegment>& segments, int64_t start) {
  Layout out;
  for (const auto& seg : segments) {
    const std::vector<llama_token>* toks = nullptr;
    auto it = token_cache_.find(seg.digest);
    std::vector<llama_token> fresh;
    if (it != token_cache_.end()) {
      toks = &it->second;
    } else {
      auto t = model_->Tokenize(seg.content, seg.parse_special);
      if (!t) return Fail(t.error());
      fresh = std::move(*t);
      toks = &fresh;
    }
    out.segments.push_back({seg.id, seg.digest, seg.kind, start + static_cast<int64_t>(out.tokens.size()),
                            static_cast<int64_t>(toks->size())});
    out.tokens.insert(out.tokens.end(), toks->begin(), toks->end());
    if (it == token_cache_.end()) token_cache_.emplace(seg.digest, std::move(fresh));
  }
  return out;
}

void LlamaSession::PruneTokenCache() {
  // Keep the tokenizations of resident segments only, so the cache stays bounded.
  std::erase_if(token_cache_, [&](const auto& kv) {
    auto same = [&](const ResidentSegment& s) { return s.digest == kv.first; };
    return std::none_of(prefix_segments_.begin(), prefix_segments_.end(), same) &&
           std::none_of(suffix_segments_.begin(), suffix_segments_.end(), same);
  });
}

int64_t LlamaSession::CommonPrefix(const std::vector<llama_token>& want, int64_t from) const {
  if (!cfg_.reuse) return 0;
  const int64_t n = std::min<int64_t>(want.size(), tokens_.size());
  int64_t i = std::min(from, n);
  while (i < n && want[i] == tokens_[i]) ++i;
  return i;
}

int64_t LlamaSession::TrimTo(int64_t keep, bool* fallback) {
  *fallback = false;
  if (keep >= static_cast<int64_t>(tokens_.size())) return keep;
  llama_memory_t mem = llama_get_memory(ctx_.get());
  bool ok = keep > 0 && model_->partial_trim() && llama_memory_seq_rm(mem, 0, static_cast<llama_pos>(keep), -1);
  if (!ok) {
    // The backend cannot drop only a tail: start over rather than reuse wrong state.
    llama_memory_clear(mem, true);
    if (keep > 0) *fallback = true;
    keep = 0;
  }
  tokens_.resize(static_cast<size_t>(keep));
  logits_valid_ = false;
  return keep;
}

Status LlamaSession::DecodeBatch(const Batch& batch) {
  int32_t rc;
  // Yields at most twice per batch, then runs it through: foreground requests that come more
  // often than a batch takes would otherwise keep background work from ever finishing one.
  constexpr int kMaxYields = 2;
  for (int yields = 0;; ++yields) {
    std::optional<ComputeGate::Turn> turn;
    if (gate_) turn.emplace(gate_->Acquire());
    if (inject_failure_) {
      inject_failure_ = false;
      fatal_ = true;
      return Fail(ErrorCode::kSessionFatal, "llama_decode failed (injected): session state unknown");
    }
    yielded_.store(false, std::memory_order_relaxed);
    running_turn_.store(turn && yields < kMaxYields ? &*turn : nullptr, std::memory_order_release);
    rc = llama_decode(ctx_.get(), batch.get());
    running_turn_.store(nullptr, std::memory_order_release);
    if (rc != 2 || !yielded_.load(std::memory_order_relaxed)) break;
    // Stopped for a foreground turn: llama.cpp dropped the ubatch it was computing; the batch's
    // earlier ubatches go too (tokens_ never counted them), and the batch runs again on the next
    // turn this background work gets.
    llama_memory_seq_rm(llama_get_memory(ctx_.get()), 0, static_cast<llama_pos>(tokens_.size()), -1);
    ++preemptions_;
  }
  if (rc == 0) return {};
  if (rc == 1 || rc == -1) {
    // llama.cpp restored the memory to its state before the call.
    return Fail(ErrorCode::kInternal, "llama_decode refused the batch (code " + std::to_string(rc) + ")");
  }
  fatal_ = true;
  return Fail(ErrorCode::kSessionFatal,
              "llama_decode failed (code " + std::to_string(rc) + "): session state unknown, evict it");
}

Status LlamaSession::Prefill(const std::vector<llama_token>& want, int64_t from, const char* stage,
                             const ProgressFunc& progress, int32_t max_batch, std::stop_token cancel) {
  const int64_t total = static_cast<int64_t>(want.size()) - from;
  const int32_t n_batch = max_batch > 0 ? std::min(max_batch, cfg_.n_batch) : cfg_.n_batch;
  Batch batch(n_batch);
  for (int64_t pos = from; pos < static_cast<int64_t>(want.size());) {
    if (cancel.stop_requested()) {
      if (pos > from) logits_valid_ = false;
      return Fail(ErrorCode::kCancelled, std::string(stage) + " cancelled");
    }
    batch.Clear();
    const int64_t end = std::min<int64_t>(want.size(), pos + n_batch);
    for (int64_t i = pos; i < end; ++i) {
      batch.Add(want[i], static_cast<llama_pos>(i), i + 1 == static_cast<int64_t>(want.size()));
    }
    if (auto ok = DecodeBatch(batch); !ok) {
      // Keep tokens_ describing what the KV holds.
      if (!fatal_) logits_valid_ = false;
      return ok;
    }
    tokens_.insert(tokens_.end(), want.begin() + pos, want.begin() + end);
    pos = end;
    if (progress) progress(Progress{stage, pos - from, total});
  }
  // Nothing evaluated: the logits are as they were (TrimTo marks them stale when it drops tokens).
  if (static_cast<int64_t>(want.size()) > from) logits_valid_ = true;
  return {};
}

Status LlamaSession::EnsureLogits() {
  if (logits_valid_) return {};
  if (tokens_.empty()) return Fail(ErrorCode::kInvalidArgument, "nothing resident to decode from");
  // Re-evaluate the last resident token (its KV entry is rewritten in place).
  std::vector<llama_token> want = tokens_;
  bool fallback = false;
  const int64_t kept = TrimTo(static_cast<int64_t>(want.size()) - 1, &fallback);
  if (fallback) ++reuse_fallbacks_;
  return Prefill(want, kept, "decode", {});
}

Result<PrefixStatus> LlamaSession::EnsurePrefix(const PrefixInput& in) {
  std::lock_guard lock(mu_);
  if (auto ok = CheckUsable(); !ok) return Fail(ok.error());
  if (auto ok = in.manifest.Validate(); !ok) return Fail(ok.error());
  const auto t0 = Clock::now();
  auto layout = LayOut(in.manifest.segments(), 0);
  if (!layout) return Fail(layout.error());
  const auto& want = layout->tokens;

  // Whole segments whose digest and position match are reused without comparing tokens.
  int64_t from = 0;
  for (size_t i = 0; i < layout->segments.size() && i < prefix_segments_.size(); ++i) {
    const auto& a = layout->segments[i];
    const auto& b = prefix_segments_[i];
    if (a.digest != b.digest || a.start != b.start) break;
    from = a.start + a.n_tokens;
  }
  from = std::min<int64_t>(from, prefix_len_);
  const int64_t lcp = CommonPrefix(want, from);
  const int64_t n = static_cast<int64_t>(want.size());
  if (n > cfg_.n_ctx) return Fail(Error::ContextOverflow("ensure_prefix", lcp, n - lcp, cfg_.n_ctx));

  PrefixStatus st;
  bool fallback = false;
  const int64_t kept = TrimTo(lcp, &fallback);
  if (auto ok = Prefill(want, kept, "ensure_prefix", in.progress, in.max_batch, in.cancel); !ok) {
    has_prefix_ = false;  // the resident tokens no longer match any manifest
    prefix_segments_.clear();
    suffix_segments_.clear();
    prefix_len_ = suffix_len_ = 0;
    prefix_digest_.clear();
    return Fail(ok.error());
  }

  st.manifest_digest = in.manifest.Digest();
  st.tokens_reused = kept;
  st.tokens_prefilled = n - kept;
  st.tokens_resident = n;
  st.reuse_fallback = fallback;
  for (size_t i = 0; i < layout->segments.size(); ++i) {
    const auto& s = layout->segments[i];
    st.segment_tokens.push_back(static_cast<int32_t>(s.n_tokens));
    if (st.first_diff_segment < 0 && kept < s.start + s.n_tokens) st.first_diff_segment = static_cast<int32_t>(i);
  }
  st.prefill_ms = MsSince(t0);

  prefix_digest_ = st.manifest_digest;
  has_prefix_ = true;
  prefix_segments_ = std::move(layout->segments);
  suffix_segments_.clear();
  prefix_len_ = n;
  suffix_len_ = 0;
  total_reused_ += st.tokens_reused;
  total_prefilled_ += st.tokens_prefilled;
  if (fallback) ++reuse_fallbacks_;
  PruneTokenCache();
  return st;
}

Result<SuffixStatus> LlamaSession::PrefillSuffix(const SuffixInput& in) {
  std::lock_guard lock(mu_);
  if (auto ok = CheckUsable(); !ok) return Fail(ok.error());
  if (!has_prefix_) {
    return Fail(Error::ManifestMismatch("no prefix is resident: call EnsurePrefix first"));
  }
  if (in.prefix_digest != prefix_digest_) {
    return Fail(Error::ManifestMismatch("suffix names prefix " + in.prefix_digest + " but the resident prefix is " +
                                        prefix_digest_));
  }
  for (size_t i = 0; i < in.segments.size(); ++i) {
    const auto& s = in.segments[i];
    if (s.digest != SegmentDigest(s.content, s.parse_special)) {
      return Fail(Error::ManifestMismatch("suffix segment " + std::to_string(i) + " ('" + s.id +
                                          "'): digest does not match its content"));
    }
  }
  if (static_cast<int64_t>(tokens_.size()) < prefix_len_) {
    return Fail(Error::ManifestMismatch("the resident prefix was lost after a failed call: call EnsurePrefix again"));
  }
  const auto t0 = Clock::now();
  auto layout = LayOut(in.segments, prefix_len_);
  if (!layout) return Fail(layout.error());
  std::vector<llama_token> want(tokens_.begin(), tokens_.begin() + prefix_len_);
  want.insert(want.end(), layout->tokens.begin(), layout->tokens.end());
  const int64_t n = static_cast<int64_t>(want.size());
  // The prefix this suffix is paired with is always kept, reuse or not: it was just ensured.
  const int64_t lcp = std::max<int64_t>(CommonPrefix(want, prefix_len_), prefix_len_);
  if (n > cfg_.n_ctx) return Fail(Error::ContextOverflow("prefill_suffix", lcp, n - lcp, cfg_.n_ctx));

  bool fallback = false;
  const int64_t kept = TrimTo(lcp, &fallback);
  if (auto ok = Prefill(want, kept, "prefill_suffix", in.progress, 0, in.cancel); !ok) {
    // The prefix is intact only if the failure came after it.
    if (static_cast<int64_t>(tokens_.size()) < prefix_len_) {
      has_prefix_ = false;
      prefix_segments_.clear();
      prefix_digest_.clear();
      prefix_len_ = 0;
    }
    suffix_segments_.clear();
    suffix_len_ = 0;
    return Fail(ok.error());
  }
  SuffixStatus st;
  // Reuse is counted for the suffix only; the prefix is always kept.
  const int64_t suffix_n = n - prefix_len_;
  st.tokens_reused = std::max<int64_t>(0, kept - prefix_len_);
  st.tokens_prefilled = n - std::max(kept, prefix_len_);
  if (kept < prefix_len_) st.tokens_prefilled = n - kept;  // fallback re-prefilled the prefix too
  st.tokens_resident = n;
  st.reuse_fallback = fallback;
  st.prefill_ms = MsSince(t0);
  suffix_segments_ = std::move(layout->segments);
  suffix_len_ = suffix_n;
  PruneTokenCache();
  total_reused_ += st.tokens_reused;
  total_prefilled_ += st.tokens_prefilled;
  if (fallback) ++reuse_fallbacks_;
  return st;
}

Result<DecodeResult> LlamaSession::Decode(const DecodeConfig& dc, const ChunkCallback& on_chunk) {
  std::lock_guard lock(mu_);
  if (auto ok = CheckUsable(); !ok) return Fail(ok.error());
  if (auto ok = ValidateDecodeConfig(dc); !ok) return Fail(ok.error());
  const int64_t resident = static_cast<int64_t>(tokens_.size());
  if (resident + dc.max_tokens > cfg_.n_ctx) {
    return Fail(Error::ContextOverflow("decode", resident, dc.max_tokens, cfg_.n_ctx));
  }
  const auto t0 = Clock::now();
  if (auto ok = EnsureLogits(); !ok) return Fail(ok.error());

  // llama.cpp's common sampler, as llama-server samples: penalties, top-k/p, min-p, temperature,
  // and a constraint's grammar (lazy ones wake on their trigger).
  common_params_sampling sp;
  sp.no_perf = true;
  sp.seed = static_cast<uint32_t>(dc.seed);
  sp.temp = dc.temperature;
  sp.top_k = dc.top_k;
  sp.top_p = dc.top_p;
  sp.min_p = dc.min_p;
  sp.penalty_repeat = dc.repeat_penalty;
  sp.penalty_freq = dc.frequency_penalty;
  sp.penalty_present = dc.presence_penalty;
  // The penalties' window (-1: the whole context), primed with the resident tail.
  sp.penalty_last_n = dc.repeat_last_n < 0 ? cfg_.n_ctx : dc.repeat_last_n;
  const int64_t last_n = std::min<int64_t>(resident, sp.penalty_last_n);
  if (dc.constraint) {
    const auto* c = dynamic_cast<const LlamaConstraint*>(dc.constraint.get());
    if (c == nullptr)
      return Fail(Error(ErrorCode::kInvalidArgument, "a decode constraint of another backend").WithField("constraint"));
    if (c->model_digest != model_->info().digest) {
      return Fail(
          Error(ErrorCode::kInvalidArgument, "a decode constraint made for another model").WithField("constraint"));
    }
    c->ApplyTo(sp);
  }
  std::unique_ptr<common_sampler, CommonSamplerDeleter> sampler;
  try {
    sampler.reset(common_sampler_init(model_->get(), sp));
  } catch (const std::exception& e) {
    return Fail(
        Error(ErrorCode::kInvalidArgument, std::string("the decode's grammar: ") + e.what()).WithField("constraint"));
  }
  if (!sampler)
    return Fail(Error(ErrorCode::kInvalidArgument, "the decode's grammar does not parse").WithField("constraint"));
  // The penalties see the resident tail as llama-server's see the prompt.
  for (int64_t i = resident - last_n; i < resident; ++i) common_sampler_accept(sampler.get(), tokens_[i], false);

  DecodeResult res;
  TextStream stream(dc.stop);
  Batch batch(1);
  // Called once per token, text possibly empty (bytes held back), so a caller
  // can cancel between any two tokens.
  auto emit = [&](std::string text, int32_t n_tokens) {
    res.text += text;
    return !on_chunk || on_chunk(StreamChunk{std::move(text), n_tokens});
  };
  Clock::time_point first{};
  int32_t unemitted = 0;
  for (;;) {
    if (dc.cancel.stop_requested()) {
      res.finish = FinishReason::kCancelled;
      break;
    }
    llama_token tok = LLAMA_TOKEN_NULL;
    try {
      tok = common_sampler_sample(sampler.get(), ctx_.get(), -1);
      common_sampler_accept(sampler.get(), tok, true);
    } catch (const std::exception& e) {  // a grammar with no way on
      return Fail(ErrorCode::kInternal, std::string("sampling: ") + e.what());
    }
    if (res.tokens_generated == 0) {
      first = Clock::now();
      res.first_token_ms = MsSince(t0);
    }
    if (llama_vocab_is_eog(model_->vocab(), tok)) {
      res.finish = FinishReason::kEndOfGeneration;
      break;
    }
    ++res.tokens_generated;
    ++unemitted;
    const std::string text = stream.Push(model_->Piece(tok));
    const bool keep_going = emit(text, text.empty() ? 0 : std::exchange(unemitted, 0));
    // The sampled token becomes resident, so the next turn can reuse it.
    batch.Clear();
    batch.Add(tok, static_cast<llama_pos>(tokens_.size()), true);
    if (auto ok = DecodeBatch(batch); !ok) {
      logits_valid_ = false;
      return Fail(ok.error());
    }
    tokens_.push_back(tok);
    logits_valid_ = true;
    ++total_generated_;
    if (stream.stopped()) {
      res.finish = FinishReason::kStop;
      break;
    }
    if (!keep_going) {
      res.finish = FinishReason::kCancelled;
      break;
    }
    if (res.tokens_generated >= dc.max_tokens) {
      res.finish = FinishReason::kLength;
      break;
    }
  }
  if (std::string tail = stream.Flush(); !tail.empty()) emit(std::move(tail), unemitted);
  res.decode_ms = MsSince(t0);
  if (res.tokens_generated > 1) {
    res.tokens_per_second = (res.tokens_generated - 1) / std::chrono::duration<double>(Clock::now() - first).count();
  }
  return res;
}

Result<ContextReport> LlamaSession::Report() {
  std::lock_guard lock(mu_);
  if (closed_) return Fail(ErrorCode::kSessionClosed, "session '" + workspace_id_ + "' is closed");
  ContextReport r;
  r.backend = "gguf";
  r.workspace_id = workspace_id_;
  r.model_digest = model_->info().digest;
  r.manifest_digest = has_prefix_ ? prefix_digest_ : "";
  r.n_ctx = cfg_.n_ctx;
  r.tokens_resident = static_cast<int64_t>(tokens_.size());
  r.prefix_tokens = prefix_len_;
  r.suffix_tokens = suffix_len_;
  r.generated_tokens = std::max<int64_t>(0, r.tokens_resident - prefix_len_ - suffix_len_);
  r.total_reused = total_reused_;
  r.total_prefilled = total_prefilled_;
  r.total_generated = total_generated_;
  r.reuse_fallbacks = reuse_fallbacks_;
  r.kv_bytes = KvBytes(model_->get(), cfg_);
  r.partial_trim = model_->partial_trim();
  r.fatal = fatal_;
  for (const auto* list : {&prefix_segments_, &suffix_segments_}) {
    for (const auto& s : *list) r.segments.push_back(SegmentReport{s.id, s.kind, s.start, s.n_tokens});
  }
  return r;
}

Result<std::vector<int32_t>> LlamaSession::Tokenize(std::string_view text, bool parse_special) {
  std::lock_guard lock(mu_);
  if (closed_) return Fail(ErrorCode::kSessionClosed, "session '" + workspace_id_ + "' is closed");
  return model_->Tokenize(text, parse_special);
}

Result<std::vector<float>> LlamaSession::LastLogits() {
  std::lock_guard lock(mu_);
  if (auto ok = CheckUsable(); !ok) return Fail(ok.error());
  if (auto ok = EnsureLogits(); !ok) return Fail(ok.error());
  const float* logits = llama_get_logits_ith(ctx_.get(), -1);
  if (logits == nullptr) return Fail(ErrorCode::kInternal, "no logits available");
  return std::vector<float>(logits, logits + model_->n_vocab());
}

Result<std::unique_ptr<Session>> LlamaSession::Fork() {
  std::lock_guard lock(mu_);
  if (auto ok = CheckUsable(); !ok) return Fail(ok.error());
  auto fork = Open(model_, workspace_id_, cfg_, gate_);
  if (!fork) return Fail(fork.error());
  LlamaSession& f = **fork;
  if (!tokens_.empty()) {
    // The KV of sequence 0, through llama.cpp's own serialization: exact for any memory type
    // (attention KV or recurrent state).
    std::vector<uint8_t> state(llama_state_seq_get_size(ctx_.get(), 0));
    const size_t got = llama_state_seq_get_data(ctx_.get(), state.data(), state.size(), 0);
    if (got == 0 || llama_state_seq_set_data(f.ctx_.get(), state.data(), got, 0) == 0) {
      return Fail(ErrorCode::kInternal, "could not copy the session's state into its fork");
    }
  }
  f.tokens_ = tokens_;
  f.logits_valid_ = false;  // logits are not part of the state: re-evaluated when needed
  f.prefix_digest_ = prefix_digest_;
  f.has_prefix_ = has_prefix_;
  f.prefix_segments_ = prefix_segments_;
  f.suffix_segments_ = suffix_segments_;
  f.prefix_len_ = prefix_len_;
  f.suffix_len_ = suffix_len_;
  f.token_cache_ = token_cache_;
  return std::unique_ptr<Session>(std::move(*fork));
}

std::string LlamaSession::BackendBuild() { return std::string("llama.cpp ") + MODELD_LLAMA_COMMIT; }

namespace {

SnapshotIdentity IdentityOf(const LlamaModel& model, const SessionConfig& cfg) {
  SnapshotIdentity id;
  id.backend = "gguf";
  id.backend_build = LlamaSession::BackendBuild();
  id.model_digest = model.info().digest;
  id.model_fingerprint = model.fingerprint();
  id.architecture = model.info().architecture;
  id.n_layer = llama_model_n_layer(model.get());
  id.n_embd = llama_model_n_embd(model.get());
  id.n_head_kv = llama_model_n_head_kv(model.get());
  id.n_vocab = model.n_vocab();
  id.kv_type = cfg.kv_type;
  id.flash_attn = cfg.flash_attn;
  id.n_ctx = cfg.n_ctx;
  return id;
}

// The first field of `got` that differs from `want`, "" when none.
std::string IdentityDiff(const SnapshotIdentity& want, const SnapshotIdentity& got) {
  auto s = [](const std::string& v) { return "'" + v + "'"; };
  auto n = [](int64_t v) { return std::to_string(v); };
  const std::pair<const char*, std::pair<std::string, std::string>> fields[] = {
      {"backend", {s(want.backend), s(got.backend)}},
      {"backend build", {s(want.backend_build), s(got.backend_build)}},
      {"model digest", {s(want.model_digest), s(got.model_digest)}},
      {"weights fingerprint", {s(want.model_fingerprint), s(got.model_fingerprint)}},
      {"architecture", {s(want.architecture), s(got.architecture)}},
      {"n_layer", {n(want.n_layer), n(got.n_layer)}},
      {"n_embd", {n(want.n_embd), n(got.n_embd)}},
      {"n_head_kv", {n(want.n_head_kv), n(got.n_head_kv)}},
      {"n_vocab", {n(want.n_vocab), n(got.n_vocab)}},
      {"kv_type", {s(want.kv_type), s(got.kv_type)}},
      {"flash_attn", {n(want.flash_attn), n(got.flash_attn)}},
      {"n_ctx", {n(want.n_ctx), n(got.n_ctx)}},
  };
  for (const auto& [name, v] : fields) {
    if (v.first != v.second) return std::string(name) + " " + v.second + " (this session's: " + v.first + ")";
  }
  return "";
}

// The cells of llama.cpp's sequence state (llama_context::state_seq_get_data, then
// llama_kv_cache::state_write at our pin: u32 magic, i32 seq_id, u32 n_stream, then per stream
// u32 cell_count and cell_count x {i32 pos, u32 n_seq_id, n_seq_id x i32 seq_id})
// must hold positions 0..n-1, each once, all of sequence 0: llama.cpp loads other positions
// without a word. Only for the plain attention cache (no sliding window, no M-RoPE cell
// extension, not recurrent); the others are checked after the load only.
Status CheckCellPositions(std::string_view state, size_t n_tokens) {
  size_t at = 0;
  auto u32 = [&](uint32_t* v) {
    if (state.size() - at < 4) return false;
    std::memcpy(v, state.data() + at, 4);
    at += 4;
    return true;
  };
  uint32_t magic = 0, seq_id = 0, n_stream = 0, cells = 0;
  if (!u32(&magic) || magic != 0xaf143cd8 || !u32(&seq_id) || seq_id != 0) {
    return Fail(ErrorCode::kCorruptSnapshot, "state: not llama.cpp's state of sequence 0");
  }
  if (!u32(&n_stream) || n_stream != 1) return Fail(ErrorCode::kCorruptSnapshot, "state: not one stream");
  if (!u32(&cells) || cells != n_tokens) {
    return Fail(ErrorCode::kCorruptSnapshot,
                "state: " + std::to_string(cells) + " cells for " + std::to_string(n_tokens) + " tokens");
  }
  std::vector<bool> seen(n_tokens, false);
  for (uint32_t i = 0; i < cells; ++i) {
    uint32_t pos = 0, n_seq = 0, seq = 0;
    if (!u32(&pos) || !u32(&n_seq) || n_seq != 1 || !u32(&seq) || seq != 0) {
      return Fail(ErrorCode::kCorruptSnapshot, "state: cell " + std::to_string(i) + " is not of sequence 0");
    }
    const auto p = static_cast<int32_t>(pos);
    if (p < 0 || static_cast<size_t>(p) >= n_tokens || seen[p]) {
      return Fail(ErrorCode::kCorruptSnapshot, "state: cell " + std::to_string(i) + " has position " +
                                                   std::to_string(p) + ", not one of 0.." +
                                                   std::to_string(n_tokens - 1) + " once each");
    }
    seen[p] = true;
  }
  return {};
}

// Whether the model's memory is the plain attention cache whose state CheckCellPositions reads:
// not recurrent or hybrid, no sliding window (its state drops masked cells), no M-RoPE cell
// extension. Snapshots are offered for these only.
bool PlainCache(const LlamaModel& model) {
  const auto rope = llama_model_rope_type(model.get());
  return model.partial_trim() && llama_model_n_swa(model.get()) == 0 && rope != LLAMA_ROPE_TYPE_MROPE &&
         rope != LLAMA_ROPE_TYPE_IMROPE && rope != LLAMA_ROPE_TYPE_VISION;
}

// Segments laid out from `start` on, contiguous; returns where they end.
Result<int64_t> CheckSegments(const std::vector<SnapshotSegment>& segs, int64_t start, int64_t n_tokens) {
  for (const auto& seg : segs) {
    if (seg.start != start || seg.n_tokens < 0 || seg.n_tokens > n_tokens - start) {
      return Fail(ErrorCode::kCorruptSnapshot, "segment '" + seg.id + "' is not where the layout says");
    }
    start += seg.n_tokens;
  }
  return start;
}

}  // namespace

Result<SessionSnapshot> LlamaSession::SnapshotInto(std::string buffer) {
  std::lock_guard lock(mu_);
  if (auto ok = CheckUsable(); !ok) return Fail(ok.error());
  if (!PlainCache(*model_)) {
    return Fail(Error::UnsupportedFeature("snapshots of a model whose memory is recurrent, hybrid or windowed"));
  }
  SessionSnapshot snap;
  snap.identity = IdentityOf(*model_, cfg_);
  snap.tokens.assign(tokens_.begin(), tokens_.end());
  snap.prefix_digest = has_prefix_ ? prefix_digest_ : "";
  auto segs = [](const std::vector<ResidentSegment>& in) {
    std::vector<SnapshotSegment> out;
    for (const auto& r : in) out.push_back({r.id, r.digest, r.kind, r.start, r.n_tokens});
    return out;
  };
  if (has_prefix_) {
    snap.prefix_segments = segs(prefix_segments_);
    snap.suffix_segments = segs(suffix_segments_);
  }
  snap.total_reused = total_reused_;
  snap.total_prefilled = total_prefilled_;
  snap.total_generated = total_generated_;
  if (!tokens_.empty()) {
    snap.state = std::move(buffer);
    // Not zeroed first: llama.cpp writes every byte it reports.
    ResizeReusedForOverwrite(snap.state, llama_state_seq_get_size(ctx_.get(), 0));
    const size_t got =
        llama_state_seq_get_data(ctx_.get(), reinterpret_cast<uint8_t*>(snap.state.data()), snap.state.size(), 0);
    if (got == 0) return Fail(ErrorCode::kInternal, "llama.cpp could not copy the session's state");
    snap.state.resize(got);
    // What Restore will check, checked here: a layout this reader does not know is not written.
    if (auto ok = CheckCellPositions(snap.state, tokens_.size()); !ok) {
      return Fail(Error::UnsupportedFeature("snapshots of this memory layout: " + ok.error().message()));
    }
  }
  return snap;
}

Result<std::unique_ptr<LlamaSession>> LlamaSession::Restore(std::shared_ptr<LlamaModel> model, std::string workspace_id,
                                                            const SessionConfig& cfg, std::shared_ptr<ComputeGate> gate,
                                                            const SessionSnapshot& snap) {
  SessionConfig want_cfg = cfg;
  if (want_cfg.n_ctx == 0) want_cfg.n_ctx = kDefaultCtx;
  if (auto diff = IdentityDiff(IdentityOf(*model, want_cfg), snap.identity); !diff.empty()) {
    return Fail(ErrorCode::kSnapshotMismatch, "the snapshot was written with " + diff);
  }
  // The layout, before anything is allocated.
  const auto n = static_cast<int64_t>(snap.tokens.size());
  if (n > want_cfg.n_ctx) return Fail(ErrorCode::kCorruptSnapshot, "more tokens than n_ctx");
  for (int32_t t : snap.tokens) {
    if (t < 0 || t >= model->n_vocab()) {
      return Fail(ErrorCode::kCorruptSnapshot, "token " + std::to_string(t) + " is not in the vocabulary");
    }
  }
  auto prefix_end = CheckSegments(snap.prefix_segments, 0, n);
  if (!prefix_end) return Fail(prefix_end.error());
  auto suffix_end = CheckSegments(snap.suffix_segments, *prefix_end, n);
  if (!suffix_end) return Fail(suffix_end.error());
  const bool has_prefix = !snap.prefix_digest.empty();
  if (!has_prefix && (!snap.prefix_segments.empty() || !snap.suffix_segments.empty())) {
    return Fail(ErrorCode::kCorruptSnapshot, "segments without a prefix digest");
  }
  if (n == 0 && !snap.state.empty()) return Fail(ErrorCode::kCorruptSnapshot, "a state without tokens");
  if (n > 0 && snap.state.empty()) return Fail(ErrorCode::kCorruptSnapshot, "tokens without a state");
  if (!PlainCache(*model)) {
    return Fail(Error::UnsupportedFeature("snapshots of a model whose memory is recurrent, hybrid or windowed"));
  }
  if (n > 0) {
    if (auto ok = CheckCellPositions(snap.state, static_cast<size_t>(n)); !ok) return Fail(ok.error());
  }

  auto opened = Open(model, std::move(workspace_id), want_cfg, std::move(gate));
  if (!opened) return Fail(opened.error());
  LlamaSession& s = **opened;
  if (n > 0) {
    const size_t read = llama_state_seq_set_data(s.ctx_.get(), reinterpret_cast<const uint8_t*>(snap.state.data()),
                                                 snap.state.size(), 0);
    llama_memory_t mem = llama_get_memory(s.ctx_.get());
    if (read != snap.state.size() || llama_memory_seq_pos_min(mem, 0) != 0 ||
        llama_memory_seq_pos_max(mem, 0) != n - 1) {
      return Fail(ErrorCode::kCorruptSnapshot, "llama.cpp's state does not hold positions 0.." + std::to_string(n - 1) +
                                                   " (read " + std::to_string(read) + " of " +
                                                   std::to_string(snap.state.size()) + " bytes)");
    }
  }
  s.tokens_.assign(snap.tokens.begin(), snap.tokens.end());
  s.logits_valid_ = false;  // logits are not part of the state: re-evaluated when needed
  s.has_prefix_ = has_prefix;
  s.prefix_digest_ = snap.prefix_digest;
  auto resident = [&](const std::vector<SnapshotSegment>& in) {
    std::vector<ResidentSegment> out;
    for (const auto& g : in) {
      out.push_back({g.id, g.digest, g.kind, g.start, g.n_tokens});
      // The segment's tokens, so an unchanged segment is not tokenized again.
      s.token_cache_.try_emplace(g.digest, s.tokens_.begin() + g.start, s.tokens_.begin() + g.start + g.n_tokens);
    }
    return out;
  };
  s.prefix_segments_ = resident(snap.prefix_segments);
  s.suffix_segments_ = resident(snap.suffix_segments);
  s.prefix_len_ = *prefix_end;
  s.suffix_len_ = *suffix_end - *prefix_end;
  s.total_reused_ = snap.total_reused;
  s.total_prefilled_ = snap.total_prefilled;
  s.total_generated_ = snap.total_generated;
  return opened;
}

Status LlamaSession::Close() {
  std::lock_guard lock(mu_);
  if (closed_) return Fail(ErrorCode::kSessionClosed, "session '" + workspace_id_ + "' is already closed");
  closed_ = true;
  ReleaseContext();
  tokens_.clear();
  tokens_.shrink_to_fit();
  token_cache_.clear();
  prefix_segments_.clear();
  suffix_segments_.clear();
  model_.reset();
  return {};
}

}  // namespace modeld::llama
