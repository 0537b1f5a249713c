#include "daemon/server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <stop_token>
#include <thread>

#include "daemon/connection_threads.h"
#include "daemon/metrics.h"
#include "daemon/session_manager.h"
#include "daemon/workspace_workers.h"
#include "modeld/registry.h"
#include "modeld/service.h"
#include "modeld/workspace.h"
#include "wire/codec.h"

namespace modeld::daemon {
namespace {

namespace fs = std::filesystem;
using wire::Json;
using Clock = std::chrono::steady_clock;

constexpr const char* kVersion = "0.1.0";

double SecondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool ValidWorkspace(const std::string& ws) {
  if (ws.empty() || ws.size() > 128) return false;
  for (char c : ws) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::string_view("._-:@+").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool IsLoopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

// Constant-time comparison for the bearer token.
bool SameSecret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0;
}

void Reply(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_content(wire::Dump(body), "application/json");
}

void ReplyError(httplib::Response& res, const Error& e) {
  Reply(res, wire::HttpStatus(e.code()), Json{{"error", wire::ToJson(e)}});
}

std::string Line(const Json& j) { return wire::Dump(j) + "\n"; }

// Makes `path` free for our socket without ever deleting what is not a stale socket: a path that
// is not a socket, or a socket something answers on, is refused and left as it is.
Status ClaimSocketPath(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return Fail(ErrorCode::kIoError, "cannot use " + path + " as the socket: " + std::strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Fail(ErrorCode::kInvalidArgument,
                path + " exists and is not a socket; refusing to replace it (choose another --socket)");
  }
  // A live daemon (or anything else) answers on it; a stale socket left by a crash refuses.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(ErrorCode::kIoError, std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 || errno != ECONNREFUSED;
  ::close(fd);
  if (live) return Fail(ErrorCode::kInvalidArgument, "something is already serving on " + path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Fail(ErrorCode::kIoError, "cannot remove the stale socket " + path + ": " + std::strerror(errno));
  }
  return {};
}

struct ServedModel {
  std::string name;
  ModelInfo info;
};

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  Metrics metrics;
  std::shared_ptr<ComputeGate> gate = std::make_shared<ComputeGate>();
  std::vector<ServedModel> models;
  std::unique_ptr<SessionManager> sessions;
  std::unique_ptr<WorkspaceWorkers> workers;  // eager prefills and compactions
  httplib::Server unix_server;
  httplib::Server tcp_server;
  std::thread unix_thread, tcp_thread;
  int bound_port = 0;
  std::atomic<bool> stopping{false};
  std::stop_source stop;  // requested by Stop(): model loads and prefills under way end
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stopped = false;  // Stop() has begun
  bool done = false;     // Stop() has finished

  OpenSessionRequest Request(const ServedModel& m, const SessionConfig& cfg) const {
    OpenSessionRequest req;
    req.model_path = m.info.path;
    req.model_digest = m.info.digest;
    req.config = cfg;
    req.max_ctx = opt.max_ctx;
    req.gate = gate;
    req.cancel = stop.get_token();
    return req;
  }
  Result<SessionPlan> Plan(const ServedModel& m, const SessionConfig& cfg) const {
    return Service().PlanSession(Request(m, cfg));
  }

  const ServedModel* FindModel(const std::string& name) const {
    if (name.empty()) return models.empty() ? nullptr : &models.front();
    for (const auto& m : models) {
      if (m.name == name || m.info.path == name) return &m;
    }
    return nullptr;
  }

  Result<const ServedModel*> ModelOrError(const std::string& name) const {
    const ServedModel* m = FindModel(name);
    if (!m) return Fail(ErrorCode::kNotFound, "model '" + name + "' is not served by this daemon (see /v1/models)");
    return m;
  }

  void Log(const char* fmt, const std::string& a, const std::string& b = "") const {
    if (opt.log_requests) std::fprintf(stderr, fmt, a.c_str(), b.c_str());
  }

