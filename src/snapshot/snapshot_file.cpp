#include "snapshot/snapshot_file.h"

// XXH3_state_t's definition, so the header's checksum streams through a state on the stack (no
// allocation, nothing to throw).
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "format/fingerprint.h"

namespace modeld::snapshot {
namespace {

using Json = nlohmann::json;

static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big);

// Offsets of the fixed header's fields (docs/snapshot.md).
constexpr size_t kVersionAt = 8, kFlagsAt = 12, kMetaLenAt = 16, kTokensAt = 24, kStateLenAt = 32, kHeadSumAt = 40;

template <class T>
T FromLe(T v) {
  if constexpr (std::endian::native == std::endian::big) v = std::byteswap(v);
  return v;
}

template <class T>
T LoadLe(std::string_view b, size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof(T));
  return FromLe(v);
}

template <class T>
void AppendLe(std::string* out, T v) {
  v = FromLe(v);  // the same swap both ways
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

struct Header {
  uint32_t version = 0;
  uint32_t flags = 0;
  uint64_t meta_len = 0;
  uint64_t n_tokens = 0;
  uint64_t state_len = 0;
  uint64_t head_sum = 0;
  // Valid only once the limits are checked: then no sum here can overflow (< 2^37).
  uint64_t head_bytes() const { return kFixedHeaderBytes + meta_len; }
  uint64_t tokens_at() const { return head_bytes(); }
  uint64_t state_at() const { return tokens_at() + 4 * n_tokens; }
  uint64_t total() const { return state_at() + state_len + kTrailerBytes; }
};

std::unexpected<Error> Corrupt(std::string what) {
  return Fail(ErrorCode::kCorruptSnapshot, "snapshot: " + std::move(what));
}

// Reads and checks the fixed header: magic, version, flags, limits. Shorter input is kTruncated,
// unless what there is of the magic already differs.
Result<Header> ParseFixed(std::string_view b) {
  const size_t have_magic = std::min(b.size(), sizeof(kMagic));
  if (have_magic > 0 && std::memcmp(b.data(), kMagic, have_magic) != 0)
    return Corrupt("not a modeld snapshot (bad magic)");
  if (b.size() < kFixedHeaderBytes) {
    return Fail(ErrorCode::kTruncated, "snapshot: " + std::to_string(b.size()) + " bytes, shorter than its " +
                                           std::to_string(kFixedHeaderBytes) + "-byte header");
  }
  Header h;
  h.version = LoadLe<uint32_t>(b, kVersionAt);
  h.flags = LoadLe<uint32_t>(b, kFlagsAt);
  h.meta_len = LoadLe<uint64_t>(b, kMetaLenAt);
  h.n_tokens = LoadLe<uint64_t>(b, kTokensAt);
  h.state_len = LoadLe<uint64_t>(b, kStateLenAt);
  h.head_sum = LoadLe<uint64_t>(b, kHeadSumAt);
  if (h.version != kFormatVersion) {
    return Fail(ErrorCode::kUnsupportedVersion, "snapshot: format version " + std::to_string(h.version) +
                                                    " (this build reads version " + std::to_string(kFormatVersion) +
                                                    ")");
  }
  if (h.flags != 0) return Corrupt("unknown flags " + std::to_string(h.flags));
  if (h.meta_len > kMaxMetaBytes) return Corrupt("meta of " + std::to_string(h.meta_len) + " bytes (limit 512 MiB)");
  if (h.n_tokens > kMaxTokens) return Corrupt(std::to_string(h.n_tokens) + " tokens (limit 2^24)");
  if (h.state_len > kMaxStateBytes) return Corrupt("state of " + std::to_string(h.state_len) + " bytes (limit 64 GiB)");
  return h;
}

uint64_t HeadChecksum(std::string_view b, uint64_t meta_len) {
  XXH3_state_t st;
  XXH3_INITSTATE(&st);
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, b.data(), kHeadSumAt);
  XXH3_64bits_update(&st, b.data() + kFixedHeaderBytes, meta_len);
  return XXH3_64bits_digest(&st);
}

