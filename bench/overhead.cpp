#include "overhead.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>

#include "child_process.h"
#include "systems.h"

namespace modeld::bench {
namespace {

using Json = nlohmann::json;

// The longest prefix of `text` (cut on a UTF-8 boundary) that tokenizes to at most n tokens.
Result<std::pair<std::string, int64_t>> FitTokens(const client::Client& c, const std::string& ws,
                                                  const std::string& text, int64_t n) {
  auto count = [&](size_t len) -> Result<int64_t> {
    auto t = c.Tokenize(ws, std::string_view(text).substr(0, len), true);
    if (!t) return Fail(t.error());
    return static_cast<int64_t>(t->size());
  };
  size_t lo = 0, hi = text.size();
  while (lo < hi) {
    size_t mid = (lo + hi + 1) / 2;
    while (mid > lo + 1 && (static_cast<unsigned char>(text[mid]) & 0xC0) == 0x80) --mid;
    auto k = count(mid);
    if (!k) return Fail(k.error());
    if (*k <= n) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  auto k = count(lo);
  if (!k) return Fail(k.error());
  return std::make_pair(text.substr(0, lo), *k);
}

Status RunBench(const OverheadOptions& opt, OverheadResult* out) {
  auto json = RunCapture({opt.llama_bench, "-m", opt.model, "-t", std::to_string(opt.threads), "-p",
                          std::to_string(opt.n_prompt), "-n", std::to_string(opt.n_gen), "-r", "1", "-b",
                          std::to_string(opt.n_batch), "-ub", std::to_string(opt.n_batch), "-fa", "0", "-o", "json"},
                         opt.log_path);
  if (!json) return Fail(json.error());
  const Json j = Json::parse(*json, nullptr, false);
  if (!j.is_array()) return Fail(ErrorCode::kInternal, "llama-bench printed no JSON array; see " + opt.log_path);
  for (const auto& t : j) {
    const double ts = t.value("avg_ts", 0.0);
    if (t.value("n_prompt", 0) > 0 && t.value("n_gen", 0) == 0) out->bench_pp.samples.push_back(ts);
    if (t.value("n_gen", 0) > 0 && t.value("n_prompt", 0) == 0) out->bench_tg.samples.push_back(ts);
  }
  return {};
}

}  // namespace

double Rate::Mean() const {
  return samples.empty() ? 0
                         : std::accumulate(samples.begin(), samples.end(), 0.0) / static_cast<double>(samples.size());
}

double Rate::Stddev() const {
  if (samples.size() < 2) return 0;
  const double m = Mean();
  double s = 0;
  for (double x : samples) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(samples.size() - 1));
}

Result<OverheadResult> MeasureOverhead(const client::Client& c, const std::string& ws, const std::string& text,
                                       const OverheadOptions& opt) {
  OverheadResult out;
  auto fitted = FitTokens(c, ws, text, opt.n_prompt);
  if (!fitted) return Fail(fitted.error());
  out.modeld_prompt_tokens = fitted->second;
  const ContextManifest pp({ManifestSegment::Make("text", SegmentKind::kFile, fitted->first, true)});
  // tg as llama-bench runs it: from (almost) empty memory, so attention cost matches.
  const ContextManifest one({ManifestSegment::Make("start", SegmentKind::kOther, "\n", true)});

  auto modeld_pp = [&]() -> Status {
    const auto t0 = Clock::now();
    auto st = c.EnsurePrefix(ws, PrefixInput{pp, {}});
    if (!st) return Fail(st.error());
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    out.modeld_pp.samples.push_back(static_cast<double>(st->tokens_prefilled) / s);
    out.modeld_pp_server.samples.push_back(static_cast<double>(st->tokens_prefilled) / (st->prefill_ms / 1000.0));
    return {};
  };
  auto modeld_tg = [&](int n, bool record) -> Status {
    auto st = c.EnsurePrefix(ws, PrefixInput{one, {}});
    if (!st) return Fail(st.error());
    DecodeConfig dc;
    dc.max_tokens = n;
    ChunkClock clock(Clock::now());
    auto dr = c.Decode(ws, dc, [&](const StreamChunk& ch) {
      if (!ch.text.empty()) clock.Chunk(ch.n_tokens);
      return true;
    });
    if (!dr) return Fail(dr.error());
    if (record) {
      out.modeld_tg.samples.push_back(clock.DecodeTps());
      out.modeld_tg_server.samples.push_back(dr->tokens_per_second);
      if (dr->tokens_generated < n) {
        std::fprintf(stderr, "overhead: modeld decode stopped after %d of %d tokens (%s)\n", dr->tokens_generated, n,
                     std::string(FinishReasonName(dr->finish)).c_str());
      }
    }
    return {};
  };

  // Warm-up, as llama-bench does before each test.
  if (auto ok = modeld_pp(); !ok) return Fail(ok.error());
  out.modeld_pp = {};
  out.modeld_pp_server = {};
  if (auto ok = modeld_tg(8, false); !ok) return Fail(ok.error());

  auto modeld_round = [&]() -> Status {
    if (auto ok = modeld_pp(); !ok) return ok;
    return modeld_tg(opt.n_gen, true);
  };
  auto bench_round = [&]() -> Status {
    if (opt.llama_bench.empty()) return {};
    out.have_bench = true;
    return RunBench(opt, &out);
  };
  for (int r = 0; r < opt.rounds; ++r) {
    std::fprintf(stderr, "overhead round %d/%d\n", r + 1, opt.rounds);
    // Alternate who goes first: whatever runs after a long burst of work may find the clock lower.
    const bool bench_first = r % 2 == 0;
    if (auto ok = bench_first ? bench_round() : modeld_round(); !ok) return Fail(ok.error());
    if (auto ok = bench_first ? modeld_round() : bench_round(); !ok) return Fail(ok.error());
  }
  return out;
}

}  // namespace modeld::bench
