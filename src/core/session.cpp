#include "modeld/session.h"

#include <algorithm>
#include <sstream>
#include <thread>

namespace modeld {

std::string_view FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kEndOfGeneration:
      return "eog";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "length";
}

namespace {

std::string Num(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

}  // namespace

int32_t HardwareThreads() { return static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency())); }

Status ValidateSessionConfig(const SessionConfig& c, int32_t max_ctx) {
  const std::string ctx_range =
      "0 (the default) or in [" + std::to_string(kMinCtx) + ", " + std::to_string(max_ctx) + "]";
  if (c.n_ctx != 0 && (c.n_ctx < kMinCtx || c.n_ctx > max_ctx)) {
    return Fail(OutOfRange("config.n_ctx", ctx_range, std::to_string(c.n_ctx),
                           "the model's trained context, unless the daemon was started with a larger --max-ctx"));
  }
  const std::string batch_range = "in [1, " + std::to_string(kMaxBatch) + "]";
  if (c.n_batch < 1 || c.n_batch > kMaxBatch) {
    return Fail(OutOfRange("config.n_batch", batch_range, std::to_string(c.n_batch)));
  }
  if (c.n_ubatch < 1 || c.n_ubatch > kMaxBatch) {
    return Fail(OutOfRange("config.n_ubatch", batch_range, std::to_string(c.n_ubatch)));
  }
  const int32_t hw = HardwareThreads();
  if (c.threads < 0 || c.threads > hw) {
    return Fail(OutOfRange("config.threads", "0 (all) or in [1, " + std::to_string(hw) + "]", std::to_string(c.threads),
                           "this machine's hardware threads"));
  }
  static constexpr std::string_view kKvTypes[] = {"f16", "f32", "bf16", "q8_0", "q4_0"};
  if (std::find(std::begin(kKvTypes), std::end(kKvTypes), c.kv_type) == std::end(kKvTypes)) {
    return Fail(OutOfRange("config.kv_type", "one of f16, f32, bf16, q8_0, q4_0", "'" + c.kv_type.substr(0, 32) + "'"));
  }
  return {};
}

Status ValidateDecodeConfig(const DecodeConfig& c) {
  if (c.max_tokens < 1) return Fail(OutOfRange("max_tokens", ">= 1 (and within n_ctx)", std::to_string(c.max_tokens)));
  if (!(c.temperature >= 0 && c.temperature <= kMaxTemperature)) {
    return Fail(OutOfRange("temperature", "in [0, " + Num(kMaxTemperature) + "] (0: greedy)", Num(c.temperature)));
  }
  if (c.top_k < 0 || c.top_k > kMaxTopK) {
    return Fail(OutOfRange("top_k", "in [0, " + std::to_string(kMaxTopK) + "] (0: off)", std::to_string(c.top_k)));
  }
  if (!(c.top_p > 0 && c.top_p <= 1)) return Fail(OutOfRange("top_p", "in (0, 1]", Num(c.top_p)));
  if (!(c.min_p >= 0 && c.min_p <= 1)) return Fail(OutOfRange("min_p", "in [0, 1]", Num(c.min_p)));
  if (!(c.repeat_penalty > 0 && c.repeat_penalty <= kMaxRepeatPenalty)) {
    return Fail(OutOfRange("repeat_penalty", "in (0, " + Num(kMaxRepeatPenalty) + "] (1: off)", Num(c.repeat_penalty)));
  }
  if (c.repeat_last_n < -1 || c.repeat_last_n > kMaxRepeatLastN) {
    return Fail(OutOfRange("repeat_last_n", "in [-1, " + std::to_string(kMaxRepeatLastN) + "] (-1: all)",
                           std::to_string(c.repeat_last_n)));
  }
  for (const auto& [name, v] :
       {std::pair{"presence_penalty", c.presence_penalty}, std::pair{"frequency_penalty", c.frequency_penalty}}) {
    if (!(v >= -kMaxPresencePenalty && v <= kMaxPresencePenalty)) {
      return Fail(OutOfRange(name, "in [-2, 2] (0: off)", Num(v)));
    }
  }
  if (c.stop.size() > kMaxStopStrings) {
    return Fail(OutOfRange("stop", "at most " + std::to_string(kMaxStopStrings) + " strings",
                           std::to_string(c.stop.size()) + " strings"));
  }
  for (const auto& s : c.stop) {
    if (s.empty() || s.size() > kMaxStopBytes) {
      return Fail(OutOfRange("stop", "strings of 1 to " + std::to_string(kMaxStopBytes) + " bytes",
                             "one of " + std::to_string(s.size()) + " bytes"));
    }
  }
  return {};
}

}  // namespace modeld