// The header parsed and its checksum verified over the meta: the meta can be trusted.
Result<Header> ParseHead(std::string_view b) {
  auto h = ParseFixed(b);
  if (!h) return h;
  if (b.size() < h->head_bytes()) {
    return Fail(ErrorCode::kTruncated, "snapshot: " + std::to_string(b.size()) + " bytes, shorter than the " +
                                           std::to_string(h->head_bytes()) + " bytes of its header and meta");
  }
  const uint64_t sum = HeadChecksum(b, h->meta_len);
  if (sum != h->head_sum) {
    return Corrupt("header checksum mismatch (stored " + format::Xxh3Hex(h->head_sum) + ", computed " +
                   format::Xxh3Hex(sum) + ")");
  }
  return h;
}

Status CheckSize(const Header& h, uint64_t file_bytes) {
  if (file_bytes < h.total()) {
    return Fail(ErrorCode::kTruncated, "snapshot: " + std::to_string(file_bytes) + " bytes, shorter than the " +
                                           std::to_string(h.total()) + " its header says");
  }
  if (file_bytes > h.total()) {
    return Corrupt(std::to_string(file_bytes - h.total()) + " bytes past the end its header says (" +
                   std::to_string(h.total()) + ")");
  }
  return {};
}

// ---- meta: JSON -------------------------------------------------------------------------------

Json SegmentsJson(const std::vector<SnapshotSegment>& segs) {
  Json a = Json::array();
  for (const SnapshotSegment& s : segs) {
    a.push_back(Json{{"id", s.id},
                     {"digest", s.digest},
                     {"kind", std::string(SegmentKindName(s.kind))},
                     {"start", s.start},
                     {"n_tokens", s.n_tokens}});
  }
  return a;
}

Json PairsJson(const std::vector<std::pair<std::string, std::string>>& v) {
  Json a = Json::array();
  for (const auto& [path, content] : v) a.push_back(Json{{"path", path}, {"content", content}});
  return a;
}

Json WorkspaceJson(const WorkspaceState& w) {
  Json log = Json::array();
  for (const LogEntry& e : w.log) {
    Json j{{"kind", e.kind == LogEntry::kTurn ? "turn" : "note"}, {"role", e.role}, {"text", e.text}};
    if (e.sent) j["sent"] = *e.sent;
    log.push_back(std::move(j));
  }
  return Json{{"mode", std::string(AssemblyModeName(w.mode))},
              {"prefilled", w.prefilled},
              {"asked", w.asked},
              {"system", w.system},
              {"tools", w.tools},
              {"repo_map", w.repo_map},
              {"base", PairsJson(w.base)},
              {"files", PairsJson(std::vector<std::pair<std::string, std::string>>(w.files.begin(), w.files.end()))},
              {"log", std::move(log)},
              {"compactions", w.compactions},
              {"compactions_in_place", w.compactions_in_place},
              {"generation", w.generation},
              {"rewrites", w.rewrites},
              {"prefilled_log_size", w.prefilled_log_size},
              {"prefilled_rewrites", w.prefilled_rewrites},
              {"context_tokens", w.context_tokens},
              {"log_tokens", w.log_tokens},
              {"note_tokens", w.note_tokens}};
}

