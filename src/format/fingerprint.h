// A model's weights fingerprint: what tells two models apart whose headers (and so digests,
// docs/gguf.md) are the same, e.g. weights fine-tuned or regenerated in place.
#pragma once

#include <cstdint>
#include <string>

#include "modeld/error.h"

namespace modeld::format {

// "xxh3:<hex>" of the file's size and of kFingerprintChunks evenly spaced chunks of
// kFingerprintChunkBytes of its tensor data [data_offset, file_size) (all of it when smaller): a
// few MiB read whatever the model's size, and any change to most weights changes it.
// kIoError when the file cannot be read, kTruncated when it is shorter than file_size.
inline constexpr int kFingerprintChunks = 1024;
inline constexpr int64_t kFingerprintChunkBytes = 4096;
Result<std::string> WeightsFingerprint(const std::string& path, uint64_t data_offset, uint64_t file_size);

// "<16 hex digits>" of XXH3-64, the checksum of snapshot files.
std::string Xxh3Hex(uint64_t h);

}  // namespace modeld::format
