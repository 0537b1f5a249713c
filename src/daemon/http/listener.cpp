#include "daemon/http/listener.h"

#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <exception>
#include <thread>

#include "daemon/connection_threads.h"
#include "wire/codec.h"

namespace modeld::daemon::http {
namespace {

using wire::Json;

// Constant-time comparison for the bearer token.
bool SameSecret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0;
}

// An error the listener answers itself (no such route, bad HTTP, an exception, no token): the
// native shape, plus OpenAI's "type" so that OpenAI clients read it too.
void ReplyError(httplib::Response& res, int status, const Error& e) {
  Json err = wire::ToJson(e);
  err["type"] = status >= 500 ? "server_error" : "invalid_request_error";
  res.status = status;
  res.set_content(wire::Dump(Json{{"error", err}}), "application/json");
}

class DataSinkAdapter final : public Sink {
 public:
  explicit DataSinkAdapter(httplib::DataSink& sink) : sink_(sink) {}
  bool Write(std::string_view bytes) override { return sink_.write(bytes.data(), bytes.size()); }
  bool Open() const override { return sink_.is_writable(); }

 private:
  httplib::DataSink& sink_;
};

Request FromHttplib(Method method, const httplib::Request& req) {
  Request out;
  out.method = method;
  out.path = req.path;
  out.body = req.body;
  out.closed = req.is_connection_closed;
  for (const auto& [k, v] : req.path_params) out.params[k] = v;
  for (const auto& [k, v] : req.headers) {
    std::string name = k;
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    // A repeated header reads as one, its values joined (RFC 9110, 5.3).
    auto [it, fresh] = out.headers.emplace(std::move(name), v);
    if (!fresh) it->second += ", " + v;
  }
  return out;
}

void ToHttplib(Response&& out, httplib::Response& res) {
  res.status = out.status;
  for (const auto& [k, v] : out.headers) res.set_header(k, v);
  if (out.stream) {
    res.set_chunked_content_provider(out.content_type,
                                     [stream = std::move(out.stream)](size_t, httplib::DataSink& sink) {
                                       DataSinkAdapter adapter(sink);
                                       // httplib calls this outside its exception handler: an
                                       // escape would end the process, so it ends the reply.
                                       bool finished = false;
                                       try {
                                         finished = stream(adapter);
                                       } catch (const std::exception& e) {
                                         std::fprintf(stderr, "modeld: a streamed reply failed: %s\n", e.what());
                                       } catch (...) {
                                         std::fprintf(stderr, "modeld: a streamed reply failed\n");
                                       }
                                       if (!finished) return false;  // drops the connection: the body is not ended
                                       sink.done();
                                       return true;
                                     });
    return;
  }
  // An error with no body gets the error handler's.
  if (!out.body.empty() || out.status < 400) res.set_content(std::move(out.body), out.content_type);
}

}  // namespace

struct Listener::Impl {
  httplib::Server server;
  std::thread thread;
};

Listener::Listener(const ListenerOptions& opt, Metrics* metrics) : impl_(std::make_unique<Impl>()) {
  httplib::Server& s = impl_->server;
  s.set_payload_max_length(static_cast<size_t>(opt.max_body_bytes));
  // A thread per connection (ConnectionThreads), up to max_connections, so silent or slow
  // connections cannot hold up the others; past it, connections wait in a queue of as many, and
  // the rest are closed at once. A thread ends with its connection: idle keep-alive after 5 s, a
  // request not sent within kReadTimeoutSeconds of its last byte.
  const size_t max_conn = static_cast<size_t>(std::max(8, opt.max_connections));
  s.new_task_queue = [max_conn] { return new ConnectionThreads(max_conn, max_conn); };
  s.set_read_timeout(kReadTimeoutSeconds, 0);
  s.set_write_timeout(30, 0);
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    Error e(ErrorCode::kNotFound, "no such endpoint: " + req.method + " " + req.path);
    if (res.status == 413)
      e = Error(ErrorCode::kInvalidArgument, "request body too large").WithReason("body_too_large");
    else if (res.status == 400)
      e = Error(ErrorCode::kInvalidArgument, "malformed HTTP request");
    else if (res.status != 404)
      e = Error(ErrorCode::kInvalidArgument, "HTTP error " + std::to_string(res.status));
    ReplyError(res, res.status, e);
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
    }
    const Error e(ErrorCode::kInternal, what);
    ReplyError(res, wire::HttpStatus(e.code()), e);
  });
  const bool log = opt.log_requests;
  s.set_logger([metrics, log](const httplib::Request& req, const httplib::Response& res) {
    metrics->CountRequest(req.matched_route.empty() ? std::string("other") : req.matched_route, res.status);
    if (log) std::fprintf(stderr, "modeld: %s %s -> %d\n", req.method.c_str(), req.path.c_str(), res.status);
  });
  if (!opt.token.empty()) {
    s.set_pre_routing_handler([token = opt.token](const httplib::Request& req, httplib::Response& res) {
      const std::string auth = req.get_header_value("Authorization");
      if (auth.size() > 7 && auth.compare(0, 7, "Bearer ") == 0 && SameSecret(auth.substr(7), token)) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      ReplyError(res, 401, Error(ErrorCode::kUnauthorized, "missing or wrong bearer token"));
      return httplib::Server::HandlerResponse::Handled;
    });
  }
}

Listener::~Listener() {
  Stop();
  Join();
}

void Listener::Mount(const Router& router) {
  httplib::Server& s = impl_->server;
  for (const Route& route : router.routes()) {
    auto handler = [method = route.method, h = route.handler](const httplib::Request& req, httplib::Response& res) {
      Response out;
      h(FromHttplib(method, req), out);
      ToHttplib(std::move(out), res);
    };
    switch (route.method) {
      case Method::kGet:
        s.Get(route.pattern, handler);
        break;
      case Method::kPost:
        s.Post(route.pattern, handler);
        break;
      case Method::kDelete:
        s.Delete(route.pattern, handler);
        break;
    }
  }
}

Status Listener::ListenUnix(const std::string& path) {
  httplib::Server& s = impl_->server;
  s.set_address_family(AF_UNIX);
  const mode_t old_mask = ::umask(0177);  // the socket file is created 0600
  const bool bound = s.bind_to_port(path, 80);
  ::umask(old_mask);
  if (!bound) return Fail(ErrorCode::kIoError, "cannot listen on " + path);
  ::chmod(path.c_str(), 0600);
  impl_->thread = std::thread([&s] { s.listen_after_bind(); });
  return {};
}

Result<int> Listener::ListenTcp(const std::string& host, int port) {
  httplib::Server& s = impl_->server;
  const int bound = port < 0 ? s.bind_to_any_port(host) : (s.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) return Fail(ErrorCode::kIoError, "cannot listen on " + host + ":" + std::to_string(port));
  impl_->thread = std::thread([&s] { s.listen_after_bind(); });
  return bound;
}

void Listener::WaitUntilReady() {
  if (impl_->thread.joinable()) impl_->server.wait_until_ready();
}

void Listener::Stop() { impl_->server.stop(); }

void Listener::Join() {
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace modeld::daemon::http
