#include "wire/codec.h"

#include <set>

namespace modeld::wire {
namespace {

// Reads the fields of one JSON object with type checks; Finish() refuses
// fields it was never asked about, so a misspelt option is an error, not a
// silently ignored default.
class Fields {
 public:
  Fields(const Json& j, std::string what) : j_(j), what_(std::move(what)) {
    if (!j_.is_object()) error_ = what_ + " must be a JSON object";
  }

  template <class T>
  void Get(const char* key, T* out, bool required = false) {
    seen_.insert(key);
    if (!error_.empty()) return;
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      if (required) error_ = what_ + ": missing field '" + key + "'";
      return;
    }
    if constexpr (std::is_same_v<T, bool>) {
      if (!it->is_boolean()) return Bad(key, "a boolean");
      *out = it->template get<bool>();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!it->is_string()) return Bad(key, "a string");
      *out = it->template get<std::string>();
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!it->is_number()) return Bad(key, "a number");
      *out = it->template get<T>();
    } else if constexpr (std::is_integral_v<T>) {
      if (!it->is_number_integer() && !it->is_number_unsigned()) return Bad(key, "an integer");
      if constexpr (std::is_unsigned_v<T>) {
        if (it->is_number_integer() && it->template get<int64_t>() < 0) return Bad(key, "a non-negative integer");
        const auto v = it->template get<uint64_t>();
        if (v > std::numeric_limits<T>::max()) return Bad(key, "a smaller integer");
        *out = static_cast<T>(v);
      } else {
        if (it->is_number_unsigned() && it->template get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
          return Bad(key, "a smaller integer");
        }
        const auto v = it->template get<int64_t>();
        if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
          return Bad(key, "an integer in range");
        }
        *out = static_cast<T>(v);
      }
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      if (!it->is_array()) return Bad(key, "an array of strings");
      out->clear();
      for (const auto& e : *it) {
        if (!e.is_string()) return Bad(key, "an array of strings");
        out->push_back(e.template get<std::string>());
      }
    } else {
      static_assert(sizeof(T) == 0, "unsupported field type");
    }
  }

  const Json* Raw(const char* key) {
    seen_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }

  Status Finish() {
    if (error_.empty() && j_.is_object()) {
      for (const auto& [k, _] : j_.items()) {
        if (!seen_.contains(k)) {
          error_ = what_ + ": unknown field '" + k + "'";
          break;
        }
      }
    }
    if (!error_.empty()) return Fail(ErrorCode::kInvalidArgument, error_);
    return {};
  }

 private:
  void Bad(const char* key, const char* expected) {
    error_ = what_ + ": field '" + std::string(key) + "' must be " + expected;
  }
  const Json& j_;
  std::string what_;
  std::string error_;
  std::set<std::string, std::less<>> seen_;
};

