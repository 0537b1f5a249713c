// JSON forms of the contract's types, shared by the daemon and its clients.
// docs/protocol.md is the spec; a field added here is added there.
#pragma once

#include <nlohmann/json.hpp>

#include "modeld/error.h"
#include "modeld/manifest.h"
#include "modeld/model_info.h"
#include "modeld/service.h"
#include "modeld/session.h"

namespace modeld::wire {

using Json = nlohmann::ordered_json;

// Errors: {"code": "...", "message": "...", ...details}.
Json ToJson(const Error& e);
Error ErrorFromJson(const Json& j);
// The HTTP status an error code is served with.
int HttpStatus(ErrorCode code);

Json ToJson(const ModelInfo& m);
Json ToJson(const SnapshotIdentity& id);
Result<ModelInfo> ModelInfoFromJson(const Json& j);

// Segments: {"id", "kind", "content", "parse_special"?, "digest"?}. A digest,
// when given, must match the content (else manifest_mismatch).
Json ToJson(const ManifestSegment& s);
Result<ManifestSegment> SegmentFromJson(const Json& j);
Result<std::vector<ManifestSegment>> SegmentsFromJson(const Json& j);

Json ToJson(const SessionConfig& c);
Result<SessionConfig> SessionConfigFromJson(const Json& j, SessionConfig base);

Json ToJson(const PrefixStatus& s);
Result<PrefixStatus> PrefixStatusFromJson(const Json& j);
Json ToJson(const SuffixStatus& s);
Result<SuffixStatus> SuffixStatusFromJson(const Json& j);

// DecodeConfig without its cancel token.
Json ToJson(const DecodeConfig& c);
Result<DecodeConfig> DecodeConfigFromJson(const Json& j);
Json ToJson(const DecodeResult& r);
Result<DecodeResult> DecodeResultFromJson(const Json& j);

Json ToJson(const ContextReport& r);
Result<ContextReport> ContextReportFromJson(const Json& j);

Json ToJson(const Progress& p);

// The deepest nesting of arrays and objects a request body may have.
inline constexpr int kMaxJsonDepth = 64;
// Parses a request body; malformed JSON, a non-object or nesting past kMaxJsonDepth is
// invalid_argument.
Result<Json> ParseObject(std::string_view body);

// Serializes a reply. Strings that are not UTF-8 (a GGUF's metadata is bytes) become U+FFFD
// instead of throwing, so no reply fails on them.
std::string Dump(const Json& j, int indent = -1);

// An integer field, or `def` when it is absent or not an integer (a float, even an integral one
// beyond int64's range, is never converted).
int64_t IntOr(const Json& j, const char* key, int64_t def = 0);

}  // namespace modeld::wire
