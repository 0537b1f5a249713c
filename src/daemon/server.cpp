#include "daemon/server.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "daemon/context.h"
#include "daemon/http/listener.h"
#include "daemon/native/native_api.h"
#include "daemon/openai/openai_api.h"
#include "modeld/registry.h"
#include "modeld/service.h"

namespace modeld::daemon {
namespace {

namespace fs = std::filesystem;

bool IsLoopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

// Makes `path` free for our socket without ever deleting what is not a stale socket: a path that
// is not a socket, or a socket something answers on, is refused and left as it is.
Status ClaimSocketPath(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return Fail(ErrorCode::kIoError, "cannot use " + path + " as the socket: " + std::strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Fail(ErrorCode::kInvalidArgument,
                path + " exists and is not a socket; refusing to replace it (choose another --socket)");
  }
  // A live daemon (or anything else) answers on it; a stale socket left by a crash refuses.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(ErrorCode::kIoError, std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 || errno != ECONNREFUSED;
  ::close(fd);
  if (live) return Fail(ErrorCode::kInvalidArgument, "something is already serving on " + path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Fail(ErrorCode::kIoError, "cannot remove the stale socket " + path + ": " + std::strerror(errno));
  }
  return {};
}

Status ValidateOptions(const ServerOptions& opt) {
  if (opt.socket_path.empty() && opt.port == 0) {
    return Fail(ErrorCode::kInvalidArgument, "nothing to listen on: give a socket path or a port");
  }
  if (opt.port != 0) {
    if (!IsLoopback(opt.host) && !opt.allow_remote) {
      return Fail(ErrorCode::kInvalidArgument,
                  "refusing to listen on non-loopback address " + opt.host + " (pass --allow-remote to do it anyway)");
    }
    if (opt.token.empty()) return Fail(ErrorCode::kInvalidArgument, "a TCP listener needs a bearer token");
    if (opt.token.size() < kMinTokenBytes) {
      return Fail(ErrorCode::kInvalidArgument, "the bearer token is " + std::to_string(opt.token.size()) +
                                                   " bytes; at least " + std::to_string(kMinTokenBytes) +
                                                   " are required (e.g. openssl rand -hex 24)");
    }
  }
  if (opt.models.empty()) return Fail(ErrorCode::kInvalidArgument, "no model to serve");
  if (opt.snapshot_budget_bytes < 0) return Fail(OutOfRange("--snapshot-budget-mb", ">= 0", "negative"));
  if (opt.snapshot_idle.count() < 0) return Fail(OutOfRange("--snapshot-idle-s", ">= 0", "negative"));
  if (opt.threads < 0 || opt.threads > HardwareThreads()) {
    return Fail(OutOfRange("--threads", "0 (all) or in [1, " + std::to_string(HardwareThreads()) + "]",
                           std::to_string(opt.threads), "this machine's hardware threads"));
  }
  if (!SessionAvailable()) {
    return Fail(Error(ErrorCode::kSessionUnavailable, "no session backend is compiled into this build")
                    .WithReason("no_backend"));
  }
  return {};
}

}  // namespace

struct Server::Impl {
  ServerContext ctx;
  http::Router router;
  // Declared after ctx: destroyed first, so no handler outlives what it works on.
  std::unique_ptr<http::Listener> unix_listener;
  std::unique_ptr<http::Listener> tcp_listener;
  int bound_port = 0;
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stopped = false;  // Stop() has begun
  bool done = false;     // Stop() has finished