Json MetaJson(const SnapshotFile& f) {
  const SessionConfig& c = f.config;
  const SnapshotIdentity& id = f.session.identity;
  return Json{{"workspace", f.workspace},
              {"model", f.model},
              {"saved_unix_ms", f.saved_unix_ms},
              {"config",
               {{"n_ctx", c.n_ctx},
                {"n_batch", c.n_batch},
                {"n_ubatch", c.n_ubatch},
                {"threads", c.threads},
                {"kv_type", c.kv_type},
                {"flash_attn", c.flash_attn},
                {"seed", c.seed},
                {"reuse", c.reuse}}},
              {"identity",
               {{"backend", id.backend},
                {"backend_build", id.backend_build},
                {"model_digest", id.model_digest},
                {"model_fingerprint", id.model_fingerprint},
                {"architecture", id.architecture},
                {"n_layer", id.n_layer},
                {"n_embd", id.n_embd},
                {"n_head_kv", id.n_head_kv},
                {"n_vocab", id.n_vocab},
                {"kv_type", id.kv_type},
                {"flash_attn", id.flash_attn},
                {"n_ctx", id.n_ctx}}},
              {"prefix_digest", f.session.prefix_digest},
              {"prefix_segments", SegmentsJson(f.session.prefix_segments)},
              {"suffix_segments", SegmentsJson(f.session.suffix_segments)},
              {"totals",
               {{"reused", f.session.total_reused},
                {"prefilled", f.session.total_prefilled},
                {"generated", f.session.total_generated}}},
              {"workspace_state", f.workspace_state ? WorkspaceJson(*f.workspace_state) : Json(nullptr)}};
}

// A field of the meta that is missing or of the wrong type: Decode turns it into kCorruptSnapshot.
struct BadMeta {
  std::string what;
};

const Json& Field(const Json& o, const char* key, const std::string& where) {
  if (!o.is_object()) throw BadMeta{where + " is not an object"};
  const auto it = o.find(key);
  if (it == o.end()) throw BadMeta{where + ": missing field '" + key + "'"};
  return *it;
}

std::string Str(const Json& o, const char* key, const std::string& where) {
  const Json& v = Field(o, key, where);
  if (!v.is_string()) throw BadMeta{where + "." + key + " is not a string"};
  return v.get<std::string>();
}

bool Bool(const Json& o, const char* key, const std::string& where) {
  const Json& v = Field(o, key, where);
  if (!v.is_boolean()) throw BadMeta{where + "." + key + " is not a boolean"};
  return v.get<bool>();
}

int64_t Int(const Json& o, const char* key, const std::string& where) {
  const Json& v = Field(o, key, where);
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw BadMeta{where + "." + key + " is out of range"};
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  throw BadMeta{where + "." + key + " is not an integer"};
}

int32_t Int32(const Json& o, const char* key, const std::string& where) {
  const int64_t v = Int(o, key, where);
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
    throw BadMeta{where + "." + key + " is out of range"};
  }
  return static_cast<int32_t>(v);
}

uint64_t U64(const Json& o, const char* key, const std::string& where) {
  const Json& v = Field(o, key, where);
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  throw BadMeta{where + "." + key + " is not a non-negative integer"};
}

const Json& Array(const Json& o, const char* key, const std::string& where) {
  const Json& v = Field(o, key, where);
  if (!v.is_array()) throw BadMeta{where + "." + key + " is not an array"};
  return v;
}

std::vector<SnapshotSegment> SegmentsFrom(const Json& o, const char* key) {
  std::vector<SnapshotSegment> out;
  const Json& a = Array(o, key, "meta");
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string where = std::string("meta.") + key + "[" + std::to_string(i) + "]";
    SnapshotSegment s;
    s.id = Str(a[i], "id", where);
    s.digest = Str(a[i], "digest", where);
    const std::string kind = Str(a[i], "kind", where);
    const auto k = SegmentKindFromName(kind);
    if (!k) throw BadMeta{where + ".kind: unknown segment kind"};
    s.kind = *k;
    s.start = Int(a[i], "start", where);
    s.n_tokens = Int(a[i], "n_tokens", where);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> PairsFrom(const Json& o, const char* key, const std::string& where) {
  std::vector<std::pair<std::string, std::string>> out;
  const Json& a = Array(o, key, where);
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string at = where + "." + key + "[" + std::to_string(i) + "]";
    out.emplace_back(Str(a[i], "path", at), Str(a[i], "content", at));
  }
  return out;
}

