#include "daemon/native/native_api.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string_view>

#include "modeld/service.h"
#include "modeld/workspace.h"
#include "wire/codec.h"

namespace modeld::daemon {
namespace {

using wire::Json;
using Clock = std::chrono::steady_clock;
using Events = http::EventStream;

constexpr const char* kVersion = "0.1.0";
constexpr const char* kNdjson = "application/x-ndjson";

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

void Reply(http::Response& res, int status, const Json& body) { res.SetJson(status, body); }

void ReplyError(http::Response& res, const Error& e) {
  Reply(res, wire::HttpStatus(e.code()), Json{{"error", wire::ToJson(e)}});
}

// Starts an NDJSON stream: `body` writes its events and says whether the body may be ended.
void Stream(http::Response& res, std::function<bool(Events&)> body) {
  res.content_type = kNdjson;
  res.stream = [body = std::move(body)](http::Sink& sink) {
    Events events(sink, Events::Framing::kNdjson);
    return body(events);
  };
}

// The final event of a stream: the result, or the error.
Json Final(const Result<Json>& r) {
  return r ? Json{{"event", "done"}, {"result", *r}} : Json{{"event", "error"}, {"error", wire::ToJson(r.error())}};
}

// Writes decoded chunks as NDJSON events. Called on every token: a closed connection or a
// stopping daemon cancels the decode there.
ChunkCallback ChunkWriter(const ServerContext& c, Events& events, bool* client_gone) {
  return [&c, &events, client_gone](const StreamChunk& chunk) {
    if (c.stopping || !events.Open()) {
      *client_gone = !c.stopping;
      return false;
    }
    if (chunk.text.empty()) return true;
    if (!events.Send(Json{{"event", "chunk"}, {"text", chunk.text}, {"n_tokens", chunk.n_tokens}})) {
      *client_gone = true;
      return false;
    }
    return true;
  };
}

// Progress events on a stream.
ProgressFunc ProgressWriter(Events& events) {
  return [&events](const Progress& p) {
    if (!events.Open()) return;
    Json ev = wire::ToJson(p);
    ev["event"] = "progress";
    events.Send(ev);
  };
}

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

void WorkspaceOp(ServerContext& c, const std::string& ws, const std::string& op, const http::Request& req,
                 http::Response& res) {
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

  Json out;
  if (op == "files" || op == "files/remove" || op == "files/rename" || op == "stable" || op == "turns") {
    // Changes take no computation: they never wait for a prefill or an ask on the workspace (a
    // running eager prefill they make obsolete stops, and the one they schedule has the newest).
    auto hold = c.sessions->HoldWorkspace(ws);
    if (!hold) return ReplyError(res, hold.error());
    Workspace& w = hold->workspace();
    if (op == "files") {
      auto r = w.PutFile(f["path"], f["content"]);
      if (!r) return ReplyError(res, r.error());
      out = {{"change", r->change}, {"note_bytes", r->note_bytes}};
    } else {
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
    }
    if (auto there = hold->StillThere(); !there) return ReplyError(res, there.error());
    out["workspace"] = StatsJson(w.Stats());
  } else {  // prefill, compact: synchronous
    auto lease = c.sessions->Acquire(ws, /*wait=*/true);
    if (!lease) return ReplyError(res, lease.error());
    Workspace& w = *lease->entry().assembly;
    const auto t0 = Clock::now();
    auto st = op == "prefill" ? w.Prefill(c.workers->Hooks(&*lease, /*wait=*/true, c.LoggedProgress(ws, {})))
                              : w.Compact(c.LoggedProgress(ws, {}), keep_turns);
    if (!st) return ReplyError(res, st.error());
    c.metrics.AddTokens(st->tokens_reused, st->tokens_prefilled, 0);
    c.metrics.prefill_seconds.Observe(SecondsSince(t0));
    out = wire::ToJson(*st);
    out["workspace"] = StatsJson(w.Stats());
    prefill = false;
  }
  if (prefill) c.workers->Schedule(ws);
  Reply(res, 200, out);
}

void WorkspaceInfo(ServerContext& c, const std::string& ws, bool context, http::Response& res) {
  if (context) {  // the assembled text as of now, also during a call
    auto hold = c.sessions->HoldWorkspace(ws);
    if (!hold) return ReplyError(res, hold.error());
    return Reply(res, 200, Json{{"text", hold->workspace().AssembledText()}});
  }
  // As of the last call: answered at once, even during a long ask or prefill.
  auto snap = c.sessions->GetSnapshot(ws);
  if (!snap) return ReplyError(res, snap.error());
  Json files = Json::array();
  for (const auto& [path, bytes] : snap->file_sizes) files.push_back({{"path", path}, {"bytes", bytes}});
  Json out = StatsJson(snap->stats);
  out["file_list"] = files;
  out["compacting"] = c.workers->Compacting(ws);  // a background compaction is under way
  Reply(res, 200, out);
}

void WorkspaceAsk(ServerContext& c, const std::string& ws, const http::Request& req, http::Response& res) {
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
  auto lease = c.sessions->Acquire(ws, /*wait=*/true);
  if (!lease) return ReplyError(res, lease.error());
  // Errors found before the stream starts are plain HTTP errors.
  if (auto ok = lease->entry().assembly->CheckAsk(question, *cfg); !ok) return ReplyError(res, ok.error());
  auto shared = std::make_shared<SessionManager::Lease>(std::move(*lease));
  Stream(res, [&c, shared, question, ws, dc = std::move(*cfg)](Events& events) {
    const auto t0 = Clock::now();
    bool client_gone = false;
    // Long work before the first token (a compaction to finish, a large context) shows as
    // progress events.
    auto r = shared->entry().assembly->Ask(
        question, dc, ChunkWriter(c, events, &client_gone),
        c.workers->Hooks(shared.get(), /*wait=*/true, c.LoggedProgress(ws, ProgressWriter(events))));
    Json stats = StatsJson(shared->entry().assembly->Stats());
    c.EndAsk(*shared, ws, r, SecondsSince(t0));
    if (client_gone) return false;
    events.Send(r ? Json{{"event", "done"},
                         {"result",
                          {{"prefix", wire::ToJson(r->prefix)},
                           {"suffix", wire::ToJson(r->suffix)},
                           {"decode", wire::ToJson(r->decode)},
                           {"compacted", r->compacted},
                           {"workspace", stats}}}}
                  : Json{{"event", "error"}, {"error", wire::ToJson(r.error())}});
    return true;
  });
}

void Health(ServerContext& c, http::Response& res) {
  Reply(res, 200,
        Json{{"status", c.stopping ? "stopping" : "ok"},
             {"version", kVersion},
             {"sessions", c.sessions->List().size()},
             {"models", c.models.size()}});
}

void Describe(ServerContext& c, const http::Request& req, http::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  if (!body->contains("model") || !(*body)["model"].is_string() || body->size() != 1) {
    return ReplyError(res, Error(ErrorCode::kInvalidArgument, "describe takes exactly {\"model\": NAME}"));
  }
  auto m = c.ModelOrError((*body)["model"].get<std::string>());
  if (!m) return ReplyError(res, m.error());
  Json j = wire::ToJson((*m)->info);
  j["model"] = (*m)->name;
  Reply(res, 200, j);
}

void OpenSession(ServerContext& c, const http::Request& req, http::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  std::string ws, model;
  bool stream = false;
  SessionConfig cfg;
  cfg.n_ctx = 0;  // the default: 4096, or the model's limit when smaller
  cfg.threads = c.opt.threads;
  WorkspaceOptions wopt;
  wopt.compact_in_background = true;
  wopt.cancel = c.stop.get_token();
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
      auto parsed = wire::SessionConfigFromJson(v, cfg);
      if (!parsed) return ReplyError(res, parsed.error());
      cfg = *parsed;
    } else {
      return ReplyError(res, Error(ErrorCode::kInvalidArgument, "open session: unknown or mistyped field '" + k + "'"));
    }
  }
  if (!ValidWorkspace(ws)) {
    return ReplyError(
        res, Error(ErrorCode::kInvalidArgument, "'workspace' must be 1-128 characters of A-Z a-z 0-9 . _ - : @ +"));
  }
  auto m = c.ModelOrError(model);
  if (!m) return ReplyError(res, m.error());
  const std::string name = (*m)->name;
  // The workspace's prompt reads as the model's own chat template renders it.
  wopt.markers = c.MarkersFor(**m);
  if (stream) {
    // Errors found before the stream starts are plain HTTP errors (Open plans again, cheaply).
    if (auto plan = c.Plan(**m, cfg); !plan) return ReplyError(res, plan.error());
  }
  auto run = [&c, ws, name, cfg, wopt](const ProgressFunc& progress) -> Result<Json> {
    // A workspace kept on disk comes back as it was (its own config), when it was of this model.
    if (c.snapshots && !c.sessions->Contains(ws)) {
      if (auto info = c.snapshots->Info(ws); info && info->model == name) (void)c.snapshots->Restore(ws);
    }
    auto opened = c.sessions->Open(ws, name, cfg, wopt, progress);
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
      if (p.done == p.total || p.done % 25 == 0) c.Log("modeld: loading %s: %s%%\n", name, std::to_string(p.done));
    });
    if (!j) return ReplyError(res, j.error());
    return Reply(res, 200, *j);
  }
  Stream(res, [&c, run, name](Events& events) {
    auto j = run([&](const Progress& p) {
      Json ev = wire::ToJson(p);
      ev["event"] = "progress";
      events.Send(ev);
      if (p.done == p.total || p.done % 25 == 0) c.Log("modeld: loading %s: %s%%\n", name, std::to_string(p.done));
    });
    events.Send(Final(j));
    return true;
  });
}