  std::unique_ptr<http::Listener> MakeListener(const std::string& token) {
    http::ListenerOptions lo;
    lo.max_body_bytes = ctx.opt.max_body_bytes;
    lo.max_connections = ctx.opt.max_connections;
    lo.log_requests = ctx.opt.log_requests;
    lo.token = token;
    auto l = std::make_unique<http::Listener>(lo, &ctx.metrics);
    l->Mount(router);
    return l;
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Stop(); }

Result<std::unique_ptr<Server>> Server::Start(const ServerOptions& opt) {
  if (auto ok = ValidateOptions(opt); !ok) return Fail(ok.error());
  auto impl = std::make_unique<Impl>();
  ServerContext& ctx = impl->ctx;
  ctx.opt = opt;
  ctx.gate = std::make_shared<ComputeGate>(opt.background_grace);
  for (const auto& path : opt.models) {
    OpenSessionRequest req;
    req.model_path = path;
    auto info = Service().Describe(req);
    if (!info) return Fail(info.error());
    ServedModel m{fs::path(path).stem().string(), *info};
    if (ctx.FindModel(m.name) != nullptr && !ctx.models.empty()) {
      return Fail(ErrorCode::kInvalidArgument, "two served models are both named '" + m.name + "'");
    }
    ctx.models.push_back(std::move(m));
  }
  ServerContext* c = &ctx;
  ctx.sessions = std::make_unique<SessionManager>(
      [c](const std::string& model, const SessionConfig& cfg) { return c->Plan(*c->FindModel(model), cfg); },
      [c](const std::string& ws, const std::string& model, const SessionConfig& cfg,
          const ProgressFunc& progress) -> Result<std::unique_ptr<Session>> {
        OpenSessionRequest req = c->Request(*c->FindModel(model), cfg);
        req.workspace_id = ws;
        req.progress = progress;
        return Service().OpenSession(req);
      },
      opt.kv_budget_bytes, opt.max_sessions, &ctx.metrics);
  ctx.workers = std::make_unique<WorkspaceWorkers>(ctx.sessions.get(), ctx.gate.get(), &ctx.metrics, opt.log_requests);
  if (!opt.snapshot_dir.empty()) {
    auto snapshots = Snapshots::Start(ctx);
    if (!snapshots) return Fail(snapshots.error());
    ctx.snapshots = std::move(*snapshots);
  }
  // The OpenAI routes first: where both APIs have a path, the first match (OpenAI's) wins.
  openai::RegisterOpenAiApi(impl->router, ctx);
  RegisterNativeApi(impl->router, ctx);

  if (!opt.socket_path.empty()) {
    const fs::path sock(opt.socket_path);
    std::error_code ec;
    if (sock.has_parent_path() && !fs::exists(sock.parent_path(), ec)) {
      fs::create_directories(sock.parent_path(), ec);
      fs::permissions(sock.parent_path(), fs::perms::owner_all, ec);
    }
    if (auto ok = ClaimSocketPath(opt.socket_path); !ok) return Fail(ok.error());
    impl->unix_listener = impl->MakeListener("");
    if (auto ok = impl->unix_listener->ListenUnix(opt.socket_path); !ok) return Fail(ok.error());
  }
  if (opt.port != 0) {
    impl->tcp_listener = impl->MakeListener(opt.token);
    auto port = impl->tcp_listener->ListenTcp(opt.host, opt.port);
    if (!port) return Fail(port.error());  // the Unix listener stops as impl goes
    impl->bound_port = *port;
  }
  ctx.workers->Start();
  if (impl->unix_listener) impl->unix_listener->WaitUntilReady();
  if (impl->tcp_listener) impl->tcp_listener->WaitUntilReady();
  return std::make_unique<Server>(std::move(impl));
}

void Server::Stop() {
  if (!impl_) return;
  {
    std::lock_guard lock(impl_->stop_mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
  }
  ServerContext& ctx = impl_->ctx;
  ctx.stopping = true;  // in-flight decodes see it at their next token
  ctx.stop.request_stop();
  ctx.workers->Stop();  // cancels a compaction under way, so a call waiting for it ends too
  // Both stop accepting before either is waited for.
  if (impl_->unix_listener) impl_->unix_listener->Stop();
  if (impl_->tcp_listener) impl_->tcp_listener->Stop();
  if (impl_->unix_listener) impl_->unix_listener->Join();
  if (impl_->tcp_listener) impl_->tcp_listener->Join();
  if (ctx.snapshots) ctx.snapshots->Stop();  // the idle saver; CloseAll writes every changed workspace
  ctx.sessions->CloseAll();
  if (ctx.snapshots) ctx.snapshots->Flush();
  if (!ctx.opt.socket_path.empty()) {
    std::error_code ec;
    fs::remove(ctx.opt.socket_path, ec);
  }
  {
    std::lock_guard lock(impl_->stop_mu);
    impl_->done = true;
  }
  impl_->stop_cv.notify_all();
}

void Server::Wait() {
  std::unique_lock lock(impl_->stop_mu);
  impl_->stop_cv.wait(lock, [&] { return impl_->done; });
}

const std::string& Server::socket_path() const { return impl_->ctx.opt.socket_path; }
int Server::port() const { return impl_->bound_port; }

}  // namespace modeld::daemon
