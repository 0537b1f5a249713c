#include "client/client.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <memory>
#include <thread>
#include <utility>

#include "wire/codec.h"

namespace modeld::client {
namespace {

using Json = wire::Json;
using Clock = std::chrono::steady_clock;

// The codec's readers refuse unknown fields, which is right for requests but would make this
// client break whenever the daemon adds a reply field. So replies are cut down to the fields the
// codec writes (`shape` = ToJson of a default value) before they are decoded.
Json Known(const Json& j, const Json& shape) {
  if (!j.is_object()) return j;
  Json out = Json::object();
  for (const auto& [k, v] : j.items()) {
    if (shape.contains(k)) out[k] = v;
  }
  return out;
}

using wire::IntOr;

std::string StrOr(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool BoolOr(const Json& j, const char* key, bool def = false) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : def;
}

Error Unreachable(const std::string& address, bool connected, httplib::Error e) {
  Error err(ErrorCode::kSessionUnavailable,
            std::string(connected ? "lost the connection to modeld at " : "cannot reach modeld at ") + address + ": " +
                httplib::to_string(e));
  err.WithReason("unreachable");
  return err;
}

// A non-200 reply: the daemon's {"error": {...}}, else (not modeld, or a proxy) a code from the
// HTTP status.
Error ErrorFromReply(int status, std::string_view body) {
  const Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object()) {
    auto it = j.find("error");
    if (it != j.end() && it->is_object()) return wire::ErrorFromJson(*it);
  }
  ErrorCode code = ErrorCode::kInternal;
  if (status == 404) code = ErrorCode::kNotFound;
  if (status == 400 || status == 413) code = ErrorCode::kInvalidArgument;
  if (status == 401 || status == 403) code = ErrorCode::kUnauthorized;
  if (status == 503) code = ErrorCode::kSessionUnavailable;
  return Error(code, "HTTP " + std::to_string(status) + ": " + std::string(body.substr(0, 200)));
}

Result<Json> ParseReply(std::string_view body) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Fail(ErrorCode::kInternal, "modeld sent a reply that is not a JSON object");
  return j;
}

// An NDJSON stream's events. Returns false to stop reading.
struct StreamState {
  std::optional<Json> result;  // the `done` event's result
  std::optional<Error> error;  // an `error` event, or a malformed line

  bool Fail(Error e) {
    error = std::move(e);
    return false;
  }
  // Handles done/error; returns the event name for the caller to handle the rest ("" when done).
  std::string Take(std::string_view line, Json* event) {
    *event = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!event->is_object()) {
      Fail(Error(ErrorCode::kInternal, "modeld sent a malformed stream line: " + std::string(line.substr(0, 200))));
      return "";
    }
    const std::string name = StrOr(*event, "event");
    if (name == "done") {
      auto it = event->find("result");
      result = it != event->end() ? std::move(*it) : Json::object();
    } else if (name == "error") {
      auto it = event->find("error");
      error = wire::ErrorFromJson(it != event->end() && it->is_object() ? *it : *event);
    } else if (name.empty()) {
      result = std::move(*event);  // a plain reply where a stream was asked for
    }
    return name;
  }
  Result<Json> Finish() {
    if (error) return modeld::Fail(std::move(*error));
    if (!result) return modeld::Fail(ErrorCode::kInternal, "modeld's stream ended without a done event");
    return std::move(*result);
  }
};

std::string WorkspacePath(std::string_view ws, std::string_view tail = {}) {
  return "/v1/sessions/" + std::string(ws) + std::string(tail);
}

Status CheckWorkspace(std::string_view ws) {
  if (ValidWorkspaceId(ws)) return {};
  return Fail(ErrorCode::kInvalidArgument,
              "invalid workspace id '" + std::string(ws) + "': use 1 to 128 of A-Z a-z 0-9 . _ - : @ +");
}

Json SegmentsJson(const std::vector<ManifestSegment>& segs) {
  Json a = Json::array();
  for (const auto& s : segs) a.push_back(wire::ToJson(s));
  return a;
}

// Serializes a request body. Text that is not UTF-8 cannot be sent as JSON (nlohmann throws):
// the caller's argument is at fault, so it is invalid_argument rather than a crash.
Result<std::string> Dump(const Json& j) {
  try {
    return j.dump();
  } catch (const Json::exception& e) {
    return Fail(ErrorCode::kInvalidArgument,
                std::string("cannot send the request: its text must be valid UTF-8 (") + e.what() + ")");
  }
}

