// The context-assembly phase: the same edit loop through modeld's workspace API (whole files
// put, questions asked; the daemon assembles the context), in four modes, each in its own daemon:
// a full prefill every turn, files rewritten in place (plain prefix reuse), edit-aware (edits as
// change notes after the conversation), and edit-aware with eager prefill (the edit arrives a
// moment before the question). Then the eager mode alone for a long run, where the notes pile up
// and the daemon compacts them in the background. See docs/BENCHMARKS.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "child_process.h"
#include "modeld/error.h"
#include "modeld/session.h"
#include "workload.h"

namespace modeld::bench {

struct AssemblyOptions {
  SessionConfig cfg;  // the loop phase's; n_ctx is replaced by `n_ctx`
  int64_t n_ctx = 0;
  int turns = 6;            // edit turns that compare all four systems
  int assembly_turns = 50;  // edit turns in all for the eager system (it goes on alone)
  EditPattern pattern = EditPattern::kRotating;
  int eager_delay_ms = 1000;  // put -> ask for the eager system
  int think_ms = 0;           // idle after each turn of the long run (the agent running tools)
  int decode = 16;
  std::string tmp_dir;  // daemon sockets go here
  std::vector<SourceFile> files;
  Workload::Options wopt;  // its pattern is replaced by `pattern`
};

// Starts a `modeld serve` on `socket` and waits until it answers (the caller's StartModeld).
using StartDaemon =
    std::function<Result<std::unique_ptr<ChildProcess>>(const std::string& name, const std::string& socket)>;

// Runs the phase, prints its table and summary, stops its daemons; the result is the JSON
// report's "assembly" object.
Result<nlohmann::ordered_json> RunAssembly(const AssemblyOptions& opt, const StartDaemon& start);

}  // namespace modeld::bench
