// The snapshot store (a directory of files, crash-safe writes, LRU budget) and its background writer.
#include "snapshot/snapshot_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "snapshot/snapshot_file.h"
#include "snapshot/snapshot_writer.h"
#include "snapshot/spare_buffers.h"

#if defined(__GNUC__) && !defined(__clang__)
// GCC pairs the replaced operator new below with free() and warns; they are the same allocator here.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

// The largest single allocation since the last reset: Read refuses an oversized file before
// allocating it.
namespace {
std::atomic<size_t> g_max_alloc{0};
}
void* operator new(size_t n) {
  size_t seen = g_max_alloc.load(std::memory_order_relaxed);
  while (n > seen && !g_max_alloc.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace modeld::snapshot {
namespace {

namespace fs = std::filesystem;

// A valid encoded snapshot of `ws` whose saved_unix_ms is `version`, with 10 tokens and `state_bytes`
// bytes of state that differ from one version to the next (the size depends on state_bytes and ws only).
std::string Snap(const std::string& ws, int64_t version, size_t state_bytes) {
  SnapshotFile f;
  f.workspace = ws;
  f.model = "m";
  f.saved_unix_ms = version;
  f.session.identity.backend = "gguf";
  f.session.identity.n_ctx = 4096;
  f.session.identity.n_vocab = 1000;
  for (int64_t i = 0; i < 10; ++i) f.session.tokens.push_back(static_cast<int32_t>((i * 13 + version) % 1000));
  std::mt19937_64 rng(static_cast<uint64_t>(version) * 7919 + state_bytes);
  f.session.state.resize(state_bytes);
  for (char& c : f.session.state) c = static_cast<char>(rng());
  auto b = Encode(f);
  EXPECT_TRUE(b.has_value()) << b.error().ToString();
  return b ? *b : std::string();
}

int64_t VersionOf(const std::string& bytes) {
  auto d = Decode(bytes);
  return d ? d->saved_unix_ms : -1;
}

std::vector<std::string> TempFiles(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().starts_with(".tmp-")) out.push_back(e.path().filename().string());
  }
  return out;
}

// The file's bytes; "" (and a test failure) when it cannot be read.
std::string MustRead(SnapshotStore* s, const std::string& ws) {
  auto r = s->Read(ws);
  if (!r) {
    ADD_FAILURE() << "Read(" << ws << "): " << r.error().ToString();
    return "";
  }
  return std::move(*r);
}

std::unique_ptr<SnapshotStore> MustOpen(const std::string& dir, int64_t budget = 0) {
  auto s = SnapshotStore::Open({dir, budget});
  EXPECT_TRUE(s.has_value()) << s.error().ToString();
  return s ? std::move(*s) : nullptr;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* t = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::string(MODELD_TEST_TMP) + "/snap-" + std::to_string(::getpid()) + "-" + t->test_suite_name() + "." +
           t->name();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(StoreTest, WriteReadListRemove) {
  auto s = MustOpen(dir_ + "/a/b");
  ASSERT_TRUE(s);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/a/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir_ + "/a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  const std::string a = Snap("proj:main@x+y", 1, 1000), b = Snap("b", 2, 3000);
  ASSERT_TRUE(s->Write("proj:main@x+y", a));
  ASSERT_TRUE(s->Write("b", b));
  EXPECT_TRUE(fs::is_regular_file(dir_ + "/a/b/ws-proj:main@x+y.snap"));
  EXPECT_TRUE(fs::is_regular_file(dir_ + "/a/b/ws-b.snap"));
  EXPECT_EQ(s->PathOf("b"), dir_ + "/a/b/ws-b.snap");
  EXPECT_TRUE(s->Contains("b"));
  EXPECT_FALSE(s->Contains("c"));
  EXPECT_EQ(s->TotalBytes(), static_cast<int64_t>(a.size() + b.size()));
  EXPECT_EQ(MustRead(s.get(), "proj:main@x+y"), a);
  EXPECT_EQ(MustRead(s.get(), "b"), b);

  auto list = s->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].workspace, "b");
  EXPECT_EQ(list[0].saved_unix_ms, 2);
  EXPECT_EQ(list[0].state_bytes, 3000);
  EXPECT_EQ(list[0].file_bytes, static_cast<int64_t>(b.size()));
  EXPECT_EQ(list[1].workspace, "proj:main@x+y");
  auto info = s->Info("b");
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_EQ(info->n_tokens, 10);

  // Replacing keeps one file.
  const std::string b2 = Snap("b", 3, 10);
  ASSERT_TRUE(s->Write("b", b2));
  EXPECT_EQ(MustRead(s.get(), "b"), b2);
  EXPECT_EQ(s->TotalBytes(), static_cast<int64_t>(a.size() + b2.size()));

  ASSERT_TRUE(s->Remove("b"));
  EXPECT_FALSE(fs::exists(dir_ + "/a/b/ws-b.snap"));
  EXPECT_FALSE(s->Contains("b"));
  auto again = s->Remove("b");
  ASSERT_FALSE(again.has_value());
  EXPECT_TRUE(again.error().Is(ErrorCode::kNotFound));
  auto gone = s->Read("b");
  ASSERT_FALSE(gone.has_value());
  EXPECT_TRUE(gone.error().Is(ErrorCode::kNotFound));
  auto no_info = s->Info("b");
  ASSERT_FALSE(no_info.has_value());
  EXPECT_TRUE(no_info.error().Is(ErrorCode::kNotFound));
  EXPECT_EQ(s->TotalBytes(), static_cast<int64_t>(a.size()));
  EXPECT_TRUE(TempFiles(dir_ + "/a/b").empty());
}

TEST_F(StoreTest, NamesMapToFiles) {
  auto s = MustOpen(dir_);
  ASSERT_TRUE(s);
  // "." and ".." are valid ids: "ws-..snap", "ws-...snap", harmless.
  for (const std::string& ws : std::vector<std::string>{".", "..", std::string(128, 'z')}) {
    const std::string bytes = Snap(ws, 7, 10);
    ASSERT_TRUE(s->Write(ws, bytes)) << ws;
    EXPECT_TRUE(fs::is_regular_file(dir_ + "/ws-" + ws + ".snap")) << ws;
    EXPECT_EQ(MustRead(s.get(), ws), bytes);
  }
  for (const std::string& bad : std::vector<std::string>{"", "a/b", "../x", std::string(129, 'z'), "a b"}) {
    auto w = s->Write(bad, "x");
    ASSERT_FALSE(w.has_value()) << bad;
    EXPECT_TRUE(w.error().Is(ErrorCode::kInvalidArgument)) << bad;
    auto r = s->Read(bad);
    ASSERT_FALSE(r.has_value());
    EXPECT_TRUE(r.error().Is(ErrorCode::kInvalidArgument));
    EXPECT_FALSE(s->Contains(bad));
  }
  // A second store on the directory finds them (the index is built from the files).
  auto t = MustOpen(dir_);
  EXPECT_TRUE(t->Contains("."));
  EXPECT_TRUE(t->Contains(".."));
  EXPECT_EQ(t->TotalBytes(), s->TotalBytes());
  EXPECT_EQ(t->List().size(), 3u);
}

TEST_F(StoreTest, OpenRemovesLeftoverTemporaryFiles) {
  {
    auto s = MustOpen(dir_);
    ASSERT_TRUE(s->Write("a", Snap("a", 1, 100)));
  }
  for (const char* name : {".tmp-123-1-ws-a", ".tmp-99999-7-ws-b", ".tmp-"}) {
    std::ofstream(dir_ + "/" + name) << "partial";
  }
  std::ofstream(dir_ + "/notes.txt") << "not ours";
  ASSERT_EQ(TempFiles(dir_).size(), 3u);
  auto s = MustOpen(dir_);
  EXPECT_TRUE(TempFiles(dir_).empty());
  EXPECT_TRUE(fs::exists(dir_ + "/notes.txt"));  // anything else is left alone
  EXPECT_TRUE(s->Contains("a"));
  EXPECT_EQ(VersionOf(MustRead(s.get(), "a")), 1);
}

TEST_F(StoreTest, ListSkipsFilesThatDoNotDecode) {
  auto s = MustOpen(dir_);
  ASSERT_TRUE(s->Write("good", Snap("good", 1, 100)));
  ASSERT_TRUE(s->Write("bad", "not a snapshot at all, but long enough to hold a header ........"));
  std::string cut = Snap("cut", 1, 100);
  ASSERT_TRUE(s->Write("cut", cut.substr(0, cut.size() / 2)));
  auto list = s->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].workspace, "good");
  auto bad = s->Info("bad");
  ASSERT_FALSE(bad.has_value());
  EXPECT_TRUE(bad.error().Is(ErrorCode::kCorruptSnapshot)) << bad.error().ToString();
  auto trunc = s->Info("cut");
  ASSERT_FALSE(trunc.has_value());
  EXPECT_TRUE(trunc.error().Is(ErrorCode::kTruncated)) << trunc.error().ToString();
}