  void Routes(httplib::Server& s);
  // Writes decoded chunks as NDJSON events. Called on every token: a closed
  // connection or a stopping daemon cancels the decode there.
  ChunkCallback ChunkWriter(httplib::DataSink& sink, bool* client_gone) const {
    return [this, &sink, client_gone](const StreamChunk& c) {
      if (stopping || !sink.is_writable()) {
        *client_gone = !stopping;
        return false;
      }
      if (c.text.empty()) return true;
      const std::string line = Line(Json{{"event", "chunk"}, {"text", c.text}, {"n_tokens", c.n_tokens}});
      if (!sink.write(line.data(), line.size())) {
        *client_gone = true;
        return false;
      }
      return true;
    };
  }
  // Long prefills show progress in the log (every quarter), streamed or not; `inner` gets all of it.
  ProgressFunc LoggedProgress(const std::string& ws, ProgressFunc inner) const {
    return [this, ws, inner = std::move(inner), last = int64_t{-1}](const Progress& p) mutable {
      if (inner) inner(p);
      const int64_t quarter = p.total > 0 ? 4 * p.done / p.total : 4;
      if (opt.log_requests && p.total >= 2048 && quarter != last) {
        last = quarter;
        std::fprintf(stderr, "modeld: %s %s: %lld/%lld tokens\n", ws.c_str(), p.stage.c_str(),
                     static_cast<long long>(p.done), static_cast<long long>(p.total));
      }
    };
  }
  // Progress events on a stream.
  static ProgressFunc ProgressWriter(httplib::DataSink& sink) {
    return [&sink](const Progress& p) {
      if (!sink.is_writable()) return;
      Json ev = wire::ToJson(p);
      ev["event"] = "progress";
      const std::string line = Line(ev);
      sink.write(line.data(), line.size());
    };
  }
  // Handlers.
  void Health(httplib::Response& res);
  void Models(httplib::Response& res);
  void Describe(const httplib::Request& req, httplib::Response& res);
  void OpenSession(const httplib::Request& req, httplib::Response& res);
  void ListSessions(httplib::Response& res);
  void GetReport(const std::string& ws, httplib::Response& res);
  void CloseSession(const std::string& ws, httplib::Response& res);
  void Prefill(const std::string& ws, bool suffix, const httplib::Request& req, httplib::Response& res);
  void Decode(const std::string& ws, const httplib::Request& req, httplib::Response& res);
  void Tokenize(const std::string& ws, const httplib::Request& req, httplib::Response& res);
  void Embed(const httplib::Request& req, httplib::Response& res);
  void MetricsText(httplib::Response& res);
  // Workspace (edit-aware assembly) endpoints.
  void WorkspaceOp(const std::string& ws, const std::string& op, const httplib::Request& req, httplib::Response& res);
  void WorkspaceAsk(const std::string& ws, const httplib::Request& req, httplib::Response& res);
  void WorkspaceInfo(const std::string& ws, bool context, httplib::Response& res);
};

void Server::Impl::Routes(httplib::Server& s) {
  s.set_payload_max_length(static_cast<size_t>(opt.max_body_bytes));
  // A thread per connection (ConnectionThreads), up to max_connections, so silent or slow
  // connections cannot hold up the others; past it, connections wait in a queue of as many, and
  // the rest are closed at once. A thread ends with its connection: idle keep-alive after 5 s, a
  // request not sent within kReadTimeoutSeconds of its last byte.
  const size_t max_conn = static_cast<size_t>(std::max(8, opt.max_connections));
  s.new_task_queue = [max_conn] { return new ConnectionThreads(max_conn, max_conn); };
  s.set_read_timeout(kReadTimeoutSeconds, 0);
  s.set_write_timeout(30, 0);
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    Error e(ErrorCode::kNotFound, "no such endpoint: " + req.method + " " + req.path);
    if (res.status == 413)
      e = Error(ErrorCode::kInvalidArgument, "request body too large").WithReason("body_too_large");
    else if (res.status == 400)
      e = Error(ErrorCode::kInvalidArgument, "malformed HTTP request");
    else if (res.status != 404)
      e = Error(ErrorCode::kInvalidArgument, "HTTP error " + std::to_string(res.status));
    const int status = res.status;
    Reply(res, status, Json{{"error", wire::ToJson(e)}});
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
    }
    ReplyError(res, Error(ErrorCode::kInternal, what));
  });
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics.CountRequest(req.matched_route.empty() ? std::string("other") : req.matched_route, res.status);
    if (opt.log_requests) {
      std::fprintf(stderr, "modeld: %s %s -> %d\n", req.method.c_str(), req.path.c_str(), res.status);
    }
  });

  s.Get("/v1/health", [this](const httplib::Request&, httplib::Response& res) { Health(res); });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) { Models(res); });
  s.Post("/v1/describe", [this](const httplib::Request& req, httplib::Response& res) { Describe(req, res); });
  s.Post("/v1/sessions", [this](const httplib::Request& req, httplib::Response& res) { OpenSession(req, res); });
  s.Get("/v1/sessions", [this](const httplib::Request&, httplib::Response& res) { ListSessions(res); });
  s.Get("/v1/sessions/:ws",
        [this](const httplib::Request& req, httplib::Response& res) { GetReport(req.path_params.at("ws"), res); });
  s.Delete("/v1/sessions/:ws", [this](const httplib::Request& req, httplib::Response& res) {
    CloseSession(req.path_params.at("ws"), res);
  });
  s.Post("/v1/sessions/:ws/prefix", [this](const httplib::Request& req, httplib::Response& res) {
    Prefill(req.path_params.at("ws"), false, req, res);
  });
  s.Post("/v1/sessions/:ws/suffix", [this](const httplib::Request& req, httplib::Response& res) {
    Prefill(req.path_params.at("ws"), true, req, res);
  });
  s.Post("/v1/sessions/:ws/decode",
         [this](const httplib::Request& req, httplib::Response& res) { Decode(req.path_params.at("ws"), req, res); });
  s.Post("/v1/sessions/:ws/tokenize",
         [this](const httplib::Request& req, httplib::Response& res) { Tokenize(req.path_params.at("ws"), req, res); });
  s.Post("/v1/embed", [this](const httplib::Request& req, httplib::Response& res) { Embed(req, res); });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { MetricsText(res); });

  for (const char* op : {"files", "files/remove", "files/rename", "stable", "turns", "prefill", "compact"}) {
    const std::string name = op;
    s.Post("/v1/workspaces/:ws/" + name, [this, name](const httplib::Request& req, httplib::Response& res) {
      WorkspaceOp(req.path_params.at("ws"), name, req, res);
    });
  }
  s.Post("/v1/workspaces/:ws/ask", [this](const httplib::Request& req, httplib::Response& res) {
    WorkspaceAsk(req.path_params.at("ws"), req, res);
  });
  s.Get("/v1/workspaces/:ws", [this](const httplib::Request& req, httplib::Response& res) {
    WorkspaceInfo(req.path_params.at("ws"), false, res);
  });
  s.Get("/v1/workspaces/:ws/context", [this](const httplib::Request& req, httplib::Response& res) {
    WorkspaceInfo(req.path_params.at("ws"), true, res);
  });
}