// A live session's report, as listed.
Json ListedJson(const SessionSummary& s) {
  Json j = wire::ToJson(s.report);
  j["model"] = s.model;
  j["busy"] = s.busy;
  j["last_used_ms_ago"] = s.idle_ms;
  return j;
}

void ListSessions(ServerContext& c, http::Response& res) {
  Json list = Json::array();
  for (const auto& s : c.sessions->List()) list.push_back(ListedJson(s));
  Reply(res, 200, Json{{"sessions", list}});
}

void GetReport(ServerContext& c, const std::string& ws, http::Response& res) {
  for (const auto& s : c.sessions->List()) {
    if (s.report.workspace_id == ws) return Reply(res, 200, ListedJson(s));
  }
  // Not live: say why (never opened, evicted, closed); one on disk is not restored for this.
  auto lease = c.sessions->Acquire(ws, /*wait=*/false, /*restore=*/false);
  ReplyError(res, lease ? Error(ErrorCode::kBusy, "the session appeared during the lookup: retry") : lease.error());
}

void CloseSession(ServerContext& c, const std::string& ws, http::Response& res) {
  // Closing discards the workspace, its snapshot too (SessionManager::Close deletes it under the
  // lease). One that is only on disk is closed by deleting that.
  auto ok = c.sessions->Close(ws);
  if (!ok && c.snapshots && ValidWorkspace(ws) &&
      (ok.error().Is(ErrorCode::kNotFound) || ok.error().reason() == "evicted")) {
    if (auto d = c.snapshots->Delete(ws); d) ok = {};
  }
  if (!ok) return ReplyError(res, ok.error());
  Reply(res, 200, Json{{"closed", true}});
}

