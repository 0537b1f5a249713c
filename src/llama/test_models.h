// Generated models for tests: written once per test process into
// MODELD_TEST_TMP (so a test never reads a model an older generator wrote),
// then shared by every test in that process.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "llama/model_writer.h"
#include "modeld/manifest.h"

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

// A prompt of a few "files" of varied text (multi-byte characters included).
inline std::vector<std::string> MakeFiles(std::mt19937& rng, int n) {
  static const std::vector<std::string> words = {
      "int", "return", "value", "auto", "std::vector", "for",  "while", "if", "else", "const", "x",    "y",
      "(",   ")",      "{",     "}",    ";",           "+= 1", "é",     "→",  "0x1F", "//",    "TODO", "\n"};
  std::vector<std::string> files;
  for (int f = 0; f < n; ++f) {
    std::string s = "// file " + std::to_string(f) + "\n";
    const int len = 20 + static_cast<int>(rng() % 60);
    for (int i = 0; i < len; ++i) s += words[rng() % words.size()] + " ";
    files.push_back(s);
  }
  return files;
}

// Edits one file at a random point: inserts text, cuts a few bytes or replaces one.
inline void EditRandomFile(std::mt19937& rng, std::vector<std::string>& files, int turn) {
  auto& f = files[rng() % files.size()];
  const size_t at = rng() % f.size();
  switch (rng() % 3) {
    case 0:
      f.insert(at, " edited" + std::to_string(turn) + " ");
      break;
    case 1:
      f.erase(at, std::min<size_t>(7, f.size() - at));
      break;
    default:
      f[at] = static_cast<char>('a' + rng() % 26);
      break;
  }
}

// A system segment and one segment per file.
inline ContextManifest Manifest(const std::vector<std::string>& files) {
  ContextManifest m;
  m.Add("system", SegmentKind::kSystem, "You are a careful coding assistant.\n");
  for (size_t i = 0; i < files.size(); ++i) m.Add("file:" + std::to_string(i), SegmentKind::kFile, files[i]);
  return m;
}

}  // namespace modeld::testing