WorkspaceState WorkspaceFrom(const Json& o) {
  const std::string where = "meta.workspace_state";
  if (!o.is_object()) throw BadMeta{where + " is not an object or null"};
  WorkspaceState w;
  const std::string mode = Str(o, "mode", where);
  if (mode == AssemblyModeName(AssemblyMode::kEditAware)) {
    w.mode = AssemblyMode::kEditAware;
  } else if (mode == AssemblyModeName(AssemblyMode::kInPlace)) {
    w.mode = AssemblyMode::kInPlace;
  } else {
    throw BadMeta{where + ".mode: not \"edit_aware\" or \"in_place\""};
  }
  w.prefilled = Bool(o, "prefilled", where);
  w.asked = Bool(o, "asked", where);
  w.system = Str(o, "system", where);
  w.tools = Str(o, "tools", where);
  w.repo_map = Str(o, "repo_map", where);
  w.base = PairsFrom(o, "base", where);
  for (auto& [path, content] : PairsFrom(o, "files", where)) {
    if (!w.files.emplace(std::move(path), std::move(content)).second) throw BadMeta{where + ".files: a path twice"};
  }
  const Json& log = Array(o, "log", where);
  for (size_t i = 0; i < log.size(); ++i) {
    const std::string at = where + ".log[" + std::to_string(i) + "]";
    LogEntry e;
    const std::string kind = Str(log[i], "kind", at);
    if (kind == "turn") {
      e.kind = LogEntry::kTurn;
    } else if (kind == "note") {
      e.kind = LogEntry::kNote;
    } else {
      throw BadMeta{at + ".kind: not \"turn\" or \"note\""};
    }
    e.role = Str(log[i], "role", at);
    e.text = Str(log[i], "text", at);
    if (log[i].contains("sent") && !log[i]["sent"].is_null()) e.sent = Str(log[i], "sent", at);
    w.log.push_back(std::move(e));
  }
  w.compactions = Int(o, "compactions", where);
  w.compactions_in_place = Int(o, "compactions_in_place", where);
  w.generation = Int(o, "generation", where);
  w.rewrites = Int(o, "rewrites", where);
  w.prefilled_log_size = Int(o, "prefilled_log_size", where);
  w.prefilled_rewrites = Int(o, "prefilled_rewrites", where);
  w.context_tokens = Int(o, "context_tokens", where);
  w.log_tokens = Int(o, "log_tokens", where);
  w.note_tokens = Int(o, "note_tokens", where);
  return w;
}

// Everything of the file but the tokens and the state.
SnapshotFile MetaFrom(const Json& m) {
  if (!m.is_object()) throw BadMeta{"meta is not a JSON object"};
  SnapshotFile f;
  f.workspace = Str(m, "workspace", "meta");
  f.model = Str(m, "model", "meta");
  f.saved_unix_ms = Int(m, "saved_unix_ms", "meta");
  const Json& c = Field(m, "config", "meta");
  f.config.n_ctx = Int32(c, "n_ctx", "meta.config");
  f.config.n_batch = Int32(c, "n_batch", "meta.config");
  f.config.n_ubatch = Int32(c, "n_ubatch", "meta.config");
  f.config.threads = Int32(c, "threads", "meta.config");
  f.config.kv_type = Str(c, "kv_type", "meta.config");
  f.config.flash_attn = Bool(c, "flash_attn", "meta.config");
  f.config.seed = U64(c, "seed", "meta.config");
  f.config.reuse = Bool(c, "reuse", "meta.config");
  const Json& id = Field(m, "identity", "meta");
  SnapshotIdentity& i = f.session.identity;
  i.backend = Str(id, "backend", "meta.identity");
  i.backend_build = Str(id, "backend_build", "meta.identity");
  i.model_digest = Str(id, "model_digest", "meta.identity");
  i.model_fingerprint = Str(id, "model_fingerprint", "meta.identity");
  i.architecture = Str(id, "architecture", "meta.identity");
  i.n_layer = Int(id, "n_layer", "meta.identity");
  i.n_embd = Int(id, "n_embd", "meta.identity");
  i.n_head_kv = Int(id, "n_head_kv", "meta.identity");
  i.n_vocab = Int(id, "n_vocab", "meta.identity");
  i.kv_type = Str(id, "kv_type", "meta.identity");
  i.flash_attn = Bool(id, "flash_attn", "meta.identity");
  i.n_ctx = Int32(id, "n_ctx", "meta.identity");
  f.session.prefix_digest = Str(m, "prefix_digest", "meta");
  f.session.prefix_segments = SegmentsFrom(m, "prefix_segments");
  f.session.suffix_segments = SegmentsFrom(m, "suffix_segments");
  const Json& t = Field(m, "totals", "meta");
  f.session.total_reused = Int(t, "reused", "meta.totals");
  f.session.total_prefilled = Int(t, "prefilled", "meta.totals");
  f.session.total_generated = Int(t, "generated", "meta.totals");
  const Json& w = Field(m, "workspace_state", "meta");
  if (!w.is_null()) f.workspace_state = WorkspaceFrom(w);
  return f;
}

