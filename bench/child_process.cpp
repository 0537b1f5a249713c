#include "child_process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

namespace modeld::bench {
namespace {

// argv as execv wants it; the strings must outlive the call.
std::vector<char*> CArgv(std::vector<std::string>& args) {
  std::vector<char*> out;
  for (auto& a : args) out.push_back(a.data());
  out.push_back(nullptr);
  return out;
}

// In the forked child: only async-signal-safe calls until exec. A parent that dies (e.g. the
// bench is interrupted) takes its servers with it.
[[noreturn]] void ExecChild(char* const* argv, int out_fd, int err_fd) {
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (out_fd >= 0) ::dup2(out_fd, STDOUT_FILENO);
  if (err_fd >= 0) ::dup2(err_fd, STDERR_FILENO);
  ::execv(argv[0], argv);
  ::_exit(127);
}

int64_t StatusKb(pid_t pid, const char* key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') return std::atoll(line.c_str() + n + 1);
  }
  return 0;
}

std::string Describe(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + ::strsignal(WTERMSIG(status));
  return "unknown";
}

}  // namespace

Result<std::unique_ptr<ChildProcess>> ChildProcess::Start(std::string name, const std::vector<std::string>& argv,
                                                          const std::string& log_path) {
  if (argv.empty() || ::access(argv[0].c_str(), X_OK) != 0) {
    return Fail(ErrorCode::kNotFound, name + ": cannot execute '" + (argv.empty() ? "" : argv[0]) + "'");
  }
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return Fail(ErrorCode::kIoError, "cannot open " + log_path + ": " + std::strerror(errno));
  std::vector<std::string> args = argv;
  std::vector<char*> cargv = CArgv(args);
  const pid_t pid = ::fork();
  if (pid == 0) ExecChild(cargv.data(), log_fd, log_fd);
  ::close(log_fd);
  if (pid < 0) return Fail(ErrorCode::kIoError, name + ": fork failed: " + std::strerror(errno));
  return std::make_unique<ChildProcess>(std::move(name), pid, log_path);
}

ChildProcess::~ChildProcess() { Stop(); }

bool ChildProcess::Alive() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = 0;
    return false;
  }
  return true;
}

int64_t ChildProcess::PeakRssBytes() const { return pid_ > 0 ? StatusKb(pid_, "VmHWM") * 1024 : 0; }
int64_t ChildProcess::RssBytes() const { return pid_ > 0 ? StatusKb(pid_, "VmRSS") * 1024 : 0; }

std::string ChildProcess::Stop() {
  if (pid_ <= 0) return "not running";
  ::kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 100; ++i) {  // 5 s to shut down cleanly
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      return Describe(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = 0;
  return "killed after SIGTERM timed out";
}

Result<int> FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(ErrorCode::kIoError, std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  if (port <= 0) return Fail(ErrorCode::kIoError, "no free loopback port");
  return port;
}

Result<std::string> RunCapture(const std::vector<std::string>& argv, const std::string& stderr_log) {
  if (argv.empty() || ::access(argv[0].c_str(), X_OK) != 0) {
    return Fail(ErrorCode::kNotFound, "cannot execute '" + (argv.empty() ? "" : argv[0]) + "'");
  }
  int pipe_fd[2];
  if (::pipe2(pipe_fd, O_CLOEXEC) != 0) return Fail(ErrorCode::kIoError, std::string("pipe: ") + std::strerror(errno));
  const int err_fd = ::open(stderr_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  std::vector<std::string> args = argv;
  std::vector<char*> cargv = CArgv(args);
  const pid_t pid = ::fork();
  if (pid == 0) ExecChild(cargv.data(), pipe_fd[1], err_fd);
  ::close(pipe_fd[1]);
  if (err_fd >= 0) ::close(err_fd);
  if (pid < 0) {
    ::close(pipe_fd[0]);
    return Fail(ErrorCode::kIoError, std::string("fork: ") + std::strerror(errno));
  }
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(pipe_fd[0], buf, sizeof(buf));
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(pipe_fd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Fail(ErrorCode::kInternal, argv[0] + " failed (" + Describe(status) + "); see " + stderr_log);
  }
  return out;
}

}  // namespace modeld::bench
