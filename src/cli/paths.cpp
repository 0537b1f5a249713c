#include "cli/paths.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#ifdef MODELD_WITH_LLAMA
#include "llama/model_writer.h"
#endif

namespace modeld::cli {

namespace fs = std::filesystem;

std::string HomeDir() {
  if (const char* h = std::getenv("MODELD_HOME"); h && *h) return h;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/modeld";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/modeld";
  return "/tmp/modeld";
}

std::string VocabDir() {
  if (const char* v = std::getenv("MODELD_VOCAB_DIR"); v && *v) return v;
  return MODELD_VOCAB_DIR;
}

Result<std::string> EnsureDefaultModel(bool verbose) {
#ifdef MODELD_WITH_LLAMA
  // Versioned name: bump it when the tiny preset changes, so a stale cached file is not reused.
  const std::string path = HomeDir() + "/models/default-tiny-3.gguf";
  std::error_code ec;
  if (fs::exists(path, ec)) return path;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec)
    return Fail(ErrorCode::kIoError, "cannot create " + fs::path(path).parent_path().string() + ": " + ec.message());
  auto spec = llama::PresetSpec("tiny", VocabDir());
  if (!spec) return Fail(spec.error());
  if (verbose) std::fprintf(stderr, "modeld: generating the default model (preset tiny) at %s\n", path.c_str());
  if (auto ok = llama::WriteRandomModel(*spec, path); !ok) return Fail(ok.error());
  return path;
#else
  (void)verbose;
  return Fail(ErrorCode::kSessionUnavailable, "this build has no llama.cpp backend to make the default model with");
#endif
}

Result<std::string> ReadSmallFile(const std::string& path, int64_t max_bytes) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return Fail(ErrorCode::kNotFound, path + ": " + ec.message());
  if (size > static_cast<uint64_t>(max_bytes)) {
    return Fail(ErrorCode::kInvalidArgument,
                path + " is " + std::to_string(size) + " bytes; at most " + std::to_string(max_bytes) + " are read");
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return Fail(ErrorCode::kIoError, "cannot read " + path);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (text.size() > static_cast<size_t>(max_bytes)) return Fail(ErrorCode::kInvalidArgument, path + " grew while read");
  return text;
}

}  // namespace modeld::cli
