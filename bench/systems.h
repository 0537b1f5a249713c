// The systems under test, each behind one interface: given a turn's prompt, run the turn and say
// what it cost. New modes (e.g. an edit-aware modeld that sends edits as change notes) are one
// more System.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client/client.h"
#include "modeld/error.h"
#include "workload.h"

namespace modeld::bench {

using Clock = std::chrono::steady_clock;

struct DecodeSpec {
  int32_t max_tokens = 16;
};

struct TurnResult {
  int64_t prompt_tokens = 0;  // the whole prompt, as this system tokenized it
  int64_t reused = 0;         // tokens kept from the previous turn's KV
  int64_t prefilled = 0;      // tokens evaluated this turn
  double ttft_ms = 0;         // request sent -> first decoded text received (client side)
  double decode_tps = 0;      // tokens after the first / time between first and last chunk
  int32_t generated = 0;
  double server_prefill_ms = 0;  // the server's own prefill timing, for reference
  std::string text;              // the decoded text
};

class System {
 public:
  virtual ~System() = default;
  virtual const std::string& name() const = 0;  // "modeld-warm", ...
  // Which server process serves it (for the peak-RSS report).
  virtual const std::string& server() const = 0;
  virtual Result<TurnResult> Turn(const Prompt& prompt, const DecodeSpec& decode) = 0;
};

// Records chunk arrival times; decode speed comes from the chunks after the first.
class ChunkClock {
 public:
  explicit ChunkClock(Clock::time_point start) : start_(start) {}
  void Chunk(int64_t n_tokens);
  double TtftMs() const;
  double DecodeTps() const;
  bool any() const { return have_first_; }

 private:
  Clock::time_point start_;
  bool have_first_ = false;
  Clock::time_point first_{}, last_{};
  int64_t after_first_ = 0;  // tokens in the chunks after the first
};

// modeld through its wire protocol, one workspace session. Warm: prefix by EnsurePrefix, the new
// question by PrefillSuffix, then Decode. Cold (`reuse=false`): the whole prompt in one
// EnsurePrefix, then Decode, i.e. one full prefill per turn, what a runtime without a warm KV
// pays.
class ModeldSystem final : public System {
 public:
  static Result<std::unique_ptr<ModeldSystem>> Open(std::string name, std::string server, client::Client client,
                                                    std::string workspace, const SessionConfig& cfg);
  ModeldSystem(std::string name, std::string server, client::Client client, std::string workspace, bool warm)
      : name_(std::move(name)),
        server_(std::move(server)),
        client_(std::move(client)),
        workspace_(std::move(workspace)),
        warm_(warm) {}

  const std::string& name() const override { return name_; }
  const std::string& server() const override { return server_; }
  Result<TurnResult> Turn(const Prompt& prompt, const DecodeSpec& decode) override;

  const client::Client& client() const { return client_; }
  const std::string& workspace() const { return workspace_; }

 private:
  std::string name_, server_;
  client::Client client_;
  std::string workspace_;
  bool warm_;
};

// llama.cpp's llama-server: POST /completion with the concatenated prompt, `cache_prompt: true`,
// streamed; counts from the final `timings` (prompt_n evaluated, cache_n reused).
class LlamaServerSystem final : public System {
 public:
  LlamaServerSystem(std::string name, std::string server, int port)
      : name_(std::move(name)), server_(std::move(server)), port_(port) {}
  const std::string& name() const override { return name_; }
  const std::string& server() const override { return server_; }
  Result<TurnResult> Turn(const Prompt& prompt, const DecodeSpec& decode) override;

  // GET /health until it answers 200 (the model is loaded) or `timeout` passes.
  Status WaitHealthy(std::chrono::seconds timeout, const std::function<bool()>& alive) const;

 private:
  std::string name_, server_;
  int port_;
};

ContextManifest ToManifest(const std::vector<Segment>& segments);
std::vector<ManifestSegment> ToSegments(const std::vector<Segment>& segments);

}  // namespace modeld::bench
