// A GGUF header reader of our own: magic, version, metadata key/values and tensor infos.
//
// It never reads tensor data and never trusts a length or count from the file: every one is checked
// against the bytes that remain before anything is allocated from it, so a corrupt or hostile file
// yields a typed Error (naming the file and byte offset), never a crash or a huge allocation.
// Backend-neutral: no ggml/llama.cpp headers. Format notes and the digest definition: docs/gguf.md.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "modeld/error.h"
#include "modeld/model_info.h"

namespace modeld::gguf {

enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// One metadata value.
struct Value {
  ValueType type{};
  // Scalars: exactly one of these is meaningful by type (u: unsigned ints, i: signed ints, f: floats,
  // b: bool, s: string).
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string s;
  // Arrays: element type and count. Element values are not kept (vocab arrays are huge).
  ValueType array_type{};
  uint64_t array_count = 0;
  // File offset of this key/value record (for error messages about the value).
  uint64_t offset = 0;

  // Any integer type whose value is non-negative (fits in uint64), else nullopt.
  std::optional<uint64_t> AsUint() const;
  // The string of a kString value, else nullopt.
  std::optional<std::string> AsString() const;
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ne[0..n_dims), innermost first; n_dims <= 4
  uint32_t type = 0;           // ggml_type id, always one GgmlType() knows
  uint64_t offset = 0;         // relative to Header::data_offset, a multiple of the alignment
  uint64_t n_bytes = 0;        // bytes of data; offset + n_bytes lies within the file
};

struct Header {
  uint32_t version = 0;
  uint64_t alignment = 32;  // general.alignment, or GGUF's default of 32
  // Start of tensor data (= bytes of header). Aligned when the file has tensors; a file without tensors
  // may end unpadded right after its metadata, as llama.cpp reads it.
  uint64_t data_offset = 0;
  std::map<std::string, Value, std::less<>> kv;  // duplicate keys -> kCorruptMetadata
  std::vector<TensorInfo> tensors;
};

// Parses a header held in memory. `bytes` is a prefix of the file (may be the whole file) and must cover
// [0, data_offset); `file_size` is the full size. Needing bytes beyond `bytes` -> kTruncated. `path` is
// only used in messages.
Result<Header> ParseHeader(std::span<const uint8_t> bytes, uint64_t file_size, const std::string& path);

// Reads just the header of a file (never tensor data) in one forward pass through a small pread window,
// and parses it. Missing file -> kNotFound; other open/read failures -> kIoError.
Result<Header> ReadHeader(const std::string& path);

// Header -> ModelInfo (backend "gguf"), including the header digest. Reads no tensor data.
Result<ModelInfo> Describe(const std::string& path);

// True when the file's first 4 bytes are "GGUF". False on any error.
bool HasGgufMagic(const std::string& path);

}  // namespace modeld::gguf
