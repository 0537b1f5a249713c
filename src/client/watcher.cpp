#include "client/watcher.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <utility>

extern char** environ;

namespace modeld::client {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kDirPoll{500};  // how often a vanished directory is looked for
constexpr milliseconds kMinBackoff{500};
constexpr milliseconds kMaxBackoff{10'000};
// A stream of events (a checkout, a build writing into the tree) delays a rescan at most this long.
constexpr milliseconds kMaxDelay{2000};
// File timestamps are coarse (a kernel tick), so two writes of the same size within one tick look
// alike to stat: a file modified this shortly before it was read is read again at the next rescan.
constexpr int64_t kRacyNs = 1'000'000'000;
constexpr uint32_t kWatchMask = IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO |
                                IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Runs `git -C dir args...` (stdin and stderr /dev/null); its stdout when it exits 0.
std::optional<std::string> Git(const std::string& dir, std::initializer_list<const char*> args) {
  std::vector<const char*> argv = {"git", "-C", dir.c_str()};
  argv.insert(argv.end(), args);
  argv.push_back(nullptr);
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return std::nullopt;
  Fd out_fd(p[0]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, "git", &fa, nullptr, const_cast<char* const*>(argv.data()), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(p[1]);
  if (rc != 0) return std::nullopt;  // no git: the directory is walked instead
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = read(out_fd.get(), buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  return out;
}

std::vector<std::string> SplitNul(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find('\0', start);
    if (end == std::string_view::npos) end = s.size();
    if (end > start) out.emplace_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): what the client's
// JSON encoder accepts, so a file that passes can be sent.
bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return false;
    }
    i += n + 1;
  }
  return true;
}

// At most max + 1 bytes of the file (so one that grew past the limit shows it); nullopt with
// errno set when it cannot be read.
std::optional<std::string> ReadUpTo(const std::string& path, int64_t max) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));  // O_NONBLOCK: a FIFO swapped in
  if (fd.get() < 0) return std::nullopt;
  std::string out;
  char buf[1 << 16];
  while (static_cast<int64_t>(out.size()) <= max) {
    const ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

bool AnyMatch(const std::vector<std::string>& globs, const std::string& path) {
  return std::ranges::any_of(globs, [&](const std::string& g) { return fnmatch(g.c_str(), path.c_str(), 0) == 0; });
}

// A name that can go on a line of the repo map and into JSON.
bool UsableName(std::string_view s) {
  return ValidUtf8(s) &&
         std::ranges::none_of(s, [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// Worth retrying at the start: the daemon is not up yet or busy, or the tree changed under the
// listing (kIoError).
bool Transient(const Error& e) {
  return e.Is(ErrorCode::kBusy) || e.Is(ErrorCode::kIoError) ||
         (e.Is(ErrorCode::kSessionUnavailable) && e.reason() == "unreachable");
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct Watcher::Op {
  enum Kind { kPut, kRemove, kRename } kind = kPut;
  std::string path;
  std::string to;         // kRename
  std::string content;    // kPut
  bool replaces = false;  // kPut: the workspace holds the file already
};

std::string_view Watcher::SkipName(Skip skip) {
  static constexpr std::string_view kNames[] = {"",       "binary", "too large", "unreadable", "over the token budget",
                                                "refused"};
  return kNames[static_cast<int>(skip)];
}

Watcher::Watcher(Client client, WatcherOptions opt)
    : client_(std::move(client)), opt_(std::move(opt)), inotify_(inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {}

Watcher::~Watcher() {
  if (inotify_ >= 0) close(inotify_);
}

void Watcher::Log(const std::string& line) const {
  if (opt_.log) opt_.log(line);
}

void Watcher::LogSkip(const std::string& path, Skip why, const std::string& detail) {
  auto [it, inserted] = logged_.try_emplace(path, why);
  if (!inserted && it->second == why) return;
  it->second = why;
  Log("left out " + path + ": " + detail);
}

// Tokenizing takes the workspace's session, which an ask or a prefill holds for long: so only a
// full sync counts exactly (and estimates when the session stays busy past the client's retries).
// A rescan estimates, keeping the file's own bytes-per-token when it had an exact count, so that
// a save never waits behind an ask.
Result<int64_t> Watcher::CountTokens(const std::string& content, const Entry* old, bool full) const {
  const auto size = static_cast<int64_t>(content.size());
  if (size == 0) return 0;
  if (full) {
    auto t = client_.Tokenize(opt_.workspace, content);
    if (t) return static_cast<int64_t>(t->size());
    if (!t.error().Is(ErrorCode::kBusy)) return Fail(t.error());
  }
  if (old && old->tokens > 0 && old->size > 0) return std::max<int64_t>(1, old->tokens * size / old->size);
  return std::max<int64_t>(1, size / 4);
}

// Adds a watch to every directory (new ones included) before listing, so that a change is either
// listed or announced by an event. .git and git-ignored directories are neither watched nor
// walked: a build folder's churn would otherwise wake the watcher, and node_modules would exhaust
// the watch limit.
Result<std::vector<std::string>> Watcher::Scan() {
  struct stat root {};
  if (stat(opt_.dir.c_str(), &root) != 0 || !S_ISDIR(root.st_mode)) {
    return Fail(ErrorCode::kIoError, "cannot read " + opt_.dir);
  }
  root_dev_ = root.st_dev;
  root_ino_ = root.st_ino;
  const bool git = Git(opt_.dir, {"rev-parse", "--is-inside-work-tree"}).value_or("").starts_with("true");
  std::set<std::string> ignored;
  if (git) {
    auto listed = Git(opt_.dir, {"ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"});
    if (!listed) return Fail(ErrorCode::kIoError, "git ls-files failed in " + opt_.dir);
    for (auto& p : SplitNul(*listed)) {
      if (p.ends_with('/')) ignored.insert(p.substr(0, p.size() - 1));
    }
  }

  std::set<int> seen;
  auto watch = [&](const fs::path& dir) {
    if (inotify_ < 0) return;
    const int wd = inotify_add_watch(inotify_, dir.c_str(), kWatchMask);
    if (wd >= 0) {
      seen.insert(wd);
    } else if (errno == ENOSPC && !watch_limit_logged_) {
      watch_limit_logged_ = true;
      Log("inotify watch limit reached (sysctl fs.inotify.max_user_watches): changes in some folders of " + opt_.dir +
          " go unnoticed until another change");
    }
  };
  std::vector<std::string> files;
  const fs::path top(opt_.dir);
  watch(top);
  std::error_code ec;
  fs::recursive_directory_iterator it(top, fs::directory_options::skip_permission_denied, ec);
  const fs::recursive_directory_iterator end;
  while (!ec && it != end) {
    const fs::directory_entry& e = *it;
    std::error_code ignore;
    const std::string rel = e.path().lexically_relative(top).generic_string();
    if (e.path().filename() == ".git") {
      it.disable_recursion_pending();
    } else if (e.is_directory(ignore) && !e.is_symlink(ignore)) {
      if (ignored.contains(rel)) {
        it.disable_recursion_pending();
      } else {
        watch(e.path());  // before the iterator opens it
      }
    } else if (!git && e.is_regular_file(ignore)) {
      files.push_back(rel);
    }
    it.increment(ec);
  }
  if (ec) return Fail(ErrorCode::kIoError, "cannot read " + opt_.dir + ": " + ec.message());
  for (int wd : watches_) {
    if (!seen.contains(wd)) inotify_rm_watch(inotify_, wd);  // e.g. a folder .gitignore now lists
  }
  watches_ = std::move(seen);

  if (git) {
    auto listed = Git(opt_.dir, {"ls-files", "-z", "--cached", "--others", "--exclude-standard"});
    if (!listed) return Fail(ErrorCode::kIoError, "git ls-files failed in " + opt_.dir);
    files = SplitNul(*listed);
  }
  std::erase_if(files, [&](const std::string& p) {
    return (!opt_.include.empty() && !AnyMatch(opt_.include, p)) || AnyMatch(opt_.exclude, p);
  });
  std::ranges::sort(files);
  const auto dup = std::ranges::unique(files);  // ls-files lists a conflicted path per stage
  files.erase(dup.begin(), dup.end());
  return files;
}

Status Watcher::Apply(const std::vector<Op>& ops, std::map<std::string, Entry>& next, bool full) {
  const std::string& ws = opt_.workspace;
  bool changed = false;    // a call sent without the eager prefill changed the workspace
  bool prefilled = false;  // the call with it went through
  for (size_t i = 0; i < ops.size(); ++i) {
    if (stop_.stop_requested()) return Fail(ErrorCode::kCancelled, "stopped");
    const Op& op = ops[i];
    // A full sync ends with the repo map, which carries the prefill.
    const bool prefill = !full && i + 1 == ops.size();
    Status ok;
    std::string done;
    if (op.kind == Op::kPut) {
      auto r = client_.PutFile(ws, op.path, op.content, prefill);
      if (r && r->change != "unchanged") done = "put " + op.path + " (" + r->change + ")";
      if (!r) ok = Fail(r.error());
    } else if (op.kind == Op::kRemove) {
      ok = client_.RemoveFile(ws, op.path, prefill);
      done = "removed " + op.path;
    } else {
      ok = client_.RenameFile(ws, op.path, op.to, prefill);
      done = "renamed " + op.path + " -> " + op.to;
    }
    if (ok) {
      if (!full && !done.empty()) Log(done);
      (prefill ? prefilled : changed) = true;
      continue;
    }
    if (!ok.error().Is(ErrorCode::kInvalidArgument) || op.kind == Op::kRemove) return ok;
    // The daemon refused the file (its name, or the workspace's size limit): leave it out, and
    // take out what the workspace holds under the old name, which is now stale.
    const std::string& name = op.kind == Op::kRename ? op.to : op.path;
    next.at(name).skip = Skip::kRefused;
    LogSkip(name, Skip::kRefused, "refused by the daemon: " + ok.error().message());
    if (op.kind == Op::kRename || op.replaces) {
      if (auto rm = client_.RemoveFile(ws, op.path, false); !rm) return rm;
      changed = true;
    }
  }
  if (changed && !full && !prefilled) {
    // The call that was to start the eager prefill was refused: an empty stable update starts it.
    if (auto ok = client_.SetStable(ws, {}, true); !ok) return ok;
  }
  return {};
}

std::string Watcher::RepoMap(const std::map<std::string, Entry>& files) const {
  std::string body;
  int64_t in = 0, out = 0;
  for (const auto& [path, e] : files) {
    if (!UsableName(path)) continue;
    body += path;
    if (e.skip == Skip::kNone) {
      ++in;
    } else {
      ++out;
      body += " (left out: " + std::string(SkipName(e.skip)) + ")";
    }
    body += '\n';
  }
  std::error_code ec;
  fs::path dir = fs::weakly_canonical(fs::absolute(opt_.dir, ec), ec);
  if (!dir.has_filename()) dir = dir.parent_path();
  return "Files of " + dir.filename().string() + " (" + std::to_string(in) + " in this context, " +
         std::to_string(out) + " left out):\n" + body;
}

Status Watcher::Sync(bool full) {
  const std::string& ws = opt_.workspace;
  std::set<std::string> remote;  // full sync: the files the workspace holds
  if (full) {
    auto opened = client_.OpenSession(ws, opt_.model, opt_.config);
    if (!opened) return Fail(opened.error());
    budget_ = opt_.budget_tokens > 0 ? opt_.budget_tokens : opened->report.n_ctx / 2;
    auto info = client_.WorkspaceInfo(ws);
    if (!info) return Fail(info.error());
    for (const auto& f : info->files) remote.insert(f.path);
    files_.clear();
  }
  auto listing = Scan();
  if (!listing) return Fail(listing.error());
  // The regular files among them: git lists a tracked file deleted from the tree, and a submodule.
  std::map<std::string, struct stat> present;
  for (const auto& path : *listing) {
    struct stat st {};
    if (stat((opt_.dir + "/" + path).c_str(), &st) == 0 && S_ISREG(st.st_mode)) present.emplace(path, st);
  }

  // Files in the workspace that are still present count against the budget; the rest are gone,
  // and a new file with a gone one's content is that file renamed.
  int64_t total = 0;
  std::multimap<size_t, std::string> gone;
  for (const auto& [path, e] : files_) {
    if (e.skip != Skip::kNone) continue;
    if (present.contains(path)) {
      total += e.tokens;
    } else {
      gone.emplace(e.hash, path);
    }
  }

  std::map<std::string, Entry> next;
  std::vector<Op> ops;
  std::vector<Op> removes;  // sent first: they free room in the workspace
  for (const auto& [path, st] : present) {
    if (stop_.stop_requested()) return Fail(ErrorCode::kCancelled, "stopped");
    const std::string abs = opt_.dir + "/" + path;
    const auto old_it = files_.find(path);
    const Entry* old = old_it == files_.end() ? nullptr : &old_it->second;
    const bool was_in = old && old->skip == Skip::kNone;
    const bool in_ws = was_in || remote.contains(path);
    Entry e;
    e.size = st.st_size;
    e.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    e.ino = st.st_ino;
    const bool same_stat = old && !old->racy && old->size == e.size && old->mtime_ns == e.mtime_ns && old->ino == e.ino;
    // Unchanged: nothing to do, unless it was left out over budget and fits now.
    if (same_stat && (old->skip != Skip::kOverBudget || total + old->tokens > budget_)) {
      next[path] = *old;
      continue;
    }
    const auto drop = [&](Skip why, const std::string& detail) {  // detail "": recorded as logged, silently
      e.skip = why;
      if (detail.empty()) {
        logged_[path] = why;
      } else {
        LogSkip(path, why, detail);
      }
      if (was_in) total -= old->tokens;
      if (in_ws) removes.push_back(Op{Op::kRemove, path, {}, {}, false});
      next[path] = e;
    };
    if (!UsableName(path)) {
      drop(Skip::kRefused, "its name has control characters or is not UTF-8");
      continue;
    }
    const auto limit = std::to_string(opt_.max_file_bytes) + " bytes";
    if (e.size > opt_.max_file_bytes) {
      drop(Skip::kTooLarge, std::to_string(e.size) + " bytes, over the limit of " + limit);
      continue;
    }
    auto content = ReadUpTo(abs, opt_.max_file_bytes);
    if (!content && errno == ENOENT) {  // deleted since the listing (an editor's temp file)
      if (was_in) total -= old->tokens;
      if (in_ws) removes.push_back(Op{Op::kRemove, path, {}, {}, false});
      continue;
    }
    if (!content) {
      drop(Skip::kUnreadable, std::strerror(errno));
      continue;
    }
    e.racy = NowNs() - e.mtime_ns < kRacyNs;
    if (static_cast<int64_t>(content->size()) > opt_.max_file_bytes) {
      drop(Skip::kTooLarge, "over the limit of " + limit);
      continue;
    }
    if (content->find('\0') != std::string::npos || !ValidUtf8(*content)) {
      drop(Skip::kBinary, "binary (a NUL byte or invalid UTF-8)");
      continue;
    }
    e.hash = std::hash<std::string_view>{}(*content);
    const bool same_text = old && old->hash == e.hash && (was_in || old->skip == Skip::kOverBudget);
    if (was_in && same_text) {  // touched, or read again after a racy stat
      e.tokens = old->tokens;
      next[path] = e;
      continue;
    }
    if (!was_in) {
      if (auto g = gone.find(e.hash); g != gone.end()) {
        e.tokens = files_.at(g->second).tokens;
        total += e.tokens;
        ops.push_back(Op{Op::kRename, g->second, path, {}, false});
        gone.erase(g);
        logged_.erase(path);
        next[path] = e;
        continue;
      }
    }
    if (same_text) {
      e.tokens = old->tokens;
    } else {
      auto n = CountTokens(*content, old, full);
      if (!n) return Fail(n.error());
      e.tokens = *n;
    }
    // A file in the workspace stays there as it grows; a new one comes in only if it fits.
    if (was_in) {
      total += e.tokens - old->tokens;
    } else if (total + e.tokens <= budget_) {
      total += e.tokens;
    } else {
      // In a full sync the summary counts them and the repo map names them: a line each would flood.
      drop(Skip::kOverBudget, full ? ""
                                   : std::to_string(e.tokens) + " tokens, over the token budget (" +
                                         std::to_string(total) + " of " + std::to_string(budget_) + " used)");
      continue;
    }
    logged_.erase(path);
    ops.push_back(Op{Op::kPut, path, {}, std::move(*content), in_ws});
    next[path] = e;
  }
  for (const auto& [hash, path] : gone) removes.push_back(Op{Op::kRemove, path, {}, {}, false});
  for (const auto& path : remote) {
    if (!next.contains(path)) removes.push_back(Op{Op::kRemove, path, {}, {}, false});
  }
  ops.insert(ops.begin(), std::make_move_iterator(removes.begin()), std::make_move_iterator(removes.end()));

  if (auto ok = Apply(ops, next, full); !ok) return ok;
  files_ = std::move(next);
  std::erase_if(logged_, [&](const auto& kv) { return !files_.contains(kv.first); });
  if (!full) return {};

  // The repo map goes last, with the one eager prefill of the whole sync.
  StableParts parts;
  parts.repo_map = RepoMap(files_);
  if (auto ok = client_.SetStable(ws, parts, true); !ok) {
    if (!ok.error().Is(ErrorCode::kInvalidArgument)) return ok;
    Log("the repo map was not set: " + ok.error().message());
    if (auto kick = client_.SetStable(ws, {}, true); !kick) return kick;
  }
  std::map<Skip, int64_t> left_out;
  int64_t in = 0, tokens = 0;
  for (const auto& [path, e] : files_) {
    if (e.skip == Skip::kNone) {
      ++in;
      tokens += e.tokens;
    } else {
      ++left_out[e.skip];
    }
  }
  std::string why;
  int64_t out = 0;
  for (const auto& [skip, n] : left_out) {
    why += (why.empty() ? " (" : ", ") + std::to_string(n) + " " + std::string(SkipName(skip));
    out += n;
  }
  Log(opt_.dir + " -> workspace " + ws + ": " + std::to_string(in) + (in == 1 ? " file" : " files") +
      " in the context (" + std::to_string(tokens) + " tokens, budget " + std::to_string(budget_) + "), " +
      std::to_string(out) + " left out" + (why.empty() ? "" : why + ")"));
  return {};
}

Status Watcher::SyncOnce() { return Sync(true); }

Status Watcher::Run(std::stop_token stop) {
  if (inotify_ < 0) return Fail(ErrorCode::kIoError, "inotify is not available");
  if (!ValidWorkspaceId(opt_.workspace)) {
    return Fail(ErrorCode::kInvalidArgument, "invalid workspace id '" + opt_.workspace + "'");
  }
  std::error_code ec;
  if (!fs::is_directory(opt_.dir, ec)) return Fail(ErrorCode::kNotFound, "not a directory: " + opt_.dir);
  stop_ = stop;
  // The stop request wakes the poll below.
  Fd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (wake.get() < 0) return Fail(ErrorCode::kIoError, Errno("eventfd"));
  std::stop_callback on_stop(stop, [&wake] {
    const uint64_t one = 1;
    (void)!write(wake.get(), &one, sizeof one);
  });

  bool need_full = true;  // sync everything: at the start, after an error, after the directory came back
  bool synced = false;
  bool dir_gone = false;
  std::string trouble;  // the error last logged, so an outage is logged once
  auto backoff = kMinBackoff;
  auto retry_at = Clock::now();
  std::optional<Clock::time_point> first_event, last_event;  // of the events not yet rescanned
  const auto rescan_at = [&] {
    return std::min(*last_event + opt_.debounce, *first_event + std::max<milliseconds>(kMaxDelay, opt_.debounce));
  };
  const auto failed = [&](const Error& e, const std::string& then) {
    if (e.ToString() != trouble) Log(e.ToString() + "; " + then);
    trouble = e.ToString();
  };

  while (!stop.stop_requested()) {
    const auto now = Clock::now();
    if (need_full && now >= retry_at) {
      first_event.reset();  // the sync sees what they announced
      last_event.reset();
      struct stat st {};
      if (stat(opt_.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (!dir_gone) Log(opt_.dir + " is gone; waiting for it to come back");
        dir_gone = true;
        retry_at = now + kDirPoll;
      } else if (auto ok = Sync(true); ok) {
        need_full = dir_gone = false;
        synced = true;
        trouble.clear();
        backoff = kMinBackoff;
      } else {
        if (ok.error().Is(ErrorCode::kCancelled)) break;
        if (!synced && !Transient(ok.error())) return ok;
        failed(ok.error(), "retrying");
        retry_at = now + backoff;
        backoff = std::min(backoff * 2, kMaxBackoff);
      }
    } else if (!need_full && last_event && now >= rescan_at()) {
      first_event.reset();
      last_event.reset();
      struct stat st {};
      if (stat(opt_.dir.c_str(), &st) != 0 || st.st_ino != root_ino_ || st.st_dev != root_dev_) {
        need_full = true;  // gone or replaced
        retry_at = now;
        continue;
      }
      if (auto ok = Sync(false); !ok) {
        if (ok.error().Is(ErrorCode::kCancelled)) break;
        if (ok.error().Is(ErrorCode::kIoError)) {  // the tree changed under the listing: list again
          failed(ok.error(), "rescanning");
          first_event = last_event = now;
        } else {  // the daemon: it may have lost the workspace
          failed(ok.error(), "resyncing");
          need_full = true;
          retry_at = now + backoff;
          backoff = std::min(backoff * 2, kMaxBackoff);
        }
      } else {
        trouble.clear();
      }
    }

    std::optional<Clock::time_point> at;
    if (need_full) {
      at = retry_at;
    } else if (last_event) {
      at = rescan_at();
    }
    int timeout = -1;
    if (at) {
      const auto left = std::chrono::ceil<milliseconds>(*at - Clock::now()).count();
      timeout = static_cast<int>(std::clamp<int64_t>(left, 0, 60'000));
    }
    pollfd fds[2] = {{inotify_, POLLIN, 0}, {wake.get(), POLLIN, 0}};
    if (poll(fds, 2, timeout) < 0 && errno != EINTR) return Fail(ErrorCode::kIoError, Errno("poll"));
    if (fds[0].revents & POLLIN) {
      // Which files changed does not matter: a rescan compares them all.
      alignas(inotify_event) char buf[1 << 16];
      bool any = false;
      while (read(inotify_, buf, sizeof buf) > 0) any = true;
      if (any) {
        last_event = Clock::now();
        if (!first_event) first_event = last_event;
      }
    }
  }
  return {};
}

std::string WorkspaceIdForDir(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(dir, ec), ec);
  if (ec) p = fs::path(dir).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  std::string id = p.filename().string().substr(0, 128);
  for (char& c : id) {
    if (!ValidWorkspaceId(std::string_view(&c, 1))) c = '-';
  }
  return id.empty() ? "workspace" : id;
}

}  // namespace modeld::client