namespace {

Json StatsJson(const WorkspaceStats& st) {
  return {{"assembly", AssemblyModeName(st.mode)}, {"files", st.files},
          {"log_entries", st.log_entries},         {"notes", st.notes},
          {"compactions", st.compactions},         {"compactions_in_place", st.compactions_in_place},
          {"context_tokens", st.context_tokens},   {"log_tokens", st.log_tokens},
          {"note_tokens", st.note_tokens}};
}

// Reads string fields of a workspace request; unknown or mistyped fields are refused.
Status StringFields(const Json& body, std::initializer_list<const char*> required,
                    std::initializer_list<const char*> optional, std::map<std::string, std::string>* out,
                    bool* prefill) {
  for (const auto& [k, v] : body.items()) {
    if (k == "prefill" && v.is_boolean()) {
      *prefill = v.get<bool>();
      continue;
    }
    const bool known =
        std::find_if(required.begin(), required.end(), [&](const char* n) { return k == n; }) != required.end() ||
        std::find_if(optional.begin(), optional.end(), [&](const char* n) { return k == n; }) != optional.end();
    if (!known || !v.is_string()) {
      return Fail(ErrorCode::kInvalidArgument, "unknown or mistyped field '" + k + "'");
    }
    (*out)[k] = v.get<std::string>();
  }
  for (const char* r : required) {
    if (!out->contains(r)) return Fail(ErrorCode::kInvalidArgument, std::string("missing '") + r + "'");
  }
  return {};
}

}  // namespace

void Server::Impl::WorkspaceOp(const std::string& ws, const std::string& op, const httplib::Request& req,
                               httplib::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  std::map<std::string, std::string> f;
  bool prefill = true;  // eager prefill after a change, unless the client says not to
  int64_t keep_turns = -1;
  if (auto it = body->find("keep_turns"); op == "compact" && it != body->end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0) {
      return ReplyError(res, Error(ErrorCode::kInvalidArgument, "'keep_turns' is a count of turns (>= 0)"));
    }
    keep_turns = it->get<int64_t>();
    body->erase(it);
  }
  Status parsed;
  if (op == "files")
    parsed = StringFields(*body, {"path", "content"}, {}, &f, &prefill);
  else if (op == "files/remove")
    parsed = StringFields(*body, {"path"}, {}, &f, &prefill);
  else if (op == "files/rename")
    parsed = StringFields(*body, {"from", "to"}, {}, &f, &prefill);
  else if (op == "stable")
    parsed = StringFields(*body, {}, {"system", "tools", "repo_map"}, &f, &prefill);
  else if (op == "turns")
    parsed = StringFields(*body, {"role", "text"}, {}, &f, &prefill);
  else
    parsed = StringFields(*body, {}, {}, &f, &prefill);
  if (!parsed) return ReplyError(res, parsed.error());

  auto lease = sessions->Acquire(ws, /*wait=*/true);
  if (!lease) return ReplyError(res, lease.error());
  Workspace& w = *lease->entry().assembly;
  Json out;
  if (op == "files") {
    auto r = w.PutFile(f["path"], f["content"]);
    if (!r) return ReplyError(res, r.error());
    out = {{"change", r->change}, {"note_bytes", r->note_bytes}};
  } else if (op == "files/remove" || op == "files/rename" || op == "stable" || op == "turns") {
    Status st;
    if (op == "files/remove") st = w.RemoveFile(f["path"]);
    if (op == "files/rename") st = w.RenameFile(f["from"], f["to"]);
    if (op == "turns") st = w.AddTurn(f["role"], f["text"]);
    if (op == "stable") {
      if (f.contains("system") && st) st = w.SetSystem(f["system"]);
      if (f.contains("tools") && st) st = w.SetTools(f["tools"]);
      if (f.contains("repo_map") && st) st = w.SetRepoMap(f["repo_map"]);
    }
    if (!st) return ReplyError(res, st.error());
    out = {{"ok", true}};
  } else {  // prefill, compact: synchronous
    const auto t0 = Clock::now();
    auto st = op == "prefill" ? w.Prefill(workers->Hooks(&*lease, /*wait=*/true, LoggedProgress(ws, {})))
                              : w.Compact(LoggedProgress(ws, {}), keep_turns);
    if (!st) return ReplyError(res, st.error());
    metrics.AddTokens(st->tokens_reused, st->tokens_prefilled, 0);
    metrics.prefill_seconds.Observe(SecondsSince(t0));
    out = wire::ToJson(*st);
    prefill = false;
  }
  out["workspace"] = StatsJson(w.Stats());
  lease->Release();
  if (prefill) workers->Schedule(ws);
  Reply(res, 200, out);
}

