#include "format/fingerprint.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "format/fd.h"

namespace modeld::format {

std::string Xxh3Hex(uint64_t h) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) out[i] = kHex[h & 0xf];
  return out;
}

Result<std::string> WeightsFingerprint(const std::string& path, uint64_t data_offset, uint64_t file_size) {
  if (data_offset > file_size) return Fail(ErrorCode::kCorruptMetadata, path + ": data offset past the file's end");
  const Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  const int fd = file.get();
  if (fd < 0) return Fail(ErrorCode::kIoError, path + ": " + std::strerror(errno));
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st(XXH3_createState(), &XXH3_freeState);
  if (!st || XXH3_64bits_reset(st.get()) != XXH_OK) return Fail(ErrorCode::kInternal, "xxh3: no state");
  XXH3_64bits_update(st.get(), &file_size, sizeof(file_size));
  const uint64_t data = file_size - data_offset;
  const uint64_t chunk = static_cast<uint64_t>(kFingerprintChunkBytes);
  const uint64_t n = std::min<uint64_t>(kFingerprintChunks, (data + chunk - 1) / chunk);
  std::vector<char> buf(chunk);
  for (uint64_t i = 0; i < n; ++i) {
    // Evenly spaced over the data; the last chunk ends at the file's end.
    const uint64_t off = data <= chunk * kFingerprintChunks ? i * chunk : i * ((data - chunk) / (n - 1 ? n - 1 : 1));
    const uint64_t want = std::min(chunk, data - off);
    uint64_t got = 0;
    while (got < want) {
      const ssize_t r = ::pread(fd, buf.data() + got, want - got, static_cast<off_t>(data_offset + off + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return Fail(ErrorCode::kIoError, path + ": " + std::strerror(errno));
      if (r == 0) return Fail(ErrorCode::kTruncated, path + ": shorter than its header says");
      got += static_cast<uint64_t>(r);
    }
    XXH3_64bits_update(st.get(), buf.data(), want);
  }
  return "xxh3:" + Xxh3Hex(XXH3_64bits_digest(st.get()));
}

}  // namespace modeld::format
