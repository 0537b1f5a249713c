// modeld-bench: replays a coding-agent loop against servers it starts itself, side by side and
// interleaved turn by turn: (a) modeld with its warm session, (b) modeld with reuse off (cold
// every turn), (c) llama.cpp's llama-server with its prompt cache. Then modeld's workspace API in
// its context-assembly modes (assembly.h), then the runtime's overhead against llama-bench. Prints
// a table and writes everything as JSON. See docs/BENCHMARKS.md.
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "assembly.h"
#include "child_process.h"
#include "cli/args.h"
#include "client/client.h"
#include "overhead.h"
#include "systems.h"
#include "workload.h"

#ifndef MODELD_SOURCE_DIR
#define MODELD_SOURCE_DIR "."
#endif
#ifndef MODELD_LLAMA_COMMIT
#define MODELD_LLAMA_COMMIT ""
#endif

namespace modeld::bench {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

constexpr const char* kWarm = "modeld-warm";
constexpr const char* kCold = "modeld-cold";
constexpr const char* kLlamaServer = "llama-server";

constexpr const char* kUsage = R"(usage: modeld-bench --model PATH [options]

Replays a coding-agent loop against (a) modeld warm, (b) modeld cold (reuse off) and
(c) llama-server with cache_prompt, interleaved turn by turn; then modeld's context
assembly (workspace API: cold, in place, edit-aware, edit-aware with eager prefill); then
compares modeld's prefill/decode speed with llama-bench. Starts and stops every server itself.