void Server::Impl::WorkspaceInfo(const std::string& ws, bool context, httplib::Response& res) {
  if (context) {  // the assembled text is made on demand: it waits for a call in progress
    auto lease = sessions->Acquire(ws, /*wait=*/true);
    if (!lease) return ReplyError(res, lease.error());
    return Reply(res, 200, Json{{"text", lease->entry().assembly->AssembledText()}});
  }
  // As of the last call: answered at once, even during a long ask or prefill.
  auto snap = sessions->GetSnapshot(ws);
  if (!snap) return ReplyError(res, snap.error());
  Json files = Json::array();
  for (const auto& [path, bytes] : snap->file_sizes) files.push_back({{"path", path}, {"bytes", bytes}});
  Json out = StatsJson(snap->stats);
  out["file_list"] = files;
  out["compacting"] = workers->Compacting(ws);  // a background compaction is under way
  Reply(res, 200, out);
}

void Server::Impl::WorkspaceAsk(const std::string& ws, const httplib::Request& req, httplib::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  auto it = body->find("question");
  if (it == body->end() || !it->is_string())
    return ReplyError(res, Error(ErrorCode::kInvalidArgument, "missing 'question'"));
  const std::string question = it->get<std::string>();
  body->erase("question");
  auto cfg = wire::DecodeConfigFromJson(*body);
  if (!cfg) return ReplyError(res, cfg.error());
  if (auto ok = ValidateDecodeConfig(*cfg); !ok) return ReplyError(res, ok.error());
  auto lease = sessions->Acquire(ws, /*wait=*/true);
  if (!lease) return ReplyError(res, lease.error());
  // Errors found before the stream starts are plain HTTP errors.
  if (auto ok = lease->entry().assembly->CheckAsk(question, *cfg); !ok) return ReplyError(res, ok.error());
  auto shared = std::make_shared<SessionManager::Lease>(std::move(*lease));
  res.set_chunked_content_provider("application/x-ndjson", [this, shared, question, shared_ws = ws,
                                                            dc = std::move(*cfg)](size_t, httplib::DataSink& sink) {
    const auto t0 = Clock::now();
    bool client_gone = false;
    // Long work before the first token (a compaction to finish, a large context) shows as
    // progress events.
    auto r = shared->entry().assembly->Ask(
        question, dc, ChunkWriter(sink, &client_gone),
        workers->Hooks(shared.get(), /*wait=*/true, LoggedProgress(shared_ws, ProgressWriter(sink))));
    Json stats = StatsJson(shared->entry().assembly->Stats());
    const bool compact_due = shared->entry().assembly->CompactionDue();
    if (r) {
      metrics.AddTokens(r->prefix.tokens_reused + r->suffix.tokens_reused,
                        r->prefix.tokens_prefilled + r->suffix.tokens_prefilled, r->decode.tokens_generated);
      metrics.decode_seconds.Observe(SecondsSince(t0));
    }
    shared->Release();
    if (compact_due) workers->Schedule(shared_ws, /*compact=*/true);
    if (client_gone) return false;
    const std::string line = r ? Line(Json{{"event", "done"},
                                           {"result",
                                            {{"prefix", wire::ToJson(r->prefix)},
                                             {"suffix", wire::ToJson(r->suffix)},
                                             {"decode", wire::ToJson(r->decode)},
                                             {"compacted", r->compacted},
                                             {"workspace", stats}}}})
                               : Line(Json{{"event", "error"}, {"error", wire::ToJson(r.error())}});
    sink.write(line.data(), line.size());
    sink.done();
    return true;
  });
}

void Server::Impl::Health(httplib::Response& res) {
  Reply(res, 200,
        Json{{"status", stopping ? "stopping" : "ok"},
             {"version", kVersion},
             {"sessions", sessions->List().size()},
             {"models", models.size()}});
}

void Server::Impl::Models(httplib::Response& res) {
  Json list = Json::array();
  for (const auto& m : models) {
    list.push_back({{"model", m.name},
                    {"path", m.info.path},
                    {"digest", m.info.digest},
                    {"architecture", m.info.architecture},
                    {"context_length", m.info.context_length},
                    {"pooling", m.info.pooling}});
  }
  Reply(res, 200, Json{{"models", list}});
}

