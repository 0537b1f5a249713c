// What a model file says about itself, read from its header alone.
#pragma once

#include <cstdint>
#include <string>

namespace modeld {

struct ModelInfo {
  std::string path;
  std::string backend;          // "gguf"
  uint32_t format_version = 0;  // GGUF version
  std::string architecture;     // general.architecture, e.g. "qwen2"
  std::string name;             // general.name, may be empty
  uint32_t context_length = 0;  // trained context window
  uint32_t embedding_length = 0;
  uint32_t block_count = 0;
  uint32_t head_count = 0;
  uint32_t head_count_kv = 0;
  uint32_t vocab_size = 0;
  int32_t file_type = -1;      // general.file_type (llama_ftype), -1 when absent
  std::string file_type_name;  // e.g. "Q8_0", or the dominant tensor type
  std::string pooling;         // "none", "mean", "cls", "last", "rank"; "" when absent
  bool has_chat_template = false;
  uint64_t tensor_count = 0;
  uint64_t parameter_count = 0;
  uint64_t file_size = 0;
  uint64_t data_offset = 0;  // where tensor data starts (= header bytes)
  std::string digest;        // "sha256:<hex>": see docs/gguf.md for what is hashed
};

}  // namespace modeld
