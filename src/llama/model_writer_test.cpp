#include "llama/model_writer.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "ggml-cpp.h"
#include "gguf.h"
#include "llama-cpp.h"
#include "llama.h"

#ifndef MODELD_VOCAB_DIR
#define MODELD_VOCAB_DIR "/work/main/third_party/llama.cpp/models"
#endif

namespace modeld::llama {
namespace {

namespace fs = std::filesystem;

void InitLlamaOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("MODELD_TEST_VERBOSE") == nullptr) {
      llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
    }
    llama_backend_init();
  });
}

// llama_batch owns malloc'd arrays; free them on every path.
struct BatchPtr {
  llama_batch batch;
  explicit BatchPtr(int32_t n) : batch(llama_batch_init(n, 0, 1)) {}
  ~BatchPtr() { llama_batch_free(batch); }
  BatchPtr(const BatchPtr&) = delete;
  BatchPtr& operator=(const BatchPtr&) = delete;
};

llama_model_ptr Load(const std::string& path, bool vocab_only = false) {
  llama_model_params mp = llama_model_default_params();
  mp.vocab_only = vocab_only;
  return llama_model_ptr(llama_model_load_from_file(path.c_str(), mp));
}

std::vector<llama_token> Tokenize(const llama_vocab* vocab, const std::string& text, bool add_special,
                                  bool parse_special) {
  std::vector<llama_token> tokens(text.size() + 8);
  int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), add_special, parse_special);
  if (n < 0) {
    tokens.resize(-n);
    n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), add_special, parse_special);
  }
  tokens.resize(std::max(n, 0));
  return tokens;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const std::vector<std::string>& SampleTexts() {
  static const std::vector<std::string> texts = {
      "Hello world",
      "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
      "  leading spaces, trailing tabs\t\t\nand 12345 numbers 3.14159",
      "Ünïcödé — 日本語のテキスト 🚀🔥 ñ",
      "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
      "[CLS] the quick brown fox [SEP] <s> </s> <unk>",
  };
  return texts;
}

class ModelWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitLlamaOnce();
    std::string tmpl = (fs::temp_directory_path() / "model_writer_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  ModelSpec Preset(const std::string& name) {
    auto spec = PresetSpec(name, MODELD_VOCAB_DIR);
    EXPECT_TRUE(spec.has_value()) << name;
    return spec.value_or(ModelSpec{});
  }

  std::string Write(const ModelSpec& spec, const std::string& name) {
    const std::string path = (dir_ / name).string();
    auto st = WriteRandomModel(spec, path);
    EXPECT_TRUE(st.has_value()) << (st ? "" : st.error().ToString());
    return path;
  }

  // Every token, the special ids and the tokenization of sample texts match the vocab file.
  void ExpectSameTokenizer(const llama_model* model, const std::string& vocab_path, uint32_t n_pad = 0) {
    llama_model_ptr ref = Load(vocab_path, /*vocab_only=*/true);
    ASSERT_TRUE(ref);
    const llama_vocab* a = llama_model_get_vocab(model);
    const llama_vocab* b = llama_model_get_vocab(ref.get());
    const int32_t n = llama_vocab_n_tokens(b);
    ASSERT_EQ(llama_vocab_n_tokens(a), n + static_cast<int32_t>(n_pad));
    EXPECT_EQ(llama_vocab_type(a), llama_vocab_type(b));
    EXPECT_EQ(llama_vocab_bos(a), llama_vocab_bos(b));
    EXPECT_EQ(llama_vocab_eos(a), llama_vocab_eos(b));
    EXPECT_EQ(llama_vocab_eot(a), llama_vocab_eot(b));
    EXPECT_EQ(llama_vocab_sep(a), llama_vocab_sep(b));
    EXPECT_EQ(llama_vocab_pad(a), llama_vocab_pad(b));
    EXPECT_EQ(llama_vocab_get_add_bos(a), llama_vocab_get_add_bos(b));
    EXPECT_EQ(llama_vocab_get_add_eos(a), llama_vocab_get_add_eos(b));
    for (llama_token t = 0; t < n; ++t) {
      ASSERT_STREQ(llama_vocab_get_text(a, t), llama_vocab_get_text(b, t)) << t;
      ASSERT_EQ(llama_vocab_get_attr(a, t), llama_vocab_get_attr(b, t)) << t;
      ASSERT_EQ(llama_vocab_get_score(a, t), llama_vocab_get_score(b, t)) << t;
    }
    for (const auto& text : SampleTexts()) {
      for (bool special : {false, true}) {
        const auto ta = Tokenize(a, text, special, special);
        EXPECT_FALSE(ta.empty()) << text;
        EXPECT_EQ(ta, Tokenize(b, text, special, special)) << text;
      }
    }
    const char* tmpl_a = llama_model_chat_template(model, nullptr);
    const char* tmpl_b = llama_model_chat_template(ref.get(), nullptr);
    EXPECT_EQ(tmpl_a == nullptr, tmpl_b == nullptr);
    if (tmpl_a != nullptr && tmpl_b != nullptr) {
      EXPECT_STREQ(tmpl_a, tmpl_b);
    }
  }

  // The logits after evaluating `tokens` in a fresh context, n_batch tokens per llama_decode.
  std::vector<float> LogitsAfter(llama_model* model, const std::vector<llama_token>& tokens, int32_t n_batch) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(n_batch);
    cp.n_threads = cp.n_threads_batch = 1;
    llama_context_ptr ctx(llama_init_from_model(model, cp));
    EXPECT_TRUE(ctx);
    if (!ctx) return {};
    for (size_t pos = 0; pos < tokens.size(); pos += static_cast<size_t>(n_batch)) {
      const size_t end = std::min(tokens.size(), pos + static_cast<size_t>(n_batch));
      BatchPtr b(n_batch);
      for (size_t i = pos; i < end; ++i) {
        const int32_t k = static_cast<int32_t>(i - pos);
        b.batch.token[k] = tokens[i];
        b.batch.pos[k] = static_cast<llama_pos>(i);
        b.batch.n_seq_id[k] = 1;
        b.batch.seq_id[k][0] = 0;
        b.batch.logits[k] = i + 1 == tokens.size();
      }
      b.batch.n_tokens = static_cast<int32_t>(end - pos);
      EXPECT_EQ(llama_decode(ctx.get(), b.batch), 0);
    }
    const float* logits = llama_get_logits_ith(ctx.get(), -1);
    EXPECT_NE(logits, nullptr);
    if (logits == nullptr) return {};
    return std::vector<float>(logits, logits + llama_vocab_n_tokens(llama_model_get_vocab(model)));
  }

  static float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float d = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
  }

  // A short prompt plus a few greedy tokens; every logit finite.
  void ExpectDecodes(llama_model* model) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 128;
    cp.n_batch = 128;
    cp.n_threads = cp.n_threads_batch = 1;
    llama_context_ptr ctx(llama_init_from_model(model, cp));
    ASSERT_TRUE(ctx);
    const llama_vocab* vocab = llama_model_get_vocab(model);
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    std::vector<llama_token> tokens = Tokenize(vocab, "int main() { return 0; }", true, false);
    ASSERT_FALSE(tokens.empty());
    for (int step = 0; step < 4; ++step) {
      ASSERT_EQ(llama_decode(ctx.get(), llama_batch_get_one(tokens.data(), static_cast<int32_t>(tokens.size()))), 0);
      const float* logits = llama_get_logits_ith(ctx.get(), -1);
      ASSERT_NE(logits, nullptr);
      llama_token best = 0;
      for (llama_token t = 0; t < n_vocab; ++t) {
        ASSERT_TRUE(std::isfinite(logits[t])) << "step " << step << " token " << t;
        if (logits[t] > logits[best]) best = t;
      }
      tokens = {best};
    }
  }

  fs::path dir_;
};

TEST_F(ModelWriterTest, PresetsResolve) {
  for (const auto& name : PresetNames()) {
    auto spec = PresetSpec(name, MODELD_VOCAB_DIR);
    ASSERT_TRUE(spec.has_value()) << name;
    EXPECT_EQ(spec->preset, name);
    EXPECT_TRUE(fs::is_regular_file(spec->vocab_path)) << spec->vocab_path;
    if (spec->arch == "mamba") {  // no attention heads
      EXPECT_EQ(spec->ssm_d_inner, 2 * spec->n_embd) << name;
      continue;
    }
    ASSERT_GT(spec->n_head, 0u) << name;
    ASSERT_GT(spec->n_head_kv, 0u) << name;
    EXPECT_EQ(spec->n_embd % spec->n_head, 0u) << name;
    EXPECT_EQ(spec->n_head % spec->n_head_kv, 0u) << name;
  }
  auto coder = PresetSpec("coder-1.5b", MODELD_VOCAB_DIR);
  ASSERT_TRUE(coder.has_value());
  EXPECT_EQ(coder->n_embd, 1536u);
  EXPECT_EQ(coder->n_layer, 28u);
  EXPECT_EQ(coder->n_head, 12u);
  EXPECT_EQ(coder->n_head_kv, 2u);
  EXPECT_EQ(coder->n_ff, 8960u);
  EXPECT_EQ(coder->n_vocab, 151936u);

  auto unknown = PresetSpec("no-such-preset", MODELD_VOCAB_DIR);
  ASSERT_FALSE(unknown.has_value());
  EXPECT_TRUE(unknown.error().Is(ErrorCode::kNotFound));
}