void Server::Impl::Describe(const httplib::Request& req, httplib::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  if (!body->contains("model") || !(*body)["model"].is_string() || body->size() != 1) {
    return ReplyError(res, Error(ErrorCode::kInvalidArgument, "describe takes exactly {\"model\": NAME}"));
  }
  auto m = ModelOrError((*body)["model"].get<std::string>());
  if (!m) return ReplyError(res, m.error());
  Json j = wire::ToJson((*m)->info);
  j["model"] = (*m)->name;
  Reply(res, 200, j);
}

void Server::Impl::OpenSession(const httplib::Request& req, httplib::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  std::string ws, model;
  bool stream = false;
  SessionConfig cfg;
  cfg.n_ctx = 0;  // the default: 4096, or the model's limit when smaller
  cfg.threads = opt.threads;
  WorkspaceOptions wopt;
  wopt.compact_in_background = true;
  wopt.cancel = stop.get_token();
  for (const auto& [k, v] : body->items()) {
    if (k == "workspace" && v.is_string())
      ws = v.get<std::string>();
    else if (k == "assembly" && v.is_string() && (v == "edit_aware" || v == "in_place")) {
      wopt.mode = v == "edit_aware" ? AssemblyMode::kEditAware : AssemblyMode::kInPlace;
    } else if (k == "model" && v.is_string())
      model = v.get<std::string>();
    else if (k == "stream" && v.is_boolean())
      stream = v.get<bool>();
    else if (k == "config") {
      auto c = wire::SessionConfigFromJson(v, cfg);
      if (!c) return ReplyError(res, c.error());
      cfg = *c;
    } else {
      return ReplyError(res, Error(ErrorCode::kInvalidArgument, "open session: unknown or mistyped field '" + k + "'"));
    }
  }
  if (!ValidWorkspace(ws)) {
    return ReplyError(
        res, Error(ErrorCode::kInvalidArgument, "'workspace' must be 1-128 characters of A-Z a-z 0-9 . _ - : @ +"));
  }
  auto m = ModelOrError(model);
  if (!m) return ReplyError(res, m.error());
  const std::string name = (*m)->name;
  if (stream) {
    // Errors found before the stream starts are plain HTTP errors (Open plans again, cheaply).
    if (auto plan = Plan(**m, cfg); !plan) return ReplyError(res, plan.error());
  }
  auto run = [this, ws, name, cfg, wopt](const ProgressFunc& progress) -> Result<Json> {
    auto opened = sessions->Open(ws, name, cfg, wopt, progress);
    if (!opened) return Fail(opened.error());
    std::lock_guard lock(opened->entry->call_mu);  // a consistent report
    auto rep = opened->entry->session->Report();
    if (!rep) return Fail(rep.error());
    return Json{{"workspace", ws},
                {"model", name},
                {"created", opened->created},
                {"assembly", AssemblyModeName(opened->entry->assembly->Stats().mode)},
                {"config", wire::ToJson(opened->entry->config)},
                {"report", wire::ToJson(*rep)}};
  };
  if (!stream) {
    auto j = run([&](const Progress& p) {
      if (p.done == p.total || p.done % 25 == 0) Log("modeld: loading %s: %s%%\n", name, std::to_string(p.done));
    });
    if (!j) return ReplyError(res, j.error());
    return Reply(res, 200, *j);
  }
  res.set_chunked_content_provider("application/x-ndjson", [this, run, name](size_t, httplib::DataSink& sink) {
    auto j = run([&](const Progress& p) {
      Json ev = wire::ToJson(p);
      ev["event"] = "progress";
      const std::string line = Line(ev);
      sink.write(line.data(), line.size());
      if (p.done == p.total || p.done % 25 == 0) Log("modeld: loading %s: %s%%\n", name, std::to_string(p.done));
    });
    const std::string line = j ? Line(Json{{"event", "done"}, {"result", *j}})
                               : Line(Json{{"event", "error"}, {"error", wire::ToJson(j.error())}});
    sink.write(line.data(), line.size());
    sink.done();
    return true;
  });
}

void Server::Impl::ListSessions(httplib::Response& res) {
  Json list = Json::array();
  for (const auto& s : sessions->List()) {
    Json j = wire::ToJson(s.report);
    j["model"] = s.model;
    j["busy"] = s.busy;
    j["last_used_ms_ago"] = s.idle_ms;
    list.push_back(std::move(j));
  }
  Reply(res, 200, Json{{"sessions", list}});
}

void Server::Impl::GetReport(const std::string& ws, httplib::Response& res) {
  for (const auto& s : sessions->List()) {
    if (s.report.workspace_id != ws) continue;
    Json j = wire::ToJson(s.report);
    j["model"] = s.model;
    j["busy"] = s.busy;
    j["last_used_ms_ago"] = s.idle_ms;
    return Reply(res, 200, j);
  }
  // Not live: say why (never opened, evicted, closed).
  auto lease = sessions->Acquire(ws);
  ReplyError(res, lease ? Error(ErrorCode::kInternal, "session appeared during lookup") : lease.error());
}

