#include "snapshot/snapshot_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <tuple>

#include "core/resize_for_overwrite.h"
#include "format/fd.h"

namespace modeld::snapshot {
namespace {

constexpr std::string_view kPrefix = "ws-";
constexpr std::string_view kSuffix = ".snap";
constexpr std::string_view kTmpPrefix = ".tmp-";

std::unexpected<Error> IoError(const std::string& what, int err) {
  return Fail(ErrorCode::kIoError, "snapshot store: " + what + ": " + std::strerror(err));
}

using format::Fd;

// 0 or an errno. Loops on short writes and EINTR.
int WriteAll(int fd, std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return errno;
    if (w == 0) return EIO;
    done += static_cast<size_t>(w);
  }
  return 0;
}

// 0, an errno, or -1 when the file ended before `n` bytes.
int ReadAll(int fd, char* out, size_t n, off_t at) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, out + done, n - done, at + static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) return -1;
    done += static_cast<size_t>(r);
  }
  return 0;
}

// mkdir -p with mode 0700 for the directories it creates.
Status MakeDirs(const std::string& dir) {
  std::string path;
  size_t at = 0;
  while (at <= dir.size()) {
    size_t slash = dir.find('/', at);
    if (slash == std::string::npos) slash = dir.size();
    path = dir.substr(0, slash);
    at = slash + 1;
    if (path.empty()) continue;  // the root's leading '/'
    if (::mkdir(path.c_str(), 0700) == 0) continue;
    if (errno != EEXIST) return IoError("mkdir " + path, errno);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return IoError("stat " + dir, errno);
  if (!S_ISDIR(st.st_mode)) return IoError(dir, ENOTDIR);
  return {};
}

bool IsSnapshotName(std::string_view name, std::string* id) {
  if (name.size() <= kPrefix.size() + kSuffix.size() || !name.starts_with(kPrefix) || !name.ends_with(kSuffix)) {
    return false;
  }
  const std::string_view ws = name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
  if (!ValidWorkspaceId(ws)) return false;
  *id = std::string(ws);
  return true;
}

Status CheckId(const std::string& workspace) {
  if (!ValidWorkspaceId(workspace)) {
    return Fail(ErrorCode::kInvalidArgument,
                "snapshot store: workspace id '" + workspace + "' is not 1-128 chars of A-Za-z0-9._-:@+");
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<SnapshotStore>> SnapshotStore::Open(StoreOptions opt) {
  if (opt.dir.empty()) return Fail(ErrorCode::kInvalidArgument, "snapshot store: no directory");
  if (opt.budget_bytes < 0) return Fail(ErrorCode::kInvalidArgument, "snapshot store: a negative budget");
  while (opt.dir.size() > 1 && opt.dir.back() == '/') opt.dir.pop_back();
  if (auto st = MakeDirs(opt.dir); !st) return std::unexpected(st.error());
  std::unique_ptr<SnapshotStore> store(new SnapshotStore(std::move(opt)));
  const std::string& dir = store->opt_.dir;

  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return IoError("opendir " + dir, errno);
  struct Found {
    int64_t mtime_ns;
    std::string id;
    int64_t bytes;
  };
  std::vector<Found> found;
  int err = 0;
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(d);
    if (e == nullptr) {
      err = errno;
      break;
    }
    const std::string name = e->d_name;
    const std::string path = dir + "/" + name;
    std::string id;
    if (name.starts_with(kTmpPrefix)) {
      // A write an earlier run did not finish: never renamed, so no snapshot refers to it.
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        std::fprintf(stderr, "modeld: snapshot store: cannot remove %s: %s\n", path.c_str(), std::strerror(errno));
      }
    } else if (IsSnapshotName(name, &id)) {
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      found.push_back({int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec, std::move(id), st.st_size});
    }
  }
  ::closedir(d);
  if (err != 0) return IoError("readdir " + dir, err);
  // The LRU order as the files' mtimes say (a write or a Read sets it).
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return std::tie(a.mtime_ns, a.id) < std::tie(b.mtime_ns, b.id); });
  {
    MutexLock lock(&store->mu_);
    for (Found& f : found) store->index_[std::move(f.id)] = Entry{f.bytes, ++store->tick_};
  }
  return store;
}

std::string SnapshotStore::PathOf(const std::string& workspace) const {
  return opt_.dir + "/" + std::string(kPrefix) + workspace + std::string(kSuffix);
}

