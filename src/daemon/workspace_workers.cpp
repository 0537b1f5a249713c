#include "daemon/workspace_workers.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace modeld::daemon {
namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Background prefill batch: a foreground request waits at most for the one batch running when
// it arrives (128 tokens of a 0.5B model on 2 cores: ~0.5 s on an empty context, ~1.5 s at 6k).
constexpr int32_t kBackgroundBatch = 128;
// Catch-up prefills of a compaction before adoption (each takes what came during the previous).
constexpr int kCatchUpRounds = 3;

}  // namespace

WorkspaceWorkers::WorkspaceWorkers(SessionManager* sessions, ComputeGate* gate, Metrics* metrics, bool log)
    : sessions_(sessions), gate_(gate), metrics_(metrics), log_(log) {}

WorkspaceWorkers::~WorkspaceWorkers() { Stop(); }

void WorkspaceWorkers::Start() {
  eager_thread_ = std::thread([this] { Loop(false); });
  compact_thread_ = std::thread([this] { Loop(true); });
}

void WorkspaceWorkers::Stop() {
  stop_.request_stop();  // a compaction under way ends at its next batch
  {
    std::lock_guard lock(mu_);  // a worker between its check and its wait sees it
    stopped_ = true;
  }
  cv_.notify_all();
  if (eager_thread_.joinable()) eager_thread_.join();
  if (compact_thread_.joinable()) compact_thread_.join();
}

void WorkspaceWorkers::Log(const std::string& line) const {
  if (log_) std::fprintf(stderr, "modeld: %s\n", line.c_str());
}

void WorkspaceWorkers::Schedule(const std::string& ws, bool compact) {
  {
    std::lock_guard lock(mu_);
    const Task t{ws, compact};
    if (std::find(queue_.begin(), queue_.end(), t) == queue_.end()) queue_.push_back(t);
  }
  cv_.notify_all();
}

std::shared_ptr<WorkspaceWorkers::Job> WorkspaceWorkers::FindJob(const std::string& ws) {
  std::lock_guard lock(jobs_mu_);
  auto it = jobs_.find(ws);
  return it == jobs_.end() ? nullptr : it->second;
}

void WorkspaceWorkers::DropJob(const std::string& ws, const Job* job) {
  std::lock_guard lock(jobs_mu_);
  if (auto it = jobs_.find(ws); it != jobs_.end() && it->second.get() == job) jobs_.erase(it);
}

bool WorkspaceWorkers::Compacting(const std::string& ws) { return FindJob(ws) != nullptr; }

PrefillHooks WorkspaceWorkers::Hooks(SessionManager::Lease* lease, bool wait, ProgressFunc progress) {
  PrefillHooks h;
  h.progress = std::move(progress);
  h.finish_compaction = [this, lease, wait](const ProgressFunc& progress) -> Result<PrefixStatus> {
    const std::string& ws = lease->entry().workspace;
    auto job = FindJob(ws);
    if (!job) return Fail(ErrorCode::kNotFound, "no compaction under way");
    job->urgent = true;
    gate_->Promote(job->worker);  // also done by the worker if its scope was not open yet
    if (!wait) return Fail(ErrorCode::kBusy, "the context is full; a compaction is under way");
    std::unique_lock lock(job->mu);
    for (uint64_t seen = job->progress_seq; !job->done;) {
      job->cv.wait(lock, [&] { return job->done || job->progress_seq != seen; });
      if (job->done || !progress) continue;
      seen = job->progress_seq;
      const Progress p{"compaction", job->progress.done, job->progress.total};
      lock.unlock();  // the write to the client must not hold up the compaction
      progress(p);
      lock.lock();
    }
    if (!job->status) {
      if (stop_.stop_requested()) return Fail(job->status.error());
      return Fail(ErrorCode::kNotFound, "the compaction under way failed: " + job->status.error().message());
    }
    job->claimed = true;
    CompactionPlan plan = std::move(job->plan);
    std::unique_ptr<Session> spare = std::move(job->spare);
    KvReservation spare_kv = std::move(job->spare_kv);  // until the old session is closed below
    lock.unlock();
    DropJob(ws, job.get());
    auto st = lease->entry().assembly->AdoptCompaction(plan, spare.get());
    if (!st) {
      if (st.error().Is(ErrorCode::kContextOverflow)) return st;
      return Fail(ErrorCode::kNotFound, "the compaction under way could not be adopted: " + st.error().message());
    }
    sessions_->SwapSession(*lease, std::move(spare));
    Log("workspace " + ws + " waited for its compaction");
    return st;
  };
  return h;
}