void Server::Impl::CloseSession(const std::string& ws, httplib::Response& res) {
  if (auto ok = sessions->Close(ws); !ok) return ReplyError(res, ok.error());
  Reply(res, 200, Json{{"closed", true}});
}

void Server::Impl::Prefill(const std::string& ws, bool suffix, const httplib::Request& req, httplib::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  std::vector<ManifestSegment> segments;
  std::string prefix_digest;
  bool stream = false;
  for (const auto& [k, v] : body->items()) {
    if (k == "segments") {
      auto s = wire::SegmentsFromJson(v);
      if (!s) return ReplyError(res, s.error());
      segments = std::move(*s);
    } else if (k == "prefix_digest" && suffix && v.is_string()) {
      prefix_digest = v.get<std::string>();
    } else if (k == "stream" && v.is_boolean()) {
      stream = v.get<bool>();
    } else {
      return ReplyError(res, Error(ErrorCode::kInvalidArgument, "unknown or mistyped field '" + k + "'"));
    }
  }
  if (!body->contains("segments")) return ReplyError(res, Error(ErrorCode::kInvalidArgument, "missing 'segments'"));
  if (suffix && !body->contains("prefix_digest")) {
    return ReplyError(res, Error(ErrorCode::kInvalidArgument, "missing 'prefix_digest'"));
  }
  auto lease = sessions->Acquire(ws);
  if (!lease) return ReplyError(res, lease.error());
  auto shared = std::make_shared<SessionManager::Lease>(std::move(*lease));
  auto run = [this, shared, suffix, segments = std::move(segments),
              prefix_digest](const ProgressFunc& progress) -> Result<Json> {
    const auto t0 = Clock::now();
    Session& s = shared->session();
    if (suffix) {
      SuffixInput in{prefix_digest, segments, progress, stop.get_token()};
      auto st = s.PrefillSuffix(in);
      if (!st) return Fail(st.error());
      metrics.AddTokens(st->tokens_reused, st->tokens_prefilled, 0);
      metrics.prefill_seconds.Observe(SecondsSince(t0));
      return wire::ToJson(*st);
    }
    PrefixInput in{ContextManifest(segments), progress, 0, stop.get_token()};
    auto st = s.EnsurePrefix(in);
    if (!st) return Fail(st.error());
    metrics.AddTokens(st->tokens_reused, st->tokens_prefilled, 0);
    metrics.prefill_seconds.Observe(SecondsSince(t0));
    return wire::ToJson(*st);
  };
  auto logged = [this, ws](ProgressFunc inner) { return LoggedProgress(ws, std::move(inner)); };
  if (!stream) {
    auto j = run(logged({}));
    if (!j) return ReplyError(res, j.error());
    return Reply(res, 200, *j);
  }
  res.set_chunked_content_provider("application/x-ndjson", [run, shared, logged](size_t, httplib::DataSink& sink) {
    auto j = run(logged(ProgressWriter(sink)));
    shared->Release();
    const std::string line = j ? Line(Json{{"event", "done"}, {"result", *j}})
                               : Line(Json{{"event", "error"}, {"error", wire::ToJson(j.error())}});
    sink.write(line.data(), line.size());
    sink.done();
    return true;
  });
}

void Server::Impl::Decode(const std::string& ws, const httplib::Request& req, httplib::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  auto cfg = wire::DecodeConfigFromJson(*body);
  if (!cfg) return ReplyError(res, cfg.error());
  if (auto ok = ValidateDecodeConfig(*cfg); !ok) return ReplyError(res, ok.error());
  auto lease = sessions->Acquire(ws);
  if (!lease) return ReplyError(res, lease.error());
  // Errors found before the stream starts are plain HTTP errors.
  auto rep = lease->session().Report();
  if (!rep) return ReplyError(res, rep.error());
  if (rep->fatal) {
    return ReplyError(res, Error(ErrorCode::kSessionFatal, "the session of workspace '" + ws +
                                                               "' hit a backend failure: close it and open a new one"));
  }
  if (rep->tokens_resident + cfg->max_tokens > rep->n_ctx) {
    return ReplyError(res, Error::ContextOverflow("decode", rep->tokens_resident, cfg->max_tokens, rep->n_ctx));
  }
  if (rep->tokens_resident == 0) {
    return ReplyError(res, Error(ErrorCode::kInvalidArgument,
                                 "nothing is resident to decode from: prefill a prefix (and suffix) first"));
  }
  auto shared = std::make_shared<SessionManager::Lease>(std::move(*lease));
  res.set_chunked_content_provider(
      "application/x-ndjson", [this, shared, dc = std::move(*cfg)](size_t, httplib::DataSink& sink) {
        const auto t0 = Clock::now();
        bool client_gone = false;
        auto r = shared->session().Decode(dc, ChunkWriter(sink, &client_gone));
        if (r) {
          metrics.AddTokens(0, 0, r->tokens_generated);
          metrics.decode_seconds.Observe(SecondsSince(t0));
          if (r->tokens_generated > 0) metrics.first_token_seconds.Observe(r->first_token_ms / 1000.0);
        }
        shared->Release();
        if (client_gone) return false;  // nobody to tell
        const std::string line = r ? Line(Json{{"event", "done"}, {"result", wire::ToJson(*r)}})
                                   : Line(Json{{"event", "error"}, {"error", wire::ToJson(r.error())}});
        sink.write(line.data(), line.size());
        sink.done();
        return true;
      });
}

