// The watcher against a real daemon started in-process: each step changes the directory the way
// editors and tools do, then waits until the workspace's files, read back from its context, are
// the ones expected. Waits are on that state, with a generous deadline, never on a fixed sleep.
#include "client/watcher.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "daemon/server.h"
#include "llama/test_models.h"
#include "workspace/text_format.h"

namespace modeld::client {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Files = std::map<std::string, std::string>;
using namespace std::chrono_literals;

constexpr auto kDeadline = 60s;

const std::string& TinyModel() {
  static const std::string path = testing::GeneratedModel("tiny", "watcher-test-tiny");
  return path;
}

SessionConfig Config() {
  SessionConfig c;
  c.n_ctx = 2048;
  c.threads = 2;
  return c;
}

// Unix socket paths are limited to ~108 bytes; fall back to /tmp for a deep build folder.
std::string SocketPath(const std::string& tag) {
  std::string dir = MODELD_TEST_TMP;
  if (dir.size() > 80) dir = fs::temp_directory_path().string();
  return dir + "/watcher-test-" + std::to_string(getpid()) + "-" + tag + ".sock";
}

std::unique_ptr<daemon::Server> StartDaemon(const std::string& socket) {
  daemon::ServerOptions opt;
  opt.socket_path = socket;
  opt.models = {TinyModel()};
  opt.threads = 2;
  opt.log_requests = false;
  auto s = daemon::Server::Start(opt);
  EXPECT_TRUE(s.has_value()) << s.error().ToString();
  return s ? std::move(*s) : nullptr;
}

// A fresh directory under the system temp folder, outside this project's git work tree (git would
// otherwise see the test's files as the project's ignored build output).
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(fs::temp_directory_path() / ("watcher-test-" + std::to_string(getpid()) + "-" + name)) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& rel) const { return path_ / rel; }

 private:
  fs::path path_;
};

void Write(const fs::path& p, std::string_view content) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);  // in place: the same inode
  f.write(content.data(), static_cast<std::streamsize>(content.size()));
  ASSERT_TRUE(f.good()) << p;
}

void Shell(const std::string& cmd) { ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd; }

std::string Show(const Files& files) {
  std::string s;
  for (const auto& [path, content] : files) s += "\n  " + path + " (" + std::to_string(content.size()) + " bytes)";
  return s.empty() ? " nothing" : s;
}

// The watcher's log, written from its thread.
class LogLines {
 public:
  std::function<void(const std::string&)> Func() {
    return [this](const std::string& line) {
      std::lock_guard lock(mu_);
      lines_.push_back(line);
    };
  }
  int Count(std::string_view part) const {
    std::lock_guard lock(mu_);
    return static_cast<int>(std::ranges::count_if(lines_, [&](const auto& l) { return l.find(part) != l.npos; }));
  }
  std::string All() const {
    std::lock_guard lock(mu_);
    std::string s;
    for (const auto& l : lines_) s += "\n  " + l;
    return s;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

// A Watcher running on a thread of its own until destroyed.
class Running {
 public:
  Running(const Client& c, WatcherOptions opt)
      : watcher_(c, std::move(opt)), thread_([this](std::stop_token stop) { status_ = watcher_.Run(stop); }) {}
  ~Running() {
    thread_.request_stop();
    thread_.join();
    EXPECT_TRUE(status_.has_value()) << status_.error().ToString();
  }

 private:
  Watcher watcher_;
  Status status_;
  std::jthread thread_;  // last: started after the members it uses
};

// Waits until the workspace's files, rebuilt from its context, are `want`.
::testing::AssertionResult HasFiles(const Client& c, const std::string& ws, const Files& want, const LogLines& log) {
  const auto deadline = Clock::now() + kDeadline;
  std::string last;
  for (;;) {
    auto ctx = c.Context(ws);
    auto files = ctx ? workspace::ReconstructFiles(*ctx) : Result<Files>(Fail(ctx.error()));
    if (files && *files == want) return ::testing::AssertionSuccess();
    last = files ? Show(*files) : " " + files.error().ToString();
    if (Clock::now() > deadline) {
      return ::testing::AssertionFailure()
             << "the workspace holds" << last << "\nnot" << Show(want) << "\nwatcher log:" << log.All();
    }
    std::this_thread::sleep_for(50ms);
  }
}

// Waits until the log has a line containing `part`.
::testing::AssertionResult Logged(const LogLines& log, std::string_view part) {
  const auto deadline = Clock::now() + kDeadline;
  while (log.Count(part) == 0) {
    if (Clock::now() > deadline) return ::testing::AssertionFailure() << "no '" << part << "' in" << log.All();
    std::this_thread::sleep_for(20ms);
  }
  return ::testing::AssertionSuccess();
}

class WatcherTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = StartDaemon(SocketPath("suite")); }
  static void TearDownTestSuite() {
    if (server_) server_->Stop();
    server_.reset();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr) << "the daemon did not start"; }

  static Client MakeClient() { return Client(server_->socket_path()); }

  static std::unique_ptr<daemon::Server> server_;
};
std::unique_ptr<daemon::Server> WatcherTest::server_;