// ---- coherence --------------------------------------------------------------------------------

// "" when the content (all but the tokens' values and the state) makes sense with n_tokens
// resident; else what is wrong.
std::string Incoherent(const SnapshotFile& f, uint64_t n_tokens) {
  if (!ValidWorkspaceId(f.workspace)) return "workspace id '" + f.workspace + "' is not valid";
  if (f.model.empty()) return "no model name";
  if (f.saved_unix_ms < 0) return "saved_unix_ms is negative";
  const SessionConfig& c = f.config;
  if (c.n_ctx < 0 || c.n_batch < 0 || c.n_ubatch < 0 || c.threads < 0) return "config: a negative size";
  const SnapshotIdentity& id = f.session.identity;
  if (id.backend.empty()) return "identity: no backend";
  if (id.n_layer < 0 || id.n_embd < 0 || id.n_head_kv < 0 || id.n_vocab < 0) return "identity: a negative shape";
  if (id.n_ctx <= 0) return "identity: n_ctx must be positive";
  if (n_tokens > static_cast<uint64_t>(id.n_ctx)) {
    return std::to_string(n_tokens) + " tokens resident in a context of " + std::to_string(id.n_ctx);
  }
  const SessionSnapshot& s = f.session;
  if (s.total_reused < 0 || s.total_prefilled < 0 || s.total_generated < 0) return "a negative total";
  if (s.prefix_digest.empty() && (!s.prefix_segments.empty() || !s.suffix_segments.empty())) {
    return "segments without a prefix digest";
  }
  // Prefix segments from 0, then suffix segments, each starting where the one before ended; all
  // within the resident tokens (what follows them is generated).
  int64_t at = 0;
  for (const auto* segs : {&s.prefix_segments, &s.suffix_segments}) {
    const char* which = segs == &s.prefix_segments ? "prefix" : "suffix";
    for (size_t k = 0; k < segs->size(); ++k) {
      const SnapshotSegment& g = (*segs)[k];
      const std::string name = std::string(which) + " segment " + std::to_string(k);
      if (g.start < 0 || g.n_tokens < 0) return name + ": a negative start or size";
      if (g.start != at) return name + " starts at " + std::to_string(g.start) + ", not " + std::to_string(at);
      if (g.n_tokens > static_cast<int64_t>(n_tokens) - at) return name + " ends past the resident tokens";
      at += g.n_tokens;
    }
  }
  if (f.workspace_state) {
    const WorkspaceState& w = *f.workspace_state;
    if (w.prefilled_log_size < 0 || static_cast<uint64_t>(w.prefilled_log_size) > w.log.size()) {
      return "workspace: prefilled_log_size " + std::to_string(w.prefilled_log_size) + " of a log of " +
             std::to_string(w.log.size());
    }
    if (w.compactions < 0 || w.compactions_in_place < 0 || w.compactions_in_place > w.compactions || w.generation < 0 ||
        w.rewrites < 0 || w.prefilled_rewrites < -1 || w.context_tokens < 0 || w.log_tokens < 0 || w.note_tokens < 0) {
      return "workspace: a counter out of range";
    }
    std::set<std::string_view> base;
    for (const auto& [path, content] : w.base) {
      if (!base.insert(path).second) return "workspace: base file '" + path + "' twice";
    }
    for (size_t k = 0; k < w.log.size(); ++k) {
      const LogEntry& e = w.log[k];
      if (e.kind == LogEntry::kTurn && e.role != "user" && e.role != "assistant") {
        return "workspace: log entry " + std::to_string(k) + ": role '" + e.role + "'";
      }
      if (e.kind == LogEntry::kNote && e.sent)
        return "workspace: log entry " + std::to_string(k) + ": a note with sent";
    }
  }
  return "";
}

