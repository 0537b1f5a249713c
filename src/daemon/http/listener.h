// One listening socket of the daemon (a Unix socket, or TCP with a bearer token): the only code
// besides connection_threads.* that sees httplib. It serves the routes of an http::Router, each
// connection on a thread of its own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "daemon/http/http.h"
#include "daemon/metrics.h"
#include "modeld/error.h"

namespace modeld::daemon::http {

// How long a connection may take to send a request (headers and body) before it is closed.
inline constexpr int kReadTimeoutSeconds = 10;

struct ListenerOptions {
  int64_t max_body_bytes = 32LL << 20;
  int max_connections = 1024;  // served on threads of their own; as many more wait in a queue
  bool log_requests = true;    // one line per request on stderr
  std::string token;           // not "": every request needs "Authorization: Bearer TOKEN" (TCP)
};

class Listener {
 public:
  // `metrics` counts every request (by route and status) and outlives the listener.
  Listener(const ListenerOptions& opt, Metrics* metrics);
  ~Listener();  // Stop() and Join()
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Serves the router's routes, in its order (the first match wins). Before Listen*.
  void Mount(const Router& router);
  // Binds `path` (created 0600; the caller has made it free) and serves on a thread of its own.
  Status ListenUnix(const std::string& path);
  // Binds host:port (port < 0: any free port) and serves on a thread of its own. The bound port.
  Result<int> ListenTcp(const std::string& host, int port);
  // Returns once the listen thread accepts connections.
  void WaitUntilReady();
  // Stops accepting; requests in flight go on until Join().
  void Stop();
  // Waits for the listen thread, which ends once every connection has.
  void Join();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace modeld::daemon::http