TEST_F(StoreTest, InfoReadsOnlyTheHead) {
  auto s = MustOpen(dir_);
  std::string b = Snap("w", 3, 5000);
  b[b.size() - 100] ^= 1;  // in the state: the whole-file checksum no longer matches
  ASSERT_TRUE(s->Write("w", b));
  auto info = s->Info("w");
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_EQ(info->saved_unix_ms, 3);
  auto d = Decode(MustRead(s.get(), "w"));
  ASSERT_FALSE(d.has_value());
  EXPECT_TRUE(d.error().Is(ErrorCode::kCorruptSnapshot));
}

TEST_F(StoreTest, ReadRefusesAnOversizedFileWithoutAllocating) {
  auto s = MustOpen(dir_);
  const std::string path = dir_ + "/ws-huge.snap";
  {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(kMaxFileBytes + 1)), 0) << std::strerror(errno);  // sparse
    ::close(fd);
  }
  g_max_alloc = 0;
  auto r = s->Read("huge");
  const size_t max_alloc = g_max_alloc;
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().Is(ErrorCode::kCorruptSnapshot)) << r.error().ToString();
  EXPECT_LT(max_alloc, size_t{1} << 20);
  auto info = s->Info("huge");  // 48 zero bytes: not a snapshot
  ASSERT_FALSE(info.has_value());
  EXPECT_TRUE(info.error().Is(ErrorCode::kCorruptSnapshot));
}