WatcherOptions Options(const TempDir& dir, const std::string& ws, LogLines& log) {
  WatcherOptions opt;
  opt.dir = dir.path().string();
  opt.workspace = ws;
  opt.config = Config();
  opt.log = log.Func();
  return opt;
}

// A git repository edited the way a developer does, step by step.
TEST_F(WatcherTest, FollowsAGitWorkTree) {
  const Client c = MakeClient();
  const std::string ws = "watch-git";
  TempDir dir("git");
  const auto git_init = [&] { Shell("git init -q " + dir.path().string()); };
  git_init();
  Files want = {
      {".gitignore", "*.log\nbuild/\n"},
      {"README.md", "# demo\nA project.\n"},
      {"src/main.c", "#include \"util.h\"\nint main(void) { return clamp(7); }\n"},
      {"src/util.h", "int clamp(int v) { return v > 3 ? 3 : v; }\n"},
  };
  for (const auto& [path, content] : want) Write(dir / path, content);
  // Tracked files stay in git's index when they are deleted or moved: git lists them still.
  Shell("git -C " + dir.path().string() + " add README.md src/util.h && git -C " + dir.path().string() +
        " -c user.email=t@example.com -c user.name=t commit -q -m init");
  Write(dir / "build/out.txt", "ignored: a build folder\n");
  Write(dir / "debug.log", "ignored: *.log\n");
  LogLines log;
  Running watcher(c, Options(dir, ws, log));
  ASSERT_TRUE(HasFiles(c, ws, want, log));
  EXPECT_TRUE(Logged(log, "4 files in the context"));

  // An editor's atomic save: a temp file renamed over the target.
  want["src/main.c"] = "#include \"util.h\"\nint main(void) { return clamp(9); }\n// saved\n";
  Write(dir / "src/.main.c.swp", want["src/main.c"]);
  fs::rename(dir / "src/.main.c.swp", dir / "src/main.c");
  ASSERT_TRUE(HasFiles(c, ws, want, log));

  // In place, at the same size (so size and a coarse mtime alone could not tell).
  want["src/util.h"] = "int clamp(int v) { return v > 4 ? 4 : v; }\n";
  Write(dir / "src/util.h", want["src/util.h"]);
  ASSERT_TRUE(HasFiles(c, ws, want, log));

  fs::remove(dir / "README.md");
  want.erase("README.md");
  ASSERT_TRUE(HasFiles(c, ws, want, log));

  // A rename is sent as one, not as a remove and an add.
  fs::rename(dir / "src/util.h", dir / "src/helpers.h");
  want["src/helpers.h"] = want["src/util.h"];
  want.erase("src/util.h");
  ASSERT_TRUE(HasFiles(c, ws, want, log));
  EXPECT_EQ(log.Count("renamed src/util.h -> src/helpers.h"), 1) << log.All();

  // Ignored files stay out; the file written after them shows the rescan saw them.
  Write(dir / "trace.log", "ignored\n");
  Write(dir / "build/more/deep.txt", "ignored\n");
  want["src/a.c"] = "int a;\n";
  Write(dir / "src/a.c", want["src/a.c"]);
  ASSERT_TRUE(HasFiles(c, ws, want, log));

  // Binary files (a NUL byte, or bytes that are not UTF-8) are left out, each logged once.
  Write(dir / "src/blob.bin", std::string("\x7f"
                                          "ELF\0\0\0\x01",
                                          8));
  Write(dir / "src/latin1.txt", "caf\xe9\n");
  want["src/b.c"] = "int b;\n";
  Write(dir / "src/b.c", want["src/b.c"]);
  ASSERT_TRUE(HasFiles(c, ws, want, log));
  want["src/b.c"] = "int b = 2;\n";
  Write(dir / "src/b.c", want["src/b.c"]);
  ASSERT_TRUE(HasFiles(c, ws, want, log));
  EXPECT_EQ(log.Count("left out src/blob.bin: binary"), 1) << log.All();
  EXPECT_EQ(log.Count("left out src/latin1.txt: binary"), 1) << log.All();

  // A folder removed, then made again with new folders in it at once.
  fs::remove_all(dir / "src");
  std::erase_if(want, [](const auto& kv) { return kv.first.starts_with("src/"); });
  ASSERT_TRUE(HasFiles(c, ws, want, log));
  want["src/new.c"] = "int n;\n";
  want["src/deep/er/x.c"] = "int x;\n";
  Write(dir / "src/new.c", want["src/new.c"]);
  Write(dir / "src/deep/er/x.c", want["src/deep/er/x.c"]);
  ASSERT_TRUE(HasFiles(c, ws, want, log));

  // .gitignore is an ordinary file: a change to it takes its files out.
  want[".gitignore"] += "src/deep/\n";
  Write(dir / ".gitignore", want[".gitignore"]);
  want.erase("src/deep/er/x.c");
  ASSERT_TRUE(HasFiles(c, ws, want, log));

  // The watched directory itself goes away, and comes back as another repository.
  fs::remove_all(dir.path());
  ASSERT_TRUE(Logged(log, "is gone; waiting for it to come back"));
  fs::create_directories(dir.path());
  git_init();
  want = {{"lib.c", "int lib;\n"}, {"docs/guide.md", "Read me.\n"}};
  for (const auto& [path, content] : want) Write(dir / path, content);
  ASSERT_TRUE(HasFiles(c, ws, want, log));
  EXPECT_EQ(log.Count("is gone; waiting"), 1) << log.All();
  EXPECT_TRUE(c.CloseSession(ws).has_value());
}