Status SnapshotStore::SyncDir() const {
  Fd d(::open(opt_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.get() < 0) return IoError("open " + opt_.dir, errno);
  if (::fsync(d.get()) != 0) return IoError("fsync " + opt_.dir, errno);
  return {};
}

Status SnapshotStore::Write(const std::string& workspace, std::string_view bytes) {
  const std::string_view parts[] = {bytes};
  return Write(workspace, parts);
}

Status SnapshotStore::Write(const std::string& workspace, std::span<const std::string_view> parts) {
  if (auto st = CheckId(workspace); !st) return st;
  uint64_t size = 0;
  for (std::string_view p : parts) size += p.size();
  uint64_t n;
  {
    MutexLock lock(&mu_);
    n = ++tmp_counter_;
  }
  const std::string tmp = opt_.dir + "/" + std::string(kTmpPrefix) + std::to_string(::getpid()) + "-" +
                          std::to_string(n) + "-" + std::string(kPrefix) + workspace;
  const std::string path = PathOf(workspace);

  // The bytes go to the temporary file, with no lock held (a big snapshot takes a while).
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (fd.get() < 0) return IoError("create " + tmp, errno);
    int err = 0;
    for (size_t i = 0; err == 0 && i < parts.size(); ++i) err = WriteAll(fd.get(), parts[i]);
    std::string op = "write ";
    if (err == 0 && ::fsync(fd.get()) != 0) err = errno, op = "fsync ";
    if (err == 0) err = fd.Close(), op = "close ";
    if (err != 0) {
      ::unlink(tmp.c_str());
      return IoError(op + tmp + " (" + std::to_string(size) + " bytes for " + path + ")", err);
    }
  }

  MutexLock lock(&mu_);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return IoError("rename " + tmp + " to " + path, err);
  }
  index_[workspace] = Entry{static_cast<int64_t>(size), ++tick_};
  // The rename is done; a failed directory sync means it may not survive a power loss.
  Status synced = SyncDir();
  PruneLocked(workspace);
  return synced;
}

void SnapshotStore::PruneLocked(const std::string& keep) {
  if (opt_.budget_bytes <= 0) return;
  int64_t total = 0;
  for (const auto& [id, e] : index_) total += e.bytes;
  while (total > opt_.budget_bytes) {
    auto victim = index_.end();
    for (auto it = index_.begin(); it != index_.end(); ++it) {
      if (it->first != keep && (victim == index_.end() || it->second.used < victim->second.used)) victim = it;
    }
    if (victim == index_.end()) break;  // only the one just written: kept even when over the budget
    const std::string path = PathOf(victim->first);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      std::fprintf(stderr, "modeld: snapshot store: cannot remove %s over the budget: %s\n", path.c_str(),
                   std::strerror(errno));
    }
    total -= victim->second.bytes;
    index_.erase(victim);
  }
}

Result<Fd> SnapshotStore::OpenToRead(const std::string& workspace, uint64_t* size) {
  if (auto st = CheckId(workspace); !st) return std::unexpected(st.error());
  const std::string path = PathOf(workspace);
  int raw;
  struct stat st {};
  {
    MutexLock lock(&mu_);
    raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (raw < 0) {
      const int err = errno;
      if (err == ENOENT) {
        index_.erase(workspace);
        return Fail(ErrorCode::kNotFound, "no snapshot of workspace '" + workspace + "'");
      }
      return IoError("open " + path, err);
    }
    if (::fstat(raw, &st) != 0) {
      const int err = errno;
      ::close(raw);
      return IoError("fstat " + path, err);
    }
    index_[workspace] = Entry{static_cast<int64_t>(st.st_size), ++tick_};
    ::futimens(raw, nullptr);  // the use order survives a restart; best effort
  }
  Fd fd(raw);
  if (!S_ISREG(st.st_mode)) return Fail(ErrorCode::kCorruptSnapshot, path + ": not a regular file");
  if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes) {
    return Fail(ErrorCode::kCorruptSnapshot,
                path + ": " + std::to_string(st.st_size) + " bytes, more than any snapshot may hold");
  }
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

Result<std::string> SnapshotStore::Read(const std::string& workspace) {
  uint64_t size = 0;
  auto fd = OpenToRead(workspace, &size);
  if (!fd) return std::unexpected(fd.error());
  const std::string path = PathOf(workspace);
  std::string out;
  try {
    ResizeForOverwrite(out, static_cast<size_t>(size));  // not zeroed: read over in full
  } catch (const std::bad_alloc&) {
    return Fail(ErrorCode::kInternal, path + ": out of memory reading " + std::to_string(size) + " bytes");
  }
  const int err = ReadAll(fd->get(), out.data(), out.size(), 0);
  if (err == -1) return Fail(ErrorCode::kTruncated, path + ": shorter than when it was opened");
  if (err != 0) return IoError("read " + path, err);
  return out;
}