// Something that is not a regular file where a snapshot should be (a FIFO would block a read
// forever, with the store's lock held): refused at once, the store goes on.
TEST_F(StoreTest, AFifoOrDirectoryInPlaceOfASnapshotIsRefusedWithoutBlocking) {
  auto s = MustOpen(dir_);
  ASSERT_EQ(::mkfifo((dir_ + "/ws-fifo.snap").c_str(), 0600), 0) << std::strerror(errno);
  ASSERT_EQ(::mkdir((dir_ + "/ws-dir.snap").c_str(), 0700), 0) << std::strerror(errno);
  for (const char* ws : {"fifo", "dir"}) {
    auto r = s->Read(ws);
    ASSERT_FALSE(r.has_value()) << ws;
    EXPECT_FALSE(r.error().Is(ErrorCode::kNotFound)) << ws << ": " << r.error().ToString();
    auto i = s->Info(ws);
    ASSERT_FALSE(i.has_value()) << ws;
    EXPECT_FALSE(i.error().Is(ErrorCode::kNotFound)) << ws << ": " << i.error().ToString();
  }
  EXPECT_TRUE(s->List().empty());
  ASSERT_TRUE(s->Write("ok", std::string_view("not checked by the store")).has_value());
  auto ok = s->Read("ok");
  EXPECT_TRUE(ok.has_value()) << ok.error().ToString();
}