// Outside git: every file but .git's, the globs, the size limit and the token budget, and the
// repo map that lists what was left out.
TEST_F(WatcherTest, BudgetGlobsAndRepoMap) {
  const Client c = MakeClient();
  const std::string ws = "watch-budget";
  TempDir dir("plain");
  std::string big_c;
  for (int i = 0; i < 80; ++i) big_c += "int value_" + std::to_string(i) + " = " + std::to_string(i * 7) + ";\n";
  Files want = {
      {"a.c", "int a;\n"},
      {"c.c", "int c;\n"},
      {"docs/x.md", "notes\n"},
      {".hidden/h.c", "int h;\n"},  // only .git is skipped
  };
  for (const auto& [path, content] : want) Write(dir / path, content);
  Write(dir / "b.c", big_c);                        // over the budget
  Write(dir / "huge.txt", std::string(3000, 'x'));  // over max_file_bytes
  Write(dir / "blob.c", std::string("\0\1\2", 3));  // binary
  Write(dir / "skip.tmp.c", "excluded\n");          // --exclude
  Write(dir / "notes.rst", "not included\n");       // no --include matches
  Write(dir / ".git/objects/x.c", "not a candidate\n");

  LogLines log;
  WatcherOptions opt = Options(dir, ws, log);
  opt.include = {"*.c", "*.md", "*.txt"};  // `*` crosses '/': "*.c" takes .hidden/h.c
  opt.exclude = {"*.tmp.c"};
  opt.budget_tokens = 200;
  opt.max_file_bytes = 2048;
  {
    Running watcher(c, opt);
    ASSERT_TRUE(HasFiles(c, ws, want, log));
    ASSERT_TRUE(Logged(log, "4 files in the context"));
    EXPECT_EQ(log.Count("3 left out (1 binary, 1 too large, 1 over the token budget)"), 1) << log.All();
    EXPECT_EQ(log.Count("left out b.c: "), 0) << "a full sync names them in the repo map only" << log.All();
    auto ctx = c.Context(ws);
    ASSERT_TRUE(ctx.has_value()) << ctx.error().ToString();
    EXPECT_NE(ctx->find("(4 in this context, 3 left out)"), std::string::npos) << *ctx;
    EXPECT_NE(ctx->find("\nb.c (left out: over the token budget)\n"), std::string::npos) << *ctx;
    EXPECT_NE(ctx->find("\nhuge.txt (left out: too large)\n"), std::string::npos) << *ctx;
    EXPECT_NE(ctx->find("\nblob.c (left out: binary)\n"), std::string::npos) << *ctx;
    EXPECT_EQ(ctx->find("skip.tmp.c"), std::string::npos) << *ctx;
    EXPECT_EQ(ctx->find("notes.rst"), std::string::npos) << *ctx;
    EXPECT_EQ(ctx->find(".git/"), std::string::npos) << *ctx;

    // New files come in while they fit; a file left out comes in once it fits.
    want["d.c"] = "int d;\n";
    Write(dir / "d.c", want["d.c"]);
    ASSERT_TRUE(HasFiles(c, ws, want, log));
    Write(dir / "e.c", big_c + "// e\n");
    want["b.c"] = "int b;\n";
    Write(dir / "b.c", want["b.c"]);
    ASSERT_TRUE(HasFiles(c, ws, want, log));
    EXPECT_TRUE(Logged(log, "left out e.c: "));
  }
  // A restart refreshes the repo map.
  Running watcher(c, opt);
  ASSERT_TRUE(Logged(log, "6 files in the context"));
  auto ctx = c.Context(ws);
  ASSERT_TRUE(ctx.has_value()) << ctx.error().ToString();
  EXPECT_NE(ctx->find("\ne.c (left out: over the token budget)\n"), std::string::npos) << *ctx;
  EXPECT_NE(ctx->find("\nb.c\n"), std::string::npos) << *ctx;
  EXPECT_TRUE(c.CloseSession(ws).has_value());
}