Json SnapshotJson(const snapshot::SnapshotInfo& i) {
  return Json{{"workspace", i.workspace},
              {"model", i.model},
              {"saved_unix_ms", i.saved_unix_ms},
              {"identity", wire::ToJson(i.identity)},
              {"tokens", i.n_tokens},
              {"state_bytes", i.state_bytes},
              {"file_bytes", i.file_bytes},
              {"prefix_digest", i.prefix_digest},
              {"files", i.files},
              {"log_entries", i.log_entries}};
}

Status SnapshotsOn(ServerContext& c) {
  if (c.snapshots) return {};
  return Fail(Error::UnsupportedFeature("snapshots (the daemon runs with --no-snapshots)"));
}

void ListSnapshots(ServerContext& c, http::Response& res) {
  if (auto ok = SnapshotsOn(c); !ok) return ReplyError(res, ok.error());
  Json list = Json::array();
  for (const auto& i : c.snapshots->List()) {
    Json j = SnapshotJson(i);
    j["live"] = c.sessions->Contains(i.workspace);
    list.push_back(std::move(j));
  }
  // The writer's counts since the start: a failed write (a full disk) is logged and counted here.
  Reply(res, 200, Json{{"snapshots", list}, {"written", c.snapshots->written()}, {"failed", c.snapshots->failed()}});
}