std::string WorkspaceOpPath(std::string_view ws, std::string_view op = {}) {
  return "/v1/workspaces/" + std::string(ws) + (op.empty() ? "" : "/") + std::string(op);
}

WorkspaceStats StatsFromJson(const Json& j) {
  WorkspaceStats st;
  st.mode = StrOr(j, "assembly") == "in_place" ? AssemblyMode::kInPlace : AssemblyMode::kEditAware;
  st.files = IntOr(j, "files");
  st.log_entries = IntOr(j, "log_entries");
  st.notes = IntOr(j, "notes");
  st.compactions = IntOr(j, "compactions");
  st.context_tokens = IntOr(j, "context_tokens");
  st.log_tokens = IntOr(j, "log_tokens");
  st.note_tokens = IntOr(j, "note_tokens");
  st.compactions_in_place = IntOr(j, "compactions_in_place");
  return st;
}

Progress ProgressFromJson(const Json& ev) { return {StrOr(ev, "stage"), IntOr(ev, "done"), IntOr(ev, "total")}; }

Result<PrefixStatus> PrefixFromJson(const Json& j) {
  return wire::PrefixStatusFromJson(Known(j, wire::ToJson(PrefixStatus{})));
}

// The chunk events of a decode stream (Decode, Ask), and what arrived for a stream this side
// cancels: then the daemon's result never comes, so the timings are measured here.
class ChunkTally {
 public:
  explicit ChunkTally(const ChunkCallback& on_chunk) : on_chunk_(on_chunk) {
    partial_.finish = FinishReason::kCancelled;
  }

  // A chunk event; false when on_chunk asks to stop.
  bool Add(const Json& ev) {
    StreamChunk chunk{StrOr(ev, "text"), static_cast<int32_t>(IntOr(ev, "n_tokens"))};
    if (!first_ && chunk.n_tokens > 0) first_ = Clock::now();
    partial_.tokens_generated += chunk.n_tokens;
    partial_.text += chunk.text;
    return !on_chunk_ || on_chunk_(chunk);
  }

  DecodeResult Cancelled() {
    const auto now = Clock::now();
    auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
    partial_.decode_ms = ms(now - t0_);
    if (first_) {
      partial_.first_token_ms = ms(*first_ - t0_);
      if (partial_.tokens_generated > 1 && now > *first_) {
        partial_.tokens_per_second = (partial_.tokens_generated - 1) / (ms(now - *first_) / 1000.0);
      }
    }
    return std::move(partial_);
  }

 private:
  const ChunkCallback& on_chunk_;
  Clock::time_point t0_ = Clock::now();
  std::optional<Clock::time_point> first_;
  DecodeResult partial_;
};

Result<SessionInfo> SessionInfoFromJson(const Json& j) {
  auto r = wire::ContextReportFromJson(Known(j, wire::ToJson(ContextReport{})));
  if (!r) return Fail(r.error());
  return SessionInfo{std::move(*r), StrOr(j, "model"), BoolOr(j, "busy"), IntOr(j, "last_used_ms_ago")};
}

}  // namespace

bool ValidWorkspaceId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::ranges::all_of(id, [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           std::string_view("._-:@+").find(c) != std::string_view::npos;
  });
}

Client::Client(std::string socket_path, ClientOptions opt) : socket_path_(std::move(socket_path)), opt_(opt) {}

Client::Client(std::string host, int port, std::string token, ClientOptions opt)
    : host_(std::move(host)), port_(port), token_(std::move(token)), opt_(opt) {}

std::string Client::Address() const {
  return socket_path_.empty() ? "http://" + host_ + ":" + std::to_string(port_) : "unix:" + socket_path_;
}

