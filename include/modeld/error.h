// modeld's error type: a value with a stable code callers branch on.
//
// Every fallible call at a public boundary returns Result<T> (std::expected).
// The code is the error's identity (like Go's errors.Is): compare with
// err.Is(ErrorCode::kContextOverflow). CodeName() is the stable string the
// wire protocol carries; it never changes once released.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>

namespace modeld {

enum class ErrorCode {
  // Session contract.
  kSessionUnavailable,  // no backend for the request, or the session was evicted
  kSessionClosed,       // the session was closed by its owner
  kContextOverflow,     // a prefix, suffix or decode would exceed n_ctx
  kUnsupportedFeature,  // a deliberately unsupported surface
  kSessionFatal,        // backend state unknown: evict the session, do not reuse
  kManifestMismatch,    // a suffix cannot be paired with the resident prefix
  kBackendMismatch,     // the model belongs to another backend (or is no model)
  // Model files (GGUF header reader).
  kNotGguf,             // bad magic
  kTruncated,           // the file ends before the header/data it declares
  kUnsupportedVersion,  // a GGUF version this reader does not know
  kCorruptMetadata,     // a value in the header that cannot be right
  // General.
  kInvalidArgument,
  kNotFound,
  kIoError,
  kBusy,
  kCancelled,
  kInternal,
  kUnauthorized,  // missing or wrong bearer token (TCP listener)
  // Snapshots (docs/snapshot.md).
  kSnapshotMismatch,  // a sound snapshot of another model, backend build or context config
  kCorruptSnapshot,   // a snapshot that fails its checks (checksum, sizes, positions)
};

// The stable wire name of a code, e.g. "context_overflow".
std::string_view CodeName(ErrorCode code);
// Inverse of CodeName; nullopt for an unknown name.
std::optional<ErrorCode> CodeFromName(std::string_view name);

// Counts carried by kContextOverflow.
struct OverflowCounts {
  std::string stage;       // "ensure_prefix", "prefill_suffix", "decode"
  int64_t resident = 0;    // tokens that stay resident before the new work
  int64_t additional = 0;  // tokens the call would add
  int64_t n_ctx = 0;       // the session's context size
};

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Error ContextOverflow(std::string stage, int64_t resident, int64_t additional, int64_t n_ctx);
  static Error UnsupportedFeature(std::string feature);
  static Error ManifestMismatch(std::string reason);
  // A file-format error that names the file and the byte offset.
  static Error AtOffset(ErrorCode code, const std::string& path, uint64_t offset, std::string what);

  ErrorCode code() const { return code_; }
  bool Is(ErrorCode code) const { return code_ == code; }
  const std::string& message() const { return message_; }

  // Details; set only for the codes that carry them.
  const std::optional<OverflowCounts>& overflow() const { return overflow_; }
  const std::string& feature() const { return feature_; }     // kUnsupportedFeature
  const std::string& reason() const { return reason_; }       // kManifestMismatch, kSessionUnavailable
  const std::string& field() const { return field_; }         // the request field at fault, e.g. "config.n_ctx"
  std::optional<uint64_t> offset() const { return offset_; }  // file-format errors

  Error& WithReason(std::string reason) {
    reason_ = std::move(reason);
    return *this;
  }
  Error& WithField(std::string field) {
    field_ = std::move(field);
    return *this;
  }
  Error& WithMessage(std::string message) {
    message_ = std::move(message);
    return *this;
  }

  // "<code>: <message>"
  std::string ToString() const;

 private:
  ErrorCode code_;
  std::string message_;
  std::optional<OverflowCounts> overflow_;
  std::string feature_;
  std::string reason_;
  std::string field_;
  std::optional<uint64_t> offset_;
};

template <class T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

inline std::unexpected<Error> Fail(ErrorCode code, std::string message) {
  return std::unexpected(Error(code, std::move(message)));
}
inline std::unexpected<Error> Fail(Error e) { return std::unexpected(std::move(e)); }

// kInvalidArgument for a value outside its documented range: names the field, the range and the value.
Error OutOfRange(std::string field, std::string_view range, std::string_view got, std::string_view why = {});

}  // namespace modeld
