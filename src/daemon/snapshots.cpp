#include "daemon/snapshots.h"

#include <algorithm>
#include <cstdio>

#include "daemon/context.h"
#include "modeld/service.h"
#include "snapshot/snapshot_file.h"

namespace modeld::daemon {

using Clock = std::chrono::steady_clock;

namespace {

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// OpenAI conversations (~chat-N) are not kept: their records live in memory only, and a new
// request rebuilds one from its prompt.
bool Durable(const std::string& workspace) { return !workspace.empty() && workspace[0] != '~'; }

// Spilled states waiting for the disk are memory outside the KV budget: past 1 GiB of them, a spill
// waits for the writes before it (docs/snapshot.md).
constexpr uint64_t kMaxQueuedBytes = uint64_t{1} << 30;

}  // namespace

Result<std::unique_ptr<Snapshots>> Snapshots::Start(ServerContext& ctx) {
  auto store = snapshot::SnapshotStore::Open({ctx.opt.snapshot_dir, ctx.opt.snapshot_budget_bytes});
  if (!store) return Fail(store.error());
  std::unique_ptr<Snapshots> s(new Snapshots(ctx, std::move(*store)));
  Snapshots* self = s.get();
  ctx.sessions->SetPersistence([self](SessionEntry& e) { return self->Save(e); },
                               [self](const std::string& ws) { return self->Restore(ws); },
                               [self](const std::string& ws) { self->Forget(ws); });
  s->idle_ = std::thread([self] { self->IdleLoop(); });
  return s;
}

Snapshots::Snapshots(ServerContext& ctx, std::unique_ptr<snapshot::SnapshotStore> store)
    : ctx_(ctx),
      store_(std::move(store)),
      writer_(std::make_unique<snapshot::SnapshotWriter>(
          store_.get(), [this](const std::string& l) { Log(l); }, [this](const std::string& ws) { WriteFailed(ws); },
          [this](std::string&& buffer) { spares_.Give(std::move(buffer)); }, kMaxQueuedBytes)) {}

void Snapshots::WriteFailed(const std::string& workspace) {
  // The file on disk is older than what was to be written: no call restores it (a spill that
  // failed: the call gets the miss, "evicted: open it again", and the client sends its state
  // again). A live workspace is marked to be written again by the idle saver (IdleLoop). Only
  // this object's lock here: the writer's thread runs this while a WaitIdle of the workspace,
  // maybe under the session manager's lock, waits for it.
  Log("workspace '" + workspace + "': its older snapshot is not restored (the newer one was not written)");
  MutexLock lock(&mu_);
  failed_.insert(workspace);
}

Snapshots::~Snapshots() {
  Stop();
  // The session manager outlives this (declared before it in ServerContext): no hook may call in
  // here after this. The server has stopped every thread that could by now.
  ctx_.sessions->SetPersistence(nullptr, nullptr, nullptr);
  writer_.reset();  // finishes what is queued
}

void Snapshots::Log(const std::string& line) const { std::fprintf(stderr, "modeld: snapshot: %s\n", line.c_str()); }

void Snapshots::Stop() {
  {
    std::lock_guard lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (idle_.joinable()) idle_.join();
}

void Snapshots::WarmUp() {
  if (ctx_.opt.snapshot_warm <= 0) return;
  auto list = store_->List();
  std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.saved_unix_ms > b.saved_unix_ms; });
  int warmed = 0;
  for (const auto& info : list) {
    if (warmed >= ctx_.opt.snapshot_warm || ctx_.stop.stop_requested()) break;
    if (ctx_.FindModel(info.model) == nullptr || ctx_.sessions->Contains(info.workspace)) continue;
    if (Restore(info.workspace)) ++warmed;
  }
}

