#include "llama/llama_model.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "format/fingerprint.h"

namespace modeld::llama {
namespace {

thread_local std::string t_last_error;

void LogSink(ggml_log_level level, const char* text, void*) {
  static const bool verbose = [] {
    const char* v = std::getenv("MODELD_LLAMA_LOG");
    return v != nullptr && v[0] == '1';
  }();
  if (level == GGML_LOG_LEVEL_ERROR) t_last_error += text;
  if (verbose) std::fputs(text, stderr);
}

}  // namespace

void InitLlamaOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    llama_log_set(LogSink, nullptr);
    llama_backend_init();
  });
}

std::string TakeLastLlamaError() {
  std::string e = std::move(t_last_error);
  t_last_error.clear();
  while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
  return e;
}

Result<std::shared_ptr<LlamaModel>> LlamaModel::Load(const ModelInfo& info, const ProgressFunc& progress,
                                                     std::stop_token cancel) {
  return Make(info, progress, std::move(cancel), false);
}

Result<std::shared_ptr<LlamaModel>> LlamaModel::LoadVocab(const ModelInfo& info) { return Make(info, {}, {}, true); }

Result<std::shared_ptr<LlamaModel>> LlamaModel::Make(const ModelInfo& info, const ProgressFunc& progress,
                                                     std::stop_token cancel, bool vocab_only) {
  InitLlamaOnce();
  llama_model_params mp = llama_model_default_params();
  mp.vocab_only = vocab_only;
  struct LoadProgress {
    const ProgressFunc* fn;
    std::stop_token cancel;
    int last_pct = -1;
  } lp{&progress, std::move(cancel)};
  mp.progress_callback = [](float p, void* ud) {
    auto* lp = static_cast<LoadProgress*>(ud);
    const int pct = static_cast<int>(p * 100);
    if (*lp->fn && pct != lp->last_pct) {
      lp->last_pct = pct;
      (*lp->fn)(Progress{"load", pct, 100});
    }
    return !lp->cancel.stop_requested();  // false aborts the load
  };
  mp.progress_callback_user_data = &lp;
  TakeLastLlamaError();
  ModelPtr model(llama_model_load_from_file(info.path.c_str(), mp));
  if (!model && lp.cancel.stop_requested()) return Fail(ErrorCode::kCancelled, info.path + ": model load cancelled");
  if (!model) {
    const std::string why = TakeLastLlamaError();
    return Fail(ErrorCode::kInvalidArgument,
                info.path + ": llama.cpp could not load the model" + (why.empty() ? "" : ": " + why));
  }
  auto m = std::make_shared<LlamaModel>(Key{});
  m->vocab_ = llama_model_get_vocab(model.get());
  m->n_vocab_ = llama_vocab_n_tokens(m->vocab_);
  m->partial_trim_ = !llama_model_is_recurrent(model.get()) && !llama_model_is_hybrid(model.get());
  m->model_ = std::move(model);
  m->info_ = info;
  // Read now, while the file is the one just loaded (a few MiB): snapshots name the weights by it.
  if (!vocab_only) {
    auto fp = format::WeightsFingerprint(info.path, info.data_offset, info.file_size);
    if (!fp) return Fail(fp.error());
    m->fingerprint_ = std::move(*fp);
  }
  return m;
}

Result<std::vector<llama_token>> LlamaModel::Tokenize(std::string_view text, bool parse_special,
                                                      bool add_special) const {
  if (text.size() > static_cast<size_t>(INT32_MAX / 2)) {
    return Fail(ErrorCode::kInvalidArgument, "text too long to tokenize");
  }
  // A token covers at least one byte, except specials; +16 covers those.
  std::vector<llama_token> tokens(text.size() + 16);
  int32_t n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), add_special, parse_special);
  if (n < 0) {
    tokens.resize(static_cast<size_t>(-n));
    n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), add_special, parse_special);
    if (n < 0) return Fail(ErrorCode::kInternal, "tokenizer failed");
  }
  tokens.resize(static_cast<size_t>(n));
  return tokens;
}

std::string LlamaModel::Piece(llama_token token) const {
  char buf[256];
  int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof buf, 0, /*special=*/false);
  if (n >= 0) return std::string(buf, static_cast<size_t>(n));
  std::string big(static_cast<size_t>(-n), '\0');
  n = llama_token_to_piece(vocab_, token, big.data(), static_cast<int32_t>(big.size()), 0, false);
  big.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return big;
}

}  // namespace modeld::llama
