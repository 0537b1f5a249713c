// The backend-neutral session contract. Product code talks to Session and
// Service only; backends (llama.cpp now, OpenVINO later) implement it.
//
// The hot loop on a live session: EnsurePrefix -> PrefillSuffix -> Decode.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "modeld/error.h"
#include "modeld/manifest.h"

namespace modeld {

// Progress of long work (model load, long prefills), for logs and stream events.
struct Progress {
  std::string stage;  // "load", "ensure_prefix", "prefill_suffix"
  int64_t done = 0;
  int64_t total = 0;
};
using ProgressFunc = std::function<void(const Progress&)>;

struct SessionConfig {
  int32_t n_ctx = 4096;         // 0: 4096, or the largest n_ctx allowed when that is smaller
  int32_t n_batch = 512;        // tokens per llama_decode call during prefill
  int32_t n_ubatch = 512;       // physical batch
  int32_t threads = 0;          // 0 = all cores
  std::string kv_type = "f16";  // "f16", "q8_0", "f32"
  bool flash_attn = false;
  uint64_t seed = 0;
  // false: the cold baseline, nothing kept from an earlier call: EnsurePrefix re-prefills from
  // token 0, PrefillSuffix keeps only the prefix it is paired with.
  bool reuse = true;
};

// The ranges of a session config, checked before anything is created (docs/RELIABILITY.md).
inline constexpr int32_t kMinCtx = 8;
inline constexpr int32_t kDefaultCtx = 4096;
inline constexpr int32_t kMaxBatch = 8192;  // n_batch and n_ubatch
// Hardware threads of this machine (at least 1): the most `threads` a session may ask for.
int32_t HardwareThreads();
// kInvalidArgument naming the field ("config.n_ctx") and its range. `max_ctx` is the largest
// n_ctx allowed (the model's trained context unless the operator raised it).
Status ValidateSessionConfig(const SessionConfig& c, int32_t max_ctx);

// What a session will need, known from the model's header before anything is allocated.
struct SessionPlan {
  SessionConfig config;       // n_ctx and threads resolved (never 0)
  int64_t kv_bytes = 0;       // K and V caches at full n_ctx
  int64_t compute_bytes = 0;  // the backend's estimate of its working buffers at that size
  int64_t bytes() const { return kv_bytes + compute_bytes; }
};

struct PrefixInput {
  ContextManifest manifest;
  ProgressFunc progress;  // optional; called after each prefill batch
  // 0: the session's n_batch. Smaller batches bound how long one computation
  // holds the compute gate, for background work a foreground request may wait on.
  int32_t max_batch = 0;
  // Checked between batches: a requested stop ends the call with kCancelled,
  // and no prefix is resident afterwards (call EnsurePrefix again).
  std::stop_token cancel{};
};

struct PrefixStatus {
  std::string manifest_digest;
  int64_t tokens_reused = 0;            // kept from what was resident
  int64_t tokens_prefilled = 0;         // evaluated by this call
  int64_t tokens_resident = 0;          // = prefix tokens after the call
  int32_t first_diff_segment = -1;      // first segment whose tokens were not all reused; -1: none
  std::vector<int32_t> segment_tokens;  // resolved token count per segment
  bool reuse_fallback = false;          // backend could not trim its memory and re-prefilled from 0
  double prefill_ms = 0;
};

struct SuffixInput {
  std::string prefix_digest;  // must equal the resident prefix's manifest digest
  std::vector<ManifestSegment> segments;
  ProgressFunc progress;
  std::stop_token cancel{};  // as PrefixInput's: kCancelled, the suffix is not resident
};

struct SuffixStatus {
  int64_t tokens_reused = 0;  // suffix tokens kept from the previous turn
  int64_t tokens_prefilled = 0;
  int64_t tokens_resident = 0;  // prefix + suffix
  bool reuse_fallback = false;
  double prefill_ms = 0;
};

// A backend's own description of how a decode's output is constrained (a grammar and when it
// applies), made by that backend's ChatFormat (modeld/chat.h) and read only by its sessions.
class DecodeConstraint {
 public:
  virtual ~DecodeConstraint() = default;
};

struct DecodeConfig {
  int32_t max_tokens = 128;
  float temperature = 0.0f;  // 0 = greedy
  int32_t top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;  // 1 = off
  int32_t repeat_last_n = 64;
  float presence_penalty = 0.0f;   // OpenAI's: subtracted once from a token already present
  float frequency_penalty = 0.0f;  // OpenAI's: subtracted per occurrence
  uint64_t seed = 0;
  std::vector<std::string> stop;  // stop strings, not emitted
  std::stop_token cancel;         // checked between any two tokens
  // Null: free text. A constraint of another backend is refused (kInvalidArgument).
  std::shared_ptr<const DecodeConstraint> constraint;
};

// The ranges of a decode request (docs/RELIABILITY.md).
inline constexpr int32_t kMaxTopK = 1 << 20;
inline constexpr float kMaxTemperature = 100.0f;
inline constexpr float kMaxRepeatPenalty = 100.0f;
inline constexpr int32_t kMaxRepeatLastN = 1 << 20;
inline constexpr size_t kMaxStopStrings = 32;
inline constexpr size_t kMaxStopBytes = 256;
inline constexpr float kMaxPresencePenalty = 2.0f;  // OpenAI's range: [-2, 2]
// Range checks every backend applies before decoding (kInvalidArgument naming the field).
Status ValidateDecodeConfig(const DecodeConfig& cfg);

struct StreamChunk {
  std::string text;      // never splits a UTF-8 character
  int32_t n_tokens = 0;  // tokens this chunk covers
};

enum class FinishReason { kLength, kStop, kEndOfGeneration, kCancelled };
std::string_view FinishReasonName(FinishReason r);  // "length", "stop", "eog", "cancelled"

struct DecodeResult {
  FinishReason finish = FinishReason::kLength;
  int32_t tokens_generated = 0;
  std::string text;           // everything emitted
  double first_token_ms = 0;  // from Decode() entry to the first token sampled
  double decode_ms = 0;
  double tokens_per_second = 0;  // after the first token
};

// Called once per generated token (text may be empty while bytes are held
// back for a partial character or a possible stop string); return false to
// cancel. A final call may carry held-back text with n_tokens 0.
using ChunkCallback = std::function<bool(const StreamChunk&)>;

struct SegmentReport {
  std::string id;
  SegmentKind kind;
  int64_t start = 0;  // first token position
  int64_t n_tokens = 0;
};

struct ContextReport {
  std::string backend;
  std::string workspace_id;
  std::string model_digest;
  std::string manifest_digest;  // resident prefix; "" when none
  int64_t n_ctx = 0;
  int64_t tokens_resident = 0;
  int64_t prefix_tokens = 0;
  int64_t suffix_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t total_reused = 0;
  int64_t total_prefilled = 0;
  int64_t total_generated = 0;
  int64_t reuse_fallbacks = 0;
  int64_t kv_bytes = 0;      // memory of the session's KV cache at full n_ctx
  bool partial_trim = true;  // backend can drop a tail of its memory
  bool fatal = false;
  std::vector<SegmentReport> segments;  // prefix, then suffix
};

// What a backend must match to load a snapshot (Session::Snapshot, Service::RestoreSession):
// written in the snapshot's header and checked, all of it, before anything is loaded.
struct SnapshotIdentity {
  std::string backend;            // "gguf"
  std::string backend_build;      // the backend's own build, e.g. "llama.cpp de3ff815..."
  std::string model_digest;       // ModelInfo::digest (the header's)
  std::string model_fingerprint;  // the weights' (format/fingerprint.h): models differing only in weights differ here
  std::string architecture;       // the model's shape, as its header says
  int64_t n_layer = 0;
  int64_t n_embd = 0;
  int64_t n_head_kv = 0;
  int64_t n_vocab = 0;
  std::string kv_type;  // SessionConfig's
  bool flash_attn = false;
  int32_t n_ctx = 0;
};

// A segment of the resident layout (positions start..start+n_tokens).
struct SnapshotSegment {
  std::string id;
  std::string digest;
  SegmentKind kind = SegmentKind::kFile;
  int64_t start = 0;
  int64_t n_tokens = 0;
};

// A session's state copied out of it: enough to open a session that continues exactly as this
// one would (same KV, same layout, same next token). docs/snapshot.md has the file around it.
struct SessionSnapshot {
  SnapshotIdentity identity;
  std::vector<int32_t> tokens;  // exactly what the KV holds, positions 0..n-1
  std::string prefix_digest;    // the resident prefix's manifest digest; "" when none
  std::vector<SnapshotSegment> prefix_segments;
  std::vector<SnapshotSegment> suffix_segments;
  int64_t total_reused = 0, total_prefilled = 0, total_generated = 0;
  std::string state;  // the backend's own serialization of its memory (opaque bytes)
};

class Session {
 public:
  virtual ~Session() = default;