void Snapshots::IdleLoop() {
  // The first question after a restart should not wait for the model to load and the workspace
  // to come back: the most recent workspaces are restored now.
  WarmUp();
  const auto idle = ctx_.opt.snapshot_idle;
  // Looks a few times per idle period (at most once a second) for workspaces idle long enough.
  const auto period =
      std::clamp<std::chrono::milliseconds>(idle / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
  std::unique_lock lock(stop_mu_);
  while (!stop_cv_.wait_for(lock, period, [&] { return stop_; })) {
    lock.unlock();
    // Live workspaces whose last write failed are written again (Save clears the mark).
    std::set<std::string> failed;
    {
      MutexLock l(&mu_);
      failed = failed_;
    }
    for (const auto& ws : failed) ctx_.sessions->MarkUnsaved(ws);
    ctx_.sessions->SaveIdle(idle);
    spares_.TrimIdle(std::chrono::seconds(10));  // an idle daemon keeps no spare buffers
    lock.lock();
  }
}

void Snapshots::Forget(const std::string& workspace) {
  if (!Durable(workspace)) return;
  writer_->WaitIdle(workspace);
  if (auto ok = store_->Remove(workspace); ok) Log("workspace '" + workspace + "': snapshot deleted");
  MutexLock lock(&mu_);
  failed_.erase(workspace);
}

Status Snapshots::Save(SessionEntry& e) {
  if (!Durable(e.workspace) || !e.assembly) return {};
  try {
    return SaveOrThrow(e);
  } catch (const std::exception& x) {  // bad_alloc of a copy: the daemon goes on
    Log("workspace '" + e.workspace + "' not saved: " + x.what());
    return Fail(ErrorCode::kInternal, std::string("snapshot: ") + x.what());
  }
}

Status Snapshots::SaveOrThrow(SessionEntry& e) {
  const auto t0 = Clock::now();
  auto session = e.session->SnapshotInto(spares_.Take());
  if (!session) {
    Log("workspace '" + e.workspace + "' not saved: " + session.error().ToString());
    return Fail(session.error());
  }
  snapshot::SnapshotFile f;
  f.workspace = e.workspace;
  f.model = e.model;
  f.saved_unix_ms = UnixMs();
  f.config = e.config;
  f.session = std::move(*session);
  f.workspace_state = e.assembly->Export();
  const size_t n_tokens = f.session.tokens.size();
  auto file = snapshot::EncodeParts(std::move(f));
  if (!file) {
    Log("workspace '" + e.workspace + "' not saved: " + file.error().ToString());
    return Fail(file.error());
  }
  if (ctx_.opt.log_requests) {
    std::fprintf(stderr, "modeld: snapshot: workspace '%s' copied (%zu tokens, %.1f MiB) in %.1f ms\n",
                 e.workspace.c_str(), n_tokens, static_cast<double>(file->size()) / (1 << 20), MsSince(t0));
  }
  {
    MutexLock lock(&mu_);
    failed_.erase(e.workspace);
  }
  writer_->Submit(e.workspace, std::move(*file));
  return {};
}

Status Snapshots::Restore(const std::string& workspace) {
  // A restore read at one epoch of the workspace is refused when it entered or left memory
  // meanwhile (kBusy): then the newest snapshot is read again.
  for (int attempt = 0;; ++attempt) {
    if (ctx_.sessions->Contains(workspace)) return {};  // another call (or the warm-up) brought it back
    auto ok = RestoreOnce(workspace);
    if (ok || !ok.error().Is(ErrorCode::kBusy) || attempt == 2) return ok;
  }
}

Status Snapshots::RestoreOnce(const std::string& workspace) {
  if (!Durable(workspace)) return Fail(ErrorCode::kNotFound, "not kept on disk");
  const uint64_t epoch = ctx_.sessions->Epoch(workspace);
  writer_->WaitIdle(workspace);  // a write of it under way: restore what it writes
  {
    MutexLock lock(&mu_);
    if (failed_.contains(workspace)) return Fail(ErrorCode::kNotFound, "its snapshot could not be restored");
  }
  auto refuse = [&](const Error& e) -> Status {
    Log("workspace '" + workspace + "' starts cold: its snapshot " + store_->PathOf(workspace) +
        " was not restored: " + e.ToString());
    MutexLock lock(&mu_);
    failed_.insert(workspace);
    return Fail(e);
  };
  const auto t0 = Clock::now();
  // The header first: a file whose state is larger than its session's whole KV could be is
  // refused before it is read into memory.
  auto info = store_->Info(workspace);
  if (!info) return info.error().Is(ErrorCode::kNotFound) ? Fail(info.error()) : refuse(info.error());
  const ServedModel* served = ctx_.FindModel(info->model);
  if (served != nullptr) {
    SessionConfig c;
    c.n_ctx = info->identity.n_ctx;
    c.kv_type = info->identity.kv_type;
    c.flash_attn = info->identity.flash_attn;
    c.threads = ctx_.opt.threads;
    if (auto plan = ctx_.Plan(*served, c); plan && info->state_bytes > 2 * plan->kv_bytes + (16 << 20)) {
      return refuse(Error(ErrorCode::kCorruptSnapshot, "its state (" + std::to_string(info->state_bytes) +
                                                           " bytes) is larger than the session's KV could be"));
    }
  }
  snapshot::EncodedFile parts;
  parts.state = spares_.Take();
  if (auto read = store_->ReadParts(workspace, &parts); !read) {
    spares_.Give(std::move(parts.state));
    return read.error().Is(ErrorCode::kNotFound) ? Fail(read.error()) : refuse(read.error());
  }
  const double read_ms = MsSince(t0);
  auto f = snapshot::Decode(std::move(parts));
  const double decode_ms = MsSince(t0) - read_ms;
  if (!f) {
    spares_.Give(std::move(parts.state));  // left as they were
    return refuse(f.error());
  }
  // The state's buffer serves the next save or restore once this one is done with it.
  struct GiveBack {
    snapshot::SpareBuffers& spares;
    std::string& state;
    ~GiveBack() { spares.Give(std::move(state)); }
  } give_back{spares_, f->session.state};
  if (f->workspace != workspace) {
    return refuse(Error(ErrorCode::kCorruptSnapshot, "it holds workspace '" + f->workspace + "'"));
  }
  const ServedModel* m = ctx_.FindModel(f->model);
  if (m == nullptr) {
    return refuse(Error(ErrorCode::kSnapshotMismatch, "its model '" + f->model + "' is not served"));
  }
  SessionConfig cfg = f->config;
  cfg.threads = ctx_.opt.threads;  // this daemon's, not the one that wrote it
  WorkspaceOptions wopt;
  wopt.compact_in_background = true;
  wopt.cancel = ctx_.stop.get_token();
  wopt.markers = ctx_.MarkersFor(*m);
  std::optional<WorkspaceState> state = std::move(f->workspace_state);
  if (state) wopt.mode = state->mode;
  const SessionSnapshot& snap = f->session;
  double session_ms = 0;
  auto open_session = [&](const SessionConfig& planned, const ProgressFunc& progress) {
    OpenSessionRequest req = ctx_.Request(*m, planned);
    req.workspace_id = workspace;
    req.progress = progress;
    const auto t1 = Clock::now();
    auto s = Service().RestoreSession(req, snap);
    session_ms = MsSince(t1);
    return s;
  };
  auto opened = ctx_.sessions->OpenRestored(workspace, m->name, cfg, wopt, {}, open_session, std::move(state), epoch);
  if (!opened) {
    // Only a snapshot found wrong is set aside; no room, a stop, memory: tried again on the next call.
    const Error& e = opened.error();
    if (e.Is(ErrorCode::kCorruptSnapshot) || e.Is(ErrorCode::kSnapshotMismatch)) return refuse(e);
    if (!e.Is(ErrorCode::kBusy) || !ctx_.sessions->Contains(workspace)) {
      Log("workspace '" + workspace + "' not restored now: " + e.ToString());
    }
    return Fail(e);
  }
  if (ctx_.opt.log_requests) {
    std::fprintf(stderr,
                 "modeld: snapshot: workspace '%s' restored (%zu tokens) in %.1f ms (read %.1f, checked %.1f, "
                 "session %.1f)\n",
                 workspace.c_str(), snap.tokens.size(), MsSince(t0), read_ms, decode_ms, session_ms);
  }
  return {};
}

Status Snapshots::SaveNow(const std::string& workspace) {
  if (!ctx_.sessions->Contains(workspace)) return {};
  auto lease = ctx_.sessions->Acquire(workspace, /*wait=*/true);
  if (!lease) return lease.error().Is(ErrorCode::kNotFound) ? Status{} : Fail(lease.error());
  if (auto ok = Save(lease->entry()); !ok) return ok;
  lease->Release();
  writer_->WaitIdle(workspace);
  if (auto info = store_->Info(workspace); !info) return Fail(info.error());
  return {};
}

std::vector<snapshot::SnapshotInfo> Snapshots::List() { return store_->List(); }

Result<snapshot::SnapshotInfo> Snapshots::Info(const std::string& workspace) {
  writer_->WaitIdle(workspace);
  return store_->Info(workspace);
}

Status Snapshots::Delete(const std::string& workspace) {
  writer_->WaitIdle(workspace);
  {
    MutexLock lock(&mu_);
    failed_.erase(workspace);
  }
  return store_->Remove(workspace);
}

Status Snapshots::Fork(const std::string& from, const std::string& to) {
  if (!Durable(to)) return Fail(ErrorCode::kInvalidArgument, "'" + to + "' cannot be kept on disk");
  writer_->WaitIdle(to);  // an eviction's write of `to` still queued counts as a snapshot of it
  if (ctx_.sessions->Contains(to) || store_->Contains(to)) {
    return Fail(ErrorCode::kInvalidArgument, "workspace '" + to + "' exists: delete it first");
  }
  if (auto ok = SaveNow(from); !ok) return Fail(ok.error());
  writer_->WaitIdle(from);
  auto bytes = store_->Read(from);
  if (!bytes) return Fail(bytes.error());
  auto f = snapshot::Decode(*bytes);
  if (!f) return Fail(f.error());
  f->workspace = to;
  f->saved_unix_ms = UnixMs();
  auto out = snapshot::Encode(*f);
  if (!out) return Fail(out.error());
  writer_->Submit(to, std::move(*out));
  writer_->WaitIdle(to);
  {
    MutexLock lock(&mu_);
    failed_.erase(to);
  }
  ctx_.sessions->ClearTombstone(to);  // an id closed before is a new workspace now
  if (auto info = store_->Info(to); !info) return Fail(info.error());
  return {};
}

}  // namespace modeld::daemon