Result<std::string> Client::Send(const char* method, const std::string& path, const std::string* body,
                                 const LineFunc* on_line, std::stop_token cancel) const {
  const auto deadline = Clock::now() + opt_.busy_retry;
  auto backoff = std::chrono::milliseconds(5);
  for (;;) {
    if (cancel.stop_requested()) return Fail(ErrorCode::kCancelled, "cancelled by the client");
    // A connection per call: the Client stays thread-safe, and closing it is how a stream is
    // cancelled.
    auto http = socket_path_.empty() ? std::make_unique<httplib::Client>(host_, port_)
                                     : std::make_unique<httplib::Client>(socket_path_, 80);
    if (socket_path_.empty()) {
      http->set_bearer_token_auth(token_);
    } else {
      http->set_address_family(AF_UNIX);
    }
    http->set_keep_alive(false);
    http->set_connection_timeout(opt_.connect_timeout);
    http->set_read_timeout(opt_.read_timeout);

    httplib::Request req;
    req.method = method;
    req.path = path;
    if (body) {
      req.body = *body;
      req.set_header("Content-Type", "application/json");
    }
    int status = 0;
    bool aborted = false;
    std::string pending;   // stream bytes after the last full line
    std::string err_body;  // a non-200 reply to a stream request
    req.response_handler = [&](const httplib::Response& r) {
      status = r.status;
      return true;
    };
    if (on_line) {
      req.content_receiver = [&](const char* data, size_t n, size_t, size_t) {
        if (status != 200) {
          err_body.append(data, n);
          return true;
        }
        if (cancel.stop_requested()) {
          aborted = true;
          return false;
        }
        pending.append(data, n);
        size_t start = 0;
        for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
          std::string_view line(pending.data() + start, nl - start);
          if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
          if (!line.empty() && !(*on_line)(line)) {
            aborted = true;
            return false;
          }
        }
        pending.erase(0, start);
        return true;
      };
    }
    // Shutting the socket down from the cancelling thread wakes a read blocked between tokens.
    std::stop_callback on_cancel(cancel, [&http] { http->stop(); });

    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    const bool ok = http->send(req, res, err);
    if (aborted || (!ok && cancel.stop_requested())) return Fail(ErrorCode::kCancelled, "cancelled by the client");
    if (!ok) return Fail(Unreachable(Address(), status != 0, err));
    if (res.status != 200) {
      Error e = ErrorFromReply(res.status, on_line ? err_body : res.body);
      const auto now = Clock::now();
      if (!e.Is(ErrorCode::kBusy) || now >= deadline) return Fail(std::move(e));
      std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
      continue;
    }
    if (!on_line) return std::move(res.body);
    if (!pending.empty() && pending != "\r") (*on_line)(pending);
    return std::string();
  }
}

Result<Json> Client::Call(const char* method, const std::string& path, const Json* body) const {
  std::string text;
  if (body) {
    auto dumped = Dump(*body);
    if (!dumped) return Fail(dumped.error());
    text = std::move(*dumped);
  }
  auto reply = Send(method, path, body ? &text : nullptr);
  if (!reply) return Fail(reply.error());
  return ParseReply(*reply);
}

Result<Json> Client::ChatCompletion(const Json& request) const {
  return Call("POST", "/v1/chat/completions", &request);
}

Result<Json> Client::CallWithProgress(const std::string& path, Json body, const ProgressFunc& progress) const {
  if (!progress) return Call("POST", path, &body);
  body["stream"] = true;
  auto text = Dump(body);
  if (!text) return Fail(text.error());
  StreamState st;
  const LineFunc on_line = [&](std::string_view line) {
    Json ev;
    const std::string name = st.Take(line, &ev);
    if (st.error) return false;
    if (name == "progress") progress(ProgressFromJson(ev));
    return true;
  };
  auto sent = Send("POST", path, &*text, &on_line);
  if (!sent && !st.error) return Fail(sent.error());
  return st.Finish();
}

Result<HealthInfo> Client::Health() const {
  auto j = Call("GET", "/v1/health");
  if (!j) return Fail(j.error());
  return HealthInfo{StrOr(*j, "status"), StrOr(*j, "version"), IntOr(*j, "sessions"), IntOr(*j, "models")};
}

Result<std::vector<ModelEntry>> Client::Models() const {
  auto j = Call("GET", "/v1/models");
  if (!j) return Fail(j.error());
  std::vector<ModelEntry> out;
  auto it = j->find("models");
  if (it == j->end() || !it->is_array()) return Fail(ErrorCode::kInternal, "modeld's model list has no 'models'");
  for (const auto& m : *it) {
    if (!m.is_object()) continue;
    out.push_back(ModelEntry{StrOr(m, "model"), StrOr(m, "path"), StrOr(m, "digest"), StrOr(m, "architecture"),
                             IntOr(m, "context_length"), StrOr(m, "pooling"), BoolOr(m, "loaded")});
  }
  return out;
}

Result<ModelInfo> Client::Describe(std::string_view model) const {
  const Json body = {{"model", model}};
  auto j = Call("POST", "/v1/describe", &body);
  if (!j) return Fail(j.error());
  return wire::ModelInfoFromJson(Known(*j, wire::ToJson(ModelInfo{})));
}