std::string IncoherentTokens(const SnapshotIdentity& id, const std::vector<int32_t>& tokens) {
  for (size_t k = 0; k < tokens.size(); ++k) {
    if (tokens[k] < 0 || (id.n_vocab > 0 && tokens[k] >= id.n_vocab)) {
      return "token " + std::to_string(k) + " (" + std::to_string(tokens[k]) + ") outside the vocabulary of " +
             std::to_string(id.n_vocab);
    }
  }
  return "";
}

Result<SnapshotFile> ParseMeta(std::string_view b, const Header& h) {
  const std::string_view meta = b.substr(kFixedHeaderBytes, h.meta_len);
  SnapshotFile f;
  try {
    const Json m = Json::parse(meta.begin(), meta.end(), nullptr, /*allow_exceptions=*/false);
    if (m.is_discarded()) return Corrupt("the meta is not valid JSON");
    f = MetaFrom(m);
  } catch (const BadMeta& e) {
    return Corrupt(e.what);
  } catch (const nlohmann::json::exception& e) {
    return Corrupt(std::string("meta: ") + e.what());
  }
  if (std::string why = Incoherent(f, h.n_tokens); !why.empty()) return Corrupt(why);
  return f;
}

}  // namespace

bool ValidWorkspaceId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::string_view("._-:@+").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

// The fixed header, the meta and the tokens: all of the file before the state.
static Result<std::string> EncodeHead(const SnapshotFile& f) {
  const SessionSnapshot& s = f.session;
  if (s.tokens.size() > kMaxTokens) return Fail(ErrorCode::kInvalidArgument, "snapshot: more than 2^24 tokens");
  if (s.state.size() > kMaxStateBytes) return Fail(ErrorCode::kInvalidArgument, "snapshot: a state over 64 GiB");
  if (std::string why = Incoherent(f, s.tokens.size()); !why.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "snapshot: " + why);
  }
  if (std::string why = IncoherentTokens(s.identity, s.tokens); !why.empty()) {
    return Fail(ErrorCode::kInvalidArgument, "snapshot: " + why);
  }
  std::string meta;
  try {
    meta = MetaJson(f).dump(-1, ' ', false, Json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    return Fail(ErrorCode::kInvalidArgument, std::string("snapshot: meta: ") + e.what());
  }
  if (meta.size() > kMaxMetaBytes) return Fail(ErrorCode::kInvalidArgument, "snapshot: a meta over 512 MiB");

  const uint64_t total =
      kFixedHeaderBytes + meta.size() + 4 * static_cast<uint64_t>(s.tokens.size()) + s.state.size() + kTrailerBytes;
  std::string out;
  out.reserve(static_cast<size_t>(total - s.state.size() - kTrailerBytes));
  out.append(kMagic, sizeof(kMagic));
  AppendLe<uint32_t>(&out, kFormatVersion);
  AppendLe<uint32_t>(&out, 0);
  AppendLe<uint64_t>(&out, meta.size());
  AppendLe<uint64_t>(&out, s.tokens.size());
  AppendLe<uint64_t>(&out, s.state.size());
  AppendLe<uint64_t>(&out, 0);  // the header's checksum, below
  out += meta;
  const uint64_t head_sum = FromLe(HeadChecksum(out, meta.size()));
  std::memcpy(out.data() + kHeadSumAt, &head_sum, sizeof(head_sum));
  if constexpr (std::endian::native == std::endian::little) {
    out.append(reinterpret_cast<const char*>(s.tokens.data()), 4 * s.tokens.size());
  } else {
    for (int32_t t : s.tokens) AppendLe<int32_t>(&out, t);
  }
  return out;
}

