#include "llama/model_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>
#include <utility>

#include "ggml-cpp.h"
#include "ggml.h"
#include "gguf.h"
#include "llama.h"

namespace modeld::llama {
namespace {

constexpr float kWeightStd = 0.02f;           // the usual init std for transformer matrices
constexpr int64_t kChunkElems = 1 << 20;      // rows are generated ~4 MiB of f32 at a time
constexpr uint64_t kProgressStep = 16 << 20;  // report at most every 16 MiB
constexpr uint32_t kMaxLayers = 512;          // LLAMA_MAX_LAYERS (internal to llama.cpp)
constexpr uint32_t kDefaultTokenTypes = 2;    // bert's "sentence A/B" when the vocab doesn't say
constexpr float kPadTokenScore = -1000.0f;    // what HF conversion gives padding tokens (SPM scores)

// ---------------------------------------------------------------------------------------------
// Deterministic PRNG: splitmix64 seeds xoshiro256**, one stream per tensor (keyed by its name), so
// a tensor's values depend only on (seed, name) and not on chunking or tensor order.

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed) {
    for (auto& word : s_) word = SplitMix64(seed);
  }
  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// Uniform in [-amp, amp): two 24-bit draws per 64-bit output. Uniform rather than normal because it
// is cheaper and random weights only need the right scale.
void FillUniform(Xoshiro256& rng, float amp, float* out, int64_t n) {
  constexpr float kScale = 1.0f / 16777216.0f;  // 2^-24
  const float a2 = 2.0f * amp;
  int64_t i = 0;
  for (; i + 1 < n; i += 2) {
    const uint64_t x = rng.Next();
    out[i] = static_cast<float>(x >> 40) * kScale * a2 - amp;
    out[i + 1] = static_cast<float>((x >> 16) & 0xffffff) * kScale * a2 - amp;
  }
  if (i < n) out[i] = static_cast<float>(rng.Next() >> 40) * kScale * a2 - amp;
}

// ---------------------------------------------------------------------------------------------
// The spec, checked and resolved.

enum class Init {
  kRandom,  // uniform in +-amp
  kOnes,
  kZeros,
  kSsmA,    // mamba A, S4D-real: -(1, 2, ..., ne0) along each row
  kDtBias,  // mamba dt bias: softplus^-1 of a step log-uniform in [kDtMin, kDtMax]
};

constexpr float kDtMin = 1e-3f, kDtMax = 1e-1f;  // Mamba's dt_min / dt_max

struct TensorPlan {
  std::string name;
  int n_dims = 1;
  int64_t ne0 = 0, ne1 = 1;
  ggml_type type = GGML_TYPE_F32;
  Init init = Init::kZeros;
  float amp = 0;  // kRandom's bound; 0 = kWeightStd's (uniform [-a, a) has std a/sqrt(3))
};

std::optional<ggml_type> ParseWeightType(std::string_view s) {
  if (s == "f32") return GGML_TYPE_F32;
  if (s == "f16") return GGML_TYPE_F16;
  if (s == "q8_0") return GGML_TYPE_Q8_0;
  if (s == "q4_0") return GGML_TYPE_Q4_0;
  return std::nullopt;
}

llama_ftype FileType(ggml_type t) {
  switch (t) {
    case GGML_TYPE_F16:
      return LLAMA_FTYPE_MOSTLY_F16;
    case GGML_TYPE_Q8_0:
      return LLAMA_FTYPE_MOSTLY_Q8_0;
    case GGML_TYPE_Q4_0:
      return LLAMA_FTYPE_MOSTLY_Q4_0;
    default:
      return LLAMA_FTYPE_ALL_F32;
  }
}

// The <arch>.pooling_type to write, kNoPooling for "" (llama.cpp then uses the arch default);
// nullopt for an unknown name.
constexpr int kNoPooling = -1;
std::optional<int> ParsePooling(std::string_view s) {
  if (s.empty()) return kNoPooling;
  if (s == "none") return LLAMA_POOLING_TYPE_NONE;
  if (s == "mean") return LLAMA_POOLING_TYPE_MEAN;
  if (s == "cls") return LLAMA_POOLING_TYPE_CLS;
  if (s == "last") return LLAMA_POOLING_TYPE_LAST;
  return std::nullopt;
}

bool IsDecoder(std::string_view arch) { return arch == "qwen2" || arch == "llama"; }
bool IsMamba(std::string_view arch) { return arch == "mamba"; }

// Fills Mamba's defaults for the SSM sizes left 0; mamba ignores the attention and FFN sizes.
ModelSpec Resolve(ModelSpec s) {
  if (!IsMamba(s.arch)) return s;
  s.n_head = s.n_head_kv = s.n_ff = 0;
  if (s.ssm_d_conv == 0) s.ssm_d_conv = 4;
  if (s.ssm_d_inner == 0) s.ssm_d_inner = 2 * s.n_embd;
  if (s.ssm_d_state == 0) s.ssm_d_state = 16;
  if (s.ssm_dt_rank == 0) s.ssm_dt_rank = (s.n_embd + 15) / 16;
  return s;
}

Status ValidateSpec(const ModelSpec& s) {
  auto bad = [](std::string msg) { return Fail(ErrorCode::kInvalidArgument, "make-model: " + msg); };
  if (!IsDecoder(s.arch) && s.arch != "bert" && !IsMamba(s.arch)) {
    return bad("unknown arch '" + s.arch + "' (want qwen2, llama, bert or mamba)");
  }
  if (!ParseWeightType(s.weight_type)) {
    return bad("unknown weight type '" + s.weight_type + "' (want f32, f16, q8_0 or q4_0)");
  }
  if (!ParsePooling(s.pooling)) {
    return bad("unknown pooling '" + s.pooling + "' (want mean, cls, last or none)");
  }
  if (!(std::isfinite(s.norm_eps) && s.norm_eps > 0)) return bad("norm_eps must be positive");
  if (s.vocab_path.empty()) return bad("no vocab file given");
  if (IsMamba(s.arch)) {
    if (s.n_embd == 0 || s.n_layer == 0 || s.n_ctx_train == 0) {
      return bad("n_embd, n_layer and n_ctx_train must all be positive");
    }
    if (s.n_layer > kMaxLayers) return bad("n_layer " + std::to_string(s.n_layer) + " exceeds 512");
    if (s.ssm_d_inner != 2 * s.n_embd) {
      return bad("mamba: ssm inner size " + std::to_string(s.ssm_d_inner) +
                 " must be 2 * n_embd (the only expansion llama.cpp supports)");
    }
    if (s.ssm_d_conv < 2) return bad("mamba: the conv kernel must be at least 2");
    if (s.ssm_d_state == 0 || s.ssm_dt_rank == 0) return bad("mamba: state size and dt rank must be positive");
    return {};
  }
  if (s.n_embd == 0 || s.n_layer == 0 || s.n_head == 0 || s.n_head_kv == 0 || s.n_ff == 0 || s.n_ctx_train == 0) {
    return bad("n_embd, n_layer, n_head, n_head_kv, n_ff and n_ctx_train must all be positive");
  }
  if (s.n_layer > kMaxLayers) return bad("n_layer " + std::to_string(s.n_layer) + " exceeds 512");
  if (s.n_embd % s.n_head != 0) {
    return bad("n_head " + std::to_string(s.n_head) + " does not divide n_embd " + std::to_string(s.n_embd));
  }
  if (s.n_head % s.n_head_kv != 0) {
    return bad("n_head_kv " + std::to_string(s.n_head_kv) + " does not divide n_head " + std::to_string(s.n_head));
  }
  if (IsDecoder(s.arch) && (s.n_embd / s.n_head) % 2 != 0) return bad("RoPE needs an even head size");
  if (!(std::isfinite(s.rope_theta) && s.rope_theta > 0)) return bad("rope_theta must be positive");
  return {};
}

// The tensors llama.cpp's load_arch_tensors creates for each arch
// (src/models/{qwen2,llama,bert,mamba}.cpp), with the optional ones the real checkpoints have (qwen2
// q/k/v biases, bert biases and token types).
std::vector<TensorPlan> PlanTensors(const ModelSpec& s, ggml_type wtype, int64_t n_vocab, int64_t n_token_types) {
  const int64_t n_embd = s.n_embd, n_ff = s.n_ff;
  const int64_t n_embd_gqa = s.n_head > 0 ? n_embd / s.n_head * s.n_head_kv : 0;  // mamba: no heads
  std::vector<TensorPlan> plan;
  auto matrix = [&](std::string name, int64_t ne0, int64_t ne1, std::optional<ggml_type> type = {}, float amp = 0) {
    ggml_type t = type.value_or(wtype);
    // Quantized rows must hold whole blocks; otherwise f16, like llama-quantize's fallback.
    if (ne0 % ggml_blck_size(t) != 0) t = GGML_TYPE_F16;
    plan.push_back({std::move(name), 2, ne0, ne1, t, Init::kRandom, amp});
  };
  auto vec = [&](std::string name, int64_t ne0, Init init, float amp = 0) {
    plan.push_back({std::move(name), 1, ne0, 1, GGML_TYPE_F32, init, amp});
  };
  auto blk = [](uint32_t i, const char* suffix) { return "blk." + std::to_string(i) + "." + suffix; };

  matrix("token_embd.weight", n_embd, n_vocab);
  if (IsMamba(s.arch)) {
    // Shapes from llama_model_mamba::load_arch_tensors; values after Mamba's init (see the header).
    const int64_t d_conv = s.ssm_d_conv, d_inner = s.ssm_d_inner, d_state = s.ssm_d_state;
    const int64_t dt_rank = s.ssm_dt_rank;
    auto bound = [](int64_t fan_in) { return 1.0f / std::sqrt(static_cast<float>(fan_in)); };
    for (uint32_t i = 0; i < s.n_layer; ++i) {
      vec(blk(i, "attn_norm.weight"), n_embd, Init::kOnes);
      matrix(blk(i, "ssm_in.weight"), n_embd, 2 * d_inner, {}, bound(n_embd));
      // ggml_ssm_conv and ggml_ssm_scan read the conv kernel and A as f32 (and llama-quantize
      // leaves ssm_conv1d alone).
      plan.push_back({blk(i, "ssm_conv1d.weight"), 2, d_conv, d_inner, GGML_TYPE_F32, Init::kRandom, bound(d_conv)});
      vec(blk(i, "ssm_conv1d.bias"), d_inner, Init::kRandom, bound(d_conv));
      matrix(blk(i, "ssm_x.weight"), d_inner, dt_rank + 2 * d_state, {}, bound(d_inner));
      matrix(blk(i, "ssm_dt.weight"), dt_rank, d_inner, {}, bound(dt_rank));
      vec(blk(i, "ssm_dt.bias"), d_inner, Init::kDtBias);
      plan.push_back({"blk." + std::to_string(i) + ".ssm_a", 2, d_state, d_inner, GGML_TYPE_F32, Init::kSsmA});
      vec("blk." + std::to_string(i) + ".ssm_d", d_inner, Init::kOnes);
      matrix(blk(i, "ssm_out.weight"), d_inner, n_embd, {}, bound(d_inner));
    }
    vec("output_norm.weight", n_embd, Init::kOnes);
    if (!s.tie_output) matrix("output.weight", n_embd, n_vocab);
    return plan;
  }
  if (s.arch == "bert") {
    matrix("token_types.weight", n_embd, n_token_types, GGML_TYPE_F32);
    matrix("position_embd.weight", n_embd, s.n_ctx_train, GGML_TYPE_F32);
    vec("token_embd_norm.weight", n_embd, Init::kOnes);
    vec("token_embd_norm.bias", n_embd, Init::kZeros);
    for (uint32_t i = 0; i < s.n_layer; ++i) {
      matrix(blk(i, "attn_q.weight"), n_embd, n_embd);
      vec(blk(i, "attn_q.bias"), n_embd, Init::kZeros);
      matrix(blk(i, "attn_k.weight"), n_embd, n_embd_gqa);
      vec(blk(i, "attn_k.bias"), n_embd_gqa, Init::kZeros);
      matrix(blk(i, "attn_v.weight"), n_embd, n_embd_gqa);
      vec(blk(i, "attn_v.bias"), n_embd_gqa, Init::kZeros);
      matrix(blk(i, "attn_output.weight"), n_embd, n_embd);
      vec(blk(i, "attn_output.bias"), n_embd, Init::kZeros);
      vec(blk(i, "attn_output_norm.weight"), n_embd, Init::kOnes);
      vec(blk(i, "attn_output_norm.bias"), n_embd, Init::kZeros);
      matrix(blk(i, "ffn_up.weight"), n_embd, n_ff);
      vec(blk(i, "ffn_up.bias"), n_ff, Init::kZeros);
      matrix(blk(i, "ffn_down.weight"), n_ff, n_embd);
      vec(blk(i, "ffn_down.bias"), n_embd, Init::kZeros);
      vec(blk(i, "layer_output_norm.weight"), n_embd, Init::kOnes);
      vec(blk(i, "layer_output_norm.bias"), n_embd, Init::kZeros);
    }
    return plan;
  }
  // qwen2 / llama; without output.weight llama.cpp ties the output to token_embd.
  const bool qkv_bias = s.arch == "qwen2";
  for (uint32_t i = 0; i < s.n_layer; ++i) {
    vec(blk(i, "attn_norm.weight"), n_embd, Init::kOnes);
    matrix(blk(i, "attn_q.weight"), n_embd, n_embd);
    if (qkv_bias) vec(blk(i, "attn_q.bias"), n_embd, Init::kZeros);
    matrix(blk(i, "attn_k.weight"), n_embd, n_embd_gqa);
    if (qkv_bias) vec(blk(i, "attn_k.bias"), n_embd_gqa, Init::kZeros);
    matrix(blk(i, "attn_v.weight"), n_embd, n_embd_gqa);
    if (qkv_bias) vec(blk(i, "attn_v.bias"), n_embd_gqa, Init::kZeros);
    matrix(blk(i, "attn_output.weight"), n_embd, n_embd);
    vec(blk(i, "ffn_norm.weight"), n_embd, Init::kOnes);
    matrix(blk(i, "ffn_gate.weight"), n_embd, n_ff);
    matrix(blk(i, "ffn_down.weight"), n_ff, n_embd);
    matrix(blk(i, "ffn_up.weight"), n_embd, n_ff);
  }
  vec("output_norm.weight", n_embd, Init::kOnes);
  if (!s.tie_output) matrix("output.weight", n_embd, n_vocab);
  return plan;
}

// ---------------------------------------------------------------------------------------------
// Metadata.

// Copies one tokenizer KV from the vocab file; the per-token arrays are padded to n_vocab.
Status CopyTokenizerKv(gguf_context* dst, const gguf_context* src, int64_t id, size_t n_vocab) {
  const char* key = gguf_get_key(src, id);
  const std::string_view k = key;
  const gguf_type type = gguf_get_kv_type(src, id);
  switch (type) {
    case GGUF_TYPE_UINT8:
      gguf_set_val_u8(dst, key, gguf_get_val_u8(src, id));
      return {};
    case GGUF_TYPE_INT8:
      gguf_set_val_i8(dst, key, gguf_get_val_i8(src, id));
      return {};
    case GGUF_TYPE_UINT16:
      gguf_set_val_u16(dst, key, gguf_get_val_u16(src, id));
      return {};
    case GGUF_TYPE_INT16:
      gguf_set_val_i16(dst, key, gguf_get_val_i16(src, id));
      return {};
    case GGUF_TYPE_UINT32:
      gguf_set_val_u32(dst, key, gguf_get_val_u32(src, id));
      return {};
    case GGUF_TYPE_INT32:
      gguf_set_val_i32(dst, key, gguf_get_val_i32(src, id));
      return {};
    case GGUF_TYPE_FLOAT32:
      gguf_set_val_f32(dst, key, gguf_get_val_f32(src, id));
      return {};
    case GGUF_TYPE_UINT64:
      gguf_set_val_u64(dst, key, gguf_get_val_u64(src, id));
      return {};
    case GGUF_TYPE_INT64:
      gguf_set_val_i64(dst, key, gguf_get_val_i64(src, id));
      return {};
    case GGUF_TYPE_FLOAT64:
      gguf_set_val_f64(dst, key, gguf_get_val_f64(src, id));
      return {};
    case GGUF_TYPE_BOOL:
      gguf_set_val_bool(dst, key, gguf_get_val_bool(src, id));
      return {};
    case GGUF_TYPE_STRING:
      gguf_set_val_str(dst, key, gguf_get_val_str(src, id));
      return {};
    case GGUF_TYPE_ARRAY:
      break;
    default:
      return Fail(ErrorCode::kInvalidArgument, "make-model: vocab key " + std::string(k) + " has a bad type");
  }
  const gguf_type arr_type = gguf_get_arr_type(src, id);
  const size_t n = gguf_get_arr_n(src, id);
  if (arr_type == GGUF_TYPE_STRING) {
    std::vector<std::string> pads;  // owns the "[PAD{i}]" strings while ptrs points into them
    if (k == "tokenizer.ggml.tokens") {
      for (size_t i = n; i < n_vocab; ++i) pads.push_back("[PAD" + std::to_string(i) + "]");
    }
    std::vector<const char*> ptrs;
    ptrs.reserve(n + pads.size());
    for (size_t i = 0; i < n; ++i) ptrs.push_back(gguf_get_arr_str(src, id, i));
    for (const auto& p : pads) ptrs.push_back(p.c_str());
    gguf_set_arr_str(dst, key, ptrs.data(), ptrs.size());
    return {};
  }
  if (arr_type == GGUF_TYPE_ARRAY) {
    return Fail(ErrorCode::kInvalidArgument, "make-model: vocab key " + std::string(k) + " is a nested array");
  }
  const void* data = gguf_get_arr_data(src, id);
  if (k == "tokenizer.ggml.token_type" && arr_type == GGUF_TYPE_INT32 && n < n_vocab) {
    std::vector<int32_t> v(static_cast<const int32_t*>(data), static_cast<const int32_t*>(data) + n);
    v.resize(n_vocab, LLAMA_TOKEN_TYPE_UNUSED);
    gguf_set_arr_data(dst, key, arr_type, v.data(), v.size());
  } else if (k == "tokenizer.ggml.scores" && arr_type == GGUF_TYPE_FLOAT32 && n < n_vocab) {
    std::vector<float> v(static_cast<const float*>(data), static_cast<const float*>(data) + n);
    v.resize(n_vocab, kPadTokenScore);
    gguf_set_arr_data(dst, key, arr_type, v.data(), v.size());
  } else {
    gguf_set_arr_data(dst, key, arr_type, data, n);
  }
  return {};
}

struct Header {
  gguf_context_ptr gguf;
  ggml_context_ptr tensors;  // metadata only (no_alloc): gguf_add_tensor copies shape and type
};

Result<Header> BuildHeader(const ModelSpec& s, const gguf_context* vocab, uint32_t n_vocab,
                           const std::vector<TensorPlan>& plan, ggml_type wtype) {
  Header h;
  h.gguf.reset(gguf_init_empty());
  const ggml_init_params params{ggml_tensor_overhead() * (plan.size() + 1), nullptr, /*no_alloc=*/true};
  h.tensors.reset(ggml_init(params));
  if (!h.gguf || !h.tensors) return Fail(ErrorCode::kInternal, "make-model: out of memory");
  gguf_context* g = h.gguf.get();

  const std::string preset = s.preset.empty() ? "custom" : s.preset;
  gguf_set_val_str(g, "general.architecture", s.arch.c_str());
  gguf_set_val_str(g, "general.type", "model");
  gguf_set_val_str(g, "general.name", ("modeld-random-" + preset).c_str());
  gguf_set_val_u32(g, "general.file_type", FileType(wtype));
  gguf_set_val_u32(g, "general.quantization_version", GGML_QNT_VERSION);
  gguf_set_val_str(g, "modeld.preset", preset.c_str());
  gguf_set_val_u64(g, "modeld.seed", s.seed);

  auto key = [&](const char* suffix) { return s.arch + "." + suffix; };
  gguf_set_val_u32(g, key("vocab_size").c_str(), n_vocab);
  gguf_set_val_u32(g, key("context_length").c_str(), s.n_ctx_train);
  gguf_set_val_u32(g, key("embedding_length").c_str(), s.n_embd);
  gguf_set_val_u32(g, key("block_count").c_str(), s.n_layer);
  gguf_set_val_u32(g, key("feed_forward_length").c_str(), s.n_ff);
  gguf_set_val_u32(g, key("attention.head_count").c_str(), s.n_head);
  if (IsMamba(s.arch)) {
    // What convert_hf_to_gguf.py writes for Mamba (no head_count_kv, no rope).
    gguf_set_val_u32(g, key("ssm.conv_kernel").c_str(), s.ssm_d_conv);
    gguf_set_val_u32(g, key("ssm.inner_size").c_str(), s.ssm_d_inner);
    gguf_set_val_u32(g, key("ssm.state_size").c_str(), s.ssm_d_state);
    gguf_set_val_u32(g, key("ssm.time_step_rank").c_str(), s.ssm_dt_rank);
    gguf_set_val_bool(g, key("ssm.dt_b_c_rms").c_str(), false);
    gguf_set_val_f32(g, key("attention.layer_norm_rms_epsilon").c_str(), s.norm_eps);
  } else {
    gguf_set_val_u32(g, key("attention.head_count_kv").c_str(), s.n_head_kv);
  }
  if (IsDecoder(s.arch)) {
    gguf_set_val_f32(g, key("rope.freq_base").c_str(), s.rope_theta);
    gguf_set_val_u32(g, key("rope.dimension_count").c_str(), s.n_embd / s.n_head);
    gguf_set_val_f32(g, key("attention.layer_norm_rms_epsilon").c_str(), s.norm_eps);
  } else if (s.arch == "bert") {
    gguf_set_val_f32(g, key("attention.layer_norm_epsilon").c_str(), s.norm_eps);
    gguf_set_val_bool(g, key("attention.causal").c_str(), false);
  }
  if (const int pooling = *ParsePooling(s.pooling); pooling != kNoPooling) {
    gguf_set_val_u32(g, key("pooling_type").c_str(), static_cast<uint32_t>(pooling));
  }

  for (int64_t id = 0; id < gguf_get_n_kv(vocab); ++id) {
    if (std::string_view(gguf_get_key(vocab, id)).starts_with("tokenizer.")) {
      if (auto st = CopyTokenizerKv(g, vocab, id, n_vocab); !st) return std::unexpected(st.error());
    }
  }
  if (!s.chat_template.empty()) gguf_set_val_str(g, "tokenizer.chat_template", s.chat_template.c_str());
  if (s.arch == "bert" && gguf_find_key(g, "tokenizer.ggml.token_type_count") < 0) {
    gguf_set_val_u32(g, "tokenizer.ggml.token_type_count", kDefaultTokenTypes);
  }

  for (const auto& t : plan) {
    const int64_t ne[2] = {t.ne0, t.ne1};
    ggml_tensor* tensor = ggml_new_tensor(h.tensors.get(), t.type, t.n_dims, ne);
    ggml_set_name(tensor, t.name.c_str());
    gguf_add_tensor(g, tensor);
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Output: a temp file next to the target, renamed over it only once complete.

Error IoError(const std::string& what, const std::string& path) {
  return Error(ErrorCode::kIoError, "make-model: " + what + " " + path + ": " + std::strerror(errno));
}

class TempFile {
 public:
  TempFile() = default;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }

  Status Open(const std::string& final_path) {
    final_ = final_path;
    std::string tmpl = final_path + ".tmp.XXXXXX";
    fd_ = ::mkstemp(tmpl.data());
    if (fd_ < 0) return std::unexpected(IoError("cannot create a temp file for", final_path));
    path_ = tmpl;
    return {};
  }

  Status Write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return std::unexpected(IoError("cannot write", path_));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return {};
  }

  // mkstemp makes 0600 files; a model is an ordinary readable file.
  Status Commit() {
    if (::fchmod(fd_, 0644) != 0) return std::unexpected(IoError("cannot chmod", path_));
    if (::fsync(fd_) != 0) return std::unexpected(IoError("cannot sync", path_));
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) return std::unexpected(IoError("cannot close", path_));
    if (::rename(path_.c_str(), final_.c_str()) != 0) return std::unexpected(IoError("cannot rename to", final_));
    path_.clear();
    return {};
  }