Result<OpenedSession> Client::OpenSession(std::string_view workspace, std::string_view model,
                                          const std::optional<SessionConfig>& config, const ProgressFunc& progress,
                                          AssemblyMode assembly) const {
  Json body = {{"workspace", workspace}};
  if (!model.empty()) body["model"] = model;
  if (assembly == AssemblyMode::kInPlace) body["assembly"] = "in_place";
  if (config) {
    // Only the fields set away from the defaults, so the daemon's own defaults (its --threads)
    // apply to the rest.
    const Json defaults = wire::ToJson(SessionConfig{});
    const Json all = wire::ToJson(*config);
    Json fields = Json::object();
    for (const auto& [k, v] : all.items()) {
      if (defaults.value(k, Json()) != v) fields[k] = v;
    }
    body["config"] = std::move(fields);
  }
  auto j = CallWithProgress("/v1/sessions", std::move(body), progress);
  if (!j) return Fail(j.error());
  OpenedSession out;
  out.workspace = StrOr(*j, "workspace");
  out.model = StrOr(*j, "model");
  out.created = BoolOr(*j, "created");
  out.assembly = StrOr(*j, "assembly") == "in_place" ? AssemblyMode::kInPlace : AssemblyMode::kEditAware;
  if (auto it = j->find("config"); it != j->end()) {
    auto c = wire::SessionConfigFromJson(Known(*it, wire::ToJson(SessionConfig{})), SessionConfig{});
    if (!c) return Fail(c.error());
    out.config = std::move(*c);
  }
  if (auto it = j->find("report"); it != j->end()) {
    auto r = SessionInfoFromJson(*it);
    if (!r) return Fail(r.error());
    out.report = std::move(r->report);
  }
  return out;
}

Result<std::vector<SessionInfo>> Client::ListSessions() const {
  auto j = Call("GET", "/v1/sessions");
  if (!j) return Fail(j.error());
  auto it = j->find("sessions");
  if (it == j->end() || !it->is_array()) return Fail(ErrorCode::kInternal, "modeld's session list has no 'sessions'");
  std::vector<SessionInfo> out;
  for (const auto& s : *it) {
    auto info = SessionInfoFromJson(s);
    if (!info) return Fail(info.error());
    out.push_back(std::move(*info));
  }
  return out;
}

Result<SessionInfo> Client::Report(std::string_view workspace) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  auto j = Call("GET", WorkspacePath(workspace));
  if (!j) return Fail(j.error());
  return SessionInfoFromJson(*j);
}

Result<Json> Client::ListSnapshots() const { return Call("GET", "/v1/snapshots"); }

Result<Json> Client::ShowSnapshot(std::string_view workspace) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  return Call("GET", "/v1/snapshots/" + std::string(workspace));
}

Status Client::DeleteSnapshot(std::string_view workspace) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  auto j = Call("DELETE", "/v1/snapshots/" + std::string(workspace));
  if (!j) return Fail(j.error());
  return {};
}

Result<Json> Client::ForkSnapshot(std::string_view workspace, std::string_view to) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  if (auto ok = CheckWorkspace(to); !ok) return Fail(ok.error());
  const Json body{{"to", std::string(to)}};
  return Call("POST", "/v1/snapshots/" + std::string(workspace) + "/fork", &body);
}

Status Client::CloseSession(std::string_view workspace) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  auto j = Call("DELETE", WorkspacePath(workspace));
  if (!j) return Fail(j.error());
  return {};
}

Result<PrefixStatus> Client::EnsurePrefix(std::string_view workspace, const PrefixInput& in) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  Json body = {{"segments", SegmentsJson(in.manifest.segments())}};
  auto j = CallWithProgress(WorkspacePath(workspace, "/prefix"), std::move(body), in.progress);
  if (!j) return Fail(j.error());
  return wire::PrefixStatusFromJson(Known(*j, wire::ToJson(PrefixStatus{})));
}

Result<SuffixStatus> Client::PrefillSuffix(std::string_view workspace, const SuffixInput& in) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  Json body = {{"prefix_digest", in.prefix_digest}, {"segments", SegmentsJson(in.segments)}};
  auto j = CallWithProgress(WorkspacePath(workspace, "/suffix"), std::move(body), in.progress);
  if (!j) return Fail(j.error());
  return wire::SuffixStatusFromJson(Known(*j, wire::ToJson(SuffixStatus{})));
}