// The trailer: XXH3 over the head and the state, as if they were one buffer.
static std::string Trailer(std::string_view head, std::string_view state) {
  XXH3_state_t st;
  XXH3_INITSTATE(&st);
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, head.data(), head.size());
  XXH3_64bits_update(&st, state.data(), state.size());
  std::string out;
  AppendLe<uint64_t>(&out, XXH3_64bits_digest(&st));
  return out;
}

Result<size_t> HeadBytes(std::string_view fixed_header) {
  auto h = ParseFixed(fixed_header);
  if (!h) return std::unexpected(h.error());
  return static_cast<size_t>(h->head_bytes());
}

// A file in its parts (head: the fixed header, meta and tokens) whose header `h` was checked and
// whose sizes match it: the whole-file checksum, the meta and the tokens; everything but the state.
static Result<SnapshotFile> DecodeChecked(const Header& h, std::string_view head, std::string_view state,
                                          std::string_view trailer) {
  const uint64_t stored = LoadLe<uint64_t>(trailer, 0);
  const uint64_t sum = LoadLe<uint64_t>(Trailer(head, state), 0);
  if (stored != sum) {
    return Corrupt("file checksum mismatch (stored " + format::Xxh3Hex(stored) + ", computed " + format::Xxh3Hex(sum) +
                   ")");
  }
  auto f = ParseMeta(head, h);
  if (!f) return f;
  SessionSnapshot& s = f->session;
  s.tokens.resize(h.n_tokens);
  if (h.n_tokens > 0) std::memcpy(s.tokens.data(), head.data() + h.tokens_at(), 4 * h.n_tokens);
  if constexpr (std::endian::native == std::endian::big) {
    for (int32_t& t : s.tokens) t = FromLe(t);
  }
  if (std::string why = IncoherentTokens(s.identity, s.tokens); !why.empty()) return Corrupt(why);
  return f;
}

// `owner`: the bytes' own string, whose buffer becomes the state (no copy of the largest part).
static Result<SnapshotFile> DecodeImpl(std::string_view b, std::string* owner) {
  auto h = ParseHead(b);
  if (!h) return std::unexpected(h.error());
  if (auto st = CheckSize(*h, b.size()); !st) return std::unexpected(st.error());
  auto f = DecodeChecked(*h, b.substr(0, h->state_at()), b.substr(h->state_at(), h->state_len),
                         b.substr(b.size() - kTrailerBytes));
  if (!f) return f;
  if (owner != nullptr) {
    // The state is the file's tail: moved to the front of the same buffer (its pages are
    // already there) rather than copied into new ones.
    std::string buf = std::move(*owner);
    buf.erase(0, h->state_at());
    buf.resize(h->state_len);
    f->session.state = std::move(buf);
  } else {
    f->session.state.assign(b.data() + h->state_at(), h->state_len);
  }
  return f;
}

static Result<SnapshotFile> DecodePartsImpl(EncodedFile& parts) {
  auto h = ParseHead(parts.head);
  if (!h) return std::unexpected(h.error());
  if (auto st = CheckSize(*h, parts.size()); !st) return std::unexpected(st.error());
  if (parts.head.size() != h->state_at() || parts.trailer.size() != kTrailerBytes) {
    return Corrupt("its parts are not where its header says");
  }
  auto f = DecodeChecked(*h, parts.head, parts.state, parts.trailer);
  if (!f) return f;
  f->session.state = std::move(parts.state);
  return f;
}

