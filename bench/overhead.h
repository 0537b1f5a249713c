// The runtime's own overhead: modeld's prefill and decode speed against llama-bench's pp and tg
// on the same model and threads, the two measured in alternating rounds.
#pragma once

#include <string>
#include <vector>

#include "client/client.h"
#include "modeld/error.h"

namespace modeld::bench {

struct Rate {
  std::vector<double> samples;  // tokens per second, one per round
  double Mean() const;
  double Stddev() const;
};

struct OverheadOptions {
  std::string llama_bench;  // path; "" = skip llama-bench (modeld's side is still measured)
  std::string model;
  int threads = 1;
  int n_prompt = 512;
  int n_gen = 128;
  int rounds = 3;
  int n_batch = 512;
  std::string log_path;
};

struct OverheadResult {
  int64_t modeld_prompt_tokens = 0;         // what the fitted text tokenized to
  Rate modeld_pp, modeld_tg;                // client side: wall time of the call / chunk clock
  Rate modeld_pp_server, modeld_tg_server;  // the daemon's own timings
  Rate bench_pp, bench_tg;                  // llama-bench avg_ts
  bool have_bench = false;
};

// `text` is cut to about n_prompt tokens; the workspace session must be open with reuse off.
Result<OverheadResult> MeasureOverhead(const client::Client& c, const std::string& workspace, const std::string& text,
                                       const OverheadOptions& opt);

}  // namespace modeld::bench