void Server::Impl::Tokenize(const std::string& ws, const httplib::Request& req, httplib::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  std::string text;
  bool parse_special = false;
  bool has_text = false;
  for (const auto& [k, v] : body->items()) {
    if (k == "text" && v.is_string()) {
      text = v.get<std::string>();
      has_text = true;
    } else if (k == "parse_special" && v.is_boolean()) {
      parse_special = v.get<bool>();
    } else {
      return ReplyError(res, Error(ErrorCode::kInvalidArgument, "unknown or mistyped field '" + k + "'"));
    }
  }
  if (!has_text) return ReplyError(res, Error(ErrorCode::kInvalidArgument, "missing 'text'"));
  auto lease = sessions->Acquire(ws);
  if (!lease) return ReplyError(res, lease.error());
  auto toks = lease->session().Tokenize(text, parse_special);
  if (!toks) return ReplyError(res, toks.error());
  Reply(res, 200, Json{{"tokens", *toks}, {"count", toks->size()}});
}

void Server::Impl::Embed(const httplib::Request& req, httplib::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  std::string model, input;
  bool has_input = false;
  for (const auto& [k, v] : body->items()) {
    if (k == "model" && v.is_string())
      model = v.get<std::string>();
    else if (k == "input" && v.is_string()) {
      input = v.get<std::string>();
      has_input = true;
    } else {
      return ReplyError(res, Error(ErrorCode::kInvalidArgument, "unknown or mistyped field '" + k + "'"));
    }
  }
  if (!has_input) return ReplyError(res, Error(ErrorCode::kInvalidArgument, "missing 'input'"));
  auto m = ModelOrError(model);
  if (!m) return ReplyError(res, m.error());
  EmbedRequest er;
  er.model_path = (*m)->info.path;
  er.model_digest = (*m)->info.digest;
  er.input = input;
  er.threads = opt.threads;
  er.gate = gate;
  auto e = Service().Embed(er);
  if (!e) return ReplyError(res, e.error());
  Reply(res, 200,
        Json{{"embedding", e->values},
             {"dimensions", e->values.size()},
             {"normalized", e->normalized},
             {"pooling", e->pooling},
             {"n_tokens", e->n_tokens}});
}

void Server::Impl::MetricsText(httplib::Response& res) {
  int64_t resident = 0;
  const auto list = sessions->List();
  for (const auto& s : list) resident += s.report.tokens_resident;
  int64_t kv = 0;
  for (const auto& s : list) kv += s.report.kv_bytes;
  res.status = 200;
  res.set_content(metrics.Render(static_cast<int64_t>(list.size()), resident, kv, sessions->TotalBytes()),
                  "text/plain; version=0.0.4");
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Stop(); }

