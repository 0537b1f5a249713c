#include "modeld/error.h"

#include <array>
#include <utility>

namespace modeld {
namespace {

struct CodeEntry {
  ErrorCode code;
  std::string_view name;
};

// The wire names. Append only: a released name never changes.
constexpr std::array kCodes = {
    CodeEntry{ErrorCode::kSessionUnavailable, "session_unavailable"},
    CodeEntry{ErrorCode::kSessionClosed, "session_closed"},
    CodeEntry{ErrorCode::kContextOverflow, "context_overflow"},
    CodeEntry{ErrorCode::kUnsupportedFeature, "unsupported_feature"},
    CodeEntry{ErrorCode::kSessionFatal, "session_fatal"},
    CodeEntry{ErrorCode::kManifestMismatch, "manifest_mismatch"},
    CodeEntry{ErrorCode::kBackendMismatch, "backend_mismatch"},
    CodeEntry{ErrorCode::kNotGguf, "not_gguf"},
    CodeEntry{ErrorCode::kTruncated, "truncated"},
    CodeEntry{ErrorCode::kUnsupportedVersion, "unsupported_version"},
    CodeEntry{ErrorCode::kCorruptMetadata, "corrupt_metadata"},
    CodeEntry{ErrorCode::kInvalidArgument, "invalid_argument"},
    CodeEntry{ErrorCode::kNotFound, "not_found"},
    CodeEntry{ErrorCode::kIoError, "io_error"},
    CodeEntry{ErrorCode::kBusy, "busy"},
    CodeEntry{ErrorCode::kCancelled, "cancelled"},
    CodeEntry{ErrorCode::kInternal, "internal"},
    CodeEntry{ErrorCode::kUnauthorized, "unauthorized"},
    CodeEntry{ErrorCode::kSnapshotMismatch, "snapshot_mismatch"},
    CodeEntry{ErrorCode::kCorruptSnapshot, "corrupt_snapshot"},
};

}  // namespace

std::string_view CodeName(ErrorCode code) {
  for (const auto& e : kCodes) {
    if (e.code == code) return e.name;
  }
  return "internal";
}

std::optional<ErrorCode> CodeFromName(std::string_view name) {
  for (const auto& e : kCodes) {
    if (e.name == name) return e.code;
  }
  return std::nullopt;
}

Error Error::ContextOverflow(std::string stage, int64_t resident, int64_t additional, int64_t n_ctx) {
  Error e(ErrorCode::kContextOverflow, "context overflow at " + stage + ": " + std::to_string(resident) +
                                           " resident + " + std::to_string(additional) + " additional tokens > n_ctx " +
                                           std::to_string(n_ctx));
  e.overflow_ = OverflowCounts{std::move(stage), resident, additional, n_ctx};
  return e;
}

Error Error::UnsupportedFeature(std::string feature) {
  Error e(ErrorCode::kUnsupportedFeature, "unsupported feature: " + feature);
  e.feature_ = std::move(feature);
  return e;
}

Error Error::ManifestMismatch(std::string reason) {
  Error e(ErrorCode::kManifestMismatch, "manifest mismatch: " + reason);
  e.reason_ = std::move(reason);
  return e;
}

Error Error::AtOffset(ErrorCode code, const std::string& path, uint64_t offset, std::string what) {
  Error e(code, path + ": " + what + " at offset " + std::to_string(offset));
  e.offset_ = offset;
  return e;
}

Error OutOfRange(std::string field, std::string_view range, std::string_view got, std::string_view why) {
  std::string msg = "'" + field + "' must be " + std::string(range) + ", got " + std::string(got);
  if (!why.empty()) msg += " (" + std::string(why) + ")";
  return Error(ErrorCode::kInvalidArgument, std::move(msg)).WithField(std::move(field));
}

std::string Error::ToString() const { return std::string(CodeName(code_)) + ": " + message_; }

}  // namespace modeld
