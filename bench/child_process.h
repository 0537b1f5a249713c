// A server the benchmark starts itself, so it knows the pid and can read the process's peak
// resident memory from /proc before stopping it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "modeld/error.h"

namespace modeld::bench {

class ChildProcess {
 public:
  // Starts argv[0] with stdout and stderr appended to `log_path` (servers are chatty; the log
  // is kept for post-mortems).
  static Result<std::unique_ptr<ChildProcess>> Start(std::string name, const std::vector<std::string>& argv,
                                                     const std::string& log_path);
  // SIGTERM, then SIGKILL if it has not exited within a few seconds.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // False once the process has exited (it is reaped then).
  bool Alive();
  // VmHWM (peak resident set) and VmRSS in bytes; 0 when unreadable.
  int64_t PeakRssBytes() const;
  int64_t RssBytes() const;
  // Stops it now (as the destructor does); returns a description of how it ended.
  std::string Stop();

  const std::string& name() const { return name_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return pid_; }

  ChildProcess(std::string name, pid_t pid, std::string log_path)
      : name_(std::move(name)), pid_(pid), log_path_(std::move(log_path)) {}

 private:
  std::string name_;
  pid_t pid_ = 0;  // 0 once reaped
  std::string log_path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
Result<int> FreeLoopbackPort();

// Runs argv to completion, capturing stdout (stderr goes to `stderr_log`). For llama-bench.
Result<std::string> RunCapture(const std::vector<std::string>& argv, const std::string& stderr_log);

}  // namespace modeld::bench