TEST_F(ModelWriterTest, TinyLoadsTokenizesAndDecodes) {
  const ModelSpec spec = Preset("tiny");
  uint64_t last_done = 0, last_total = 0;
  int calls = 0;
  const std::string path = (dir_ / "tiny.gguf").string();
  auto st = WriteRandomModel(spec, path, [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last_done);
    EXPECT_LE(done, total);
    last_done = done;
    last_total = total;
    ++calls;
  });
  ASSERT_TRUE(st.has_value()) << st.error().ToString();
  EXPECT_GE(calls, 2);
  EXPECT_EQ(last_done, last_total);
  EXPECT_EQ(last_total, fs::file_size(path));
  EXPECT_LT(fs::file_size(path), 32u << 20);

  llama_model_ptr model = Load(path);
  ASSERT_TRUE(model);
  EXPECT_EQ(llama_model_n_embd(model.get()), 64);
  EXPECT_EQ(llama_model_n_layer(model.get()), 2);
  EXPECT_EQ(llama_model_n_head(model.get()), 4);
  EXPECT_EQ(llama_model_n_head_kv(model.get()), 2);
  EXPECT_EQ(llama_model_n_ctx_train(model.get()), 32768);
  EXPECT_FALSE(llama_model_has_encoder(model.get()));
  char buf[128];
  ASSERT_GT(llama_model_meta_val_str(model.get(), "general.name", buf, sizeof(buf)), 0);
  EXPECT_STREQ(buf, "modeld-random-tiny");
  ASSERT_GT(llama_model_meta_val_str(model.get(), "modeld.seed", buf, sizeof(buf)), 0);
  EXPECT_STREQ(buf, "1");
  ASSERT_GT(llama_model_meta_val_str(model.get(), "general.architecture", buf, sizeof(buf)), 0);
  EXPECT_STREQ(buf, "qwen2");

  ExpectSameTokenizer(model.get(), spec.vocab_path);
  ExpectDecodes(model.get());
}

TEST_F(ModelWriterTest, TinyLlamaLoadsTokenizesAndDecodes) {
  const ModelSpec spec = Preset("tiny-llama");
  llama_model_ptr model = Load(Write(spec, "tiny-llama.gguf"));
  ASSERT_TRUE(model);
  EXPECT_EQ(llama_model_n_head_kv(model.get()), 4);
  char buf[64];
  ASSERT_GT(llama_model_meta_val_str(model.get(), "general.architecture", buf, sizeof(buf)), 0);
  EXPECT_STREQ(buf, "llama");
  ExpectSameTokenizer(model.get(), spec.vocab_path);
  ExpectDecodes(model.get());
}

// The same arch with the other llama vocab (BPE with 280k merges instead of SPM scores).
TEST_F(ModelWriterTest, TinyLlamaWithBpeVocab) {
  ModelSpec spec = Preset("tiny-llama");
  spec.vocab_path = std::string(MODELD_VOCAB_DIR) + "/ggml-vocab-llama-bpe.gguf";
  spec.rope_theta = 500000.0f;
  llama_model_ptr model = Load(Write(spec, "tiny-llama-bpe.gguf"));
  ASSERT_TRUE(model);
  ExpectSameTokenizer(model.get(), spec.vocab_path);
  ExpectDecodes(model.get());
}