Result<DecodeResult> Client::Decode(std::string_view workspace, const DecodeConfig& cfg,
                                    const ChunkCallback& on_chunk) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  auto body = Dump(wire::ToJson(cfg));
  if (!body) return Fail(body.error());
  ChunkTally tally(on_chunk);
  StreamState st;
  const LineFunc on_line = [&](std::string_view line) {
    Json ev;
    const std::string name = st.Take(line, &ev);
    if (st.error) return false;
    return name != "chunk" || tally.Add(ev);
  };
  auto sent = Send("POST", WorkspacePath(workspace, "/decode"), &*body, &on_line, cfg.cancel);
  if (!sent && sent.error().Is(ErrorCode::kCancelled) && !st.error) return tally.Cancelled();
  if (!sent && !st.error) return Fail(sent.error());
  auto j = st.Finish();
  if (!j) return Fail(j.error());
  return wire::DecodeResultFromJson(Known(*j, wire::ToJson(DecodeResult{})));
}

Result<std::vector<int32_t>> Client::Tokenize(std::string_view workspace, std::string_view text,
                                              bool parse_special) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  const Json body = {{"text", text}, {"parse_special", parse_special}};
  auto j = Call("POST", WorkspacePath(workspace, "/tokenize"), &body);
  if (!j) return Fail(j.error());
  auto it = j->find("tokens");
  if (it == j->end() || !it->is_array()) return Fail(ErrorCode::kInternal, "modeld's tokenize reply has no 'tokens'");
  std::vector<int32_t> out;
  out.reserve(it->size());
  for (const auto& t : *it) {
    if (!t.is_number_integer()) return Fail(ErrorCode::kInternal, "modeld sent a token that is not an integer");
    out.push_back(t.get<int32_t>());
  }
  return out;
}

Result<Json> Client::WorkspaceCall(std::string_view workspace, const char* op, const Json& body,
                                   WorkspaceStats* stats) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  auto j = Call("POST", WorkspaceOpPath(workspace, op), &body);
  if (!j) return Fail(j.error());
  if (stats) *stats = StatsFromJson(j->value("workspace", Json::object()));
  return j;
}

Status Client::SetStable(std::string_view workspace, const StableParts& parts, bool prefill,
                         WorkspaceStats* stats) const {
  Json body = Json::object();
  if (parts.system) body["system"] = *parts.system;
  if (parts.tools) body["tools"] = *parts.tools;
  if (parts.repo_map) body["repo_map"] = *parts.repo_map;
  if (!prefill) body["prefill"] = false;
  auto j = WorkspaceCall(workspace, "stable", body, stats);
  if (!j) return Fail(j.error());
  return {};
}

Result<PutResult> Client::PutFile(std::string_view workspace, std::string_view path, std::string_view content,
                                  bool prefill, WorkspaceStats* stats) const {
  Json body = {{"path", path}, {"content", content}};
  if (!prefill) body["prefill"] = false;
  auto j = WorkspaceCall(workspace, "files", body, stats);
  if (!j) return Fail(j.error());
  return PutResult{StrOr(*j, "change"), IntOr(*j, "note_bytes")};
}

Status Client::RemoveFile(std::string_view workspace, std::string_view path, bool prefill,
                          WorkspaceStats* stats) const {
  Json body = {{"path", path}};
  if (!prefill) body["prefill"] = false;
  auto j = WorkspaceCall(workspace, "files/remove", body, stats);
  if (!j) return Fail(j.error());
  return {};
}

Status Client::RenameFile(std::string_view workspace, std::string_view from, std::string_view to, bool prefill,
                          WorkspaceStats* stats) const {
  Json body = {{"from", from}, {"to", to}};
  if (!prefill) body["prefill"] = false;
  auto j = WorkspaceCall(workspace, "files/rename", body, stats);
  if (!j) return Fail(j.error());
  return {};
}

Status Client::AddTurn(std::string_view workspace, std::string_view role, std::string_view text, bool prefill,
                       WorkspaceStats* stats) const {
  Json body = {{"role", role}, {"text", text}};
  if (!prefill) body["prefill"] = false;
  auto j = WorkspaceCall(workspace, "turns", body, stats);
  if (!j) return Fail(j.error());
  return {};
}

Result<PrefixStatus> Client::WorkspacePrefill(std::string_view workspace, WorkspaceStats* stats) const {
  auto j = WorkspaceCall(workspace, "prefill", Json::object(), stats);
  if (!j) return Fail(j.error());
  return PrefixFromJson(*j);
}