std::string StrOr(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

Json ToJson(const Error& e) {
  Json j = {{"code", CodeName(e.code())}, {"message", e.message()}};
  if (const auto& o = e.overflow()) {
    j["stage"] = o->stage;
    j["resident"] = o->resident;
    j["additional"] = o->additional;
    j["n_ctx"] = o->n_ctx;
  }
  if (!e.feature().empty()) j["feature"] = e.feature();
  if (!e.reason().empty()) j["reason"] = e.reason();
  if (!e.field().empty()) j["field"] = e.field();
  if (e.offset()) j["offset"] = *e.offset();
  return j;
}

Error ErrorFromJson(const Json& j) {
  if (!j.is_object()) return Error(ErrorCode::kInternal, "malformed error from server");
  const auto code = CodeFromName(StrOr(j, "code")).value_or(ErrorCode::kInternal);
  Error e(code, "");
  if (code == ErrorCode::kContextOverflow) {
    e = Error::ContextOverflow(StrOr(j, "stage"), IntOr(j, "resident"), IntOr(j, "additional"), IntOr(j, "n_ctx"));
  } else if (code == ErrorCode::kUnsupportedFeature) {
    e = Error::UnsupportedFeature(StrOr(j, "feature"));
  } else if (code == ErrorCode::kManifestMismatch) {
    e = Error::ManifestMismatch(StrOr(j, "reason"));
  }
  if (!StrOr(j, "reason").empty()) e.WithReason(StrOr(j, "reason"));
  if (!StrOr(j, "field").empty()) e.WithField(StrOr(j, "field"));
  return e.WithMessage(StrOr(j, "message"));  // the server's words, verbatim
}

int HttpStatus(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kUnauthorized:
      return 401;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kBusy:
      return 409;
    case ErrorCode::kManifestMismatch:
      return 409;
    case ErrorCode::kSessionClosed:
      return 410;
    case ErrorCode::kBackendMismatch:
      return 415;
    case ErrorCode::kContextOverflow:
      return 422;
    case ErrorCode::kNotGguf:
    case ErrorCode::kTruncated:
    case ErrorCode::kUnsupportedVersion:
    case ErrorCode::kCorruptMetadata:
    case ErrorCode::kSnapshotMismatch:
    case ErrorCode::kCorruptSnapshot:
      return 422;
    case ErrorCode::kCancelled:
      return 499;
    case ErrorCode::kUnsupportedFeature:
      return 501;
    case ErrorCode::kSessionUnavailable:
      return 503;
    case ErrorCode::kSessionFatal:
    case ErrorCode::kIoError:
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

Json ToJson(const SnapshotIdentity& id) {
  return Json{{"backend", id.backend},
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
              {"n_ctx", id.n_ctx}};
}

Json ToJson(const ModelInfo& m) {
  return {{"path", m.path},
          {"backend", m.backend},
          {"format_version", m.format_version},
          {"architecture", m.architecture},
          {"name", m.name},
          {"context_length", m.context_length},
          {"embedding_length", m.embedding_length},
          {"block_count", m.block_count},
          {"head_count", m.head_count},
          {"head_count_kv", m.head_count_kv},
          {"vocab_size", m.vocab_size},
          {"file_type", m.file_type},
          {"file_type_name", m.file_type_name},
          {"pooling", m.pooling},
          {"has_chat_template", m.has_chat_template},
          {"tensor_count", m.tensor_count},
          {"parameter_count", m.parameter_count},
          {"file_size", m.file_size},
          {"data_offset", m.data_offset},
          {"digest", m.digest}};
}

Result<ModelInfo> ModelInfoFromJson(const Json& j) {
  ModelInfo m;
  Fields f(j, "model info");
  f.Get("path", &m.path);
  f.Get("backend", &m.backend);
  f.Get("format_version", &m.format_version);
  f.Get("architecture", &m.architecture);
  f.Get("name", &m.name);
  f.Get("context_length", &m.context_length);
  f.Get("embedding_length", &m.embedding_length);
  f.Get("block_count", &m.block_count);
  f.Get("head_count", &m.head_count);
  f.Get("head_count_kv", &m.head_count_kv);
  f.Get("vocab_size", &m.vocab_size);
  f.Get("file_type", &m.file_type);
  f.Get("file_type_name", &m.file_type_name);
  f.Get("pooling", &m.pooling);
  f.Get("has_chat_template", &m.has_chat_template);
  f.Get("tensor_count", &m.tensor_count);
  f.Get("parameter_count", &m.parameter_count);
  f.Get("file_size", &m.file_size);
  f.Get("data_offset", &m.data_offset);
  f.Get("digest", &m.digest);
  f.Raw("model");  // the served name, added by the daemon
  if (auto ok = f.Finish(); !ok) return Fail(ok.error());
  return m;
}

Json ToJson(const ManifestSegment& s) {
  Json j = {{"id", s.id}, {"kind", SegmentKindName(s.kind)}, {"content", s.content}};
  if (s.parse_special) j["parse_special"] = true;
  j["digest"] = s.digest;
  return j;
}

Result<ManifestSegment> SegmentFromJson(const Json& j) {
  std::string id, kind = "other", content, digest;
  bool parse_special = false;
  Fields f(j, "segment");
  f.Get("id", &id);
  f.Get("kind", &kind);
  f.Get("content", &content, true);
  f.Get("parse_special", &parse_special);
  f.Get("digest", &digest);
  f.Raw("n_tokens");
  if (auto ok = f.Finish(); !ok) return Fail(ok.error());
  auto k = SegmentKindFromName(kind);
  if (!k) return Fail(ErrorCode::kInvalidArgument, "segment '" + id + "': unknown kind '" + kind + "'");
  auto seg = ManifestSegment::Make(std::move(id), *k, std::move(content), parse_special);
  if (!digest.empty() && digest != seg.digest) {
    return Fail(Error::ManifestMismatch("segment '" + seg.id + "': digest " + digest + " does not match its content (" +
                                        seg.digest + ")"));
  }
  return seg;
}

Result<std::vector<ManifestSegment>> SegmentsFromJson(const Json& j) {
  if (!j.is_array()) return Fail(ErrorCode::kInvalidArgument, "'segments' must be an array");
  std::vector<ManifestSegment> out;
  out.reserve(j.size());
  for (const auto& e : j) {
    auto s = SegmentFromJson(e);
    if (!s) return Fail(s.error());
    out.push_back(std::move(*s));
  }
  return out;
}

Json ToJson(const SessionConfig& c) {
  return {{"n_ctx", c.n_ctx},     {"n_batch", c.n_batch},       {"n_ubatch", c.n_ubatch}, {"threads", c.threads},
          {"kv_type", c.kv_type}, {"flash_attn", c.flash_attn}, {"seed", c.seed},         {"reuse", c.reuse}};
}

Result<SessionConfig> SessionConfigFromJson(const Json& j, SessionConfig c) {
  Fields f(j, "config");
  f.Get("n_ctx", &c.n_ctx);
  f.Get("n_batch", &c.n_batch);
  f.Get("n_ubatch", &c.n_ubatch);
  f.Get("threads", &c.threads);
  f.Get("kv_type", &c.kv_type);
  f.Get("flash_attn", &c.flash_attn);
  f.Get("seed", &c.seed);
  f.Get("reuse", &c.reuse);
  if (auto ok = f.Finish(); !ok) return Fail(ok.error());
  return c;
}

Json ToJson(const PrefixStatus& s) {
  return {{"manifest_digest", s.manifest_digest},       {"tokens_reused", s.tokens_reused},
          {"tokens_prefilled", s.tokens_prefilled},     {"tokens_resident", s.tokens_resident},
          {"first_diff_segment", s.first_diff_segment}, {"segment_tokens", s.segment_tokens},
          {"reuse_fallback", s.reuse_fallback},         {"prefill_ms", s.prefill_ms}};
}

Result<PrefixStatus> PrefixStatusFromJson(const Json& j) {
  PrefixStatus s;
  Fields f(j, "prefix status");
  f.Get("manifest_digest", &s.manifest_digest);
  f.Get("tokens_reused", &s.tokens_reused);
  f.Get("tokens_prefilled", &s.tokens_prefilled);
  f.Get("tokens_resident", &s.tokens_resident);
  f.Get("first_diff_segment", &s.first_diff_segment);
  f.Get("reuse_fallback", &s.reuse_fallback);
  f.Get("prefill_ms", &s.prefill_ms);
  if (const Json* t = f.Raw("segment_tokens"); t && t->is_array()) {
    for (const auto& e : *t) s.segment_tokens.push_back(e.is_number_integer() ? e.get<int32_t>() : 0);
  }
  if (auto ok = f.Finish(); !ok) return Fail(ok.error());
  return s;
}

Json ToJson(const SuffixStatus& s) {
  return {{"tokens_reused", s.tokens_reused},
          {"tokens_prefilled", s.tokens_prefilled},
          {"tokens_resident", s.tokens_resident},
          {"reuse_fallback", s.reuse_fallback},
          {"prefill_ms", s.prefill_ms}};
}

Result<SuffixStatus> SuffixStatusFromJson(const Json& j) {
  SuffixStatus s;
  Fields f(j, "suffix status");
  f.Get("tokens_reused", &s.tokens_reused);
  f.Get("tokens_prefilled", &s.tokens_prefilled);
  f.Get("tokens_resident", &s.tokens_resident);
  f.Get("reuse_fallback", &s.reuse_fallback);
  f.Get("prefill_ms", &s.prefill_ms);
  if (auto ok = f.Finish(); !ok) return Fail(ok.error());
  return s;
}

Json ToJson(const DecodeConfig& c) {
  return {{"max_tokens", c.max_tokens},
          {"temperature", c.temperature},
          {"top_k", c.top_k},
          {"top_p", c.top_p},
          {"min_p", c.min_p},
          {"repeat_penalty", c.repeat_penalty},
          {"repeat_last_n", c.repeat_last_n},
          {"presence_penalty", c.presence_penalty},
          {"frequency_penalty", c.frequency_penalty},
          {"seed", c.seed},
          {"stop", c.stop}};
}

Result<DecodeConfig> DecodeConfigFromJson(const Json& j) {
  DecodeConfig c;
  Fields f(j, "decode request");
  f.Get("max_tokens", &c.max_tokens);
  f.Get("temperature", &c.temperature);
  f.Get("top_k", &c.top_k);
  f.Get("top_p", &c.top_p);
  f.Get("min_p", &c.min_p);
  f.Get("repeat_penalty", &c.repeat_penalty);
  f.Get("repeat_last_n", &c.repeat_last_n);
  f.Get("presence_penalty", &c.presence_penalty);
  f.Get("frequency_penalty", &c.frequency_penalty);
  f.Get("seed", &c.seed);
  f.Get("stop", &c.stop);
  if (auto ok = f.Finish(); !ok) return Fail(ok.error());
  return c;
}

Json ToJson(const DecodeResult& r) {
  return {{"finish_reason", FinishReasonName(r.finish)},
          {"tokens_generated", r.tokens_generated},
          {"text", r.text},
          {"first_token_ms", r.first_token_ms},
          {"decode_ms", r.decode_ms},
          {"tokens_per_second", r.tokens_per_second}};
}

Result<DecodeResult> DecodeResultFromJson(const Json& j) {
  DecodeResult r;
  std::string finish;
  Fields f(j, "decode result");
  f.Get("finish_reason", &finish);
  f.Get("tokens_generated", &r.tokens_generated);
  f.Get("text", &r.text);
  f.Get("first_token_ms", &r.first_token_ms);
  f.Get("decode_ms", &r.decode_ms);
  f.Get("tokens_per_second", &r.tokens_per_second);
  if (auto ok = f.Finish(); !ok) return Fail(ok.error());
  for (auto fr :
       {FinishReason::kLength, FinishReason::kStop, FinishReason::kEndOfGeneration, FinishReason::kCancelled}) {
    if (FinishReasonName(fr) == finish) r.finish = fr;
  }
  return r;
}

Json ToJson(const ContextReport& r) {
  Json segs = Json::array();
  for (const auto& s : r.segments) {
    segs.push_back({{"id", s.id}, {"kind", SegmentKindName(s.kind)}, {"start", s.start}, {"n_tokens", s.n_tokens}});
  }
  return {{"backend", r.backend},
          {"workspace", r.workspace_id},
          {"model_digest", r.model_digest},
          {"manifest_digest", r.manifest_digest},
          {"n_ctx", r.n_ctx},
          {"tokens_resident", r.tokens_resident},
          {"prefix_tokens", r.prefix_tokens},
          {"suffix_tokens", r.suffix_tokens},
          {"generated_tokens", r.generated_tokens},
          {"total_reused", r.total_reused},
          {"total_prefilled", r.total_prefilled},
          {"total_generated", r.total_generated},
          {"reuse_fallbacks", r.reuse_fallbacks},
          {"kv_bytes", r.kv_bytes},
          {"partial_trim", r.partial_trim},
          {"fatal", r.fatal},
          {"segments", segs}};
}

Result<ContextReport> ContextReportFromJson(const Json& j) {
  ContextReport r;
  Fields f(j, "report");
  f.Get("backend", &r.backend);
  f.Get("workspace", &r.workspace_id);
  f.Get("model_digest", &r.model_digest);
  f.Get("manifest_digest", &r.manifest_digest);
  f.Get("n_ctx", &r.n_ctx);
  f.Get("tokens_resident", &r.tokens_resident);
  f.Get("prefix_tokens", &r.prefix_tokens);
  f.Get("suffix_tokens", &r.suffix_tokens);
  f.Get("generated_tokens", &r.generated_tokens);
  f.Get("total_reused", &r.total_reused);
  f.Get("total_prefilled", &r.total_prefilled);
  f.Get("total_generated", &r.total_generated);
  f.Get("reuse_fallbacks", &r.reuse_fallbacks);
  f.Get("kv_bytes", &r.kv_bytes);
  f.Get("partial_trim", &r.partial_trim);
  f.Get("fatal", &r.fatal);
  if (const Json* segs = f.Raw("segments"); segs && segs->is_array()) {
    for (const auto& s : *segs) {
      SegmentReport sr;
      sr.id = StrOr(s, "id");
      sr.kind = SegmentKindFromName(StrOr(s, "kind")).value_or(SegmentKind::kOther);
      sr.start = IntOr(s, "start");
      sr.n_tokens = IntOr(s, "n_tokens");
      r.segments.push_back(std::move(sr));
    }
  }
  f.Raw("model");
  f.Raw("busy");
  f.Raw("last_used_ms_ago");
  if (auto ok = f.Finish(); !ok) return Fail(ok.error());
  return r;
}

Json ToJson(const Progress& p) { return {{"stage", p.stage}, {"done", p.done}, {"total", p.total}}; }

std::string Dump(const Json& j, int indent) { return j.dump(indent, ' ', false, Json::error_handler_t::replace); }

int64_t IntOr(const Json& j, const char* key, int64_t def) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : def;
}

Result<Json> ParseObject(std::string_view body) {
  // Nesting is bounded before anything recurses on it (dump(), schema-to-grammar, templates): the
  // parser itself is iterative, but those are not, and a deep body would overflow a thread's stack.
  bool too_deep = false;
  const Json::parser_callback_t depth_guard = [&too_deep](int depth, Json::parse_event_t, Json&) {
    if (depth > kMaxJsonDepth) too_deep = true;
    return !too_deep;
  };
  Json j = Json::parse(body.begin(), body.end(), depth_guard, /*allow_exceptions=*/false);
  if (too_deep) {
    return Fail(ErrorCode::kInvalidArgument,
                "request body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  if (j.is_discarded()) return Fail(ErrorCode::kInvalidArgument, "request body is not valid JSON");
  if (!j.is_object()) return Fail(ErrorCode::kInvalidArgument, "request body must be a JSON object");
  return j;
}

}  // namespace modeld::wire