Result<std::unique_ptr<Server>> Server::Start(const ServerOptions& opt) {
  if (opt.socket_path.empty() && opt.port == 0) {
    return Fail(ErrorCode::kInvalidArgument, "nothing to listen on: give a socket path or a port");
  }
  if (opt.port != 0) {
    if (!IsLoopback(opt.host) && !opt.allow_remote) {
      return Fail(ErrorCode::kInvalidArgument,
                  "refusing to listen on non-loopback address " + opt.host + " (pass --allow-remote to do it anyway)");
    }
    if (opt.token.empty()) return Fail(ErrorCode::kInvalidArgument, "a TCP listener needs a bearer token");
    if (opt.token.size() < kMinTokenBytes) {
      return Fail(ErrorCode::kInvalidArgument, "the bearer token is " + std::to_string(opt.token.size()) +
                                                   " bytes; at least " + std::to_string(kMinTokenBytes) +
                                                   " are required (e.g. openssl rand -hex 24)");
    }
  }
  if (opt.models.empty()) return Fail(ErrorCode::kInvalidArgument, "no model to serve");
  if (opt.threads < 0 || opt.threads > HardwareThreads()) {
    return Fail(OutOfRange("--threads", "0 (all) or in [1, " + std::to_string(HardwareThreads()) + "]",
                           std::to_string(opt.threads), "this machine's hardware threads"));
  }
  if (!SessionAvailable()) {
    return Fail(Error(ErrorCode::kSessionUnavailable, "no session backend is compiled into this build")
                    .WithReason("no_backend"));
  }
  auto impl = std::make_unique<Impl>();
  impl->opt = opt;
  for (const auto& path : opt.models) {
    OpenSessionRequest req;
    req.model_path = path;
    auto info = Service().Describe(req);
    if (!info) return Fail(info.error());
    ServedModel m{fs::path(path).stem().string(), *info};
    if (impl->FindModel(m.name) != nullptr && !impl->models.empty()) {
      return Fail(ErrorCode::kInvalidArgument, "two served models are both named '" + m.name + "'");
    }
    impl->models.push_back(std::move(m));
  }
  Impl* self = impl.get();
  impl->sessions = std::make_unique<SessionManager>(
      [self](const std::string& model, const SessionConfig& cfg) { return self->Plan(*self->FindModel(model), cfg); },
      [self](const std::string& ws, const std::string& model, const SessionConfig& cfg,
             const ProgressFunc& progress) -> Result<std::unique_ptr<Session>> {
        OpenSessionRequest req = self->Request(*self->FindModel(model), cfg);
        req.workspace_id = ws;
        req.progress = progress;
        return Service().OpenSession(req);
      },
      opt.kv_budget_bytes, opt.max_sessions, &impl->metrics);
  impl->workers =
      std::make_unique<WorkspaceWorkers>(impl->sessions.get(), impl->gate.get(), &impl->metrics, opt.log_requests);

  if (!opt.socket_path.empty()) {
    const fs::path sock(opt.socket_path);
    std::error_code ec;
    if (sock.has_parent_path() && !fs::exists(sock.parent_path(), ec)) {
      fs::create_directories(sock.parent_path(), ec);
      fs::permissions(sock.parent_path(), fs::perms::owner_all, ec);
    }
    if (auto ok = ClaimSocketPath(opt.socket_path); !ok) return Fail(ok.error());
    impl->Routes(impl->unix_server);
    impl->unix_server.set_address_family(AF_UNIX);
    const mode_t old_mask = ::umask(0177);  // the socket file is created 0600
    const bool bound = impl->unix_server.bind_to_port(opt.socket_path, 80);
    ::umask(old_mask);
    if (!bound) return Fail(ErrorCode::kIoError, "cannot listen on " + opt.socket_path);
    ::chmod(opt.socket_path.c_str(), 0600);
    impl->unix_thread = std::thread([self] { self->unix_server.listen_after_bind(); });
  }
  if (opt.port != 0) {
    impl->Routes(impl->tcp_server);
    const std::string token = opt.token;
    impl->tcp_server.set_pre_routing_handler([token](const httplib::Request& req, httplib::Response& res) {
      const std::string auth = req.get_header_value("Authorization");
      if (auth.size() > 7 && auth.compare(0, 7, "Bearer ") == 0 && SameSecret(auth.substr(7), token)) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      Reply(res, 401, Json{{"error", wire::ToJson(Error(ErrorCode::kUnauthorized, "missing or wrong bearer token"))}});
      return httplib::Server::HandlerResponse::Handled;
    });
    if (opt.port < 0) {
      impl->bound_port = impl->tcp_server.bind_to_any_port(opt.host);
    } else {
      impl->bound_port = impl->tcp_server.bind_to_port(opt.host, opt.port) ? opt.port : -1;
    }
    if (impl->bound_port <= 0) {
      impl->unix_server.stop();
      if (impl->unix_thread.joinable()) impl->unix_thread.join();
      return Fail(ErrorCode::kIoError, "cannot listen on " + opt.host + ":" + std::to_string(opt.port));
    }
    impl->tcp_thread = std::thread([self] { self->tcp_server.listen_after_bind(); });
  }
  impl->workers->Start();
  if (!opt.socket_path.empty()) impl->unix_server.wait_until_ready();
  if (opt.port != 0) impl->tcp_server.wait_until_ready();
  return std::make_unique<Server>(std::move(impl));
}

void Server::Stop() {
  if (!impl_) return;
  {
    std::lock_guard lock(impl_->stop_mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
  }
  impl_->stopping = true;  // in-flight decodes see it at their next token
  impl_->stop.request_stop();
  impl_->workers->Stop();  // cancels a compaction under way, so a call waiting for it ends too
  impl_->unix_server.stop();
  impl_->tcp_server.stop();
  if (impl_->unix_thread.joinable()) impl_->unix_thread.join();
  if (impl_->tcp_thread.joinable()) impl_->tcp_thread.join();
  impl_->sessions->CloseAll();
  if (!impl_->opt.socket_path.empty()) {
    std::error_code ec;
    fs::remove(impl_->opt.socket_path, ec);
  }
  {
    std::lock_guard lock(impl_->stop_mu);
    impl_->done = true;
  }
  impl_->stop_cv.notify_all();
}

void Server::Wait() {
  std::unique_lock lock(impl_->stop_mu);
  impl_->stop_cv.wait(lock, [&] { return impl_->done; });
}

const std::string& Server::socket_path() const { return impl_->opt.socket_path; }
int Server::port() const { return impl_->bound_port; }

}  // namespace modeld::daemon
