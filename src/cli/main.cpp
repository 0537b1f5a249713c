// modeld: one binary, subcommands.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cli/args.h"
#include "cli/client_commands.h"
#include "cli/demo.h"
#include "cli/paths.h"
#include "cli/serve.h"
#include "modeld/registry.h"
#include "modeld/service.h"
#include "wire/codec.h"

#ifdef MODELD_WITH_LLAMA
#include "llama/model_writer.h"
#endif

namespace modeld::cli {
namespace {

constexpr const char* kUsage = R"(usage: modeld <command> [options]

commands:
  demo [--model PATH] [--turns N] [--decode N] [--ctx N] [--threads N] [--daemon]
        run a scripted coding loop on a live session and print per-turn reuse and timings
        (no --model: the built-in default model, generated on first use; --daemon: start
        `modeld serve` on a private socket and run the loop through the wire protocol)
  serve [--socket PATH] [--model PATH]... [--port N --token-file FILE] [--host ADDR --allow-remote]
        [--threads N] [--max-ctx N] [--kv-budget-mb N] [--max-sessions N] [--max-body-mb N]
        [--max-connections N] [--ctx-size N] [--flash-attn on|off] [--chat-template-file FILE] [--quiet]
        [--snapshot-dir DIR | --no-snapshots] [--snapshot-budget-mb N] [--snapshot-idle-s N] [--snapshot-warm N]
        run the daemon until SIGINT/SIGTERM (default socket: $MODELD_HOME/modeld.sock;
        no --model: the built-in default model). Workspaces are kept on disk (docs/snapshot.md;
        default DIR: <socket>.snapshots, budget 8192 MiB, written after 30 s idle) and come back
        after a restart: on their first call, or at start for the N most recent (default 1). With --port it also serves OpenAI's /v1 API
        (docs/openai.md): --ctx-size is a conversation's n_ctx, --flash-attn its attention path
        (default off), --chat-template-file a Jinja template used instead of the models' own
  describe [--json] PATH
        print a model's facts, read from its header alone
  make-model --preset NAME --out PATH [--seed N] [--type f16|q8_0|q4_0] [--arch A] [--vocab FILE]
             [--n-embd N --n-layer N --n-head N --n-head-kv N --n-ff N --n-ctx-train N --n-vocab N]
             [--chat-template FILE]
        write a GGUF with random weights for a real architecture (presets: %s)
%s  help
)";

std::string PresetList() {
#ifdef MODELD_WITH_LLAMA
  std::string s;
  for (const auto& p : llama::PresetNames()) s += (s.empty() ? "" : ", ") + p;
  return s;
#else
  return "none in this build";
#endif
}

int Usage(FILE* out) {
  std::fprintf(out, kUsage, PresetList().c_str(), std::string(ClientCommandsUsage()).c_str());
  return out == stdout ? 0 : 2;
}

int Fatal(const std::string& msg) {
  std::fprintf(stderr, "modeld: %s\n", msg.c_str());
  return 1;
}

int CmdDescribe(Args& a) {
  const bool json = a.Flag("--json");
  if (a.rest().size() != 1) return Usage(stderr);
  OpenSessionRequest req;
  req.model_path = a.rest()[0];
  auto info = Service().Describe(req);
  if (!info) {
    if (json) {
      std::printf("%s\n", wire::Dump(wire::Json{{"error", wire::ToJson(info.error())}}, 2).c_str());
    }
    return Fatal(info.error().ToString());
  }
  if (json) {
    std::printf("%s\n", wire::Dump(wire::ToJson(*info), 2).c_str());
    return 0;
  }
  const ModelInfo& m = *info;
  std::printf("%s\n", m.path.c_str());
  std::printf("  backend        %s (GGUF v%u)\n", m.backend.c_str(), m.format_version);
  std::printf("  architecture   %s%s%s\n", m.architecture.c_str(), m.name.empty() ? "" : "  name: ", m.name.c_str());
  std::printf("  parameters     %.3f B in %llu tensors, %s\n", static_cast<double>(m.parameter_count) / 1e9,
              static_cast<unsigned long long>(m.tensor_count), m.file_type_name.c_str());
  std::printf("  context        %u trained\n", m.context_length);
  std::printf("  shape          n_embd %u, %u layers, %u heads, %u KV heads, vocab %u\n", m.embedding_length,
              m.block_count, m.head_count, m.head_count_kv, m.vocab_size);
  std::printf("  pooling        %s\n", m.pooling.empty() ? "(none declared)" : m.pooling.c_str());
  std::printf("  chat template  %s\n", m.has_chat_template ? "yes" : "no");
  std::printf("  file           %.1f MiB, header %.1f KiB\n", static_cast<double>(m.file_size) / (1 << 20),
              static_cast<double>(m.data_offset) / 1024);
  std::printf("  digest         %s\n", m.digest.c_str());
  return 0;
}

int CmdMakeModel(Args& a) {
#ifdef MODELD_WITH_LLAMA
  const std::string preset = a.Value("--preset").value_or("tiny");
  const auto out = a.Value("--out");
  auto spec = llama::PresetSpec(preset, VocabDir());
  if (!spec) return Fatal(spec.error().ToString());
  if (auto v = a.Value("--arch")) spec->arch = *v;
  if (auto v = a.Value("--vocab")) spec->vocab_path = *v;
  if (auto v = a.Value("--type")) spec->weight_type = *v;
  if (auto v = a.Value("--pooling")) spec->pooling = *v;
  if (auto v = a.Value("--chat-template")) {
    auto t = ReadSmallFile(*v, kMaxChatTemplateBytes);
    if (!t) return Fatal("--chat-template: " + t.error().message());
    spec->chat_template = std::move(*t);
  }
  spec->seed = static_cast<uint64_t>(a.Int("--seed", static_cast<long long>(spec->seed)));
  spec->n_embd = static_cast<uint32_t>(a.Int("--n-embd", spec->n_embd));
  spec->n_layer = static_cast<uint32_t>(a.Int("--n-layer", spec->n_layer));
  spec->n_head = static_cast<uint32_t>(a.Int("--n-head", spec->n_head));
  spec->n_head_kv = static_cast<uint32_t>(a.Int("--n-head-kv", spec->n_head_kv));
  spec->n_ff = static_cast<uint32_t>(a.Int("--n-ff", spec->n_ff));
  spec->n_ctx_train = static_cast<uint32_t>(a.Int("--n-ctx-train", spec->n_ctx_train));
  spec->n_vocab = static_cast<uint32_t>(a.Int("--n-vocab", spec->n_vocab));
  if (!a.error().empty()) return Fatal(a.error());
  if (!out || !a.rest().empty()) return Usage(stderr);
  int last = -1;
  auto st = llama::WriteRandomModel(*spec, *out, [&](uint64_t done, uint64_t total) {
    const int pct = total ? static_cast<int>(100 * done / total) : 100;
    if (pct / 10 != last / 10) {
      last = pct;
      std::fprintf(stderr, "writing %s: %d%%\n", out->c_str(), pct);
    }
  });
  if (!st) return Fatal(st.error().ToString());
  std::printf("%s\n", out->c_str());
  return 0;
#else
  (void)a;
  return Fatal("make-model needs the llama.cpp backend, which this build leaves out");
#endif
}

int CmdDemo(Args& a) {
  DemoOptions o;
  o.model_path = a.Value("--model").value_or("");
  o.turns = static_cast<int>(a.Int("--turns", o.turns));
  o.decode_tokens = static_cast<int>(a.Int("--decode", o.decode_tokens));
  o.n_ctx = static_cast<int>(a.Int("--ctx", o.n_ctx));
  o.threads = static_cast<int>(a.Int("--threads", o.threads));
  o.via_daemon = a.Flag("--daemon");
  if (!a.error().empty()) return Fatal(a.error());
  if (!a.rest().empty()) return Usage(stderr);
  if (!SessionAvailable()) return Fatal("no session backend is compiled into this build");
  return RunDemo(o);
}

int CmdServe(Args& a) {
  ServeOptions o;
  o.socket_path = a.Value("--socket").value_or("");
  o.host = a.Value("--host").value_or(o.host);
  o.port = static_cast<int>(a.Int("--port", 0));
  o.allow_remote = a.Flag("--allow-remote");
  o.token_file = a.Value("--token-file").value_or("");
  o.models = a.Values("--model");
  o.threads = static_cast<int>(a.Int("--threads", 0));
  o.max_ctx = static_cast<int32_t>(a.Int("--max-ctx", 0));
  o.max_connections = static_cast<int>(a.Int("--max-connections", o.max_connections));
  o.kv_budget_mb = a.Int("--kv-budget-mb", 0);
  o.max_sessions = static_cast<int>(a.Int("--max-sessions", o.max_sessions));
  o.max_body_mb = a.Int("--max-body-mb", o.max_body_mb);
  o.chat_template_file = a.Value("--chat-template-file").value_or("");
  o.ctx_size = static_cast<int32_t>(a.Int("--ctx-size", a.Int("-c", 0)));
  if (auto fa = a.Value("--flash-attn")) {
    if (*fa != "on" && *fa != "off") return Fatal("--flash-attn is on or off");
    o.flash_attn = *fa == "on";
  }
  o.verbose = !a.Flag("--quiet");
  o.snapshots = !a.Flag("--no-snapshots");
  o.snapshot_dir = a.Value("--snapshot-dir").value_or("");
  o.snapshot_budget_mb = a.Int("--snapshot-budget-mb", o.snapshot_budget_mb);
  o.snapshot_idle_s = a.Int("--snapshot-idle-s", o.snapshot_idle_s);
  o.snapshot_warm = static_cast<int>(a.Int("--snapshot-warm", o.snapshot_warm));
  if (o.snapshot_warm < 0 || o.snapshot_warm > 1024) return Fatal("--snapshot-warm is in [0, 1024]");
  if (o.snapshot_budget_mb < 0 || o.snapshot_budget_mb > (int64_t{1} << 30)) {
    return Fatal("--snapshot-budget-mb is in [0 (unlimited), 2^30]");
  }
  if (o.snapshot_idle_s < 0 || o.snapshot_idle_s > 7 * 24 * 3600) return Fatal("--snapshot-idle-s is in [0, 604800]");
  if (!a.error().empty()) return Fatal(a.error());
  if (!a.rest().empty()) return Usage(stderr);
  return RunServe(o);
}

}  // namespace
}  // namespace modeld::cli

int main(int argc, char** argv) {
  using namespace modeld::cli;
  if (argc < 2) return Usage(stderr);
  const std::string_view cmd = argv[1];
  Args args(argc, argv, 2);
  if (cmd == "describe") return CmdDescribe(args);
  if (cmd == "make-model") return CmdMakeModel(args);
  if (cmd == "demo") return CmdDemo(args);
  if (cmd == "serve") return CmdServe(args);
  if (int rc = RunClientCommand(cmd, argc, argv); rc >= 0) return rc;
  if (cmd == "help" || cmd == "--help" || cmd == "-h") return Usage(stdout);
  std::fprintf(stderr, "modeld: unknown command '%s'\n", argv[1]);
  return Usage(stderr);
}
