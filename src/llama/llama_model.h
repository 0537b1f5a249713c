// A loaded llama.cpp model, shared (read-only) by every session on it.
#pragma once

#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "llama/llama_context_pool.h"
#include "llama/llama_handles.h"
#include "modeld/error.h"
#include "modeld/model_info.h"
#include "modeld/session.h"

namespace modeld::llama {

// RAII for llama_batch.
class Batch {
 public:
  explicit Batch(int32_t capacity) : batch_(llama_batch_init(capacity, 0, 1)), capacity_(capacity) {}
  ~Batch() { llama_batch_free(batch_); }
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  void Clear() { batch_.n_tokens = 0; }
  void Add(llama_token token, llama_pos pos, bool logits) {
    const int32_t i = batch_.n_tokens++;
    batch_.token[i] = token;
    batch_.pos[i] = pos;
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = 0;
    batch_.logits[i] = logits;
  }
  int32_t size() const { return batch_.n_tokens; }
  int32_t capacity() const { return capacity_; }
  const llama_batch& get() const { return batch_; }

 private:
  llama_batch batch_;
  int32_t capacity_;
};

class LlamaModel {
  struct Key {};  // lets Load() use make_shared while the constructor stays unreachable

 public:
  explicit LlamaModel(Key) {}
  // Loads the weights (mmap). `info` is the header the service already read.
  // A requested stop aborts the load at its next progress step (kCancelled).
  static Result<std::shared_ptr<LlamaModel>> Load(const ModelInfo& info, const ProgressFunc& progress,
                                                  std::stop_token cancel = {});
  // The tokenizer and metadata only (llama.cpp's vocab_only): for chat templates and token
  // counts, without the weights. get() can make no context.
  static Result<std::shared_ptr<LlamaModel>> LoadVocab(const ModelInfo& info);

  llama_model* get() const { return model_.get(); }
  const llama_vocab* vocab() const { return vocab_; }
  const ModelInfo& info() const { return info_; }
  int32_t n_vocab() const { return n_vocab_; }
  // Whether the memory of a context on this model can drop a tail of its
  // tokens (false for recurrent and hybrid models).
  bool partial_trim() const { return partial_trim_; }
  // The weights' fingerprint (format::WeightsFingerprint), read at load; "" for a vocab-only model.
  const std::string& fingerprint() const { return fingerprint_; }
  // Contexts of closed sessions on this model, for the next session of the same shape.
  ContextPool& contexts() const { return contexts_; }

  // Tokens of one segment: no BOS/EOS added; specials parsed only if asked.
  Result<std::vector<llama_token>> Tokenize(std::string_view text, bool parse_special, bool add_special = false) const;
  std::string Piece(llama_token token) const;

 private:
  static Result<std::shared_ptr<LlamaModel>> Make(const ModelInfo& info, const ProgressFunc& progress,
                                                  std::stop_token cancel, bool vocab_only);
  ModelPtr model_;
  const llama_vocab* vocab_ = nullptr;
  ModelInfo info_;
  int32_t n_vocab_ = 0;
  bool partial_trim_ = true;
  std::string fingerprint_;
  mutable ContextPool contexts_;  // after model_: its contexts are freed before the model
};

// The last llama.cpp error logged on this thread (llama.cpp reports load
// failures only through its log), and a reset.
std::string TakeLastLlamaError();
// Installs modeld's llama.cpp log sink once (quiet unless MODELD_LLAMA_LOG=1).
void InitLlamaOnce();

}  // namespace modeld::llama