TEST_F(StoreTest, BudgetDropsTheLeastRecentlyUsed) {
  const std::string a = Snap("a", 1, 10000), b = Snap("b", 2, 10000), c = Snap("c", 3, 10000), d = Snap("d", 4, 10000),
                    e = Snap("e", 5, 10000);
  const int64_t one = static_cast<int64_t>(a.size());
  ASSERT_EQ(static_cast<int64_t>(e.size()), one);  // all the same size
  auto s = MustOpen(dir_, 3 * one + one / 2);      // room for three
  ASSERT_TRUE(s->Write("a", a));
  ASSERT_TRUE(s->Write("b", b));
  ASSERT_TRUE(s->Write("c", c));
  EXPECT_EQ(s->TotalBytes(), 3 * one);
  ASSERT_TRUE(s->Read("a"));  // a is now the most recently used
  ASSERT_TRUE(s->Write("d", d));
  EXPECT_FALSE(s->Contains("b"));
  EXPECT_FALSE(fs::exists(dir_ + "/ws-b.snap"));
  EXPECT_TRUE(s->Contains("a") && s->Contains("c") && s->Contains("d"));
  ASSERT_TRUE(s->Write("e", e));  // c, then a, d, e
  EXPECT_FALSE(s->Contains("c"));
  EXPECT_TRUE(s->Contains("a") && s->Contains("d") && s->Contains("e"));
  ASSERT_TRUE(s->Write("a", a));  // rewriting refreshes too: d goes next
  ASSERT_TRUE(s->Write("b", b));
  EXPECT_FALSE(s->Contains("d"));
  EXPECT_TRUE(s->Contains("a") && s->Contains("e") && s->Contains("b"));
  EXPECT_EQ(s->TotalBytes(), 3 * one);
  std::vector<std::string> files;
  for (const auto& f : fs::directory_iterator(dir_)) files.push_back(f.path().filename().string());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"ws-a.snap", "ws-b.snap", "ws-e.snap"}));
}

TEST_F(StoreTest, ABudgetSmallerThanOneSnapshotKeepsTheLastWritten) {
  auto s = MustOpen(dir_, 100);
  const std::string a = Snap("a", 1, 5000), b = Snap("b", 2, 5000);
  ASSERT_TRUE(s->Write("a", a));
  EXPECT_TRUE(s->Contains("a"));
  EXPECT_EQ(MustRead(s.get(), "a"), a);
  ASSERT_TRUE(s->Write("b", b));
  EXPECT_FALSE(s->Contains("a"));
  EXPECT_EQ(MustRead(s.get(), "b"), b);
  EXPECT_EQ(s->TotalBytes(), static_cast<int64_t>(b.size()));
}

TEST_F(StoreTest, TheUseOrderSurvivesARestart) {
  const std::string a = Snap("a", 1, 1000), b = Snap("b", 2, 1000), c = Snap("c", 3, 1000);
  const int64_t one = static_cast<int64_t>(a.size());
  {
    auto s = MustOpen(dir_);
    ASSERT_TRUE(s->Write("a", a));
    ASSERT_TRUE(s->Write("b", b));
    ASSERT_TRUE(s->Write("c", c));
  }
  // The order as the mtimes say: b oldest, then a, then c.
  auto set_mtime = [&](const char* ws, time_t t) {
    const timespec ts[2] = {{t, 0}, {t, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ + "/ws-" + ws + ".snap").c_str(), ts, 0), 0);
  };
  set_mtime("b", 1000);
  set_mtime("a", 2000);
  set_mtime("c", 3000);
  auto s = MustOpen(dir_, 3 * one);
  ASSERT_TRUE(s->Write("d", Snap("d", 4, 1000)));
  EXPECT_FALSE(s->Contains("b"));
  EXPECT_TRUE(s->Contains("a"));
  // A Read sets the mtime: after another restart, a is newer than c.
  ASSERT_TRUE(s->Read("a"));
  s.reset();
  auto t = MustOpen(dir_, 3 * one);
  ASSERT_TRUE(t->Write("e", Snap("e", 5, 1000)));
  EXPECT_FALSE(t->Contains("c"));
  EXPECT_TRUE(t->Contains("a") && t->Contains("d") && t->Contains("e"));
}

TEST_F(StoreTest, ConcurrentWritersAndReaders) {
  auto s = MustOpen(dir_, 0);
  constexpr int kThreads = 4, kRounds = 15;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string ws = "t" + std::to_string(t);
      for (int r = 1; r <= kRounds; ++r) {
        const std::string bytes = Snap(ws, r, 100 * static_cast<size_t>(r));
        if (!s->Write(ws, bytes)) ++bad;
        auto back = s->Read(ws);
        if (!back || *back != bytes) ++bad;
        (void)s->List();
        (void)s->TotalBytes();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad, 0);
  int64_t total = 0;
  for (int t = 0; t < kThreads; ++t) {
    const std::string ws = "t" + std::to_string(t);
    EXPECT_EQ(VersionOf(MustRead(s.get(), ws)), kRounds);
    total += static_cast<int64_t>(Snap(ws, kRounds, 100 * kRounds).size());
  }
  EXPECT_EQ(s->TotalBytes(), total);
  EXPECT_TRUE(TempFiles(dir_).empty());
}

