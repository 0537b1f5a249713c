// ggml tensor types and llama file types, as stored in GGUF files.
//
// A backend-neutral copy of the facts the header reader needs (block and type sizes, names), so that
// src/format does not depend on ggml. ggml_types_test checks this table against ggml itself.
#pragma once

#include <cstdint>
#include <string_view>

namespace modeld::gguf {

struct GgmlTypeTraits {
  const char* name;     // ggml_type_name(), e.g. "f32", "q8_0", "q4_K"
  uint32_t block_size;  // elements per block
  uint32_t type_size;   // bytes per block
};

// Number of ggml type ids known at the pinned llama.cpp commit (GGML_TYPE_COUNT).
inline constexpr uint32_t kGgmlTypeCount = 43;

// The traits of a ggml_type id; nullptr for ids that are unknown or were removed from ggml.
const GgmlTypeTraits* GgmlType(uint32_t type);

// The short name of a llama_ftype (general.file_type), as llama-quantize spells it: "F32", "F16", "Q8_0",
// "Q4_K_M", "IQ2_XXS", ... The LLAMA_FTYPE_GUESSED bit (1024) is ignored. "unknown" for unknown values.
std::string_view FileTypeName(int32_t llama_ftype);

}  // namespace modeld::gguf