  --model PATH             GGUF model (all systems use this file)
  --ctx N                  prompt size target in tokens, workspace included (default 4096)
  --n-ctx N                server context size (default: ctx + room for the turns, rounded to 256)
  --turns N                edit turns per pattern, after turn 0 (the first full prompt) (default 6)
  --decode N               tokens decoded per turn, greedy (default 16)
  --edit-pattern LIST      same,rotating,random (comma list; default all three)
  --lines-per-edit N       consecutive lines changed per edit (default 1)
  --files LIST             comma list of files or folders (their C/C++ files, sorted)
                           (default: the pinned llama.cpp tree's src/*.cpp)
  --n-files N              files in the workspace (default 4)
  --threads N              threads for every server and llama-bench (default: all cores)
  --seed N                 edit placement seed (default 42)
  --out FILE.json          results (default modeld-bench.json)
  --modeld PATH            default: modeld next to this binary
  --llama-server PATH      default: build-bench/llama.cpp/bin/llama-server in the source tree
  --llama-bench PATH       default: next to llama-server
  --bench-prompt N         llama-bench -p / modeld prefill tokens (default 512)
  --bench-gen N            llama-bench -n / modeld decode tokens (default 128)
  --bench-rounds N         alternating rounds of llama-bench and modeld (default 3)
  --skip-llama-server      only (a) and (b)
  --skip-llama-bench       no overhead measurement
  --skip-loop              no edit-pattern loop (e.g. to run only the context-assembly phase)
  --assembly-turns N       edit turns of the context-assembly phase: --turns with all four
                           systems, then ws-edit-aware-eager alone up to N (default 50; 0 skips it)
  --assembly-pattern P     same, rotating, random or working-set (default rotating)
  --assembly-n-ctx N       its n_ctx (default: room for --ctx, the conversation of every turn
                           and the notes folded at 0.25 of n_ctx: (ctx + turns*(64+2*decode)) * 4/3)
  --eager-delay-ms N       ws-edit-aware-eager: put -> question (default 1000)
  --think-ms N             idle after each turn of the long run: the agent running tools; the
                           daemon's background compaction gets compute only then (default 0)
  --log-dir DIR            server logs (default: FILE.json's folder, modeld-bench-logs/)
)";

struct Options {
  std::string model, modeld, llama_server, llama_bench, out = "modeld-bench.json", log_dir;
  int64_t ctx = 4096, n_ctx = 0;
  int turns = 6, decode = 16, lines_per_edit = 1, n_files = 4, threads = 0;
  uint64_t seed = 42;
  std::vector<EditPattern> patterns;
  std::vector<std::string> files;
  int bench_prompt = 512, bench_gen = 128, bench_rounds = 3;
  bool skip_llama_server = false, skip_llama_bench = false, skip_loop = false;
  int assembly_turns = 50, eager_delay_ms = 1000, think_ms = 0;
  int64_t assembly_n_ctx = 0;
  EditPattern assembly_pattern = EditPattern::kRotating;
};

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, sep);) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// Files as given; a folder contributes its files with one of `exts`, sorted.
std::vector<std::string> ExpandFiles(const std::vector<std::string>& items, const std::vector<std::string>& exts) {
  std::vector<std::string> out;
  for (const auto& item : items) {
    std::error_code ec;
    if (!fs::is_directory(item, ec)) {
      out.push_back(item);
      continue;
    }
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(item, ec)) {
      const std::string ext = e.path().extension().string();
      if (e.is_regular_file() && std::find(exts.begin(), exts.end(), ext) != exts.end()) {
        found.push_back(e.path().string());
      }
    }
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

std::optional<Options> Parse(int argc, char** argv) {
  cli::Args a(argc, argv, 1);
  if (a.Flag("--help") || a.Flag("-h")) {
    std::fputs(kUsage, stdout);
    std::exit(0);
  }
  Options o;
  o.model = a.Value("--model").value_or("");
  o.ctx = a.Int("--ctx", o.ctx);
  o.n_ctx = a.Int("--n-ctx", 0);
  o.turns = static_cast<int>(a.Int("--turns", o.turns));
  o.decode = static_cast<int>(a.Int("--decode", o.decode));
  o.lines_per_edit = static_cast<int>(a.Int("--lines-per-edit", o.lines_per_edit));
  o.n_files = static_cast<int>(a.Int("--n-files", o.n_files));
  o.threads = static_cast<int>(a.Int("--threads", static_cast<long long>(std::thread::hardware_concurrency())));
  o.seed = static_cast<uint64_t>(a.Int("--seed", static_cast<long long>(o.seed)));
  o.out = a.Value("--out").value_or(o.out);
  o.log_dir = a.Value("--log-dir").value_or("");
  const std::string self_dir = fs::read_symlink("/proc/self/exe").parent_path().string();
  o.modeld = a.Value("--modeld").value_or(self_dir + "/modeld");
  o.llama_server =
      a.Value("--llama-server").value_or(std::string(MODELD_SOURCE_DIR) + "/build-bench/llama.cpp/bin/llama-server");
  o.llama_bench = a.Value("--llama-bench").value_or((fs::path(o.llama_server).parent_path() / "llama-bench").string());
  o.bench_prompt = static_cast<int>(a.Int("--bench-prompt", o.bench_prompt));
  o.bench_gen = static_cast<int>(a.Int("--bench-gen", o.bench_gen));
  o.bench_rounds = static_cast<int>(a.Int("--bench-rounds", o.bench_rounds));
  o.skip_llama_server = a.Flag("--skip-llama-server");
  o.skip_llama_bench = a.Flag("--skip-llama-bench");
  o.skip_loop = a.Flag("--skip-loop");
  o.assembly_turns = static_cast<int>(a.Int("--assembly-turns", o.assembly_turns));
  o.think_ms = static_cast<int>(a.Int("--think-ms", o.think_ms));
  o.eager_delay_ms = static_cast<int>(a.Int("--eager-delay-ms", o.eager_delay_ms));
  o.assembly_n_ctx = a.Int("--assembly-n-ctx", 0);
  if (auto name = a.Value("--assembly-pattern")) {
    auto p = ParseEditPattern(*name);
    if (!p) {
      std::fprintf(stderr, "modeld-bench: unknown assembly pattern '%s' (same, rotating, random, working-set)\n",
                   name->c_str());
      return std::nullopt;
    }
    o.assembly_pattern = *p;
  }
  for (const auto& name : Split(a.Value("--edit-pattern").value_or("same,rotating,random"), ',')) {
    auto p = ParseEditPattern(name);
    if (!p) {
      std::fprintf(stderr, "modeld-bench: unknown edit pattern '%s' (same, rotating, random, working-set)\n",
                   name.c_str());
      return std::nullopt;
    }
    o.patterns.push_back(*p);
  }
  if (auto files = a.Value("--files")) {
    o.files = ExpandFiles(Split(*files, ','), {".cpp", ".cc", ".c", ".h", ".hpp"});
  } else {
    o.files = ExpandFiles({std::string(MODELD_SOURCE_DIR) + "/third_party/llama.cpp/src"}, {".cpp"});
  }
  if (!a.error().empty() || !a.rest().empty() || o.model.empty() || o.patterns.empty() || o.turns < 0 || o.decode < 2 ||
      o.ctx < 64 || o.n_files < 1 || o.threads < 1 || o.bench_rounds < 1 || o.assembly_turns < 0 ||
      o.eager_delay_ms < 0 || o.think_ms < 0) {
    if (!a.error().empty()) std::fprintf(stderr, "modeld-bench: %s\n", a.error().c_str());
    if (!a.rest().empty()) std::fprintf(stderr, "modeld-bench: unexpected argument '%s'\n", a.rest()[0].c_str());
    std::fputs(kUsage, stderr);
    return std::nullopt;
  }
  if (o.n_ctx <= 0) {
    // Room for the conversation the turns add (question + re-tokenized answer) and the decode.
    const int64_t need = o.ctx + o.turns * (64 + 2 * o.decode) + o.decode + 256;
    o.n_ctx = (need + 255) / 256 * 256;
  }
  if (o.assembly_n_ctx <= 0) {
    // The files, the conversation of every turn (the workspace keeps it), and the notes, which
    // are folded in at 0.25 of n_ctx, so the rest must fit in 0.75 of it.
    const int64_t need = (o.ctx + o.assembly_turns * (64 + 2 * o.decode) + o.decode + 256) * 4 / 3;
    o.assembly_n_ctx = (need + 255) / 256 * 256;
  }
  if (o.log_dir.empty()) o.log_dir = (fs::absolute(o.out).parent_path() / "modeld-bench-logs").string();
  return o;
}

// ---- machine facts ----

std::string ReadFirst(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

Json MachineInfo() {
  Json m;
  std::ifstream cpu("/proc/cpuinfo");
  for (std::string line; std::getline(cpu, line);) {
    if (line.starts_with("model name") && !m.contains("cpu")) m["cpu"] = line.substr(line.find(':') + 2);
    if (line.starts_with("flags") && !m.contains("simd")) {
      // The SIMD levels ggml's CPU kernels pick from.
      Json simd = Json::array();
      std::istringstream in(line.substr(line.find(':') + 1));
      for (std::string f; in >> f;) {
        if (f == "avx" || f == "avx2" || f == "fma" || f == "f16c" || f.starts_with("avx512") || f == "amx_int8") {
          simd.push_back(f);
        }
      }
      m["simd"] = simd;
    }
  }
  m["logical_cpus"] = std::thread::hardware_concurrency();
  std::ifstream mem("/proc/meminfo");
  for (std::string line; std::getline(mem, line);) {
    if (line.starts_with("MemTotal:")) m["mem_total_kb"] = std::atoll(line.c_str() + 9);
  }
  utsname u{};
  if (::uname(&u) == 0) m["kernel"] = std::string(u.sysname) + " " + u.release + " " + u.machine;
  return m;
}

// ---- servers ----

struct Server {
  std::string name;
  std::unique_ptr<ChildProcess> proc;
  int64_t peak_rss = 0;
};

Result<Server> StartModeld(const Options& o, const std::string& name, const std::string& socket) {
  auto p = ChildProcess::Start(
      name,
      {o.modeld, "serve", "--socket", socket, "--model", o.model, "--threads", std::to_string(o.threads), "--quiet"},
      o.log_dir + "/" + name + ".log");
  if (!p) return Fail(p.error());
  client::Client c(socket);
  for (int i = 0; i < 1200; ++i) {  // 60 s
    if (c.Health()) return Server{name, std::move(*p), 0};
    if (!(*p)->Alive()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Fail(ErrorCode::kSessionUnavailable, name + " did not start; see " + o.log_dir + "/" + name + ".log");
}

Result<Server> StartLlamaServer(const Options& o, int port) {
  // Same batch sizes, KV type and attention path as modeld's sessions (n_batch = n_ubatch = 512,
  // f16, no flash attention); one slot; the host-memory prompt cache (--cache-ram) off: with one
  // conversation it can never beat the slot's own KV, it only adds copies.
  const std::string t = std::to_string(o.threads);
  auto p = ChildProcess::Start(kLlamaServer,
                               {o.llama_server,
                                "-m",
                                o.model,
                                "-t",
                                t,
                                "-tb",
                                t,
                                "-c",
                                std::to_string(o.n_ctx),
                                "-b",
                                "512",
                                "-ub",
                                "512",
                                "-fa",
                                "off",
                                "-np",
                                "1",
                                "--cache-ram",
                                "0",
                                "-fit",
                                "off",
                                "--no-webui",
                                "--host",
                                "127.0.0.1",
                                "--port",
                                std::to_string(port)},
                               o.log_dir + "/llama-server.log");
  if (!p) return Fail(p.error());
  return Server{kLlamaServer, std::move(*p), 0};
}

// ---- results ----

struct TurnRow {
  int turn = 0;
  std::string edit;
  std::string question;
  std::vector<std::string> order;  // the order the systems ran in
  std::map<std::string, TurnResult> by_system;
};

struct PatternRun {
  EditPattern pattern;
  std::vector<TurnRow> rows;
};

const TurnResult* Find(const TurnRow& row, const std::string& name) {
  auto it = row.by_system.find(name);
  return it == row.by_system.end() ? nullptr : &it->second;
}

// Means over the edit turns (turn >= 1); turn 0 is the first full prompt of the pattern.
struct Summary {
  std::map<std::string, double> mean_ttft_ms;
  std::map<std::string, double> mean_decode_tps;
  std::map<std::string, int64_t> prefilled;  // sum over edit turns
  std::map<std::string, int64_t> reused;
  std::map<std::string, int64_t> last_prompt_tokens;  // each system's own token count
  std::optional<int64_t> max_warm_minus_llama;        // over every turn, turn 0 included
  int edit_turns = 0;
};

Summary Summarize(const std::vector<TurnRow>& rows, const std::vector<std::string>& systems) {
  Summary s;
  for (const auto& name : systems) {
    double ttft = 0, tps = 0;
    int n = 0;
    for (const auto& row : rows) {
      const TurnResult* r = Find(row, name);
      if (!r || row.turn == 0) continue;
      ttft += r->ttft_ms;
      tps += r->decode_tps;
      s.prefilled[name] += r->prefilled;
      s.reused[name] += r->reused;
      s.last_prompt_tokens[name] = r->prompt_tokens;
      ++n;
    }
    s.edit_turns = n;
    if (n > 0) {
      s.mean_ttft_ms[name] = ttft / n;
      s.mean_decode_tps[name] = tps / n;
    }
  }
  for (const auto& row : rows) {
    const TurnResult* a = Find(row, kWarm);
    const TurnResult* c = Find(row, kLlamaServer);
    if (!a || !c) continue;
    const int64_t d = a->prefilled - c->prefilled;
    s.max_warm_minus_llama = s.max_warm_minus_llama ? std::max(*s.max_warm_minus_llama, d) : d;
  }
  return s;
}

double Ratio(const std::map<std::string, double>& m, const char* num, const char* den) {
  auto n = m.find(num), d = m.find(den);
  return n != m.end() && d != m.end() && d->second > 0 ? n->second / d->second : 0;
}

Json ToJson(const TurnResult& r) {
  return Json{{"prompt_tokens", r.prompt_tokens},
              {"reused", r.reused},
              {"prefilled", r.prefilled},
              {"ttft_ms", r.ttft_ms},
              {"decode_tps", r.decode_tps},
              {"generated", r.generated},
              {"server_prefill_ms", r.server_prefill_ms}};
}

Json ToJson(const Summary& s) {
  Json j{{"edit_turns", s.edit_turns},
         {"mean_ttft_ms", s.mean_ttft_ms},
         {"mean_decode_tps", s.mean_decode_tps},
         {"prefilled", s.prefilled},
         {"reused", s.reused},
         {"last_prompt_tokens", s.last_prompt_tokens},
         {"ttft_cold_over_warm", Ratio(s.mean_ttft_ms, kCold, kWarm)}};
  if (s.mean_ttft_ms.contains(kLlamaServer)) {
    j["ttft_llama_server_over_warm"] = Ratio(s.mean_ttft_ms, kLlamaServer, kWarm);
    std::map<std::string, double> p(s.prefilled.begin(), s.prefilled.end());
    j["prefilled_llama_server_over_warm"] = Ratio(p, kLlamaServer, kWarm);
    if (s.max_warm_minus_llama) j["max_prefilled_warm_minus_llama_server"] = *s.max_warm_minus_llama;
  }
  return j;
}

Json ToJson(const Rate& r) { return Json{{"mean", r.Mean()}, {"stddev", r.Stddev()}, {"samples", r.samples}}; }

// ---- printing ----

void PrintHeader(const std::vector<std::string>& systems) {
  std::printf("\n%-4s %-34s", "turn", "edit");
  for (const auto& s : systems) std::printf(" | %-33s", s.c_str());
  std::printf("\n%-4s %-34s", "", "");
  for (size_t i = 0; i < systems.size(); ++i)
    std::printf(" | %7s %7s %9s %7s", "reused", "prefill", "ttft_ms", "tok/s");
  std::printf("\n");
}

void PrintRow(const TurnRow& row, const std::vector<std::string>& systems) {
  std::string edit = row.edit.size() > 34 ? "..." + row.edit.substr(row.edit.size() - 31) : row.edit;
  std::printf("%-4d %-34s", row.turn, edit.c_str());
  for (const auto& s : systems) {
    const TurnResult* r = Find(row, s);
    if (r == nullptr) {
      std::printf(" | %33s", "-");
      continue;
    }
    std::printf(" | %7lld %7lld %9.1f %7.1f", static_cast<long long>(r->reused), static_cast<long long>(r->prefilled),
                r->ttft_ms, r->decode_tps);
  }
  std::printf("\n");
  std::fflush(stdout);
}

void PrintSummary(const std::string& label, const Summary& s, const std::vector<std::string>& systems) {
  std::printf("summary [%s], mean over %d edit turns:\n  TTFT ms:", label.c_str(), s.edit_turns);
  for (const auto& name : systems) {
    if (s.mean_ttft_ms.contains(name)) std::printf("  %s %.1f", name.c_str(), s.mean_ttft_ms.at(name));
  }
  std::printf("\n  TTFT ratios: cold/warm (b/a) %.2fx", Ratio(s.mean_ttft_ms, kCold, kWarm));
  if (s.mean_ttft_ms.contains(kLlamaServer)) {
    std::printf(", llama-server/warm (c/a) %.2fx", Ratio(s.mean_ttft_ms, kLlamaServer, kWarm));
  }
  std::printf("\n  tokens prefilled:");
  for (const auto& name : systems) {
    if (s.prefilled.contains(name))
      std::printf("  %s %lld", name.c_str(), static_cast<long long>(s.prefilled.at(name)));
  }
  if (s.prefilled.contains(kLlamaServer) && s.prefilled.contains(kWarm) && s.prefilled.at(kWarm) > 0) {
    std::printf("  (c/a %.3f)", static_cast<double>(s.prefilled.at(kLlamaServer)) / s.prefilled.at(kWarm));
  }
  std::printf("\n  prompt tokens at the last turn:");
  for (const auto& name : systems) {
    if (s.last_prompt_tokens.contains(name)) {
      std::printf("  %s %lld", name.c_str(), static_cast<long long>(s.last_prompt_tokens.at(name)));
    }
  }
  if (s.max_warm_minus_llama) {
    std::printf("\n  max over turns of prefilled(warm) - prefilled(llama-server): %lld (target <= 0)",
                static_cast<long long>(*s.max_warm_minus_llama));
  }
  std::printf("\n");
}

// ---- the run ----

int Run(const Options& o) {
  std::error_code ec;
  fs::create_directories(o.log_dir, ec);
  char tmpl[] = "/tmp/modeld-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::fprintf(stderr, "modeld-bench: cannot make a temporary folder\n");
    return 1;
  }
  const std::string tmp = tmpl;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code e;
      fs::remove_all(dir, e);
    }
  } cleanup{tmp};
  auto fail = [](const std::string& what, const Error& e) {
    std::fprintf(stderr, "modeld-bench: %s: %s\n", what.c_str(), e.ToString().c_str());
    return 1;
  };

  // Missing binaries are found now, not after the loop has run.
  std::vector<std::string> needed = {o.modeld};
  if (!o.skip_llama_server) needed.push_back(o.llama_server);
  if (!o.skip_llama_bench) needed.push_back(o.llama_bench);
  for (const auto& bin : needed) {
    if (::access(bin.c_str(), X_OK) != 0) {
      std::fprintf(stderr, "modeld-bench: cannot execute %s (build it with scripts/bench.sh, or pass --skip-...)\n",
                   bin.c_str());
      return 1;
    }
  }

  Json out;
  out["load_avg_before"] = ReadFirst("/proc/loadavg");
  std::fprintf(stderr, "load average before: %s\n", ReadFirst("/proc/loadavg").c_str());

  // Servers: two modeld daemons (so each side has its own process to measure) and llama-server.
  std::vector<Server> servers;
  for (const char* name : {kWarm, kCold}) {
    auto s = StartModeld(o, name, tmp + "/" + name + ".sock");
    if (!s) return fail("starting " + std::string(name), s.error());
    servers.push_back(std::move(*s));
  }
  client::Client warm_client(tmp + "/" + std::string(kWarm) + ".sock");
  client::Client cold_client(tmp + "/" + std::string(kCold) + ".sock");
  auto models = warm_client.Models();
  if (!models || models->empty())
    return fail("listing models", models ? Error(ErrorCode::kNotFound, "none") : models.error());
  auto info = warm_client.Describe((*models)[0].model);
  if (!info) return fail("describing the model", info.error());

  SessionConfig cfg;
  cfg.n_ctx = static_cast<int32_t>(o.n_ctx);
  cfg.n_batch = cfg.n_ubatch = 512;
  cfg.threads = o.threads;
  std::vector<std::unique_ptr<System>> systems;
  {
    auto a = ModeldSystem::Open(kWarm, kWarm, warm_client, "bench-warm", cfg);
    if (!a) return fail("opening the warm session", a.error());
    SessionConfig cold_cfg = cfg;
    cold_cfg.reuse = false;
    auto b = ModeldSystem::Open(kCold, kCold, cold_client, "bench-cold", cold_cfg);
    if (!b) return fail("opening the cold session", b.error());
    systems.push_back(std::move(*a));
    systems.push_back(std::move(*b));
  }
  if (!o.skip_llama_server) {
    auto port = FreeLoopbackPort();
    if (!port) return fail("finding a port", port.error());
    auto s = StartLlamaServer(o, *port);
    if (!s) return fail("starting llama-server", s.error());
    auto sys = std::make_unique<LlamaServerSystem>(kLlamaServer, kLlamaServer, *port);
    ChildProcess* proc = s->proc.get();
    if (auto ok = sys->WaitHealthy(std::chrono::seconds(300), [proc] { return proc->Alive(); }); !ok) {
      return fail("starting llama-server (log: " + o.log_dir + "/llama-server.log)", ok.error());
    }
    servers.push_back(std::move(*s));
    systems.push_back(std::move(sys));
  }
  std::vector<std::string> names;
  for (const auto& s : systems) names.push_back(s->name());

  // The workspace, sized with the model's tokenizer.
  auto count = [&](const std::string& text) -> Result<int64_t> {
    auto t = warm_client.Tokenize("bench-warm", text, true);
    if (!t) return Fail(t.error());
    return static_cast<int64_t>(t->size());
  };
  Workload::Options wopt;
  wopt.lines_per_edit = o.lines_per_edit;
  wopt.seed = o.seed;
  if (auto t = warm_client.Tokenize("bench-warm", "<|im_start|>", true); t && t->size() == 1)
    wopt.markers.chatml = true;
  auto files =
      FitWorkspace(o.files, std::string(MODELD_SOURCE_DIR) + "/third_party/llama.cpp/", o.n_files, o.ctx, wopt, count);
  if (!files) return fail("building the workspace", files.error());

  std::printf("model: %s (%s, %u layers, n_embd %u, %u heads / %u kv, vocab %u, %s, %.0f M params)\n", o.model.c_str(),
              info->architecture.c_str(), info->block_count, info->embedding_length, info->head_count,
              info->head_count_kv, info->vocab_size, info->file_type_name.c_str(),
              static_cast<double>(info->parameter_count) / 1e6);
  std::printf("threads %d, n_ctx %lld, prompt target %lld tokens, %d turns x %d decoded tokens, %d line(s) per edit\n",
              o.threads, static_cast<long long>(o.n_ctx), static_cast<long long>(o.ctx), o.turns, o.decode,
              o.lines_per_edit);
  std::printf("workspace:");
  Json jfiles = Json::array();
  for (const auto& f : *files) {
    std::printf(" %s (%zu lines)", f.path.c_str(), f.lines.size());
    jfiles.push_back({{"path", f.path}, {"lines", f.lines.size()}});
  }
  std::printf("\n");

  std::vector<PatternRun> runs;
  size_t rotation = 0;
  const std::vector<EditPattern> loop_patterns = o.skip_loop ? std::vector<EditPattern>{} : o.patterns;
  for (EditPattern pattern : loop_patterns) {
    wopt.pattern = pattern;
    Workload w(*files, wopt);
    PatternRun run{pattern, {}};
    std::printf("\nedit pattern: %s", std::string(EditPatternName(pattern)).c_str());
    PrintHeader(names);
    for (int turn = 0; turn <= o.turns; ++turn) {
      TurnRow row;
      row.turn = turn;
      std::optional<Edit> edit;
      if (turn > 0) edit = w.ApplyEdit(turn);
      row.edit = edit ? edit->Label() : "(first prompt)";
      row.question = w.Question(turn, edit ? &*edit : nullptr);
      const Prompt prompt = w.Build(row.question);
      // Interleaved: each system runs this turn before any runs the next, so noise on a
      // shared machine hits all alike; who goes first rotates, since the system that runs
      // right after another's long prefill was measured slower (a busy VM's clock drops).
      for (size_t k = 0; k < systems.size(); ++k) {
        auto& sys = systems[(k + rotation) % systems.size()];
        auto r = sys->Turn(prompt, DecodeSpec{o.decode});
        if (!r) return fail(sys->name() + " turn " + std::to_string(turn), r.error());
        row.order.push_back(sys->name());
        row.by_system[sys->name()] = std::move(*r);
      }
      ++rotation;
      // The conversation carries the warm system's answer, the same bytes for every system.
      w.AddExchange(row.question, row.by_system[kWarm].text);
      PrintRow(row, names);
      run.rows.push_back(std::move(row));
    }
    PrintSummary(std::string(EditPatternName(pattern)), Summarize(run.rows, names), names);
    runs.push_back(std::move(run));
  }

  // Peak memory before the overhead phase adds a session to the cold daemon.
  for (auto& s : servers) s.peak_rss = s.proc->PeakRssBytes();

  std::optional<Json> assembly;
  if (o.assembly_turns > 0) {
    AssemblyOptions ao;
    ao.cfg = cfg;
    ao.n_ctx = o.assembly_n_ctx;
    ao.turns = o.turns;
    ao.assembly_turns = o.assembly_turns;
    ao.pattern = o.assembly_pattern;
    ao.eager_delay_ms = o.eager_delay_ms;
    ao.think_ms = o.think_ms;
    ao.decode = o.decode;
    ao.tmp_dir = tmp;
    ao.files = *files;
    ao.wopt = wopt;
    auto r = RunAssembly(
        ao, [&](const std::string& name, const std::string& socket) -> Result<std::unique_ptr<ChildProcess>> {
          auto s = StartModeld(o, name, socket);
          if (!s) return Fail(s.error());
          return std::move(s->proc);
        });
    if (!r) return fail("context assembly", r.error());
    assembly = std::move(*r);
  }

  std::optional<OverheadResult> overhead;
  if (!o.skip_llama_bench) {
    SessionConfig ocfg = cfg;
    ocfg.reuse = false;
    ocfg.n_ctx = (o.bench_prompt + o.bench_gen + 64 + 255) / 256 * 256;
    if (auto s = cold_client.OpenSession("bench-overhead", {}, ocfg); !s)
      return fail("opening the overhead session", s.error());
    OverheadOptions oo;
    oo.llama_bench = o.llama_bench;
    oo.model = o.model;
    oo.threads = o.threads;
    oo.n_prompt = o.bench_prompt;
    oo.n_gen = o.bench_gen;
    oo.rounds = o.bench_rounds;
    oo.log_path = o.log_dir + "/llama-bench.log";
    Workload w(*files, wopt);
    auto r = MeasureOverhead(cold_client, "bench-overhead", w.Build(w.Question(0, nullptr)).Text(), oo);
    if (!r) return fail("measuring overhead", r.error());
    overhead = std::move(*r);
  }

  for (auto& s : servers) {
    const std::string how = s.proc->Stop();
    if (how != "exit 0")
      std::fprintf(stderr, "%s stopped: %s (log: %s)\n", s.name.c_str(), how.c_str(), s.proc->log_path().c_str());
  }
  out["load_avg_after"] = ReadFirst("/proc/loadavg");
  std::fprintf(stderr, "load average after: %s\n", ReadFirst("/proc/loadavg").c_str());

  // ---- report ----
  std::vector<TurnRow> all_rows;
  for (const auto& r : runs) all_rows.insert(all_rows.end(), r.rows.begin(), r.rows.end());
  const Summary overall = Summarize(all_rows, names);
  if (!runs.empty()) {
    std::printf("\n== overall (all patterns) ==\n");
    PrintSummary("all", overall, names);
  }
  std::printf("peak RSS (VmHWM):");
  for (const auto& s : servers)
    std::printf("  %s %.0f MiB", s.name.c_str(), static_cast<double>(s.peak_rss) / (1 << 20));
  std::printf("\n");
  if (overhead) {
    std::printf("\noverhead vs llama-bench (%d threads, n_batch 512, %d rounds):\n", o.threads, o.bench_rounds);
    std::printf("  prefill %lld tokens: modeld %.1f t/s (daemon-side %.1f)",
                static_cast<long long>(overhead->modeld_prompt_tokens), overhead->modeld_pp.Mean(),
                overhead->modeld_pp_server.Mean());
    if (overhead->have_bench) {
      std::printf(", llama-bench pp%d %.1f t/s, ratio %.3f", o.bench_prompt, overhead->bench_pp.Mean(),
                  overhead->modeld_pp.Mean() / overhead->bench_pp.Mean());
    }
    std::printf("\n  decode %d tokens: modeld %.2f t/s (daemon-side %.2f)", o.bench_gen, overhead->modeld_tg.Mean(),
                overhead->modeld_tg_server.Mean());
    if (overhead->have_bench) {
      std::printf(", llama-bench tg%d %.2f t/s, ratio %.3f", o.bench_gen, overhead->bench_tg.Mean(),
                  overhead->modeld_tg.Mean() / overhead->bench_tg.Mean());
    }
    std::printf("\n  (ratio = modeld / llama-bench; 0.95 or more is within the 5%% target)\n");
  }

  out["config"] = {{"model", o.model},     {"ctx_target", o.ctx},      {"n_ctx", o.n_ctx},
                   {"turns", o.turns},     {"decode", o.decode},       {"lines_per_edit", o.lines_per_edit},
                   {"n_files", o.n_files}, {"threads", o.threads},     {"seed", o.seed},
                   {"n_batch", 512},       {"skip_loop", o.skip_loop}, {"llama_cpp_commit", MODELD_LLAMA_COMMIT}};
  out["machine"] = MachineInfo();
  out["model"] = {{"architecture", info->architecture},
                  {"block_count", info->block_count},
                  {"embedding_length", info->embedding_length},
                  {"head_count", info->head_count},
                  {"head_count_kv", info->head_count_kv},
                  {"vocab_size", info->vocab_size},
                  {"file_type", info->file_type_name},
                  {"parameter_count", info->parameter_count},
                  {"file_size", info->file_size},
                  {"digest", info->digest}};
  out["workspace"] = jfiles;
  Json jruns = Json::array();
  for (const auto& run : runs) {
    Json turns = Json::array();
    for (const auto& row : run.rows) {
      Json sys;
      for (const auto& [name, r] : row.by_system) sys[name] = ToJson(r);
      turns.push_back(
          {{"turn", row.turn}, {"edit", row.edit}, {"question", row.question}, {"order", row.order}, {"systems", sys}});
    }
    jruns.push_back(
        {{"pattern", EditPatternName(run.pattern)}, {"turns", turns}, {"summary", ToJson(Summarize(run.rows, names))}});
  }
  out["patterns"] = jruns;
  out["overall"] = ToJson(overall);
  Json rss;
  for (const auto& s : servers) rss[s.name] = s.peak_rss;
  out["peak_rss_bytes"] = rss;
  if (assembly) out["assembly"] = std::move(*assembly);
  if (overhead) {
    Json jo{{"n_prompt", o.bench_prompt},
            {"n_gen", o.bench_gen},
            {"rounds", o.bench_rounds},
            {"modeld_prompt_tokens", overhead->modeld_prompt_tokens},
            {"modeld_pp_tps", ToJson(overhead->modeld_pp)},
            {"modeld_pp_tps_daemon_side", ToJson(overhead->modeld_pp_server)},
            {"modeld_tg_tps", ToJson(overhead->modeld_tg)},
            {"modeld_tg_tps_daemon_side", ToJson(overhead->modeld_tg_server)}};
    if (overhead->have_bench) {
      jo["llama_bench_pp_tps"] = ToJson(overhead->bench_pp);
      jo["llama_bench_tg_tps"] = ToJson(overhead->bench_tg);
      jo["pp_ratio"] = overhead->modeld_pp.Mean() / overhead->bench_pp.Mean();
      jo["tg_ratio"] = overhead->modeld_tg.Mean() / overhead->bench_tg.Mean();
    }
    out["overhead"] = jo;
  }
  std::ofstream f(o.out);
  f << out.dump(2) << "\n";
  if (!f) {
    std::fprintf(stderr, "modeld-bench: cannot write %s\n", o.out.c_str());
    return 1;
  }
  std::printf("\nwrote %s (server logs in %s)\n", o.out.c_str(), o.log_dir.c_str());
  return 0;
}

}  // namespace
}  // namespace modeld::bench

int main(int argc, char** argv) {
  auto o = modeld::bench::Parse(argc, argv);
  if (!o) return 2;
  return modeld::bench::Run(*o);
}