// Other weight types, a padded vocab, and rows that don't split into quant blocks (n_ff 80 makes
// ffn_down's rows 80 wide: it falls back to f16).
TEST_F(ModelWriterTest, WeightTypesPaddingAndFallback) {
  for (const char* type : {"f32", "f16", "q4_0", "q8_0"}) {
    SCOPED_TRACE(type);
    ModelSpec spec = Preset("tiny-llama");
    spec.weight_type = type;
    spec.n_vocab = 32064;
    spec.n_ff = 80;
    llama_model_ptr model = Load(Write(spec, std::string("tiny-llama-") + type + ".gguf"));
    ASSERT_TRUE(model);
    const llama_vocab* vocab = llama_model_get_vocab(model.get());
    ASSERT_EQ(llama_vocab_n_tokens(vocab), 32064);
    EXPECT_STREQ(llama_vocab_get_text(vocab, 32000), "[PAD32000]");
    EXPECT_STREQ(llama_vocab_get_text(vocab, 32063), "[PAD32063]");
    EXPECT_EQ(llama_vocab_get_attr(vocab, 32063), LLAMA_TOKEN_ATTR_UNUSED);
    ExpectSameTokenizer(model.get(), spec.vocab_path, /*n_pad=*/64);
    ExpectDecodes(model.get());
  }
}

TEST_F(ModelWriterTest, TinyEmbedYieldsPooledEmbedding) {
  const ModelSpec spec = Preset("tiny-embed");
  llama_model_ptr model = Load(Write(spec, "tiny-embed.gguf"));
  ASSERT_TRUE(model);
  ExpectSameTokenizer(model.get(), spec.vocab_path);

  llama_context_params cp = llama_context_default_params();
  cp.embeddings = true;
  cp.n_ctx = 64;
  cp.n_batch = cp.n_ubatch = 64;
  cp.n_threads = cp.n_threads_batch = 1;
  llama_context_ptr ctx(llama_init_from_model(model.get(), cp));
  ASSERT_TRUE(ctx);
  EXPECT_EQ(llama_pooling_type(ctx.get()), LLAMA_POOLING_TYPE_CLS);

  const auto tokens = Tokenize(llama_model_get_vocab(model.get()), "a sentence to embed", true, false);
  ASSERT_GE(tokens.size(), 3u);
  BatchPtr b(static_cast<int32_t>(tokens.size()));
  for (size_t i = 0; i < tokens.size(); ++i) {
    b.batch.token[i] = tokens[i];
    b.batch.pos[i] = static_cast<llama_pos>(i);
    b.batch.n_seq_id[i] = 1;
    b.batch.seq_id[i][0] = 0;
    b.batch.logits[i] = true;
  }
  b.batch.n_tokens = static_cast<int32_t>(tokens.size());
  ASSERT_EQ(llama_encode(ctx.get(), b.batch), 0);
  const float* emb = llama_get_embeddings_seq(ctx.get(), 0);
  ASSERT_NE(emb, nullptr);
  const int32_t n_embd = llama_model_n_embd(model.get());
  ASSERT_EQ(n_embd, 64);
  double norm = 0;
  for (int32_t i = 0; i < n_embd; ++i) {
    ASSERT_TRUE(std::isfinite(emb[i])) << i;
    norm += emb[i] * emb[i];
  }
  EXPECT_GT(norm, 0.0);
}