// A child writes versions of one workspace in a loop and is killed at a random point: what is on
// disk afterwards is nothing (before the first complete write) or one whole version.
TEST_F(StoreTest, CrashSafeAgainstSigkill) {
  std::vector<std::string> versions;
  for (int k = 0; k < 8; ++k) versions.push_back(Snap("crash", k + 1, (50 << 10) + k * (64 << 10)));  // 50-500 KiB
  std::mt19937 rng(20241130);
  int present = 0, absent = 0, temps_seen = 0;
  for (int iter = 0; iter < 200; ++iter) {
    const std::string dir = dir_ + "/" + std::to_string(iter);
    // Odd iterations kill only after the first write completed (the child says so through the
    // pipe): those must find a file. Even ones kill from the start: a file may not be there yet.
    const bool after_first = iter % 2 == 1;
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      auto store = SnapshotStore::Open({dir, 0});
      if (!store) ::_exit(2);
      for (size_t k = 0;; ++k) {
        if (!(*store)->Write("crash", versions[k % versions.size()])) ::_exit(3);
        if (k == 0) {
          const char c = 1;
          (void)!::write(fds[1], &c, 1);
          ::close(fds[1]);
        }
      }
    }
    ::close(fds[1]);
    if (after_first) {
      char c = 0;
      ASSERT_EQ(::read(fds[0], &c, 1), 1) << "the child ended before its first write";
    }
    // Only chooses the kill point; nothing waits on it.
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ::close(fds[0]);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the child ended by itself: status " << status;

    if (fs::exists(dir)) temps_seen += static_cast<int>(TempFiles(dir).size());
    auto s = MustOpen(dir);
    ASSERT_TRUE(s);
    EXPECT_TRUE(TempFiles(dir).empty()) << iter;
    if (fs::exists(s->PathOf("crash"))) {
      ++present;
      EXPECT_TRUE(s->Contains("crash"));
      auto bytes = s->Read("crash");
      ASSERT_TRUE(bytes.has_value()) << bytes.error().ToString();
      auto d = Decode(*bytes);
      ASSERT_TRUE(d.has_value()) << iter << ": " << d.error().ToString();
      ASSERT_GE(d->saved_unix_ms, 1);
      ASSERT_LE(d->saved_unix_ms, 8);
      EXPECT_EQ(*bytes, versions[d->saved_unix_ms - 1]) << iter;
    } else {
      ++absent;
      EXPECT_FALSE(after_first) << iter << ": the first complete write is gone";
      EXPECT_FALSE(s->Contains("crash"));
    }
    fs::remove_all(dir);
  }
  EXPECT_GE(present, 100);
  std::printf("crash test: %d with a snapshot, %d before the first write, %d temporary files removed\n", present,
              absent, temps_seen);
}

// The checks of a store on a directory with room for about 1 MiB (a small tmpfs, or a file size
// limit): "" when they hold, else what went wrong. `want` is what the failed write's message says.
std::string FullDiskChecks(const std::string& dir, const std::string& want) {
  auto opened = SnapshotStore::Open({dir, 0});
  if (!opened) return "open: " + opened.error().ToString();
  SnapshotStore& s = **opened;
  const std::string small = Snap("ws", 1, 100 << 10), big = Snap("ws", 2, 2 << 20);
  if (auto st = s.Write("ws", small); !st) return "the small write failed: " + st.error().ToString();
  auto st = s.Write("ws", big);
  if (st) return "a write larger than the room succeeded";
  if (!st.error().Is(ErrorCode::kIoError)) return "not an io_error: " + st.error().ToString();
  if (st.error().message().find(want) == std::string::npos)
    return "the message does not say '" + want + "': " + st.error().ToString();
  auto back = s.Read("ws");
  if (!back) return "the earlier snapshot is gone: " + back.error().ToString();
  if (*back != small || !Decode(*back)) return "the earlier snapshot is not whole";
  if (!TempFiles(dir).empty()) return "a temporary file was left: " + TempFiles(dir)[0];
  if (s.TotalBytes() != static_cast<int64_t>(small.size())) return "TotalBytes counts the failed write";
  auto other = s.Write("other", Snap("other", 3, 2 << 20));
  if (other) return "a second large write succeeded";
  if (s.Contains("other") || fs::exists(s.PathOf("other"))) return "a failed first write left a snapshot";
  // The failed writes freed their space: a small one fits again.
  if (auto again = s.Write("ws2", Snap("ws2", 4, 100 << 10)); !again) {
    return "a small write after the failures failed: " + again.error().ToString();
  }
  if (!TempFiles(dir).empty()) return "a temporary file was left at the end";
  return "";
}

