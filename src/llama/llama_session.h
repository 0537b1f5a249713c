// The llama.cpp session: one llama_context (and so one KV cache) per session
// on a shared model.
//
// Why a context per session rather than sequences in one shared context:
// sessions are workspace-scoped and long-lived with independent sizes; a
// context each isolates them (a fatal error or an eviction frees exactly one
// session's KV, n_ctx is per session, no cross-session defragmentation), and
// llama.cpp contexts on one model can run on different threads. The cost is a
// compute buffer per context, small next to the KV on the sizes we serve.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "llama/llama_model.h"
#include "modeld/compute_gate.h"
#include "modeld/session.h"

namespace modeld::llama {

// What a session on this model would need (Backend::PlanSession), from the header alone.
Result<SessionPlan> PlanLlamaSession(const ModelInfo& info, const SessionConfig& requested, int32_t max_ctx);

class LlamaSession final : public Session {
  struct Key {};  // make_unique from Open() only

 public:
  static Result<std::unique_ptr<LlamaSession>> Open(std::shared_ptr<LlamaModel> model, std::string workspace_id,
                                                    const SessionConfig& cfg,
                                                    std::shared_ptr<ComputeGate> gate = nullptr);
  LlamaSession(Key, std::shared_ptr<LlamaModel> model, std::string workspace_id, const SessionConfig& cfg,
               ThreadpoolPtr threadpool, ContextPtr ctx);
  ~LlamaSession() override;

  Result<PrefixStatus> EnsurePrefix(const PrefixInput& in) override;
  Result<SuffixStatus> PrefillSuffix(const SuffixInput& in) override;
  Result<DecodeResult> Decode(const DecodeConfig& cfg, const ChunkCallback& on_chunk) override;
  Result<ContextReport> Report() override;
  Result<std::vector<int32_t>> Tokenize(std::string_view text, bool parse_special) override;
  Status Close() override;
  Result<std::unique_ptr<Session>> Fork() override;
  Result<SessionSnapshot> SnapshotInto(std::string buffer) override;
  // A session on `model` that continues where `snap` left off: its identity checked against
  // this model, build and cfg (kSnapshotMismatch), its layout, tokens and the state's positions
  // (kCorruptSnapshot), before and after llama.cpp loads the state.
  static Result<std::unique_ptr<LlamaSession>> Restore(std::shared_ptr<LlamaModel> model, std::string workspace_id,
                                                       const SessionConfig& cfg, std::shared_ptr<ComputeGate> gate,
                                                       const SessionSnapshot& snap);
  // What Snapshot() writes as this backend's build: "llama.cpp <commit>".
  static std::string BackendBuild();

  // For tests: the logits after the last resident token (evaluates it if needed).
  Result<std::vector<float>> LastLogits();
  // For tests: the next llama_decode fails as a backend failure would.
  void InjectDecodeFailureForTesting() { inject_failure_ = true; }
  // Background computations stopped midway for a foreground turn, and redone (ComputeGate).
  int64_t preemptions() const { return preemptions_.load(); }

 private:
  struct ResidentSegment {
    std::string id;
    std::string digest;
    SegmentKind kind;
    int64_t start;
    int64_t n_tokens;
  };
  // A token sequence laid out from segments.
  struct Layout {
    std::vector<llama_token> tokens;
    std::vector<ResidentSegment> segments;
  };

  Status CheckUsable() const;
  // Gives the context back to the model's pool (or frees it when its state is unknown).
  void ReleaseContext();
  void PruneTokenCache();
  Result<Layout> LayOut(const std::vector<ManifestSegment>& segments, int64_t start);
  // Length of the common prefix of tokens_ and `want`, from `from` on.
  int64_t CommonPrefix(const std::vector<llama_token>& want, int64_t from) const;
  // Drops resident tokens from `keep` on. Returns the number actually kept
  // (0 when the memory could not be trimmed partially).
  int64_t TrimTo(int64_t keep, bool* fallback);
  // Evaluates want[from..] after tokens_[0..from); logits for the last token.
  // max_batch: tokens per llama_decode call, at most n_batch (0: n_batch).
  // max_batch: tokens per llama_decode call, at most n_batch (0: n_batch); cancel: checked between batches.
  Status Prefill(const std::vector<llama_token>& want, int64_t from, const char* stage, const ProgressFunc& progress,
                 int32_t max_batch = 0, std::stop_token cancel = {});
  // Makes sure logits for the last resident token are available.
  Status EnsureLogits();
  Status DecodeBatch(const Batch& batch);
  // llama.cpp's abort callback: true stops the llama_decode under way (a background turn that a
  // foreground turn waits for).
  static bool AbortCheck(void* self);

  std::shared_ptr<ComputeGate> gate_;  // taken around every llama_decode; may be null
  std::mutex mu_;                      // serializes calls: a llama_context is not thread-safe
  std::shared_ptr<LlamaModel> model_;
  std::string workspace_id_;
  SessionConfig cfg_;
  ThreadpoolPtr threadpool_;  // attached to ctx_, so declared (and freed) around it
  ContextPtr ctx_;
  ContextShape shape_;  // what ctx_ was made with, for the pool
  bool closed_ = false;
  bool fatal_ = false;
  bool inject_failure_ = false;
  // The gate turn of the llama_decode under way (null outside one), read by AbortCheck on a
  // compute thread; yielded_: AbortCheck stopped it.
  std::atomic<const ComputeGate::Turn*> running_turn_{nullptr};
  std::atomic<bool> yielded_{false};
  std::atomic<int64_t> preemptions_{0};

  // Exactly what the KV holds, at positions 0..n-1: prefix, suffix, generated.
  std::vector<llama_token> tokens_;
  bool logits_valid_ = false;  // logits of tokens_.back() are current
  std::string prefix_digest_;
  bool has_prefix_ = false;
  std::vector<ResidentSegment> prefix_segments_;
  std::vector<ResidentSegment> suffix_segments_;
  int64_t prefix_len_ = 0;
  int64_t suffix_len_ = 0;
  // Tokens of the resident segments by digest, so unchanged segments are not re-tokenized.
  std::unordered_map<std::string, std::vector<llama_token>> token_cache_;

  int64_t total_reused_ = 0;
  int64_t total_prefilled_ = 0;
  int64_t total_generated_ = 0;
  int64_t reuse_fallbacks_ = 0;
};

}  // namespace modeld::llama