// A recurrent model: Mamba's tensors and KVs as llama.cpp's loader wants them, the gpt-neox vocab.
TEST_F(ModelWriterTest, TinyMambaLoadsTokenizesAndDecodes) {
  const ModelSpec spec = Preset("tiny-mamba");
  EXPECT_EQ(spec.arch, "mamba");
  EXPECT_EQ(spec.vocab_path, std::string(MODELD_VOCAB_DIR) + "/ggml-vocab-gpt-neox.gguf");
  const std::string path = Write(spec, "tiny-mamba.gguf");
  EXPECT_LT(fs::file_size(path), 16u << 20);
  llama_model_ptr model = Load(path);
  ASSERT_TRUE(model);
  EXPECT_TRUE(llama_model_is_recurrent(model.get()));
  EXPECT_FALSE(llama_model_is_hybrid(model.get()));
  EXPECT_FALSE(llama_model_has_encoder(model.get()));
  EXPECT_EQ(llama_model_n_embd(model.get()), 64);
  EXPECT_EQ(llama_model_n_layer(model.get()), 2);
  EXPECT_EQ(llama_model_n_head(model.get()), 0);
  char buf[128];
  ASSERT_GT(llama_model_meta_val_str(model.get(), "general.architecture", buf, sizeof(buf)), 0);
  EXPECT_STREQ(buf, "mamba");
  ASSERT_GT(llama_model_meta_val_str(model.get(), "general.name", buf, sizeof(buf)), 0);
  EXPECT_STREQ(buf, "modeld-random-tiny-mamba");
  const std::pair<const char*, const char*> ssm_kvs[] = {{"mamba.ssm.conv_kernel", "4"},
                                                         {"mamba.ssm.inner_size", "128"},
                                                         {"mamba.ssm.state_size", "16"},
                                                         {"mamba.ssm.time_step_rank", "4"}};
  for (const auto& [key, want] : ssm_kvs) {
    ASSERT_GT(llama_model_meta_val_str(model.get(), key, buf, sizeof(buf)), 0) << key;
    EXPECT_STREQ(buf, want) << key;
  }

  ExpectSameTokenizer(model.get(), spec.vocab_path);
  ExpectDecodes(model.get());

  // The values llama.cpp's SSM ops rely on: A < 0 and f32, the conv kernel f32, D = 1, and dt
  // biases that softplus back into [dt_min, dt_max].
  ggml_context* raw = nullptr;
  gguf_context_ptr g(gguf_init_from_file(path.c_str(), {/*no_alloc=*/false, &raw}));
  ASSERT_TRUE(g);
  ggml_context_ptr data(raw);
  for (int layer = 0; layer < 2; ++layer) {
    const std::string blk = "blk." + std::to_string(layer) + ".";
    const ggml_tensor* a = ggml_get_tensor(raw, (blk + "ssm_a").c_str());
    ASSERT_NE(a, nullptr);
    ASSERT_EQ(a->type, GGML_TYPE_F32);
    ASSERT_EQ(a->ne[0], 16);
    ASSERT_EQ(a->ne[1], 128);
    for (int64_t i = 0; i < ggml_nelements(a); ++i) ASSERT_LT(static_cast<const float*>(a->data)[i], 0.0f) << i;
    const ggml_tensor* conv = ggml_get_tensor(raw, (blk + "ssm_conv1d.weight").c_str());
    ASSERT_NE(conv, nullptr);
    EXPECT_EQ(conv->type, GGML_TYPE_F32);
    EXPECT_EQ(conv->ne[0], 4);
    const ggml_tensor* d = ggml_get_tensor(raw, (blk + "ssm_d").c_str());
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(static_cast<const float*>(d->data)[0], 1.0f);
    const ggml_tensor* dt_b = ggml_get_tensor(raw, (blk + "ssm_dt.bias").c_str());
    ASSERT_NE(dt_b, nullptr);
    for (int64_t i = 0; i < ggml_nelements(dt_b); ++i) {
      const float softplus = std::log1p(std::exp(static_cast<const float*>(dt_b->data)[i]));
      ASSERT_GE(softplus, 0.999e-3f) << i;
      ASSERT_LE(softplus, 1.001e-1f) << i;
    }
    for (const char* name : {"ssm_in.weight", "ssm_x.weight", "ssm_dt.weight", "ssm_out.weight", "ssm_conv1d.bias"}) {
      EXPECT_NE(ggml_get_tensor(raw, (blk + name).c_str()), nullptr) << blk << name;
    }
  }
}

// The state is what carries the history: the same tokens give the same logits whether fed all at
// once or one by one (the state is passed on between calls), and a change far back, beyond the
// reach of the two convolutions (2 x 3 tokens), still changes the last logits, by well over the
// 1e-4 to which the session tests compare warm and cold logits (measured ~5e-3 against logits of
// rms ~0.16; an edit within the conv window moves them by ~0.1-0.3).
TEST_F(ModelWriterTest, TinyMambaStateCarriesTheHistory) {
  llama_model_ptr model = Load(Write(Preset("tiny-mamba"), "tiny-mamba.gguf"));
  ASSERT_TRUE(model);
  const llama_vocab* vocab = llama_model_get_vocab(model.get());
  std::vector<llama_token> tokens =
      Tokenize(vocab, "int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); } // the usual", false, false);
  ASSERT_GE(tokens.size(), 20u);
  const auto whole = LogitsAfter(model.get(), tokens, 64);
  const auto one_by_one = LogitsAfter(model.get(), tokens, 1);
  const auto in_sevens = LogitsAfter(model.get(), tokens, 7);
  EXPECT_LE(MaxAbsDiff(whole, one_by_one), 1e-4f);
  EXPECT_LE(MaxAbsDiff(whole, in_sevens), 1e-4f);

  std::vector<llama_token> edited = tokens;
  edited[1] = edited[1] == 1000 ? 1001 : 1000;
  const float far = MaxAbsDiff(whole, LogitsAfter(model.get(), edited, 64));
  RecordProperty("far_edit_logit_diff", std::to_string(far));
  EXPECT_GT(far, 1e-3f) << "an edit " << tokens.size() - 1 << " tokens back barely reaches the last logits";
}

