// libFuzzer target: the GGUF header reader (src/format/gguf_reader.h) on arbitrary bytes.
//
// The input is a whole file. Checked on every input:
//  - ParseHeader (in memory) never crashes, never makes a huge allocation (libFuzzer's -malloc_limit_mb),
//    and never reads out of bounds (ASan);
//  - the file-backed reader (ReadHeader, through its sliding pread window) agrees exactly with ParseHeader
//    on the same bytes: the same header, or the same error code and message;
//  - a parse of a prefix of the file never succeeds where the whole file fails, and when it succeeds it
//    gives the same header;
//  - Describe() of the file never crashes, succeeds only where ParseHeader does (and fails then only on a
//    metadata problem, kCorruptMetadata), and its digest is the one docs/gguf.md defines:
//    SHA-256(file[0, data_offset) || le64(file_size)), though Describe feeds it piecewise from the window.
// The file lives in a memfd and is read back through /proc/self/fd/N, so no temporary files are made.
// fuzz/CMakeLists.txt builds the reader with a 64-byte window, so small inputs slide and grow it.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "core/sha256.h"
#include "format/gguf_reader.h"

namespace {

using modeld::ErrorCode;
using modeld::Result;
using namespace modeld::gguf;

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "gguf_header_fuzzer: property violated: %s\n", what);
  std::abort();
}

bool SameValue(const Value& a, const Value& b) {
  return a.type == b.type && a.u == b.u && a.i == b.i && a.b == b.b && a.s == b.s && a.array_type == b.array_type &&
         a.array_count == b.array_count && a.offset == b.offset &&
         // NaN payloads compare unequal as doubles; compare bits.
         __builtin_memcmp(&a.f, &b.f, sizeof a.f) == 0;
}

bool SameTensor(const TensorInfo& a, const TensorInfo& b) {
  return a.name == b.name && a.dims == b.dims && a.type == b.type && a.offset == b.offset && a.n_bytes == b.n_bytes;
}

bool SameHeader(const Header& a, const Header& b) {
  if (a.version != b.version || a.alignment != b.alignment || a.data_offset != b.data_offset ||
      a.kv.size() != b.kv.size() || a.tensors.size() != b.tensors.size()) {
    return false;
  }
  for (auto ia = a.kv.begin(), ib = b.kv.begin(); ia != a.kv.end(); ++ia, ++ib) {
    if (ia->first != ib->first || !SameValue(ia->second, ib->second)) return false;
  }
  for (size_t k = 0; k < a.tensors.size(); ++k) {
    if (!SameTensor(a.tensors[k], b.tensors[k])) return false;
  }
  return true;
}

bool SameResult(const Result<Header>& a, const Result<Header>& b) {
  if (a.has_value() != b.has_value()) return false;
  if (a) return SameHeader(*a, *b);
  return a.error().code() == b.error().code() && a.error().message() == b.error().message();
}

// One memfd for the whole run, rewritten for each input.
const std::string& MemfdPath(int* fd_out) {
  static int fd = -1;
  static std::string path;
  if (fd < 0) {
    fd = memfd_create("gguf_fuzz", MFD_CLOEXEC);
    if (fd < 0) Die("memfd_create failed");
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  *fd_out = fd;
  return path;
}

void WriteFile(int fd, const uint8_t* data, size_t size) {
  if (ftruncate(fd, 0) != 0) Die("ftruncate failed");
  for (size_t done = 0; done < size;) {
    const ssize_t w = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (w <= 0) Die("pwrite failed");
    done += static_cast<size_t>(w);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = -1;
  const std::string& path = MemfdPath(&fd);
  const std::span<const uint8_t> bytes(data, size);

  const Result<Header> whole = ParseHeader(bytes, size, path);

  // A prefix: either it is enough (the same header) or it is kTruncated, never a different answer.
  const size_t cut = size / 2;
  const Result<Header> prefix = ParseHeader(bytes.first(cut), size, path);
  if (prefix) {
    if (!whole || !SameHeader(*prefix, *whole)) Die("a prefix parsed to a different result than the whole file");
  } else if (prefix.error().code() != ErrorCode::kTruncated && !SameResult(prefix, whole)) {
    Die("a prefix failed with another error than kTruncated and than the whole file");
  }

  WriteFile(fd, data, size);
  const Result<Header> from_file = ReadHeader(path);
  if (!SameResult(from_file, whole)) {
    std::fprintf(stderr, "in memory: %s\nfrom file: %s\n", whole ? "ok" : whole.error().message().c_str(),
                 from_file ? "ok" : from_file.error().message().c_str());
    Die("ReadHeader (file window) and ParseHeader (memory) disagree");
  }

  const auto info = Describe(path);
  if (info.has_value() && !whole) Die("Describe succeeded where ParseHeader failed");
  if (!info && whole && info.error().code() != ErrorCode::kCorruptMetadata) {
    Die("Describe failed on a parsed header with an error other than kCorruptMetadata");
  }
  if (info) {
    // The facts must be consistent with the header.
    if (info->tensor_count != whole->tensors.size() || info->data_offset != whole->data_offset ||
        info->file_size != size) {
      Die("Describe's facts disagree with the header");
    }
    modeld::Sha256 sha;
    sha.Update(data, whole->data_offset);
    uint8_t size_le[8];
    for (int k = 0; k < 8; ++k) size_le[k] = static_cast<uint8_t>(static_cast<uint64_t>(size) >> (8 * k));
    sha.Update(size_le, sizeof size_le);
    if (info->digest != "sha256:" + sha.HexDigest()) Die("Describe's digest is not SHA-256(header || le64(size))");
  }
  if (HasGgufMagic(path) != (size >= 4 && __builtin_memcmp(data, "GGUF", 4) == 0)) Die("HasGgufMagic is wrong");
  return 0;
}
