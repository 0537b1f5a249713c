#include "modeld/service.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <system_error>

#include "format/gguf_reader.h"
#include "modeld/mutex.h"
#include "modeld/registry.h"

namespace modeld {
namespace {

// What kind of model a file is, from its first bytes: "gguf", "openvino"
// (an IR .xml, whose weights sit in a .bin beside it), or "" for neither.
Result<std::string> SniffFormat(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Fail(ErrorCode::kNotFound, path + ": no such model file");
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return Fail(ErrorCode::kIoError, path + ": cannot open");
  char head[256] = {};
  f.read(head, sizeof head);
  const std::string_view bytes(head, static_cast<size_t>(f.gcount()));
  if (bytes.starts_with("GGUF")) return std::string("gguf");
  if (bytes.find("<?xml") != std::string_view::npos || bytes.find("<net") != std::string_view::npos) {
    return std::string("openvino");
  }
  return std::string();
}

// Describe reads and hashes the whole GGUF header (~10 ms for a 150k-token vocabulary), and a daemon
// plans, opens and restores the same model many times (a restore described it three times). So the
// result is kept per file identity: a file replaced or rewritten (another inode, size, mtime or
// ctime) is described again. Kept only when the identity was the same before and after the read,
// and the file had not been modified in the 2 s before it (git's rule for racy timestamps: a rewrite
// within one timestamp tick would keep the identity). Errors are not kept.
class DescribeCache {
 public:
  struct Key {
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
    int64_t ctime_ns;
    bool operator==(const Key&) const = default;
  };
  static std::optional<Key> KeyOf(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return std::nullopt;
    auto ns = [](const timespec& t) { return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec; };
    return Key{st.st_dev, st.st_ino, st.st_size, ns(st.st_mtim), ns(st.st_ctim)};
  }
  // Whether a result read between `before` and now may be kept.
  static bool Settled(const std::string& path, const Key& before) {
    auto after = KeyOf(path);
    if (!after || !(*after == before)) return false;
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now).count();
    return now_ns - std::max(before.mtime_ns, before.ctime_ns) >= 2'000'000'000;
  }
  std::optional<ModelInfo> Find(const std::string& path, const Key& key) {
    MutexLock lock(&mu_);
    auto it = entries_.find(path);
    if (it == entries_.end() || !(it->second.first == key)) return std::nullopt;
    return it->second.second;
  }
  void Put(const std::string& path, const Key& key, const ModelInfo& info) {
    MutexLock lock(&mu_);
    if (entries_.size() >= 64 && !entries_.contains(path)) entries_.erase(entries_.begin());  // bounded
    entries_[path] = {key, info};
  }

 private:
  Mutex mu_;
  std::map<std::string, std::pair<Key, ModelInfo>> entries_ GUARDED_BY(mu_);
};

DescribeCache& Described() {
  static DescribeCache* cache = new DescribeCache();  // never destroyed: used until exit
  return *cache;
}

// Refuses, before anything is loaded, a file that is not of the requested backend.
Result<ModelInfo> CheckedDescribe(const std::string& path, const std::string& backend) {
  // The identity before the read: a file changed during the read gets a key of its own next time.
  const auto key = DescribeCache::KeyOf(path);
  if (key && backend == "gguf") {
    if (auto hit = Described().Find(path, *key)) return *hit;
  }
  auto format = SniffFormat(path);
  if (!format) return Fail(format.error());
  if (*format != backend) {
    const std::string what = format->empty() ? "not a model file of any known backend (no GGUF magic)"
                                             : "a model of backend '" + *format + "'";
    return Fail(ErrorCode::kBackendMismatch, path + ": " + what + ", but backend '" + backend + "' was asked for");
  }
  if (backend == "gguf") {
    auto info = gguf::Describe(path);
    if (info && key && DescribeCache::Settled(path, *key)) Described().Put(path, *key, *info);
    return info;
  }
  return Fail(ErrorCode::kSessionUnavailable, "no reader for backend '" + backend + "' in this build");
}

// CheckedDescribe, and the file must be the model the caller named by digest ("" = any).
Result<ModelInfo> CheckedModel(const std::string& path, const std::string& backend, const std::string& digest) {
  auto info = CheckedDescribe(path, backend);
  if (!info) return Fail(info.error());
  if (!digest.empty() && digest != info->digest) {
    return Fail(ErrorCode::kInvalidArgument,
                path + ": digest " + info->digest + " does not match the requested " + digest);
  }
  return info;
}

}  // namespace