static Result<SnapshotInfo> DecodeInfoImpl(std::string_view head, int64_t file_bytes) {
  auto h = ParseHead(head);
  if (!h) return std::unexpected(h.error());
  if (file_bytes < 0) return Fail(ErrorCode::kInvalidArgument, "snapshot: a negative file size");
  if (auto st = CheckSize(*h, static_cast<uint64_t>(file_bytes)); !st) return std::unexpected(st.error());
  auto f = ParseMeta(head, *h);
  if (!f) return std::unexpected(f.error());
  SnapshotInfo info;
  info.workspace = std::move(f->workspace);
  info.model = std::move(f->model);
  info.saved_unix_ms = f->saved_unix_ms;
  info.identity = std::move(f->session.identity);
  info.n_tokens = static_cast<int64_t>(h->n_tokens);
  info.state_bytes = static_cast<int64_t>(h->state_len);
  info.file_bytes = file_bytes;
  info.prefix_digest = std::move(f->session.prefix_digest);
  if (f->workspace_state) {
    info.files = static_cast<int64_t>(f->workspace_state->files.size());
    info.log_entries = static_cast<int64_t>(f->workspace_state->log.size());
  }
  return info;
}

// Memory for a file within the limits can still run out: an error, never an exception.
Result<std::string> Encode(const SnapshotFile& f) {
  try {
    auto head = EncodeHead(f);
    if (!head) return head;
    const std::string trailer = Trailer(*head, f.session.state);
    std::string out;
    out.reserve(head->size() + f.session.state.size() + trailer.size());
    out += *head;
    out += f.session.state;
    out += trailer;
    return out;
  } catch (const std::bad_alloc&) {
    return Fail(ErrorCode::kInternal,
                "snapshot: out of memory encoding " + std::to_string(f.session.state.size()) + " bytes of state");
  }
}

Result<EncodedFile> EncodeParts(SnapshotFile&& f) {
  try {
    auto head = EncodeHead(f);
    if (!head) return std::unexpected(head.error());
    EncodedFile out;
    out.trailer = Trailer(*head, f.session.state);
    out.head = std::move(*head);
    out.state = std::move(f.session.state);
    return out;
  } catch (const std::bad_alloc&) {
    return Fail(ErrorCode::kInternal,
                "snapshot: out of memory encoding " + std::to_string(f.session.state.size()) + " bytes of state");
  }
}

Result<SnapshotFile> Decode(std::string&& bytes) {
  try {
    return DecodeImpl(bytes, &bytes);
  } catch (const std::bad_alloc&) {
    return Fail(ErrorCode::kInternal, "snapshot: out of memory decoding " + std::to_string(bytes.size()) + " bytes");
  }
}

Result<SnapshotFile> Decode(EncodedFile&& parts) {
  try {
    return DecodePartsImpl(parts);
  } catch (const std::bad_alloc&) {
    return Fail(ErrorCode::kInternal, "snapshot: out of memory decoding " + std::to_string(parts.size()) + " bytes");
  }
}

Result<StateRange> StateRangeOf(std::string_view fixed_header) {
  auto h = ParseFixed(fixed_header);
  if (!h) return std::unexpected(h.error());
  return StateRange{h->state_at(), h->state_len};
}

Result<SnapshotFile> Decode(std::string_view b) {
  try {
    return DecodeImpl(b, nullptr);
  } catch (const std::bad_alloc&) {
    return Fail(ErrorCode::kInternal, "snapshot: out of memory decoding " + std::to_string(b.size()) + " bytes");
  }
}

Result<SnapshotInfo> DecodeInfo(std::string_view head, int64_t file_bytes) {
  try {
    return DecodeInfoImpl(head, file_bytes);
  } catch (const std::bad_alloc&) {
    return Fail(ErrorCode::kInternal,
                "snapshot: out of memory decoding a head of " + std::to_string(head.size()) + " bytes");
  }
}

}  // namespace modeld::snapshot