void SnapshotOp(ServerContext& c, const std::string& ws, const std::string& op, const http::Request& req,
                http::Response& res) {
  if (auto ok = SnapshotsOn(c); !ok) return ReplyError(res, ok.error());
  if (!ValidWorkspace(ws)) {
    return ReplyError(
        res, Error(ErrorCode::kInvalidArgument, "'workspace' must be 1-128 characters of A-Z a-z 0-9 . _ - : @ +"));
  }
  if (op == "show" || op == "save") {
    // A live workspace is written first, so what is shown is what a restart would bring back.
    if (auto ok = c.snapshots->SaveNow(ws); !ok) return ReplyError(res, ok.error());
    auto i = c.snapshots->Info(ws);
    if (!i) return ReplyError(res, i.error());
    Json j = SnapshotJson(*i);
    j["live"] = c.sessions->Contains(ws);
    return Reply(res, 200, j);
  }
  if (op == "delete") {
    if (auto ok = c.snapshots->Delete(ws); !ok) return ReplyError(res, ok.error());
    return Reply(res, 200, Json{{"deleted", true}});
  }
  // fork
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  std::string to;
  for (const auto& [k, v] : body->items()) {
    if (k == "to" && v.is_string()) {
      to = v.get<std::string>();
    } else {
      return ReplyError(res, Error(ErrorCode::kInvalidArgument, "fork: unknown or mistyped field '" + k + "'"));
    }
  }
  if (!ValidWorkspace(to)) {
    return ReplyError(
        res,
        Error(ErrorCode::kInvalidArgument, "'to' must be 1-128 characters of A-Z a-z 0-9 . _ - : @ +").WithField("to"));
  }
  if (auto ok = c.snapshots->Fork(ws, to); !ok) return ReplyError(res, ok.error());
  auto i = c.snapshots->Info(to);
  if (!i) return ReplyError(res, i.error());
  Reply(res, 200, SnapshotJson(*i));
}

void Prefill(ServerContext& c, const std::string& ws, bool suffix, const http::Request& req, http::Response& res) {
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
  auto lease = c.sessions->Acquire(ws);
  if (!lease) return ReplyError(res, lease.error());
  auto shared = std::make_shared<SessionManager::Lease>(std::move(*lease));
  auto run = [&c, shared, suffix, segments = std::move(segments),
              prefix_digest](const ProgressFunc& progress) -> Result<Json> {
    const auto t0 = Clock::now();
    Session& s = shared->session();
    if (suffix) {
      SuffixInput in{prefix_digest, segments, progress, c.stop.get_token()};
      auto st = s.PrefillSuffix(in);
      if (!st) return Fail(st.error());
      c.metrics.AddTokens(st->tokens_reused, st->tokens_prefilled, 0);
      c.metrics.prefill_seconds.Observe(SecondsSince(t0));
      return wire::ToJson(*st);
    }
    PrefixInput in{ContextManifest(segments), progress, 0, c.stop.get_token()};
    auto st = s.EnsurePrefix(in);
    if (!st) return Fail(st.error());
    c.metrics.AddTokens(st->tokens_reused, st->tokens_prefilled, 0);
    c.metrics.prefill_seconds.Observe(SecondsSince(t0));
    return wire::ToJson(*st);
  };
  auto logged = [&c, ws](ProgressFunc inner) { return c.LoggedProgress(ws, std::move(inner)); };
  if (!stream) {
    auto j = run(logged({}));
    if (!j) return ReplyError(res, j.error());
    return Reply(res, 200, *j);
  }
  Stream(res, [run, shared, logged](Events& events) {
    auto j = run(logged(ProgressWriter(events)));
    shared->Release();
    events.Send(Final(j));
    return true;
  });
}

void Decode(ServerContext& c, const std::string& ws, const http::Request& req, http::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  auto cfg = wire::DecodeConfigFromJson(*body);
  if (!cfg) return ReplyError(res, cfg.error());
  if (auto ok = ValidateDecodeConfig(*cfg); !ok) return ReplyError(res, ok.error());
  auto lease = c.sessions->Acquire(ws);
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
  Stream(res, [&c, shared, dc = std::move(*cfg)](Events& events) {
    const auto t0 = Clock::now();
    bool client_gone = false;
    auto r = shared->session().Decode(dc, ChunkWriter(c, events, &client_gone));
    if (r) {
      c.metrics.AddTokens(0, 0, r->tokens_generated);
      c.metrics.decode_seconds.Observe(SecondsSince(t0));
      if (r->tokens_generated > 0) c.metrics.first_token_seconds.Observe(r->first_token_ms / 1000.0);
    }
    shared->Release();
    if (client_gone) return false;  // nobody to tell
    events.Send(r ? Json{{"event", "done"}, {"result", wire::ToJson(*r)}}
                  : Json{{"event", "error"}, {"error", wire::ToJson(r.error())}});
    return true;
  });
}

void Tokenize(ServerContext& c, const std::string& ws, const http::Request& req, http::Response& res) {
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
  auto lease = c.sessions->Acquire(ws);
  if (!lease) return ReplyError(res, lease.error());
  auto toks = lease->session().Tokenize(text, parse_special);
  if (!toks) return ReplyError(res, toks.error());
  Reply(res, 200, Json{{"tokens", *toks}, {"count", toks->size()}});
}

