#include "modeld/session.h"

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

Status ValidateDecodeConfig(const DecodeConfig& c) {
  if (c.max_tokens < 1) return Fail(ErrorCode::kInvalidArgument, "max_tokens must be >= 1");
  if (!(c.temperature >= 0)) return Fail(ErrorCode::kInvalidArgument, "temperature must be >= 0");
  if (!(c.top_p > 0 && c.top_p <= 1)) return Fail(ErrorCode::kInvalidArgument, "top_p must be in (0, 1]");
  if (!(c.min_p >= 0 && c.min_p <= 1)) return Fail(ErrorCode::kInvalidArgument, "min_p must be in [0, 1]");
  if (!(c.repeat_penalty > 0)) return Fail(ErrorCode::kInvalidArgument, "repeat_penalty must be > 0");
  if (c.repeat_last_n < -1) return Fail(ErrorCode::kInvalidArgument, "repeat_last_n must be >= -1 (-1: all)");
  for (const auto& s : c.stop) {
    if (s.empty()) return Fail(ErrorCode::kInvalidArgument, "stop strings must not be empty");
  }
  return {};
}

}  // namespace modeld
