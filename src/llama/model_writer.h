// Generated models: GGUF files with random weights for real llama.cpp architectures, carrying the
// tokenizer of one of llama.cpp's ggml-vocab-*.gguf files. They load and run like real models (same
// shapes, same tokenizer), so tests and benchmarks need no downloaded weights.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "modeld/error.h"

namespace modeld::llama {

struct ModelSpec {
  std::string preset = "custom";  // name it came from, or "custom"
  std::string arch = "qwen2";     // "qwen2", "llama" (decoders), "bert" (embedding), "mamba" (recurrent)
  std::string vocab_path;         // a ggml-vocab-*.gguf to copy the tokenizer from
  // mamba has no attention and no feed-forward: n_head, n_head_kv and n_ff are ignored for it and
  // written as 0, as convert_hf_to_gguf.py does.
  uint32_t n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_ff = 0, n_ctx_train = 0;
  // mamba only (selective state space layers); 0 = Mamba's defaults: conv kernel 4, inner size
  // 2 * n_embd (the only expansion llama.cpp supports), state size 16, time-step rank
  // ceil(n_embd / 16).
  uint32_t ssm_d_conv = 0, ssm_d_inner = 0, ssm_d_state = 0, ssm_dt_rank = 0;
  // 0 = the vocab file's token count; larger = pad with "[PAD{i}]" tokens (type UNUSED), as HF
  // conversion does; smaller = kInvalidArgument.
  uint32_t n_vocab = 0;
  // Type of the 2-D weight matrices: "f32", "f16", "q8_0", "q4_0". Norms, biases and the small
  // bert position/token-type tables stay f32; a matrix whose rows don't split into whole quant
  // blocks falls back to f16 (as llama-quantize does).
  std::string weight_type = "q8_0";
  uint64_t seed = 1;
  float rope_theta = 1000000.0f;  // ignored by bert
  float norm_eps = 1e-6f;         // RMS norm eps (qwen2, llama, mamba) or layer norm eps (bert)
  std::string pooling;            // "", "mean", "cls", "last": written as <arch>.pooling_type when set
  // Decoders: no output.weight, so llama.cpp ties the output projection to token_embd (as both
  // Qwen2.5-Coder sizes do). With random weights a tied model greedily repeats its input token, so
  // the test presets write a separate output.weight to get varied continuations.
  bool tie_output = true;
  // Written as tokenizer.chat_template, replacing the vocab file's (e.g. a template with tool
  // support from the llama.cpp tree's models/templates/); "" keeps the vocab file's.
  std::string chat_template;
};

// Presets:
//   "tiny"        qwen2, qwen2 vocab (151936 tokens), n_embd 64, 2 layers, 4/2 heads, q8_0 (~11 MB)
//   "tiny-llama"  llama, llama-spm vocab (32000 tokens), n_embd 64, 2 layers, 4/4 heads, q8_0
//   "tiny-embed"  bert, bert-bge vocab, n_embd 64, 2 layers, 4 heads, f16, pooling cls
//   "tiny-mamba"  mamba (recurrent: its memory cannot drop a tail), gpt-neox vocab (as the real
//                 Mamba checkpoints), n_embd 64, 2 layers, d_inner 128, d_state 16, d_conv 4,
//                 dt_rank 4, q8_0
//   "coder-0.5b"  Qwen2.5-Coder-0.5B's shape, q8_0 (~530 MB)
//   "coder-1.5b"  Qwen2.5-Coder-1.5B's shape, q8_0 (~1.7 GB)
// The coder presets tie the output projection to token_embd (as both Qwen2.5-Coder sizes do); the
// tiny decoders (tiny-mamba included) do not (see tie_output).
// mamba's SSM weights follow Mamba's own initialization rather than the 0.02 transformer std, so the
// recurrent state carries information from far back: A = -(1..d_state) per channel (S4D-real),
// D = 1, the dt bias the inverse softplus of a step log-uniform in [1e-3, 1e-1], ssm_in, ssm_conv1d,
// ssm_x, ssm_dt and ssm_out uniform in +-1/sqrt(fan_in); token_embd and output keep the 0.02 std.
// ssm_conv1d, ssm_a, ssm_d and the biases stay f32 (ggml's SSM ops read them as f32).
// vocab_dir is the folder holding ggml-vocab-*.gguf (<llama tree>/models); it is not checked here.
// Unknown preset -> kNotFound.
Result<ModelSpec> PresetSpec(std::string_view preset, const std::string& vocab_dir);
std::vector<std::string> PresetNames();

// Writes the model to out_path atomically (temp file in the same folder + rename), streaming the
// weights so memory stays small whatever the model size. Deterministic: the same spec gives a
// byte-identical file; the seed and preset are in the metadata (general.name =
// "modeld-random-<preset>", modeld.seed, modeld.preset). progress(done_bytes, total_bytes) is
// called now and then; may be empty. Invalid spec -> kInvalidArgument; missing vocab file ->
// kNotFound; write failure -> kIoError. On error no file is left behind.
Status WriteRandomModel(const ModelSpec& spec, const std::string& out_path,
                        const std::function<void(uint64_t, uint64_t)>& progress = {});

}  // namespace modeld::llama
