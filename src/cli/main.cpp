// modeld: one binary, subcommands.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/demo.h"
#include "cli/paths.h"
#include "modeld/registry.h"
#include "modeld/service.h"

#ifdef MODELD_WITH_LLAMA
#include "llama/model_writer.h"
#endif

namespace modeld::cli {
namespace {

constexpr const char* kUsage = R"(usage: modeld <command> [options]

commands:
  demo [--model PATH] [--turns N] [--decode N] [--ctx N] [--threads N]
        run a scripted coding loop on a live session and print per-turn reuse and timings
        (no --model: the built-in default model, generated on first use)
  describe [--json] PATH
        print a model's facts, read from its header alone
  make-model --preset NAME --out PATH [--seed N] [--type f16|q8_0|q4_0] [--arch A] [--vocab FILE]
             [--n-embd N --n-layer N --n-head N --n-head-kv N --n-ff N --n-ctx-train N --n-vocab N]
        write a GGUF with random weights for a real architecture (presets: %s)
  help
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
  std::fprintf(out, kUsage, PresetList().c_str());
  return out == stdout ? 0 : 2;
}

// Minimal flag reader: --name value, --flag.
class Args {
 public:
  Args(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) args_.emplace_back(argv[i]);
  }
  bool Flag(std::string_view name) {
    for (size_t i = 0; i < args_.size(); ++i) {
      if (args_[i] == name) {
        args_.erase(args_.begin() + static_cast<long>(i));
        return true;
      }
    }
    return false;
  }
  std::optional<std::string> Value(std::string_view name) {
    for (size_t i = 0; i < args_.size(); ++i) {
      if (args_[i] == name) {
        if (i + 1 >= args_.size()) {
          error_ = std::string(name) + " needs a value";
          return std::nullopt;
        }
        std::string v = args_[i + 1];
        args_.erase(args_.begin() + static_cast<long>(i), args_.begin() + static_cast<long>(i) + 2);
        return v;
      }
    }
    return std::nullopt;
  }
  // Integer flag; keeps `def` when absent, sets error() when malformed.
  long long Int(std::string_view name, long long def) {
    auto v = Value(name);
    if (!v) return def;
    char* end = nullptr;
    long long x = std::strtoll(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0') error_ = std::string(name) + ": not an integer: " + *v;
    return x;
  }
  const std::vector<std::string>& rest() const { return args_; }
  const std::string& error() const { return error_; }

 private:
  std::vector<std::string> args_;
  std::string error_;
};

int Fatal(const std::string& msg) {
  std::fprintf(stderr, "modeld: %s\n", msg.c_str());
  return 1;
}

nlohmann::json InfoJson(const ModelInfo& m) {
  return {{"path", m.path},
          {"backend", m.backend},
          {"format_version", m.format_version},
          {"architecture", m.architecture},
          {"name", m.name},
          {"context_length", m.context_length},
          {"embedding_length", m.embedding_length},
          {"block_count", m.block_count},
          {"head_count", m.head_count},
          {"head_count_kv", m.head_count_kv},
          {"vocab_size", m.vocab_size},
          {"file_type", m.file_type},
          {"file_type_name", m.file_type_name},
          {"pooling", m.pooling},
          {"has_chat_template", m.has_chat_template},
          {"tensor_count", m.tensor_count},
          {"parameter_count", m.parameter_count},
          {"file_size", m.file_size},
          {"data_offset", m.data_offset},
          {"digest", m.digest}};
}

int CmdDescribe(Args& a) {
  const bool json = a.Flag("--json");
  if (a.rest().size() != 1) return Usage(stderr);
  OpenSessionRequest req;
  req.model_path = a.rest()[0];
  auto info = Service().Describe(req);
  if (!info) {
    if (json) {
      std::printf("%s\n", nlohmann::json{{"error", {{"code", CodeName(info.error().code())},
                                                    {"message", info.error().message()}}}}
                              .dump(2)
                              .c_str());
    }
    return Fatal(info.error().ToString());
  }
  if (json) {
    std::printf("%s\n", InfoJson(*info).dump(2).c_str());
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
  if (!a.error().empty()) return Fatal(a.error());
  if (!a.rest().empty()) return Usage(stderr);
  if (!SessionAvailable()) return Fatal("no session backend is compiled into this build");
  return RunDemo(o);
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
  if (cmd == "help" || cmd == "--help" || cmd == "-h") return Usage(stdout);
  std::fprintf(stderr, "modeld: unknown command '%s'\n", argv[1]);
  return Usage(stderr);
}
