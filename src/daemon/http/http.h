// The daemon's HTTP surface as its handlers see it: a request, a reply (whole, or streamed
// through a Sink) and a router. httplib stays behind http/listener.cpp; handlers never see it.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "wire/codec.h"

namespace modeld::daemon::http {

enum class Method { kGet, kPost, kDelete };

struct Request {
  Method method = Method::kGet;
  std::string path;
  std::string body;
  std::map<std::string, std::string> params;   // path parameters: ":ws" in the pattern -> "ws"
  std::map<std::string, std::string> headers;  // names in lower case
  // Whether the client has closed the connection (checked on a non-streamed reply's long work).
  std::function<bool()> closed = [] { return false; };
  // The header's value, "" when absent; `name` in lower case.
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// A streamed reply body.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual bool Write(std::string_view bytes) = 0;  // false: the client is gone
  virtual bool Open() const = 0;                   // the client is still there
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Set for a streamed body (status and headers are sent first): called once after the handler
  // returns, on the connection's thread; the body ends when it returns. false: drop the
  // connection without ending the body (the client is gone, or the reply cannot be finished).
  std::function<bool(Sink&)> stream;

  void SetJson(int code, const wire::Json& j) {
    status = code;
    content_type = "application/json";
    body = wire::Dump(j);
  }
};

using Handler = std::function<void(const Request&, Response&)>;

struct Route {
  Method method;
  std::string pattern;  // httplib's: "/v1/sessions/:ws"
  Handler handler;
};

class Router {
 public:
  void Get(std::string pattern, Handler h) { routes_.push_back({Method::kGet, std::move(pattern), std::move(h)}); }
  void Post(std::string pattern, Handler h) { routes_.push_back({Method::kPost, std::move(pattern), std::move(h)}); }
  void Delete(std::string pattern, Handler h) {
    routes_.push_back({Method::kDelete, std::move(pattern), std::move(h)});
  }
  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
};

// Events on a streamed body, framed as NDJSON (the native protocol) or server-sent events
// (OpenAI's). Every Send reports whether the client is still there.
class EventStream {
 public:
  enum class Framing { kNdjson, kSse };
  EventStream(Sink& sink, Framing framing) : sink_(sink), framing_(framing) {}
  // One event: a JSON line, or "data: {json}" and a blank line.
  bool Send(const wire::Json& event) { return SendData(wire::Dump(event)); }
  // SSE: "data: TEXT" (e.g. "[DONE]"); NDJSON: TEXT as a line.
  bool SendData(std::string_view text) {
    std::string out = framing_ == Framing::kSse ? "data: " : "";
    out += text;
    out += framing_ == Framing::kSse ? "\n\n" : "\n";
    return sink_.Write(out);
  }
  // SSE: a comment line clients ignore (keeps idle timeouts from dropping a long prefill);
  // NDJSON: nothing.
  bool Comment(std::string_view text) {
    if (framing_ != Framing::kSse) return sink_.Open();
    std::string out = ": ";
    out += text;
    out += "\n\n";
    return sink_.Write(out);
  }
  bool Open() const { return sink_.Open(); }

 private:
  Sink& sink_;
  Framing framing_;
};

}  // namespace modeld::daemon::http