// arch "mamba" on another preset (as `make-model --arch mamba` does): the attention sizes are
// ignored and the SSM sizes default to Mamba's.
TEST_F(ModelWriterTest, MambaSizesDefault) {
  ModelSpec spec = Preset("tiny-llama");
  spec.arch = "mamba";
  llama_model_ptr model = Load(Write(spec, "mamba-defaults.gguf"));
  ASSERT_TRUE(model);
  EXPECT_TRUE(llama_model_is_recurrent(model.get()));
  char buf[32];
  ASSERT_GT(llama_model_meta_val_str(model.get(), "mamba.ssm.inner_size", buf, sizeof(buf)), 0);
  EXPECT_STREQ(buf, "128");
  ASSERT_GT(llama_model_meta_val_str(model.get(), "mamba.ssm.time_step_rank", buf, sizeof(buf)), 0);
  EXPECT_STREQ(buf, "4");
  ExpectDecodes(model.get());
}

TEST_F(ModelWriterTest, Deterministic) {
  ModelSpec spec = Preset("tiny");
  const std::string a = ReadFile(Write(spec, "a.gguf"));
  const std::string b = ReadFile(Write(spec, "b.gguf"));
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "same seed, different bytes";
  spec.seed = 2;
  const std::string c = ReadFile(Write(spec, "c.gguf"));
  ASSERT_EQ(a.size(), c.size());
  EXPECT_FALSE(a == c);
  // Not only the header: the weights differ too.
  EXPECT_NE(a.substr(a.size() / 2, 4096), c.substr(c.size() / 2, 4096));
}

TEST_F(ModelWriterTest, InvalidSpecsFailAndLeaveNoFile) {
  struct Case {
    const char* what;
    void (*mutate)(ModelSpec&);
    ErrorCode code;
  };
  const Case cases[] = {
      {"n_head not dividing n_embd", [](ModelSpec& s) { s.n_head = 5; }, ErrorCode::kInvalidArgument},
      {"n_head_kv not dividing n_head", [](ModelSpec& s) { s.n_head_kv = 3; }, ErrorCode::kInvalidArgument},
      {"zero layers", [](ModelSpec& s) { s.n_layer = 0; }, ErrorCode::kInvalidArgument},
      {"unknown arch", [](ModelSpec& s) { s.arch = "gpt-9"; }, ErrorCode::kInvalidArgument},
      {"unknown weight type", [](ModelSpec& s) { s.weight_type = "q5_k"; }, ErrorCode::kInvalidArgument},
      {"unknown pooling", [](ModelSpec& s) { s.pooling = "max"; }, ErrorCode::kInvalidArgument},
      {"n_vocab below the tokenizer", [](ModelSpec& s) { s.n_vocab = 1000; }, ErrorCode::kInvalidArgument},
      {"missing vocab", [](ModelSpec& s) { s.vocab_path += ".missing"; }, ErrorCode::kNotFound},
      {"mamba inner size not 2 * n_embd",
       [](ModelSpec& s) {
         s.arch = "mamba";
         s.ssm_d_inner = 3 * s.n_embd;
       },
       ErrorCode::kInvalidArgument},
      {"mamba conv kernel of 1",
       [](ModelSpec& s) {
         s.arch = "mamba";
         s.ssm_d_conv = 1;
       },
       ErrorCode::kInvalidArgument},
  };
  const std::string out = (dir_ / "bad.gguf").string();
  for (const auto& c : cases) {
    ModelSpec spec = Preset("tiny");
    c.mutate(spec);
    auto st = WriteRandomModel(spec, out);
    ASSERT_FALSE(st.has_value()) << c.what;
    EXPECT_TRUE(st.error().Is(c.code)) << c.what << ": " << st.error().ToString();
    EXPECT_TRUE(fs::is_empty(dir_)) << c.what;
  }
  // An output folder that doesn't exist: an I/O error, nothing written.
  auto st = WriteRandomModel(Preset("tiny"), (dir_ / "no-such-dir" / "m.gguf").string());
  ASSERT_FALSE(st.has_value());
  EXPECT_TRUE(st.error().Is(ErrorCode::kIoError)) << st.error().ToString();
  EXPECT_TRUE(fs::is_empty(dir_));
}

}  // namespace
}  // namespace modeld::llama
