// `modeld ws watch`: keeps a daemon workspace in sync with a directory (docs/watch.md).
//
// The files are the directory's git-tracked and untracked-not-ignored files (every file, outside
// a git work tree), filtered by globs; text files go into the workspace in path order while they
// fit a token budget, and the repo map lists them all. Linux inotify events trigger a debounced
// rescan that diffs the directory against what was last synced and sends puts, removes and
// renames, the last of a batch with the daemon's eager prefill.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "client/client.h"
#include "modeld/error.h"
#include "modeld/session.h"

namespace modeld::client {

struct WatcherOptions {
  std::string dir;
  std::string workspace;  // a ValidWorkspaceId
  // Used when the workspace is not open (as `modeld ws open`): "" = the daemon's first model.
  std::string model;
  std::optional<SessionConfig> config;
  // fnmatch(3) globs on the path relative to dir, flags 0 (so `*` also matches '/'). No include
  // glob = every file; an excluded file is not a candidate at all (not in the repo map).
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  int64_t budget_tokens = 0;                    // tokens of file content in the context; 0 = half the session's n_ctx
  std::chrono::milliseconds debounce{150};      // quiet time after the last event before a rescan
  int64_t max_file_bytes = 1 << 20;             // larger files are left out (the daemon's limit)
  std::function<void(const std::string&)> log;  // one line per call, no '\n'; unset = silent
};

class Watcher {
 public:
  Watcher(Client client, WatcherOptions opt);
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  // Syncs, then follows the directory's events until `stop`. Rides out the directory going away
  // (waits for it, then resyncs) and the daemon going away (retries with backoff, reopens the
  // workspace, resyncs). Fails only when the start is hopeless: no such directory, or a first
  // sync that the daemon refuses (e.g. an unknown model); an unreachable daemon is waited for.
  Status Run(std::stop_token stop);

  // A full sync: opens the workspace (or attaches to its warm session), puts every file that fits
  // the budget, removes the workspace's other files, sets the repo map and logs a summary line.
  // Not to be called while Run runs.
  Status SyncOnce();

 private:
  enum class Skip { kNone, kBinary, kTooLarge, kUnreadable, kOverBudget, kRefused };
  // What was last synced of one candidate file.
  struct Entry {
    int64_t size = 0;
    int64_t mtime_ns = 0;
    ino_t ino = 0;
    bool racy = false;  // modified too shortly before it was read for its stat to vouch for it
    size_t hash = 0;
    int64_t tokens = 0;
    Skip skip = Skip::kNone;  // kNone: the file is in the workspace
  };
  struct Op;

  static std::string_view SkipName(Skip skip);
  // Diffs the directory against files_ (a full sync: against the workspace's own file list) and
  // sends the changes.
  Status Sync(bool full);
  // Watches every directory, then lists the candidate files: sorted, after the globs.
  Result<std::vector<std::string>> Scan();
  Result<int64_t> CountTokens(const std::string& content, const Entry* old, bool full) const;
  // Sends ops in order, the last with the eager prefill unless `full` (the repo map follows then);
  // a file the daemon refuses is marked so in `next`.
  Status Apply(const std::vector<Op>& ops, std::map<std::string, Entry>& next, bool full);
  std::string RepoMap(const std::map<std::string, Entry>& files) const;
  void Log(const std::string& line) const;
  // Logs a file left out, once per file and reason.
  void LogSkip(const std::string& path, Skip why, const std::string& detail);

  Client client_;
  WatcherOptions opt_;
  std::stop_token stop_;  // Run's, so a long sync ends early
  int64_t budget_ = 0;
  std::map<std::string, Entry> files_;  // every candidate, by path
  std::map<std::string, Skip> logged_;  // the reason last logged for a path left out
  int inotify_ = -1;
  std::set<int> watches_;
  bool watch_limit_logged_ = false;
  dev_t root_dev_ = 0;
  ino_t root_ino_ = 0;  // the watched directory itself: another inode there means it was replaced
};

// A workspace id for a directory: its base name with the characters ValidWorkspaceId refuses
// replaced by '-', at most 128 bytes; "workspace" for a name with nothing left (e.g. "/").
std::string WorkspaceIdForDir(const std::string& dir);

}  // namespace modeld::client
