#include "systems.h"

#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

namespace modeld::bench {
namespace {

using Json = nlohmann::json;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

void ChunkClock::Chunk(int64_t n_tokens) {
  const auto now = Clock::now();
  if (!have_first_) {
    have_first_ = true;
    first_ = last_ = now;
    return;
  }
  last_ = now;
  after_first_ += n_tokens;
}

double ChunkClock::TtftMs() const { return have_first_ ? Ms(first_ - start_) : 0; }

double ChunkClock::DecodeTps() const {
  const double s = Ms(last_ - first_) / 1000.0;
  return have_first_ && after_first_ > 0 && s > 0 ? static_cast<double>(after_first_) / s : 0;
}

std::vector<ManifestSegment> ToSegments(const std::vector<Segment>& segments) {
  std::vector<ManifestSegment> out;
  for (const auto& s : segments) out.push_back(ManifestSegment::Make(s.id, s.kind, s.content, s.parse_special));
  return out;
}

ContextManifest ToManifest(const std::vector<Segment>& segments) { return ContextManifest(ToSegments(segments)); }

Result<std::unique_ptr<ModeldSystem>> ModeldSystem::Open(std::string name, std::string server, client::Client client,
                                                         std::string workspace, const SessionConfig& cfg) {
  auto opened = client.OpenSession(workspace, {}, cfg);
  if (!opened) return Fail(opened.error());
  if (!opened->created) {
    return Fail(ErrorCode::kInvalidArgument, "workspace '" + workspace + "' already had a warm session");
  }
  return std::make_unique<ModeldSystem>(std::move(name), std::move(server), std::move(client), std::move(workspace),
                                        cfg.reuse);
}

Result<TurnResult> ModeldSystem::Turn(const Prompt& prompt, const DecodeSpec& decode) {
  TurnResult r;
  const auto t0 = Clock::now();
  if (warm_) {
    auto ps = client_.EnsurePrefix(workspace_, PrefixInput{ToManifest(prompt.prefix), {}});
    if (!ps) return Fail(ps.error());
    auto ss = client_.PrefillSuffix(workspace_, SuffixInput{ps->manifest_digest, ToSegments(prompt.suffix), {}});
    if (!ss) return Fail(ss.error());
    r.prompt_tokens = ss->tokens_resident;
    r.reused = ps->tokens_reused + ss->tokens_reused;
    r.prefilled = ps->tokens_prefilled + ss->tokens_prefilled;
    r.server_prefill_ms = ps->prefill_ms + ss->prefill_ms;
  } else {
    // With reuse off, PrefillSuffix re-prefills the prefix as well; one manifest holding the
    // whole prompt is the honest cold baseline (one full prefill).
    std::vector<Segment> all = prompt.prefix;
    all.insert(all.end(), prompt.suffix.begin(), prompt.suffix.end());
    auto ps = client_.EnsurePrefix(workspace_, PrefixInput{ToManifest(all), {}});
    if (!ps) return Fail(ps.error());
    r.prompt_tokens = ps->tokens_resident;
    r.reused = ps->tokens_reused;
    r.prefilled = ps->tokens_prefilled;
    r.server_prefill_ms = ps->prefill_ms;
  }
  ChunkClock clock(t0);
  DecodeConfig dc;
  dc.max_tokens = decode.max_tokens;
  dc.temperature = 0.0f;
  auto dr = client_.Decode(workspace_, dc, [&](const StreamChunk& c) {
    if (!c.text.empty()) clock.Chunk(c.n_tokens);
    return true;
  });
  if (!dr) return Fail(dr.error());
  r.ttft_ms = clock.any() ? clock.TtftMs() : Ms(Clock::now() - t0);
  r.decode_tps = clock.DecodeTps();
  r.generated = dr->tokens_generated;
  r.text = dr->text;
  return r;
}

Status LlamaServerSystem::WaitHealthy(std::chrono::seconds timeout, const std::function<bool()>& alive) const {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (!alive()) return Fail(ErrorCode::kSessionUnavailable, name_ + ": llama-server exited during start-up");
    httplib::Client http("127.0.0.1", port_);
    http.set_connection_timeout(std::chrono::seconds(1));
    if (auto res = http.Get("/health"); res && res->status == 200) return {};
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Fail(ErrorCode::kSessionUnavailable, name_ + ": llama-server did not become healthy");
}

Result<TurnResult> LlamaServerSystem::Turn(const Prompt& prompt, const DecodeSpec& decode) {
  // The clock starts before the request is built, as for modeld.
  const auto t0 = Clock::now();
  // Sampling as modeld's greedy decode; only the final's fields we read (it would echo the whole
  // prompt otherwise).
  const Json body = {
      {"prompt", prompt.Text()},
      {"n_predict", decode.max_tokens},
      {"cache_prompt", true},
      {"stream", true},
      {"temperature", 0.0},
      {"seed", 0},
      {"response_fields", {"content", "stop", "timings", "tokens_predicted", "tokens_evaluated"}},
  };
  httplib::Client http("127.0.0.1", port_);
  http.set_keep_alive(false);
  // The request goes out as headers then body; without TCP_NODELAY the body can wait on a
  // delayed ACK, a stall modeld's Unix socket never sees.
  http.set_tcp_nodelay(true);
  http.set_read_timeout(std::chrono::seconds(3600));

  TurnResult r;
  std::string pending, err_body, stream_error;
  int status = 0;
  int64_t predicted = 0;  // tokens_predicted at the last chunk counted
  bool final_seen = false;
  ChunkClock clock(t0);
  auto on_event = [&](const Json& ev) {
    if (ev.contains("error")) {
      stream_error = ev["error"].dump();
      return;
    }
    const std::string content = ev.value("content", std::string());
    const int64_t now_predicted = ev.value("tokens_predicted", predicted);
    if (!content.empty()) {
      clock.Chunk(now_predicted - predicted);
      predicted = now_predicted;
      r.text += content;
    }
    if (ev.value("stop", false) && ev.contains("timings")) {
      final_seen = true;
      const Json& t = ev["timings"];
      r.prefilled = t.value("prompt_n", int64_t{0});
      r.reused = t.value("cache_n", int64_t{0});
      r.server_prefill_ms = t.value("prompt_ms", 0.0);
      r.generated = static_cast<int32_t>(t.value("predicted_n", int64_t{0}));
      r.prompt_tokens = ev.value("tokens_evaluated", r.prefilled + r.reused);
    }
  };

  httplib::Request req;
  req.method = "POST";
  req.path = "/completion";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  // Server-sent events: "data: {...}" lines.
  req.content_receiver = [&](const char* data, size_t n, size_t, size_t) {
    if (status != 200) {
      err_body.append(data, n);
      return true;
    }
    pending.append(data, n);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view line(pending.data() + start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.starts_with("data: ")) continue;
      line.remove_prefix(6);
      if (line == "[DONE]") continue;
      Json ev = Json::parse(line, nullptr, false);
      if (!ev.is_discarded()) on_event(ev);
    }
    pending.erase(0, start);
    return true;
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  if (!http.send(req, res, err)) {
    return Fail(ErrorCode::kSessionUnavailable, name_ + ": /completion failed: " + httplib::to_string(err));
  }
  if (status != 200) return Fail(ErrorCode::kInternal, name_ + ": HTTP " + std::to_string(status) + ": " + err_body);
  if (!stream_error.empty()) return Fail(ErrorCode::kInternal, name_ + ": " + stream_error);
  if (!final_seen) return Fail(ErrorCode::kInternal, name_ + ": the stream ended without its final timings");
  r.ttft_ms = clock.any() ? clock.TtftMs() : Ms(Clock::now() - t0);
  r.decode_tps = clock.DecodeTps();
  return r;
}

}  // namespace modeld::bench