Result<ModelInfo> Service::Describe(const OpenSessionRequest& req) const {
  return CheckedDescribe(req.model_path, req.backend);
}

namespace {

Result<std::shared_ptr<Backend>> SessionBackend(const std::string& kind) {
  auto backend = FindBackend(kind);
  if (!backend) {
    return Fail(Error(ErrorCode::kSessionUnavailable, "no session backend '" + kind + "' is compiled into this build")
                    .WithReason("no_backend"));
  }
  return backend;
}

}  // namespace

Result<SessionPlan> Service::PlanSession(const OpenSessionRequest& req) const {
  auto backend = SessionBackend(req.backend);
  if (!backend) return Fail(backend.error());
  auto info = CheckedModel(req.model_path, req.backend, req.model_digest);
  if (!info) return Fail(info.error());
  return (*backend)->PlanSession(req, *info);
}

Result<std::unique_ptr<Session>> Service::OpenSession(const OpenSessionRequest& req) const {
  auto backend = SessionBackend(req.backend);
  if (!backend) return Fail(backend.error());
  auto info = CheckedModel(req.model_path, req.backend, req.model_digest);
  if (!info) return Fail(info.error());
  // The same checks as PlanSession, so a direct caller cannot skip them.
  auto plan = (*backend)->PlanSession(req, *info);
  if (!plan) return Fail(plan.error());
  OpenSessionRequest resolved = req;
  resolved.config = plan->config;
  return (*backend)->OpenSession(resolved, *info);
}

Result<std::unique_ptr<Session>> Service::RestoreSession(const OpenSessionRequest& req,
                                                         const SessionSnapshot& snapshot) const {
  auto backend = SessionBackend(req.backend);
  if (!backend) return Fail(backend.error());
  if (snapshot.identity.backend != req.backend) {
    return Fail(ErrorCode::kSnapshotMismatch,
                "the snapshot is of backend '" + snapshot.identity.backend + "', not '" + req.backend + "'");
  }
  auto info = CheckedModel(req.model_path, req.backend, req.model_digest);
  if (!info) return Fail(info.error());
  if (snapshot.identity.model_digest != info->digest) {
    return Fail(ErrorCode::kSnapshotMismatch, "the snapshot is of model " + snapshot.identity.model_digest + ", not " +
                                                  req.model_path + " (" + info->digest + ")");
  }
  auto plan = (*backend)->PlanSession(req, *info);
  if (!plan) return Fail(plan.error());
  OpenSessionRequest resolved = req;
  resolved.config = plan->config;
  return (*backend)->RestoreSession(resolved, *info, snapshot);
}

Result<Embedding> Service::Embed(const EmbedRequest& req) const {
  auto backend = FindBackend(req.backend);
  if (!backend || !backend->CanEmbed()) {
    return Fail(
        Error(ErrorCode::kSessionUnavailable, "no embedding backend '" + req.backend + "' is compiled into this build")
            .WithReason("no_backend"));
  }
  auto info = CheckedModel(req.model_path, req.backend, req.model_digest);
  if (!info) return Fail(info.error());
  return backend->Embed(req, *info);
}

Result<std::shared_ptr<const ChatFormat>> Service::OpenChatFormat(const OpenSessionRequest& req) const {
  auto backend = SessionBackend(req.backend);
  if (!backend) return Fail(backend.error());
  auto info = CheckedModel(req.model_path, req.backend, req.model_digest);
  if (!info) return Fail(info.error());
  return (*backend)->OpenChatFormat(req, *info);
}

}  // namespace modeld