void Embed(ServerContext& c, const http::Request& req, http::Response& res) {
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
  auto m = c.ModelOrError(model);
  if (!m) return ReplyError(res, m.error());
  auto e = c.Embed(**m, std::move(input));
  if (!e) return ReplyError(res, e.error());
  Reply(res, 200,
        Json{{"embedding", e->values},
             {"dimensions", e->values.size()},
             {"normalized", e->normalized},
             {"pooling", e->pooling},
             {"n_tokens", e->n_tokens}});
}

void MetricsText(ServerContext& c, http::Response& res) {
  int64_t resident = 0;
  const auto list = c.sessions->List();
  for (const auto& s : list) resident += s.report.tokens_resident;
  int64_t kv = 0;
  for (const auto& s : list) kv += s.report.kv_bytes;
  res.status = 200;
  res.content_type = "text/plain; version=0.0.4";
  res.body = c.metrics.Render(static_cast<int64_t>(list.size()), resident, kv, c.sessions->TotalBytes());
}

}  // namespace

// A session's calls are its owner's: OpenAI conversations ("~chat-N", a name the native protocol
// cannot open) can be read and closed here, not prefilled, decoded or used as a workspace.
static http::Handler NotAConversation(http::Handler h) {
  return [h = std::move(h)](const http::Request& req, http::Response& res) {
    if (auto it = req.params.find("ws"); it != req.params.end() && it->second.starts_with('~')) {
      return ReplyError(res, Error(ErrorCode::kInvalidArgument,
                                   "'" + it->second + "' is an OpenAI conversation: use /v1/chat/completions"));
    }
    h(req, res);
  };
}

void RegisterNativeApi(http::Router& router, ServerContext& c) {
  using Req = const http::Request&;
  using Res = http::Response&;
  const auto own = NotAConversation;
  router.Get("/v1/health", [&c](Req, Res res) { Health(c, res); });
  router.Post("/v1/describe", [&c](Req req, Res res) { Describe(c, req, res); });
  router.Post("/v1/sessions", [&c](Req req, Res res) { OpenSession(c, req, res); });
  router.Get("/v1/sessions", [&c](Req, Res res) { ListSessions(c, res); });
  router.Get("/v1/sessions/:ws", [&c](Req req, Res res) { GetReport(c, req.params.at("ws"), res); });
  router.Delete("/v1/sessions/:ws", [&c](Req req, Res res) { CloseSession(c, req.params.at("ws"), res); });
  router.Post("/v1/sessions/:ws/prefix",
              own([&c](Req req, Res res) { Prefill(c, req.params.at("ws"), false, req, res); }));
  router.Post("/v1/sessions/:ws/suffix",
              own([&c](Req req, Res res) { Prefill(c, req.params.at("ws"), true, req, res); }));
  router.Post("/v1/sessions/:ws/decode", own([&c](Req req, Res res) { Decode(c, req.params.at("ws"), req, res); }));
  router.Post("/v1/sessions/:ws/tokenize", own([&c](Req req, Res res) { Tokenize(c, req.params.at("ws"), req, res); }));
  router.Post("/v1/embed", [&c](Req req, Res res) { Embed(c, req, res); });
  router.Get("/metrics", [&c](Req, Res res) { MetricsText(c, res); });

  for (const char* op : {"files", "files/remove", "files/rename", "stable", "turns", "prefill", "compact"}) {
    const std::string name = op;
    router.Post("/v1/workspaces/:ws/" + name,
                own([&c, name](Req req, Res res) { WorkspaceOp(c, req.params.at("ws"), name, req, res); }));
  }
  router.Post("/v1/workspaces/:ws/ask",
              own([&c](Req req, Res res) { WorkspaceAsk(c, req.params.at("ws"), req, res); }));
  router.Get("/v1/workspaces/:ws", [&c](Req req, Res res) { WorkspaceInfo(c, req.params.at("ws"), false, res); });
  router.Get("/v1/snapshots", [&c](Req, Res res) { ListSnapshots(c, res); });
  router.Get("/v1/snapshots/:ws", [&c](Req req, Res res) { SnapshotOp(c, req.params.at("ws"), "show", req, res); });
  router.Delete("/v1/snapshots/:ws",
                [&c](Req req, Res res) { SnapshotOp(c, req.params.at("ws"), "delete", req, res); });
  router.Post("/v1/snapshots/:ws/fork",
              [&c](Req req, Res res) { SnapshotOp(c, req.params.at("ws"), "fork", req, res); });
  router.Get("/v1/workspaces/:ws/context",
             own([&c](Req req, Res res) { WorkspaceInfo(c, req.params.at("ws"), true, res); }));
}

}  // namespace modeld::daemon