Status SnapshotStore::ReadParts(const std::string& workspace, EncodedFile* out) {
  uint64_t size = 0;
  auto fd = OpenToRead(workspace, &size);
  if (!fd) return std::unexpected(fd.error());
  const std::string path = PathOf(workspace);
  char fixed[kFixedHeaderBytes];
  const int ferr = size < kFixedHeaderBytes ? -1 : ReadAll(fd->get(), fixed, sizeof(fixed), 0);
  if (ferr == -1) return Fail(ErrorCode::kTruncated, path + ": shorter than a snapshot's header");
  if (ferr != 0) return IoError("read " + path, ferr);
  auto range = StateRangeOf(std::string_view(fixed, sizeof(fixed)));
  if (!range) return Fail(Error(range.error()).WithMessage(path + ": " + range.error().message()));
  // The parts' sizes against the file's before anything is allocated (the limits bound them too).
  const uint64_t total = range->at + range->len + kTrailerBytes;
  if (total != size) {
    return Fail(total > size ? ErrorCode::kTruncated : ErrorCode::kCorruptSnapshot,
                path + ": " + std::to_string(size) + " bytes, its header says " + std::to_string(total));
  }
  try {
    ResizeForOverwrite(out->head, static_cast<size_t>(range->at));
    ResizeReusedForOverwrite(out->state, static_cast<size_t>(range->len));  // a reused buffer keeps its pages
    ResizeForOverwrite(out->trailer, kTrailerBytes);
  } catch (const std::bad_alloc&) {
    return Fail(ErrorCode::kInternal, path + ": out of memory reading " + std::to_string(size) + " bytes");
  }
  int err = ReadAll(fd->get(), out->head.data(), out->head.size(), 0);
  if (err == 0) err = ReadAll(fd->get(), out->state.data(), out->state.size(), static_cast<off_t>(range->at));
  if (err == 0) {
    err = ReadAll(fd->get(), out->trailer.data(), kTrailerBytes, static_cast<off_t>(range->at + range->len));
  }
  if (err == -1) return Fail(ErrorCode::kTruncated, path + ": shorter than when it was opened");
  if (err != 0) return IoError("read " + path, err);
  return {};
}

Result<SnapshotInfo> SnapshotStore::Info(const std::string& workspace) {
  if (auto st = CheckId(workspace); !st) return std::unexpected(st.error());
  const std::string path = PathOf(workspace);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW));
  if (fd.get() < 0) {
    if (errno == ENOENT) return Fail(ErrorCode::kNotFound, "no snapshot of workspace '" + workspace + "'");
    return IoError("open " + path, errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return IoError("fstat " + path, errno);
  // Opened without blocking (a FIFO put in its place would hang the store) and refused here.
  if (!S_ISREG(st.st_mode)) return Fail(ErrorCode::kCorruptSnapshot, path + ": not a regular file");
  const size_t size = static_cast<size_t>(st.st_size);
  std::string head(std::min(size, kFixedHeaderBytes), '\0');
  int err = ReadAll(fd.get(), head.data(), head.size(), 0);
  if (err > 0) return IoError("read " + path, err);
  if (err == 0 && head.size() == kFixedHeaderBytes) {
    // The meta too, when the header is sound (HeadBytes checked its limits) and the file holds it.
    if (auto n = HeadBytes(head); n && *n <= size) {
      head.resize(*n);
      err = ReadAll(fd.get(), head.data() + kFixedHeaderBytes, *n - kFixedHeaderBytes, kFixedHeaderBytes);
      if (err > 0) return IoError("read " + path, err);
    }
  }
  auto info = DecodeInfo(head, static_cast<int64_t>(size));
  if (!info) return Fail(Error(info.error()).WithMessage(path + ": " + info.error().message()));
  return info;
}

std::vector<SnapshotInfo> SnapshotStore::List() {
  std::vector<std::string> ids;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, e] : index_) ids.push_back(id);
  }
  std::vector<SnapshotInfo> out;
  for (const std::string& id : ids) {
    auto info = Info(id);
    if (info) {
      out.push_back(std::move(*info));
    } else if (!info.error().Is(ErrorCode::kNotFound)) {  // removed meanwhile: nothing to say
      std::fprintf(stderr, "modeld: snapshot store: skipping %s\n", info.error().ToString().c_str());
    }
  }
  return out;
}

Status SnapshotStore::Remove(const std::string& workspace) {
  if (auto st = CheckId(workspace); !st) return st;
  const std::string path = PathOf(workspace);
  MutexLock lock(&mu_);
  if (::unlink(path.c_str()) != 0) {
    const int err = errno;
    if (err == ENOENT) {
      index_.erase(workspace);
      return Fail(ErrorCode::kNotFound, "no snapshot of workspace '" + workspace + "'");
    }
    return IoError("unlink " + path, err);
  }
  index_.erase(workspace);
  return SyncDir();
}

bool SnapshotStore::Contains(const std::string& workspace) {
  MutexLock lock(&mu_);
  return index_.contains(workspace);
}

int64_t SnapshotStore::TotalBytes() {
  MutexLock lock(&mu_);
  int64_t total = 0;
  for (const auto& [id, e] : index_) total += e.bytes;
  return total;
}

}  // namespace modeld::snapshot