  // Afterwards the resident KV holds exactly this prefix (any suffix and
  // generated tokens are dropped). Reuses the longest common token prefix.
  virtual Result<PrefixStatus> EnsurePrefix(const PrefixInput& in) = 0;
  // Appends after the prefix, replacing the previous suffix and generated tokens.
  virtual Result<SuffixStatus> PrefillSuffix(const SuffixInput& in) = 0;
  // Generates after everything resident; generated tokens stay resident.
  virtual Result<DecodeResult> Decode(const DecodeConfig& cfg, const ChunkCallback& on_chunk) = 0;
  virtual Result<ContextReport> Report() = 0;
  // Tokens as this session's tokenizer reads a segment (no implicit specials).
  virtual Result<std::vector<int32_t>> Tokenize(std::string_view text, bool parse_special) = 0;
  // Frees the session's memory. Later calls return kSessionClosed.
  virtual Status Close() = 0;
  // A second, independent session with the same model and config holding a copy of this one's
  // resident KV (prefix, suffix, generated tokens), so it continues without recomputing them.
  // The copy costs memory, not compute. kUnsupportedFeature where the backend cannot.
  virtual Result<std::unique_ptr<Session>> Fork() { return Fail(Error::UnsupportedFeature("fork")); }
  // A copy of the session's state (Service::RestoreSession opens a session from it). Taken under
  // the session's lock: a memory copy, no disk. kUnsupportedFeature where the backend cannot.
  Result<SessionSnapshot> Snapshot() { return SnapshotInto(std::string()); }
  // The same, the state written into `buffer` (its capacity reused, so a caller that snapshots
  // often does not fault in new pages each time); `buffer` may be empty.
  virtual Result<SessionSnapshot> SnapshotInto(std::string buffer) {
    (void)buffer;
    return Fail(Error::UnsupportedFeature("snapshot"));
  }
};

}  // namespace modeld