// The same checks in a child whose file size limit is 1 MiB (SIGXFSZ ignored: writes fail with
// EFBIG), for when a tmpfs cannot be mounted, and to cover that path anyway.
std::string FullDiskChecksUnderFileSizeLimit(const std::string& dir) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    ::close(fds[0]);
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit lim{1 << 20, 1 << 20};
    std::string r = ::setrlimit(RLIMIT_FSIZE, &lim) == 0 ? FullDiskChecks(dir, "File too large") : "setrlimit failed";
    (void)!::write(fds[1], r.data(), r.size());
    ::_exit(r.empty() ? 0 : 1);
  }
  ::close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status)) return "the child did not exit: status " + std::to_string(status);
  if (WEXITSTATUS(status) != 0 && out.empty()) return "the child failed without saying why";
  return out;
}

// A tmpfs mounted for the test's life, unmounted on every way out.
class TmpfsMount {
 public:
  TmpfsMount(const std::string& path, const char* options) : path_(path) {
    fs::create_directories(path);
    ok_ = ::mount("tmpfs", path.c_str(), "tmpfs", 0, options) == 0;
    err_ = ok_ ? 0 : errno;
  }
  ~TmpfsMount() {
    if (ok_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  bool ok() const { return ok_; }
  int err() const { return err_; }

 private:
  std::string path_;
  bool ok_ = false;
  int err_ = 0;
};

TEST_F(StoreTest, FullDiskKeepsThePreviousSnapshot) {
  const std::string mnt = dir_ + "/mnt";
  TmpfsMount m(mnt, "size=1m");
  if (!m.ok()) {
    ASSERT_EQ(m.err(), EPERM) << "mount tmpfs: " << std::strerror(m.err());
    std::printf("not root: the file size limit stands in for a full disk\n");
    EXPECT_EQ(FullDiskChecksUnderFileSizeLimit(mnt + "/store"), "");
    return;
  }
  EXPECT_EQ(FullDiskChecks(mnt + "/store", "No space left on device"), "");
}

TEST_F(StoreTest, FileSizeLimitKeepsThePreviousSnapshot) {
  EXPECT_EQ(FullDiskChecksUnderFileSizeLimit(dir_ + "/store"), "");
}

// ---- the background writer ----------------------------------------------------------------------

TEST_F(StoreTest, WriterLatestWins) {
  auto s = MustOpen(dir_);
  std::vector<std::string> versions;
  for (int v = 1; v <= 100; ++v) versions.push_back(Snap("a", v, 1000 + 37 * v));
  SnapshotWriter w(s.get(), nullptr);
  for (const std::string& v : versions) w.Submit("a", v);
  w.Flush();
  EXPECT_EQ(MustRead(s.get(), "a"), versions.back());
  EXPECT_GE(w.written(), 1);
  EXPECT_LE(w.written(), 100);  // older ones may have been replaced while queued
  EXPECT_EQ(w.failed(), 0);
  EXPECT_TRUE(TempFiles(dir_).empty());
}

TEST_F(StoreTest, PartsAndReusedReadBuffers) {
  auto s = MustOpen(dir_);
  const std::string bytes = Snap("p", 1, 100000);
  const std::string_view parts[] = {std::string_view(bytes).substr(0, 10), std::string_view(bytes).substr(10, 50000),
                                    std::string_view(bytes).substr(50010)};
  ASSERT_TRUE(s->Write("p", parts).has_value());
  EXPECT_EQ(MustRead(s.get(), "p"), bytes);
  // In parts: the state into a buffer given for reuse, in place when it is large enough.
  auto whole = Decode(bytes);
  ASSERT_TRUE(whole.has_value());
  EncodedFile got;
  got.state.reserve(whole->session.state.size() + 10);
  const char* at = got.state.data();
  ASSERT_TRUE(s->ReadParts("p", &got).has_value());
  EXPECT_EQ(got.head + got.state + got.trailer, bytes);
  EXPECT_EQ(got.state.data(), at);
  EXPECT_TRUE(got.state == whole->session.state);
  auto decoded = Decode(std::move(got));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(decoded->session.state.data(), at);
  EXPECT_TRUE(decoded->session.tokens == whole->session.tokens);
  EncodedFile none;
  EXPECT_TRUE(s->ReadParts("none", &none).error().Is(ErrorCode::kNotFound));
  // A file whose size is not what its header says is refused before its state is allocated.
  ASSERT_TRUE(s->Write("short", std::string_view(bytes).substr(0, bytes.size() - 1)).has_value());
  EncodedFile shorter;
  EXPECT_TRUE(s->ReadParts("short", &shorter).error().Is(ErrorCode::kTruncated));
  EXPECT_EQ(shorter.state.capacity(), std::string().capacity());
  ASSERT_TRUE(s->Write("long", bytes + "x").has_value());
  EXPECT_TRUE(s->ReadParts("long", &shorter).error().Is(ErrorCode::kCorruptSnapshot));
}

TEST_F(StoreTest, WriterGivesStateBuffersBack) {
  auto s = MustOpen(dir_);
  std::mutex mu;
  std::vector<const char*> given;
  SnapshotWriter w(s.get(), nullptr, nullptr, [&](std::string&& b) {
    std::lock_guard lock(mu);
    given.push_back(b.data());
  });
  const std::string whole = Snap("g", 1, 30000);
  auto d = Decode(whole);
  ASSERT_TRUE(d.has_value());
  auto parts = EncodeParts(std::move(*d));
  ASSERT_TRUE(parts.has_value());
  const char* state = parts->state.data();
  w.Submit("g", std::move(*parts));
  w.Flush();
  EXPECT_EQ(MustRead(s.get(), "g"), whole);
  std::lock_guard lock(mu);
  ASSERT_EQ(given.size(), 1u);
  EXPECT_EQ(given[0], state);
}

TEST_F(StoreTest, WriterBoundsTheBytesItHolds) {
  auto s = MustOpen(dir_);
  std::vector<std::string> files;
  for (int i = 0; i < 30; ++i) files.push_back(Snap("b" + std::to_string(i), 1, 60000));
  const uint64_t bound = files[0].size() + files[0].size() / 2;  // room for one file and a half
  {
    SnapshotWriter w(s.get(), nullptr, nullptr, nullptr, bound);
    std::vector<std::thread> submitters;
    for (int t = 0; t < 3; ++t) {
      submitters.emplace_back([&, t] {
        for (int i = t; i < 30; i += 3) w.Submit("b" + std::to_string(i), files[i]);
      });
    }
    for (auto& t : submitters) t.join();
    w.Flush();
    EXPECT_EQ(w.written(), 30);
    EXPECT_LE(w.peak_queued_bytes(), bound);
    EXPECT_GE(w.peak_queued_bytes(), files[0].size());
    // A file larger than the bound alone still goes through, once the queue is empty.
    SnapshotWriter tight(s.get(), nullptr, nullptr, nullptr, 10);
    tight.Submit("big", files[0]);
    tight.Submit("big2", files[1]);
    tight.Flush();
    EXPECT_EQ(tight.written(), 2);
  }
  for (int i = 0; i < 30; ++i) EXPECT_EQ(MustRead(s.get(), "b" + std::to_string(i)), files[i]) << i;
}

TEST(SpareBuffers, KeepsTheLargestAndFreesThemWhenIdle) {
  SpareBuffers spares(2);
  EXPECT_EQ(spares.Take().capacity(), std::string().capacity());  // none kept: a new one
  std::string a(1000, 'a'), b(5000, 'b'), c(3000, 'c');
  const char* b_at = b.data();
  spares.Give(std::move(a));
  spares.Give(std::move(b));
  spares.Give(std::move(c));        // in place of the smaller, a
  EXPECT_GE(spares.bytes(), 8000);  // b and c, not a
  EXPECT_LT(spares.bytes(), 9000);
  std::string got = spares.Take();
  EXPECT_EQ(got.data(), b_at);  // the largest
  EXPECT_TRUE(got.empty());
  EXPECT_GE(got.capacity(), 5000u);
  EXPECT_GE(spares.bytes(), 3000);
  spares.TrimIdle(std::chrono::hours(1));  // used just now: kept
  EXPECT_GE(spares.bytes(), 3000);
  spares.TrimIdle(std::chrono::seconds(0));
  EXPECT_EQ(spares.bytes(), 0);
}

TEST_F(StoreTest, WriterFlushCoversEveryWorkspace) {
  auto s = MustOpen(dir_);
  SnapshotWriter w(s.get(), nullptr);
  for (int round = 1; round <= 20; ++round) {
    for (const char* ws : {"a", "b", "c"}) w.Submit(ws, Snap(ws, round, 500));
    w.Flush();  // everything submitted before is on disk
    for (const char* ws : {"a", "b", "c"}) EXPECT_EQ(VersionOf(MustRead(s.get(), ws)), round) << ws;
  }
  EXPECT_EQ(w.failed(), 0);
}

TEST_F(StoreTest, WriterWaitIdle) {
  auto s = MustOpen(dir_);
  SnapshotWriter w(s.get(), nullptr);
  w.WaitIdle("nothing");  // nothing queued: returns at once
  for (int v = 1; v <= 10; ++v) {
    const std::string bytes = Snap("x", v, 20000);
    w.Submit("x", bytes);
    w.WaitIdle("x");
    EXPECT_EQ(MustRead(s.get(), "x"), bytes);
  }
}

TEST_F(StoreTest, WriterCountsAndLogsFailures) {
  auto s = MustOpen(dir_ + "/store");
  // The store's directory replaced by a file: every write fails.
  fs::remove_all(dir_ + "/store");
  std::ofstream(dir_ + "/store") << "in the way";
  std::mutex mu;
  std::vector<std::string> lines;
  {
    SnapshotWriter w(s.get(), [&](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu);
      lines.push_back(line);
    });
    w.Submit("a", Snap("a", 1, 100));
    w.Flush();
    EXPECT_EQ(w.failed(), 1);
    EXPECT_EQ(w.written(), 0);
    {
      std::lock_guard<std::mutex> lock(mu);
      ASSERT_EQ(lines.size(), 1u);
      EXPECT_NE(lines[0].find("'a'"), std::string::npos) << lines[0];
      EXPECT_NE(lines[0].find("io_error"), std::string::npos) << lines[0];
      EXPECT_NE(lines[0].find("Not a directory"), std::string::npos) << lines[0];
    }
    w.Submit("b", Snap("b", 1, 100));
    w.Flush();
    EXPECT_EQ(w.failed(), 2);
  }
  EXPECT_EQ(lines.size(), 2u);
}

TEST_F(StoreTest, WriterDestructorFinishesTheQueue) {
  auto s = MustOpen(dir_);
  std::vector<std::string> files;
  for (int k = 0; k < 6; ++k) files.push_back(Snap("w" + std::to_string(k), k + 1, 30000));
  {
    SnapshotWriter w(s.get(), nullptr);
    for (int k = 0; k < 6; ++k) w.Submit("w" + std::to_string(k), files[k]);
  }
  for (int k = 0; k < 6; ++k) EXPECT_EQ(MustRead(s.get(), "w" + std::to_string(k)), files[k]) << k;
}

TEST_F(StoreTest, WriterConcurrentSubmitters) {
  auto s = MustOpen(dir_);
  SnapshotWriter w(s.get(), nullptr);
  constexpr int kThreads = 3, kRounds = 30;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string ws = "t" + std::to_string(t);
      for (int r = 1; r <= kRounds; ++r) {
        w.Submit(ws, Snap(ws, r, 2000));
        if (r % 10 == 0) {
          w.Flush();
          if (VersionOf(MustRead(s.get(), ws)) != r) ADD_FAILURE() << ws << " after Flush is not version " << r;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  w.Flush();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(VersionOf(MustRead(s.get(), "t" + std::to_string(t))), kRounds);
  EXPECT_EQ(w.failed(), 0);
}

}  // namespace
}  // namespace modeld::snapshot