// Builds the compact context in a second session (a fork) while the workspace's own
// keeps serving, then swaps them under the workspace's lease: requests in
// between are answered by the old session, and what they add is carried over.
// A call that would overflow meanwhile finishes the job and adopts it itself (Hooks).
void WorkspaceWorkers::Compact(const std::string& ws) {
  auto job = std::make_shared<Job>();
  job->worker = std::this_thread::get_id();
  {
    // Background work never brings a workspace back from disk (that would evict another).
    auto lease = sessions_->Acquire(ws, /*wait=*/true, /*restore=*/false);
    if (!lease || !lease->entry().assembly->CompactionDue()) return;
    // The second session counts in the KV budget: idle sessions are evicted to make room for it,
    // and without room there is no background compaction (an overflowing call compacts in place).
    auto reserved = sessions_->ReserveSpare(*lease);
    if (!reserved) {
      Log("workspace " + ws + ": no background compaction: " + reserved.error().message());
      return;
    }
    job->spare_kv = std::move(*reserved);
    job->plan = lease->entry().assembly->PlanCompaction();
    // A fork keeps the KV the compact context shares with the current one (everything before
    // the first edited file, which compaction orders last): a copy, no compute.
    if (auto f = lease->session().Fork()) job->spare = std::move(*f);
    if (!job->spare) {  // a backend that cannot fork: a fresh session, prefilled from the start
      auto opened = sessions_->OpenSpare(ws);
      if (!opened) return;
      job->spare = std::move(*opened);
    }
    std::lock_guard lock(jobs_mu_);
    jobs_[ws] = job;  // under the lease: any later call on the workspace sees it
  }
  const auto t0 = Clock::now();
  Result<PrefixStatus> st;
  int64_t prefilled = 0;
  {
    ComputeGate::BackgroundScope background(*gate_);
    if (job->urgent) gate_->Promote(job->worker);
    PrefixInput in{job->plan.manifest, [&job](const Progress& p) {
                     {
                       std::lock_guard lock(job->mu);
                       job->progress = p;
                       ++job->progress_seq;
                     }
                     job->cv.notify_all();
                   }};
    in.max_batch = kBackgroundBatch;
    in.cancel = stop_.get_token();      // a stopping daemon does not wait for it
    st = job->spare->EnsurePrefix(in);  // no lock: spare is only taken once done
    prefilled = st ? st->tokens_prefilled : 0;
    // Catch up while nobody waits: what came since the plan (the asks and edits of the minutes
    // it took) is prefilled here too, without the lease, so the adoption under it has only the
    // newest entries left instead of holding up the next ask with all of them.
    for (int round = 0; st && round < kCatchUpRounds && !job->urgent; ++round) {
      Result<ContextManifest> m = Fail(ErrorCode::kNotFound, "no workspace");
      if (auto hold = sessions_->HoldWorkspace(ws)) m = hold->workspace().AdoptionManifest(job->plan);
      if (!m || m->Digest() == st->manifest_digest) break;  // stale (adoption will say so), or caught up
      in.manifest = std::move(*m);
      auto caught = job->spare->EnsurePrefix(in);
      if (!caught) break;  // the plan's prefix is still there: adoption prefills the rest or refuses
      st = caught;
      prefilled += caught->tokens_prefilled;
    }
  }
  if (st) {
    metrics_->AddTokens(0, prefilled, 0);
    metrics_->prefill_seconds.Observe(SecondsSince(t0));
  }
  {
    std::lock_guard lock(job->mu);
    job->done = true;
    job->status = st;
  }
  job->cv.notify_all();
  auto lease = sessions_->Acquire(ws, /*wait=*/true, /*restore=*/false);
  DropJob(ws, job.get());
  // Failed (e.g. it does not fit: the next prefill compacts in place or reports the overflow),
  // or a call waiting for it adopted it already.
  bool claimed;
  {
    std::lock_guard lock(job->mu);
    claimed = job->claimed;
  }
  if (!lease || !st || claimed) return;
  if (auto adopted = lease->entry().assembly->AdoptCompaction(job->plan, job->spare.get()); adopted) {
    sessions_->SwapSession(*lease, std::move(job->spare));
    Log("compacted workspace " + ws + " in the background");
  }
}

// Eager prefills queue behind foreground calls on the same workspace (they wait for the lease)
// and take foreground compute turns (an ask is usually right behind them); compactions take
// background turns (see Compact).
void WorkspaceWorkers::Loop(bool compactions) {
  for (;;) {
    Task task;
    {
      std::unique_lock lock(mu_);
      auto mine = [&] {
        return std::find_if(queue_.begin(), queue_.end(), [&](const Task& t) { return t.compact == compactions; });
      };
      cv_.wait(lock, [&] { return stopped_ || mine() != queue_.end(); });
      if (stopped_) return;
      auto it = mine();
      task = *it;
      queue_.erase(it);
    }
    if (task.compact) {
      Compact(task.ws);
      continue;
    }
    // Busy: a foreground call is on it and will prefill anyway. Not in memory: left on disk.
    auto lease = sessions_->Acquire(task.ws, /*wait=*/false, /*restore=*/false);
    if (!lease) continue;
    const auto t0 = Clock::now();
    auto hooks = Hooks(&*lease, /*wait=*/false);
    hooks.yield_to_changes = true;  // a newer change stops it: the task it scheduled has the newest
    auto st = lease->entry().assembly->Prefill(hooks);
    if (st) {
      metrics_->AddTokens(st->tokens_reused, st->tokens_prefilled, 0);
      metrics_->prefill_seconds.Observe(SecondsSince(t0));
    }
    if (lease->entry().assembly->CompactionDue()) {
      lease->Release();
      Schedule(task.ws, /*compact=*/true);
    }
  }
}

}  // namespace modeld::daemon