 private:
  int fd_ = -1;
  std::string path_;  // the temp file; empty once renamed
  std::string final_;
};

// Encodes rows of f32 into the tensor type; returns the byte count.
size_t EncodeRows(ggml_type type, const float* src, int64_t nrows, int64_t n_per_row, void* dst) {
  switch (type) {
    case GGML_TYPE_F32:
      std::memcpy(dst, src, sizeof(float) * nrows * n_per_row);
      return sizeof(float) * nrows * n_per_row;
    case GGML_TYPE_F16:
      ggml_fp32_to_fp16_row(src, static_cast<ggml_fp16_t*>(dst), nrows * n_per_row);
      return ggml_row_size(type, n_per_row) * nrows;
    default:
      return ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, nullptr);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::vector<std::string> PresetNames() {
  return {"tiny", "tiny-llama", "tiny-embed", "tiny-mamba", "coder-0.5b", "coder-1.5b"};
}

Result<ModelSpec> PresetSpec(std::string_view preset, const std::string& vocab_dir) {
  ModelSpec s;
  s.preset = std::string(preset);
  auto vocab = [&](const char* name) { return vocab_dir + "/ggml-vocab-" + name + ".gguf"; };
  if (preset == "tiny" || preset == "tiny-llama" || preset == "tiny-embed") {
    s.n_embd = 64;
    s.n_layer = 2;
    s.n_head = 4;
    s.n_head_kv = 2;
    s.n_ff = 128;
    s.n_ctx_train = 32768;  // as Qwen2.5's; workspace tests use contexts past 4096
    s.arch = "qwen2";
    s.vocab_path = vocab("qwen2");
    s.tie_output = false;
    if (preset == "tiny-llama") {
      s.arch = "llama";
      s.vocab_path = vocab("llama-spm");
      s.n_head_kv = 4;  // plain multi-head attention, unlike tiny's GQA
      s.rope_theta = 10000.0f;
      s.norm_eps = 1e-5f;
    } else if (preset == "tiny-embed") {
      s.arch = "bert";
      s.vocab_path = vocab("bert-bge");
      s.n_head_kv = 4;
      s.n_ctx_train = 512;
      s.norm_eps = 1e-12f;
      s.weight_type = "f16";
      s.pooling = "cls";  // as bge does
    }
    return s;
  }
  if (preset == "tiny-mamba") {
    s.arch = "mamba";
    s.vocab_path = vocab("gpt-neox");  // the real Mamba checkpoints use the GPT-NeoX tokenizer
    s.n_embd = 64;
    s.n_layer = 2;
    s.ssm_d_conv = 4;
    s.ssm_d_inner = 128;
    s.ssm_d_state = 16;
    s.ssm_dt_rank = 4;
    s.n_ctx_train = 1 << 20;  // no positions: convert_hf_to_gguf.py writes 2^20 for Mamba too
    s.norm_eps = 1e-5f;
    s.tie_output = false;
    return s;
  }
  if (preset == "coder-0.5b" || preset == "coder-1.5b") {
    const bool small = preset == "coder-0.5b";
    s.arch = "qwen2";
    s.vocab_path = vocab("qwen2");
    s.n_embd = small ? 896 : 1536;
    s.n_layer = small ? 24 : 28;
    s.n_head = small ? 14 : 12;
    s.n_head_kv = 2;
    s.n_ff = small ? 4864 : 8960;
    s.n_vocab = 151936;
    s.n_ctx_train = 32768;
    s.rope_theta = 1000000.0f;
    s.norm_eps = 1e-6f;
    s.weight_type = "q8_0";
    return s;
  }
  return Fail(ErrorCode::kNotFound, "make-model: unknown preset '" + std::string(preset) + "'");
}

Status WriteRandomModel(const ModelSpec& requested, const std::string& out_path,
                        const std::function<void(uint64_t, uint64_t)>& progress) {
  const ModelSpec spec = Resolve(requested);
  if (auto st = ValidateSpec(spec); !st) return st;
  const ggml_type wtype = *ParseWeightType(spec.weight_type);

  std::error_code ec;
  if (!std::filesystem::is_regular_file(spec.vocab_path, ec)) {
    return Fail(ErrorCode::kNotFound, "make-model: vocab file not found: " + spec.vocab_path);
  }
  gguf_context_ptr vocab(gguf_init_from_file(spec.vocab_path.c_str(), {/*no_alloc=*/true, nullptr}));
  if (!vocab) return Fail(ErrorCode::kInvalidArgument, "make-model: not a GGUF file: " + spec.vocab_path);
  const int64_t tokens_id = gguf_find_key(vocab.get(), "tokenizer.ggml.tokens");
  if (tokens_id < 0 || gguf_get_kv_type(vocab.get(), tokens_id) != GGUF_TYPE_ARRAY ||
      gguf_get_arr_type(vocab.get(), tokens_id) != GGUF_TYPE_STRING) {
    return Fail(ErrorCode::kInvalidArgument, "make-model: no tokenizer in " + spec.vocab_path);
  }
  const size_t n_tokens = gguf_get_arr_n(vocab.get(), tokens_id);
  if (spec.n_vocab != 0 && spec.n_vocab < n_tokens) {
    return Fail(ErrorCode::kInvalidArgument, "make-model: n_vocab " + std::to_string(spec.n_vocab) +
                                                 " is smaller than the tokenizer's " + std::to_string(n_tokens) +
                                                 " tokens");
  }
  const uint32_t n_vocab = spec.n_vocab != 0 ? spec.n_vocab : static_cast<uint32_t>(n_tokens);
  uint32_t n_token_types = kDefaultTokenTypes;
  if (const int64_t id = gguf_find_key(vocab.get(), "tokenizer.ggml.token_type_count");
      id >= 0 && gguf_get_kv_type(vocab.get(), id) == GGUF_TYPE_UINT32) {
    n_token_types = std::max(1u, gguf_get_val_u32(vocab.get(), id));
  }

  const std::vector<TensorPlan> plan = PlanTensors(spec, wtype, n_vocab, n_token_types);
  auto header = BuildHeader(spec, vocab.get(), n_vocab, plan, wtype);
  if (!header) return std::unexpected(header.error());
  const gguf_context* g = header->gguf.get();
  vocab.reset();  // the tokenizer strings now live in the new context

  std::vector<uint8_t> meta(gguf_get_meta_size(g));
  gguf_get_meta_data(g, meta.data());
  const size_t alignment = gguf_get_alignment(g);
  uint64_t total = meta.size();
  for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) total += GGML_PAD(gguf_get_tensor_size(g, i), alignment);

  TempFile file;
  if (auto st = file.Open(out_path); !st) return st;
  uint64_t done = 0, reported = 0;
  auto report = [&](bool force) {
    if (progress && (force || done - reported >= kProgressStep)) {
      progress(done, total);
      reported = done;
    }
  };
  report(true);
  if (auto st = file.Write(meta.data(), meta.size()); !st) return st;
  done += meta.size();

  std::vector<float> src;
  std::vector<uint8_t> dst;
  const std::vector<uint8_t> zeros(alignment, 0);
  for (size_t i = 0; i < plan.size(); ++i) {
    const TensorPlan& t = plan[i];
    // gguf computes each offset as the previous one padded to the alignment; we stream in that layout.
    if (meta.size() + gguf_get_tensor_offset(g, static_cast<int64_t>(i)) != done) {
      return Fail(ErrorCode::kInternal, "make-model: tensor layout mismatch at " + t.name);
    }
    const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkElems / t.ne0);
    src.resize(rows_per_chunk * t.ne0);
    dst.resize(ggml_row_size(t.type, t.ne0) * rows_per_chunk);
    Xoshiro256 rng(spec.seed ^ Fnv1a(t.name));
    const float amp = t.amp > 0 ? t.amp : kWeightStd * std::sqrt(3.0f);  // uniform [-a, a): std a/sqrt(3)
    size_t bytes = 0;
    for (int64_t row = 0; row < t.ne1; row += rows_per_chunk) {
      const int64_t nrows = std::min(rows_per_chunk, t.ne1 - row);
      const int64_t n = nrows * t.ne0;
      switch (t.init) {
        case Init::kRandom:
          FillUniform(rng, amp, src.data(), n);
          break;
        case Init::kOnes:
          std::fill_n(src.begin(), n, 1.0f);
          break;
        case Init::kZeros:
          std::fill_n(src.begin(), n, 0.0f);
          break;
        case Init::kSsmA:
          for (int64_t k = 0; k < n; ++k) src[k] = -static_cast<float>(k % t.ne0 + 1);
          break;
        case Init::kDtBias: {
          // dt = exp(U(log dt_min, log dt_max)); bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
          const float lo = std::log(kDtMin), hi = std::log(kDtMax);
          FillUniform(rng, 0.5f, src.data(), n);
          for (int64_t k = 0; k < n; ++k) {
            const float dt = std::exp(lo + (src[k] + 0.5f) * (hi - lo));
            src[k] = dt + std::log(-std::expm1(-dt));
          }
          break;
        }
      }
      const size_t size = EncodeRows(t.type, src.data(), nrows, t.ne0, dst.data());
      if (auto st = file.Write(dst.data(), size); !st) return st;
      bytes += size;
      done += size;
      report(false);
    }
    const size_t pad = GGML_PAD(bytes, alignment) - bytes;
    if (auto st = file.Write(zeros.data(), pad); !st) return st;
    done += pad;
  }
  if (done != total) return Fail(ErrorCode::kInternal, "make-model: wrote a different size than planned");
  if (auto st = file.Commit(); !st) return st;
  report(true);
  return {};
}

}  // namespace modeld::llama