// One full sync, driven directly: the watcher owns the workspace's files, so one put by hand goes.
TEST_F(WatcherTest, SyncOnceMakesTheWorkspaceTheDirectory) {
  const Client c = MakeClient();
  const std::string ws = "watch-once";
  ASSERT_TRUE(c.OpenSession(ws, {}, Config()).has_value());
  ASSERT_TRUE(c.PutFile(ws, "stray.c", "int stray;\n").has_value());
  TempDir dir("once");
  Files want = {{"kept.c", "int kept;\n"}};
  Write(dir / "kept.c", want["kept.c"]);
  Write(dir / "caf\xe9.c", "int latin1_name;\n");  // a name JSON cannot carry
  LogLines log;
  Watcher w(c, Options(dir, ws, log));
  ASSERT_TRUE(w.SyncOnce().has_value()) << log.All();
  auto ctx = c.Context(ws);
  ASSERT_TRUE(ctx.has_value()) << ctx.error().ToString();
  auto files = workspace::ReconstructFiles(*ctx);
  ASSERT_TRUE(files.has_value()) << files.error().ToString();
  EXPECT_EQ(*files, want);
  EXPECT_NE(ctx->find("(1 in this context, 0 left out):\nkept.c\n"), std::string::npos)
      << *ctx;  // the map omits the name
  EXPECT_EQ(log.Count("is not UTF-8"), 1) << log.All();
  EXPECT_TRUE(c.CloseSession(ws).has_value());
}

// The daemon goes away and comes back empty: the watcher reopens the workspace and resyncs.
TEST(WatcherRestartTest, SurvivesADaemonRestart) {
  const std::string socket = SocketPath("restart");
  auto server = StartDaemon(socket);
  ASSERT_NE(server, nullptr);
  const Client c(socket);
  const std::string ws = "watch-restart";
  TempDir dir("restart");
  Files want = {{"one.c", "int one;\n"}};
  Write(dir / "one.c", want["one.c"]);
  LogLines log;
  Running watcher(c, Options(dir, ws, log));
  ASSERT_TRUE(HasFiles(c, ws, want, log));

  server->Stop();
  server.reset();
  want["one.c"] = "int one = 1;\n";
  want["two.c"] = "int two;\n";
  Write(dir / "one.c", want["one.c"]);
  Write(dir / "two.c", want["two.c"]);
  ASSERT_TRUE(Logged(log, "cannot reach modeld"));
  server = StartDaemon(socket);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(HasFiles(c, ws, want, log));
  EXPECT_LE(log.Count("modeld at unix:"), 2)
      << "an outage is logged once (a rescan's error, then the retries')" << log.All();
  server->Stop();
}

TEST(WorkspaceIdForDirTest, BaseNameMadeValid) {
  EXPECT_EQ(WorkspaceIdForDir("/home/me/my project/"), "my-project");
  EXPECT_EQ(WorkspaceIdForDir("/srv/app.v2+x@y:z"), "app.v2+x@y:z");
  EXPECT_EQ(WorkspaceIdForDir("/"), "workspace");
  EXPECT_EQ(WorkspaceIdForDir("/tmp/caf\xc3\xa9"), "caf--");
  EXPECT_EQ(WorkspaceIdForDir("/x/" + std::string(200, 'a')).size(), 128u);
}

}  // namespace
}  // namespace modeld::client