Result<PrefixStatus> Client::Compact(std::string_view workspace, WorkspaceStats* stats, int64_t keep_turns) const {
  Json body = Json::object();
  if (keep_turns >= 0) body["keep_turns"] = keep_turns;
  auto j = WorkspaceCall(workspace, "compact", body, stats);
  if (!j) return Fail(j.error());
  return PrefixFromJson(*j);
}

Result<AskResult> Client::Ask(std::string_view workspace, std::string_view question, const DecodeConfig& cfg,
                              const ChunkCallback& on_chunk, WorkspaceStats* stats,
                              const ProgressFunc& progress) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  Json body = {{"question", question}};
  const Json decode_fields = wire::ToJson(cfg);
  for (const auto& [k, v] : decode_fields.items()) body[k] = v;
  auto text = Dump(body);
  if (!text) return Fail(text.error());
  ChunkTally tally(on_chunk);
  StreamState st;
  const LineFunc on_line = [&](std::string_view line) {
    Json ev;
    const std::string name = st.Take(line, &ev);
    if (st.error) return false;
    if (name == "progress" && progress) progress(ProgressFromJson(ev));
    return name != "chunk" || tally.Add(ev);
  };
  auto sent = Send("POST", WorkspaceOpPath(workspace, "ask"), &*text, &on_line, cfg.cancel);
  if (!sent && sent.error().Is(ErrorCode::kCancelled) && !st.error) {
    AskResult r;
    r.decode = tally.Cancelled();
    return r;
  }
  if (!sent && !st.error) return Fail(sent.error());
  auto j = st.Finish();
  if (!j) return Fail(j.error());
  AskResult r;
  auto ps = PrefixFromJson(j->value("prefix", Json::object()));
  if (!ps) return Fail(ps.error());
  auto ss = wire::SuffixStatusFromJson(Known(j->value("suffix", Json::object()), wire::ToJson(SuffixStatus{})));
  if (!ss) return Fail(ss.error());
  auto dr = wire::DecodeResultFromJson(Known(j->value("decode", Json::object()), wire::ToJson(DecodeResult{})));
  if (!dr) return Fail(dr.error());
  r.prefix = std::move(*ps);
  r.suffix = std::move(*ss);
  r.decode = std::move(*dr);
  r.compacted = BoolOr(*j, "compacted");
  if (stats) *stats = StatsFromJson(j->value("workspace", Json::object()));
  return r;
}

Result<WorkspaceState> Client::WorkspaceInfo(std::string_view workspace) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  auto j = Call("GET", WorkspaceOpPath(workspace));
  if (!j) return Fail(j.error());
  WorkspaceState out;
  out.stats = StatsFromJson(*j);
  auto it = j->find("file_list");
  if (it == j->end() || !it->is_array()) {
    return Fail(ErrorCode::kInternal, "modeld's workspace reply has no 'file_list'");
  }
  for (const auto& f : *it) {
    if (f.is_object()) out.files.push_back(WorkspaceFile{StrOr(f, "path"), IntOr(f, "bytes")});
  }
  return out;
}

Result<std::string> Client::Context(std::string_view workspace) const {
  if (auto ok = CheckWorkspace(workspace); !ok) return Fail(ok.error());
  auto j = Call("GET", WorkspaceOpPath(workspace, "context"));
  if (!j) return Fail(j.error());
  auto it = j->find("text");
  if (it == j->end() || !it->is_string()) return Fail(ErrorCode::kInternal, "modeld's context reply has no 'text'");
  return it->get<std::string>();
}

Result<Embedding> Client::Embed(std::string_view model, std::string_view input) const {
  const Json body = {{"model", model}, {"input", input}};
  auto j = Call("POST", "/v1/embed", &body);
  if (!j) return Fail(j.error());
  auto it = j->find("embedding");
  if (it == j->end() || !it->is_array()) return Fail(ErrorCode::kInternal, "modeld's embed reply has no 'embedding'");
  Embedding e;
  e.values.reserve(it->size());
  for (const auto& v : *it) {
    if (!v.is_number()) return Fail(ErrorCode::kInternal, "modeld sent an embedding value that is not a number");
    e.values.push_back(v.get<float>());
  }
  e.normalized = BoolOr(*j, "normalized", true);
  e.n_tokens = static_cast<int32_t>(IntOr(*j, "n_tokens"));
  e.pooling = StrOr(*j, "pooling");
  return e;
}

Result<std::string> Client::Metrics() const { return Send("GET", "/metrics", nullptr); }

}  // namespace modeld::client
