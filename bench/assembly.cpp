#include "assembly.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <thread>

#include "client/client.h"
#include "systems.h"

namespace modeld::bench {
namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kWsCold = "ws-cold";
constexpr const char* kWsInPlace = "ws-in-place";
constexpr const char* kWsEditAware = "ws-edit-aware";
constexpr const char* kWsEager = "ws-edit-aware-eager";

// One system: its own daemon and workspace (the workspace id is the system's name).
struct AsmSystem {
  std::string name;
  AssemblyMode mode = AssemblyMode::kEditAware;
  bool reuse = true;
  bool eager = false;  // changes prefill in the background; the question comes eager_delay_ms later
  std::unique_ptr<ChildProcess> proc;
  std::optional<client::Client> client;
  // Context() after the previous ask, to see what a turn appended ("" before turn 0, which
  // appends the whole context).
  std::string last_context;
  int64_t peak_rss = 0;
  bool stopped = false;
};

struct AsmTurn {
  std::string change;  // the put's change kind (turn 0: of every file's put)
  int64_t note_bytes = 0;
  // The session's total_prefilled after the ask minus before the put: the eager prefill included.
  int64_t prefilled = 0;
  int64_t ask_prefix_prefilled = 0;  // what the ask found not yet prefilled...
  int64_t ask_suffix_prefilled = 0;  // ... and its question
  // Tokens of the text the turn added to Context(): the note, the question and the answer; -1 when
  // the new context does not extend the old (a compaction, or in-place mode: not measured).
  int64_t appended = -1;
  // The compaction count moved during the turn: the session was swapped for the compacted one,
  // whose total_prefilled counts from its own start, so `prefilled` is not comparable.
  bool compacted = false;
  bool ask_compacted = false;  // the ask itself compacted, in the foreground (AskResult.compacted)
  double ttft_ms = 0;
  // The daemon's own time for the ask's compute: the context still to prefill (none once the
  // eager prefill is done), the question and the first token. With the context ready, what the
  // TTFT cannot go below on this machine, however early the edit came.
  double ask_compute_ms = 0;
  double decode_tps = 0;
  int32_t generated = 0;
  std::string answer;
  WorkspaceStats stats;  // from the ask's reply
};

struct AsmRow {
  int turn = 0;
  std::string edit;
  std::string question;
  std::vector<std::string> order;
  std::map<std::string, AsmTurn> by_system;
};

// modeld::AssemblyModeName lives in the workspace library, which the bench does not link.
std::string ModeName(AssemblyMode m) { return m == AssemblyMode::kEditAware ? "edit_aware" : "in_place"; }

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The daemon's error, its code kept, with what we were doing in front.
Error Wrap(const std::string& what, Error e) {
  std::string m = what + ": " + e.message();
  e.WithMessage(std::move(m));
  return e;
}

std::string FileContent(const SourceFile& f) {
  std::string out;
  for (const auto& l : f.lines) out += l + "\n";
  return out;
}

const std::string* SegmentText(const Prompt& p, const std::string& id) {
  for (const auto& s : p.prefix) {
    if (s.id == id) return &s.content;
  }
  return nullptr;
}

Result<AsmTurn> RunTurn(AsmSystem& s, const AssemblyOptions& opt, const Workload& w, int turn, const Edit* edit,
                        const std::string& question, const client::StableParts& stable) {
  const client::Client& c = *s.client;
  const std::string where = s.name + " turn " + std::to_string(turn) + ": ";
  // Compaction count before the report, and after the ask the report before the count: a swap
  // in between then shows as a changed count, never as a silently wrong difference.
  auto before = c.WorkspaceInfo(s.name);
  if (!before) return Fail(Wrap(where + "workspace info", before.error()));
  auto rep0 = c.Report(s.name);
  if (!rep0) return Fail(Wrap(where + "report", rep0.error()));

  AsmTurn t;
  const bool prefill = s.eager;
  if (edit == nullptr) {
    if (auto ok = c.SetStable(s.name, stable, prefill); !ok) return Fail(Wrap(where + "set stable", ok.error()));
    for (const auto& f : w.files()) {
      auto p = c.PutFile(s.name, f.path, FileContent(f), prefill);
      if (!p) return Fail(Wrap(where + "put " + f.path, p.error()));
      if (t.change.empty()) {
        t.change = p->change;
      } else if (t.change != p->change) {
        t.change = "mixed";
      }
      t.note_bytes += p->note_bytes;
    }
  } else {
    const SourceFile& f = w.files()[edit->file];
    auto p = c.PutFile(s.name, f.path, FileContent(f), prefill);
    if (!p) return Fail(Wrap(where + "put " + f.path, p.error()));
    t.change = p->change;
    t.note_bytes = p->note_bytes;
  }
  if (s.eager) std::this_thread::sleep_for(std::chrono::milliseconds(opt.eager_delay_ms));

  DecodeConfig dc;
  dc.max_tokens = opt.decode;
  dc.temperature = 0.0f;
  WorkspaceStats st;
  const auto t0 = Clock::now();
  ChunkClock clock(t0);
  auto r = c.Ask(
      s.name, question, dc,
      [&](const StreamChunk& ch) {
        if (!ch.text.empty()) clock.Chunk(ch.n_tokens);
        return true;
      },
      &st);
  const auto t1 = Clock::now();
  if (!r) return Fail(Wrap(where + "ask", r.error()));
  t.ttft_ms = clock.any() ? clock.TtftMs() : Ms(t1 - t0);
  t.decode_tps = clock.DecodeTps();
  t.generated = r->decode.tokens_generated;
  t.answer = r->decode.text;
  t.ask_prefix_prefilled = r->prefix.tokens_prefilled;
  t.ask_suffix_prefilled = r->suffix.tokens_prefilled;
  t.ask_compacted = r->compacted;
  t.ask_compute_ms = r->prefix.prefill_ms + r->suffix.prefill_ms + r->decode.first_token_ms;
  t.stats = st;

  // Outside the timed region from here on.
  auto rep1 = c.Report(s.name);
  if (!rep1) return Fail(Wrap(where + "report", rep1.error()));
  std::optional<std::string> ctx;
  if (s.mode == AssemblyMode::kEditAware) {
    auto got = c.Context(s.name);
    if (!got) return Fail(Wrap(where + "context", got.error()));
    ctx = std::move(*got);
  }
  auto after = c.WorkspaceInfo(s.name);
  if (!after) return Fail(Wrap(where + "workspace info", after.error()));
  t.compacted = after->stats.compactions != before->stats.compactions;
  t.prefilled = rep1->report.total_prefilled - rep0->report.total_prefilled;
  if (ctx) {
    if (ctx->starts_with(s.last_context)) {
      const std::string_view added = std::string_view(*ctx).substr(s.last_context.size());
      auto toks = c.Tokenize(s.name, added, true);
      if (!toks) return Fail(Wrap(where + "tokenize", toks.error()));
      t.appended = static_cast<int64_t>(toks->size());
    }
    s.last_context = std::move(*ctx);
  }
  return t;
}

// ---- summary ----

bool EditAware(const std::string& name) { return name == kWsEditAware || name == kWsEager; }

const AsmTurn* Find(const AsmRow& row, const std::string& name) {
  auto it = row.by_system.find(name);
  return it == row.by_system.end() ? nullptr : &it->second;
}

// Per system over the comparison turns (edit turns 1..turns, all four systems ran them).
struct Comparison {
  int turns = 0;
  double mean_ttft_ms = 0;
  double mean_decode_tps = 0;
  int64_t prefilled = 0;  // over the turns with no compaction
  int compacted_turns = 0;
};

// prefilled / appended over a system's edit turns with no compaction.
struct Overhead {
  int turns = 0;
  double max = 0, mean = 0;
};

struct LongRun {
  int edit_turns = 0;
  double mean_ttft_ms = 0;
  int quiet_turns = 0;  // turns whose compaction count did not change
  double mean_ttft_ms_quiet = 0;
  double mean_ask_compute_ms = 0;
  int ready_turns = 0;  // the eager prefill was done when the question came (the ask prefilled no context)
  int64_t min_ctx = std::numeric_limits<int64_t>::max(), max_ctx = 0, max_notes = 0;
  int64_t compactions = 0, compactions_in_place = 0;
  double max_ttft_ms = 0;
  std::vector<std::pair<int, int64_t>> ctx_every_10;  // (turn, context_tokens)
};

std::map<std::string, Comparison> Compare(const std::vector<AsmRow>& rows, int turns,
                                          const std::vector<std::string>& names) {
  std::map<std::string, Comparison> out;
  for (const auto& name : names) {
    Comparison c;
    for (const auto& row : rows) {
      const AsmTurn* t = Find(row, name);
      if (!t || row.turn == 0 || row.turn > turns) continue;
      ++c.turns;
      c.mean_ttft_ms += t->ttft_ms;
      c.mean_decode_tps += t->decode_tps;
      if (t->compacted) {
        ++c.compacted_turns;
      } else {
        c.prefilled += t->prefilled;
      }
    }
    if (c.turns > 0) {
      c.mean_ttft_ms /= c.turns;
      c.mean_decode_tps /= c.turns;
      out[name] = c;
    }
  }
  return out;
}

Overhead PrefillOverAppended(const std::vector<AsmRow>& rows, const std::string& name) {
  Overhead o;
  for (const auto& row : rows) {
    const AsmTurn* t = Find(row, name);
    if (!t || row.turn == 0 || t->compacted || t->appended <= 0) continue;
    const double r = static_cast<double>(t->prefilled) / static_cast<double>(t->appended);
    o.max = std::max(o.max, r);
    o.mean += r;
    ++o.turns;
  }
  if (o.turns > 0) o.mean /= o.turns;
  return o;
}

LongRun SummarizeLong(const std::vector<AsmRow>& rows) {
  LongRun l;
  for (const auto& row : rows) {
    const AsmTurn* t = Find(row, kWsEager);
    if (!t) continue;
    l.compactions = t->stats.compactions;
    l.compactions_in_place = t->stats.compactions_in_place;
    if (row.turn == 0) continue;
    ++l.edit_turns;
    l.mean_ttft_ms += t->ttft_ms;
    l.max_ttft_ms = std::max(l.max_ttft_ms, t->ttft_ms);
    l.mean_ask_compute_ms += t->ask_compute_ms;
    if (t->ask_prefix_prefilled == 0) ++l.ready_turns;
    if (!t->compacted) {
      ++l.quiet_turns;
      l.mean_ttft_ms_quiet += t->ttft_ms;
    }
    l.min_ctx = std::min(l.min_ctx, t->stats.context_tokens);
    l.max_ctx = std::max(l.max_ctx, t->stats.context_tokens);
    l.max_notes = std::max(l.max_notes, t->stats.note_tokens);
    if (row.turn % 10 == 0 || &row == &rows.back()) l.ctx_every_10.emplace_back(row.turn, t->stats.context_tokens);
  }
  if (l.edit_turns > 0) l.mean_ttft_ms /= l.edit_turns;
  if (l.edit_turns > 0) l.mean_ask_compute_ms /= l.edit_turns;
  if (l.quiet_turns > 0) l.mean_ttft_ms_quiet /= l.quiet_turns;
  if (l.edit_turns == 0) l.min_ctx = 0;
  return l;
}

double Over(const std::map<std::string, Comparison>& c, const char* num, const std::string& den) {
  auto n = c.find(num), d = c.find(den);
  return n != c.end() && d != c.end() && d->second.mean_ttft_ms > 0 ? n->second.mean_ttft_ms / d->second.mean_ttft_ms
                                                                    : 0;
}

Json ToJson(const AsmTurn& t) {
  Json j{{"change", t.change},
         {"note_bytes", t.note_bytes},
         {"prefilled", t.prefilled},
         {"ask_prefix_prefilled", t.ask_prefix_prefilled},
         {"ask_suffix_prefilled", t.ask_suffix_prefilled},
         {"ask_compute_ms", t.ask_compute_ms},
         {"appended", t.appended},
         {"compacted", t.compacted},
         {"ask_compacted", t.ask_compacted},
         {"ttft_ms", t.ttft_ms},
         {"decode_tps", t.decode_tps},
         {"generated", t.generated},
         {"answer", t.answer},
         {"context_tokens", t.stats.context_tokens},
         {"log_tokens", t.stats.log_tokens},
         {"note_tokens", t.stats.note_tokens},
         {"compactions", t.stats.compactions},
         {"compactions_in_place", t.stats.compactions_in_place}};
  if (t.appended > 0 && !t.compacted) j["prefilled_over_appended"] = static_cast<double>(t.prefilled) / t.appended;
  return j;
}

// ---- printing ----

std::string Trim(const std::string& s, size_t n) { return s.size() > n ? "..." + s.substr(s.size() - (n - 3)) : s; }

void PrintHeader(const std::vector<std::string>& names) {
  std::printf("\n%-4s %-30s", "turn", "edit");
  for (const auto& n : names) std::printf(" | %-32s", n.c_str());
  std::printf(" | %-20s\n%-4s %-30s", "eager: context", "", "");
  for (size_t i = 0; i < names.size(); ++i) std::printf(" | %-6s %6s %8s %9s", "change", "appnd", "prefill", "ttft_ms");
  std::printf(" | %6s %6s %6s\n", "tokens", "notes", "compct");
}

void PrintRow(const AsmRow& row, const std::vector<std::string>& names) {
  std::printf("%-4d %-30s", row.turn, Trim(row.edit, 30).c_str());
  for (const auto& n : names) {
    const AsmTurn* t = Find(row, n);
    if (t == nullptr) {
      std::printf(" | %32s", "-");
      continue;
    }
    const std::string appended = t->appended >= 0 ? std::to_string(t->appended) : "-";
    const std::string prefilled = std::to_string(t->prefilled) + (t->compacted ? "*" : "");
    std::printf(" | %-6s %6s %8s %9.1f", Trim(t->change, 6).c_str(), appended.c_str(), prefilled.c_str(), t->ttft_ms);
  }
  if (const AsmTurn* e = Find(row, kWsEager)) {
    std::printf(" | %6lld %6lld %6lld", static_cast<long long>(e->stats.context_tokens),
                static_cast<long long>(e->stats.note_tokens), static_cast<long long>(e->stats.compactions));
  }
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

Result<Json> RunAssembly(const AssemblyOptions& opt, const StartDaemon& start) {
  std::vector<AsmSystem> systems(4);
  // Reuse off: every ask prefills the whole context once (ask_prefix_prefilled: the context,
  // ask_suffix_prefilled: the question).
  systems[0].name = kWsCold;
  systems[0].reuse = false;
  systems[1].name = kWsInPlace;
  systems[1].mode = AssemblyMode::kInPlace;
  systems[2].name = kWsEditAware;
  systems[3].name = kWsEager;
  systems[3].eager = true;
  std::vector<std::string> names;
  for (const auto& s : systems) names.push_back(s.name);

  // An early return stops the daemons too (ChildProcess's destructor).
  for (auto& s : systems) {
    const std::string socket = opt.tmp_dir + "/" + s.name + ".sock";
    auto p = start(s.name, socket);
    if (!p) return Fail(Wrap("starting " + s.name, p.error()));
    s.proc = std::move(*p);
    s.client.emplace(socket);
    SessionConfig cfg = opt.cfg;
    cfg.n_ctx = static_cast<int32_t>(opt.n_ctx);
    cfg.reuse = s.reuse;
    auto opened = s.client->OpenSession(s.name, {}, cfg, {}, s.mode);
    if (!opened) return Fail(Wrap("opening workspace " + s.name, opened.error()));
    if (!opened->created) {
      return Fail(ErrorCode::kInvalidArgument, "workspace '" + s.name + "' already had a warm session");
    }
    if (opened->assembly != s.mode) {
      return Fail(ErrorCode::kInternal, s.name + ": the daemon opened the workspace as " + ModeName(opened->assembly) +
                                            ", not " + ModeName(s.mode));
    }
  }
  auto stop = [](AsmSystem& s) {
    s.stopped = true;
    s.peak_rss = s.proc->PeakRssBytes();
    const std::string how = s.proc->Stop();
    if (how != "exit 0") {
      std::fprintf(stderr, "%s stopped: %s (log: %s)\n", s.name.c_str(), how.c_str(), s.proc->log_path().c_str());
    }
  };

  Workload::Options wopt = opt.wopt;
  wopt.pattern = opt.pattern;
  Workload w(opt.files, wopt);
  // The stable part as the loop phase's prompt has it.
  const Prompt first = w.Build(w.Question(0, nullptr));
  const std::string* system_text = SegmentText(first, "system");
  const std::string* repo_map = SegmentText(first, "repo-map");
  if (!system_text || !repo_map) return Fail(ErrorCode::kInternal, "the workload's prompt has no system or repo map");
  const client::StableParts stable{*system_text, std::nullopt, *repo_map};

  const int total = std::max(opt.turns, opt.assembly_turns);
  std::printf(
      "\ncontext assembly: n_ctx %lld, edit pattern %s, %d turns compared, %d for %s (alone after turn %d), "
      "eager delay %d ms\n",
      static_cast<long long>(opt.n_ctx), std::string(EditPatternName(opt.pattern)).c_str(), opt.turns, total, kWsEager,
      opt.turns, opt.eager_delay_ms);
  std::printf(
      "  appnd: tokens the turn appended to the context (note + question + answer); prefill: tokens the\n"
      "  session prefilled from the put to the answer (eager prefill included), * = a compaction swapped\n"
      "  the session during the turn (not comparable)\n");
  PrintHeader(names);

  std::vector<AsmRow> rows;
  size_t rotation = 0;
  std::optional<std::pair<int, Error>> overflow;  // the turn the long run could not fit, and why
  for (int turn = 0; turn <= total && !overflow; ++turn) {
    const bool all = turn <= opt.turns;
    if (turn == opt.turns + 1) {
      // The eager system goes on alone: its background compactions then contend only with its
      // own requests, as with one user.
      for (auto& s : systems) {
        if (s.name != kWsEager) stop(s);
      }
      std::printf("(%s alone from here)\n", kWsEager);
    }
    AsmRow row;
    row.turn = turn;
    std::optional<Edit> edit;
    if (turn > 0) edit = w.ApplyEdit(turn);
    row.edit = edit ? edit->Label() : "(first prompt)";
    row.question = w.Question(turn, edit ? &*edit : nullptr);
    // Interleaved with rotating order, as in the loop phase.
    for (size_t k = 0; k < systems.size(); ++k) {
      AsmSystem& s = systems[all ? (k + rotation) % systems.size() : k];
      if (!all && s.name != kWsEager) continue;
      auto r = RunTurn(s, opt, w, turn, edit ? &*edit : nullptr, row.question, stable);
      // Whether the context stays bounded is what the long run measures: an overflow there is
      // its result, not a failure of the benchmark.
      if (!r && !all && r.error().Is(ErrorCode::kContextOverflow)) {
        overflow.emplace(turn, r.error());
        break;
      }
      if (!r) return Fail(r.error());
      // The agent runs tools between turns: idle time the daemon's background work can use.
      if (!all && opt.think_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(opt.think_ms));
      row.order.push_back(s.name);
      row.by_system[s.name] = std::move(*r);
    }
    if (overflow) {
      std::printf("%-4d %-30s | %s stopped: %s\n", turn, Trim(row.edit, 30).c_str(), kWsEager,
                  overflow->second.ToString().c_str());
      break;
    }
    if (all) ++rotation;
    PrintRow(row, names);
    rows.push_back(std::move(row));
  }
  for (auto& s : systems) {
    if (!s.stopped) stop(s);
  }

  // ---- summary ----
  const auto cmp = Compare(rows, opt.turns, names);
  const LongRun lr = SummarizeLong(rows);
  std::printf("summary [context assembly], mean over edit turns 1-%d:\n  TTFT ms:", opt.turns);
  for (const auto& n : names) {
    if (cmp.contains(n)) std::printf("  %s %.1f", n.c_str(), cmp.at(n).mean_ttft_ms);
  }
  std::printf("\n  TTFT ratios (ws-cold/x, ws-in-place/x):");
  for (const auto& n : names) {
    if (n != kWsCold) std::printf("  %s %.2fx %.2fx", n.c_str(), Over(cmp, kWsCold, n), Over(cmp, kWsInPlace, n));
  }
  std::printf("\n  tokens prefilled:");
  for (const auto& n : names) {
    if (!cmp.contains(n)) continue;
    std::printf("  %s %lld", n.c_str(), static_cast<long long>(cmp.at(n).prefilled));
    if (cmp.at(n).compacted_turns > 0) std::printf(" (%d compacted turns left out)", cmp.at(n).compacted_turns);
  }
  std::printf("\n  prefilled/appended, edit turns with no compaction (target <= 1.2):");
  std::map<std::string, Overhead> overhead;
  for (const auto& n : names) {
    if (!EditAware(n)) continue;
    overhead[n] = PrefillOverAppended(rows, n);
    std::printf("  %s max %.2f mean %.2f (%d turns)", n.c_str(), overhead[n].max, overhead[n].mean, overhead[n].turns);
  }
  std::printf(
      "\n  %s over %d edit turns: TTFT %.1f ms (%.1f ms over the %d turns with no compaction), max %.1f ms; "
      "context ready before the question in %d turns\n  the ask's own compute (context left + question prefill + "
      "first token, daemon-side): mean %.1f ms\n",
      kWsEager, lr.edit_turns, lr.mean_ttft_ms, lr.mean_ttft_ms_quiet, lr.quiet_turns, lr.max_ttft_ms, lr.ready_turns,
      lr.mean_ask_compute_ms);
  if (overflow) {
    std::printf("  CONTEXT NOT BOUNDED: the long run stopped at turn %d: %s\n", overflow->first,
                overflow->second.ToString().c_str());
  }
  std::printf(
      "  context tokens: min %lld max %lld (n_ctx %lld), max note tokens %lld, %lld compactions (%lld in place); by "
      "turn:",
      static_cast<long long>(lr.min_ctx), static_cast<long long>(lr.max_ctx), static_cast<long long>(opt.n_ctx),
      static_cast<long long>(lr.max_notes), static_cast<long long>(lr.compactions),
      static_cast<long long>(lr.compactions_in_place));
  for (const auto& [turn, ctx] : lr.ctx_every_10) std::printf(" %d:%lld", turn, static_cast<long long>(ctx));
  std::printf("\n  peak RSS (VmHWM):");
  for (const auto& s : systems)
    std::printf("  %s %.0f MiB", s.name.c_str(), static_cast<double>(s.peak_rss) / (1 << 20));
  std::printf("\n");

  // ---- JSON ----
  Json out;
  out["config"] = {{"n_ctx", opt.n_ctx},
                   {"turns", opt.turns},
                   {"assembly_turns", total},
                   {"pattern", EditPatternName(opt.pattern)},
                   {"eager_delay_ms", opt.eager_delay_ms},
                   {"think_ms", opt.think_ms},
                   {"decode", opt.decode}};
  Json jsys = Json::array();
  for (const auto& s : systems) {
    jsys.push_back({{"name", s.name}, {"mode", ModeName(s.mode)}, {"reuse", s.reuse}, {"eager", s.eager}});
  }
  out["systems"] = jsys;
  Json turns = Json::array();
  for (const auto& row : rows) {
    Json sys;
    for (const auto& [name, t] : row.by_system) sys[name] = ToJson(t);
    turns.push_back(
        {{"turn", row.turn}, {"edit", row.edit}, {"question", row.question}, {"order", row.order}, {"systems", sys}});
  }
  out["turns"] = turns;
  Json jc;
  for (const auto& [name, c] : cmp) {
    Json j{{"edit_turns", c.turns},
           {"mean_ttft_ms", c.mean_ttft_ms},
           {"mean_decode_tps", c.mean_decode_tps},
           {"prefilled", c.prefilled},
           {"compacted_turns", c.compacted_turns}};
    if (name != kWsCold) j["ttft_cold_over"] = Over(cmp, kWsCold, name);
    if (name != kWsInPlace) j["ttft_in_place_over"] = Over(cmp, kWsInPlace, name);
    if (overhead.contains(name)) {
      j["prefilled_over_appended"] = {
          {"max", overhead[name].max}, {"mean", overhead[name].mean}, {"turns", overhead[name].turns}};
    }
    jc[name] = j;
  }
  Json every10 = Json::array();
  for (const auto& [turn, ctx] : lr.ctx_every_10) every10.push_back({{"turn", turn}, {"context_tokens", ctx}});
  out["summary"] = {{"comparison", jc},
                    {"long_run",
                     {{"system", kWsEager},
                      {"edit_turns", lr.edit_turns},
                      {"mean_ttft_ms", lr.mean_ttft_ms},
                      {"turns_without_compaction", lr.quiet_turns},
                      {"mean_ttft_ms_without_compaction", lr.mean_ttft_ms_quiet},
                      {"mean_ask_compute_ms", lr.mean_ask_compute_ms},
                      {"turns_context_ready", lr.ready_turns},
                      {"min_context_tokens", lr.min_ctx},
                      {"max_context_tokens", lr.max_ctx},
                      {"max_note_tokens", lr.max_notes},
                      {"compactions", lr.compactions},
                      {"compactions_in_place", lr.compactions_in_place},
                      {"max_ttft_ms", lr.max_ttft_ms},
                      {"n_ctx", opt.n_ctx},
                      {"context_bounded", !overflow && lr.max_ctx <= opt.n_ctx},
                      {"context_tokens_by_turn", every10}}}};
  Json rss;
  for (const auto& s : systems) rss[s.name] = s.peak_rss;
  out["peak_rss_bytes"] = rss;
  if (overflow) {
    out["summary"]["long_run"]["stopped"] = {{"turn", overflow->first}, {"error", overflow->second.ToString()}};
  }
  return out;
}

}  // namespace modeld::bench
