// Generated models for tests: written once per test process into
// MODELD_TEST_TMP (so a test never reads a model an older generator wrote),
// then shared by every test in that process.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>

#include "llama/model_writer.h"

namespace modeld::testing {

// The path of a model of `preset`, stored as `<name>.gguf` (a daemon serves it as `name`).
inline std::string GeneratedModel(const std::string& preset, const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::string> made;
  std::lock_guard lock(mu);
  if (auto it = made.find(name); it != made.end()) return it->second;
  std::filesystem::create_directories(MODELD_TEST_TMP);
  const std::string path = std::string(MODELD_TEST_TMP) + "/" + name + ".gguf";
  auto spec = llama::PresetSpec(preset, MODELD_VOCAB_DIR);
  EXPECT_TRUE(spec.has_value()) << preset;
  if (spec) {
    auto ok = llama::WriteRandomModel(*spec, path);  // atomic: parallel test processes may race here
    EXPECT_TRUE(ok.has_value()) << ok.error().ToString();
  }
  made[name] = path;
  return path;
}

}  // namespace modeld::testing
