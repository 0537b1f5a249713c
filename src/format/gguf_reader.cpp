#include "format/gguf_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <string_view>
#include <unordered_set>
#include <utility>

#include "core/sha256.h"
#include "format/fd.h"
#include "format/ggml_types.h"

namespace modeld::gguf {
namespace {

constexpr uint32_t kMaxDims = 4;            // GGML_MAX_DIMS
constexpr uint64_t kDefaultAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT
// ReadHeader's window onto the file. It slides forward as the parse goes and grows only for a single field
// larger than itself. Small on purpose: it stays below malloc's mmap threshold, so repeated calls reuse
// warm heap memory instead of faulting in fresh pages (a 1 MiB window measured 3x slower).
// A build may shrink it (fuzz/ does, so that small inputs exercise the window's sliding and growing).
#ifndef MODELD_GGUF_WINDOW_BYTES
#define MODELD_GGUF_WINDOW_BYTES (64ull << 10)
#endif
constexpr uint64_t kWindowBytes = MODELD_GGUF_WINDOW_BYTES;
// A header larger than this is treated as corrupt rather than read: real headers (vocab + merges + chat
// template) are tens of MiB at most, and this bounds what a bogus count can make ReadHeader read.
constexpr uint64_t kMaxHeaderBytes = 256ull << 20;
// Smallest possible encodings, used to reject counts the remaining file cannot hold before looping.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;      // key length, 1-byte key, type, 1-byte value
constexpr uint64_t kMinTensorBytes = 8 + 4 + 4 + 8;  // name length, n_dims, type, offset
constexpr uint64_t kStringLenBytes = 8;
constexpr uint64_t kTensorReserveCap = 1u << 16;

// Encoded size of a fixed-size value type; 0 for strings and arrays.
uint64_t FixedSize(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

bool ValidType(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kFloat64); }

template <class T>
T LoadLe(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big && sizeof(T) > 1) v = std::byteswap(v);
  return v;
}

// Reads [from, from + n) of the file into buf.
Status PreadFully(int fd, uint8_t* buf, uint64_t from, uint64_t n, const std::string& path) {
  for (uint64_t done = 0; done < n;) {
    const ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(from + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Fail(
          Error::AtOffset(ErrorCode::kIoError, path, from + done, std::string("read failed: ") + std::strerror(errno)));
    }
    if (r == 0) return Fail(Error::AtOffset(ErrorCode::kTruncated, path, from + done, "file shrank while reading"));
    done += static_cast<uint64_t>(r);
  }
  return {};
}

// Where a file-backed parse gets its bytes, and the digest it feeds.
struct FileSource {
  int fd = -1;
  Sha256* sha = nullptr;  // when set, receives the header bytes [0, data_offset) in order
  std::unique_ptr<uint8_t[]> buf;
  uint64_t cap = 0;
};

// One forward pass over a header. The bytes come from a window [win_start_, win_end_) of the file: the
// whole in-memory prefix for ParseHeader, or a buffer that slides forward for ReadHeader. Methods return
// false after recording the error; the first error wins.
class Parser {
 public:
  Parser(std::span<const uint8_t> bytes, uint64_t file_size, const std::string& path)
      : data_(bytes.data()),
        win_end_(std::min<uint64_t>(bytes.size(), file_size)),
        file_size_(file_size),
        path_(path) {}
  Parser(FileSource* file, uint64_t file_size, const std::string& path)
      : file_(file), file_size_(file_size), path_(path) {}

  Result<Header> Run();

 private:
  // Records the first error; returns false so callers can `return Reject(...)`.
  bool Reject(ErrorCode code, uint64_t offset, std::string what) {
    if (!error_) error_ = Error::AtOffset(code, path_, offset, std::move(what));
    return false;
  }
  std::unexpected<Error> Failed() { return std::unexpected(std::move(*error_)); }

  const uint8_t* Here() const { return data_ + (pos_ - win_start_); }
  uint64_t Avail() const { return win_end_ - pos_; }

  // n contiguous bytes are present at pos_. Errors cite `at`: the field that declared the n bytes.
  bool Have(uint64_t n, const char* what) { return Have(n, what, pos_); }
  bool Have(uint64_t n, const char* what, uint64_t at) {
    if (n <= Avail()) return true;
    if (n > file_size_ - pos_) {
      return Reject(ErrorCode::kTruncated, at,
                    std::string(what) + " of " + std::to_string(n) + " bytes runs past the end of the file (" +
                        std::to_string(file_size_) + " bytes)");
    }
    if (file_ == nullptr) {
      return Reject(ErrorCode::kTruncated, at,
                    std::string(what) + " of " + std::to_string(n) + " bytes runs past the " +
                        std::to_string(win_end_) + " bytes given");
    }
    return Slide(n, at);
  }

  // Moves the window to start at pos_ with at least n bytes (n <= what the file has left).
  bool Slide(uint64_t n, uint64_t at) {
    if (pos_ + n > kMaxHeaderBytes) {
      return Reject(ErrorCode::kCorruptMetadata, at,
                    "header larger than " + std::to_string(kMaxHeaderBytes >> 20) + " MiB");
    }
    HashTo(pos_);
    if (file_->cap < n || !file_->buf) {
      file_->cap = std::max(n, kWindowBytes);
      file_->buf = std::make_unique_for_overwrite<uint8_t[]>(file_->cap);  // pread fills it
    }
    const uint64_t len = std::min(file_->cap, file_size_ - pos_);
    if (Status st = PreadFully(file_->fd, file_->buf.get(), pos_, len, path_); !st) {
      if (!error_) error_ = std::move(st.error());
      return false;
    }
    data_ = file_->buf.get();
    win_start_ = pos_;
    win_end_ = pos_ + len;
    return true;
  }

  // Feeds the digest the header bytes up to `end` (all still in the window).
  void HashTo(uint64_t end) {
    if (file_ == nullptr || file_->sha == nullptr || end <= hashed_) return;
    file_->sha->Update(data_ + (hashed_ - win_start_), end - hashed_);
    hashed_ = end;
  }

  // Steps over n bytes, which need not fit in the window at once. check_bool: each must be 0 or 1.
  bool Skip(uint64_t n, const char* what, bool check_bool = false) {
    if (n > file_size_ - pos_) return Have(n, what);  // the truncation error
    while (n > 0) {
      if (Avail() == 0 && !Have(std::min(n, kWindowBytes), what)) return false;
      const uint64_t step = std::min(n, Avail());
      if (check_bool) {
        const uint8_t* p = Here();
        for (uint64_t k = 0; k < step; ++k) {
          if (p[k] > 1) return Reject(ErrorCode::kCorruptMetadata, pos_ + k, "bool array element is not 0 or 1");
        }
      }
      pos_ += step;
      n -= step;
    }
    return true;
  }

  // `count` records of at least `min_each` bytes fit in what remains of the file.
  bool CountFits(uint64_t count, uint64_t min_each, const char* what, uint64_t at) {
    if (count <= (file_size_ - pos_) / min_each) return true;
    return Reject(ErrorCode::kTruncated, at,
                  std::string(what) + " " + std::to_string(count) + " needs more than the " +
                      std::to_string(file_size_ - pos_) + " bytes left in the file");
  }

  template <class T>
  bool Read(T* out, const char* what) {
    if (!Have(sizeof(T), what)) return false;
    *out = LoadLe<T>(Here());
    pos_ += sizeof(T);
    return true;
  }

  // A length-prefixed string, viewed in the window: valid only until the next read.
  bool ReadString(std::string_view* out, const char* what) {
    const uint64_t at = pos_;
    uint64_t len = 0;
    if (!Read(&len, what)) return false;
    if (!Have(len, what, at)) return false;
    *out = std::string_view(reinterpret_cast<const char*>(Here()), len);
    pos_ += len;
    return true;
  }

  bool ReadKv(Header* h);
  bool ReadScalar(ValueType type, Value* v);
  bool SkipArray(ValueType elem, uint64_t count, uint64_t at);
  bool ReadTensorInfo(TensorInfo* t);

  FileSource* file_ = nullptr;
  const uint8_t* data_ = nullptr;  // window bytes; data_[0] is file offset win_start_
  uint64_t win_start_ = 0;
  uint64_t win_end_ = 0;
  uint64_t file_size_;
  const std::string& path_;
  uint64_t pos_ = 0;
  uint64_t hashed_ = 0;  // the digest has bytes [0, hashed_)
  std::optional<Error> error_;
};

bool Parser::ReadScalar(ValueType type, Value* v) {
  switch (type) {
    case ValueType::kUint8: {
      uint8_t x;
      if (!Read(&x, "uint8 value")) return false;
      v->u = x;
      return true;
    }
    case ValueType::kInt8: {
      int8_t x;
      if (!Read(&x, "int8 value")) return false;
      v->i = x;
      return true;
    }
    case ValueType::kUint16: {
      uint16_t x;
      if (!Read(&x, "uint16 value")) return false;
      v->u = x;
      return true;
    }
    case ValueType::kInt16: {
      int16_t x;
      if (!Read(&x, "int16 value")) return false;
      v->i = x;
      return true;
    }
    case ValueType::kUint32: {
      uint32_t x;
      if (!Read(&x, "uint32 value")) return false;
      v->u = x;
      return true;
    }
    case ValueType::kInt32: {
      int32_t x;
      if (!Read(&x, "int32 value")) return false;
      v->i = x;
      return true;
    }
    case ValueType::kUint64:
      return Read(&v->u, "uint64 value");
    case ValueType::kInt64:
      return Read(&v->i, "int64 value");
    case ValueType::kFloat32: {
      uint32_t x;
      if (!Read(&x, "float32 value")) return false;
      v->f = std::bit_cast<float>(x);
      return true;
    }
    case ValueType::kFloat64: {
      uint64_t x;
      if (!Read(&x, "float64 value")) return false;
      v->f = std::bit_cast<double>(x);
      return true;
    }
    case ValueType::kBool: {
      const uint64_t at = pos_;
      uint8_t x;
      if (!Read(&x, "bool value")) return false;
      if (x > 1) return Reject(ErrorCode::kCorruptMetadata, at, "bool value " + std::to_string(x) + " is not 0 or 1");
      v->b = x != 0;
      return true;
    }
    case ValueType::kString: {
      std::string_view s;
      if (!ReadString(&s, "string value")) return false;
      v->s.assign(s);
      return true;
    }
    case ValueType::kArray:
      break;
  }
  return Reject(ErrorCode::kInternal, pos_, "not a scalar type");
}

// Steps over an array's elements with bounds checks, keeping none of them.
bool Parser::SkipArray(ValueType elem, uint64_t count, uint64_t at) {
  if (const uint64_t each = FixedSize(elem); each != 0) {
    if (!CountFits(count, each, "array count", at)) return false;
    // count * each cannot overflow: count <= remaining / each.
    return Skip(count * each, "array data", elem == ValueType::kBool);
  }
  // Strings: each is at least its 8-byte length.
  if (!CountFits(count, kStringLenBytes, "string array count", at)) return false;
  for (uint64_t k = 0; k < count; ++k) {
    // Inline fast path: this loop walks vocabularies of 100k+ tokens.
    if (Avail() >= kStringLenBytes) {
      const uint64_t len = LoadLe<uint64_t>(Here());
      if (len <= Avail() - kStringLenBytes) {
        pos_ += kStringLenBytes + len;
        continue;
      }
    }
    std::string_view ignored;
    if (!ReadString(&ignored, "array string")) return false;
  }
  return true;
}

bool Parser::ReadKv(Header* h) {
  const uint64_t at = pos_;
  std::string_view key_view;
  if (!ReadString(&key_view, "key")) return false;
  std::string key(key_view);  // copied now: the window may move while the value is read
  if (key.empty()) return Reject(ErrorCode::kCorruptMetadata, at, "empty key");
  if (h->kv.contains(key)) return Reject(ErrorCode::kCorruptMetadata, at, "duplicate key '" + key + "'");

  Value v;
  v.offset = at;
  const uint64_t type_at = pos_;
  uint32_t type = 0;
  if (!Read(&type, "value type")) return false;
  if (!ValidType(type)) {
    return Reject(ErrorCode::kCorruptMetadata, type_at,
                  "key '" + key + "' has invalid value type " + std::to_string(type));
  }
  v.type = static_cast<ValueType>(type);
  if (v.type == ValueType::kArray) {
    uint32_t elem = 0;
    if (!Read(&elem, "array element type")) return false;
    if (!ValidType(elem) || elem == static_cast<uint32_t>(ValueType::kArray)) {
      return Reject(ErrorCode::kCorruptMetadata, type_at + 4,
                    "key '" + key + "' has invalid array element type " + std::to_string(elem));
    }
    v.array_type = static_cast<ValueType>(elem);
    const uint64_t count_at = pos_;
    if (!Read(&v.array_count, "array count")) return false;
    if (!SkipArray(v.array_type, v.array_count, count_at)) return false;
  } else if (!ReadScalar(v.type, &v)) {
    return false;
  }
  h->kv.emplace(std::move(key), std::move(v));
  return true;
}

bool Parser::ReadTensorInfo(TensorInfo* t) {
  std::string_view name;
  if (!ReadString(&name, "tensor name")) return false;
  t->name.assign(name);

  const uint64_t dims_at = pos_;
  uint32_t n_dims = 0;
  if (!Read(&n_dims, "tensor n_dims")) return false;
  if (n_dims > kMaxDims) {
    return Reject(ErrorCode::kCorruptMetadata, dims_at,
                  "tensor '" + t->name + "' has " + std::to_string(n_dims) + " dimensions (max 4)");
  }
  t->dims.resize(n_dims);
  uint64_t elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t dim_at = pos_;
    if (!Read(&t->dims[d], "tensor dimension")) return false;
    // ggml keeps ne as int64; the element count must stay representable too.
    if (t->dims[d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(elements, t->dims[d], &elements) ||
        elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Reject(ErrorCode::kCorruptMetadata, dim_at, "tensor '" + t->name + "' has too many elements");
    }
  }

  const uint64_t type_at = pos_;
  if (!Read(&t->type, "tensor type")) return false;
  const GgmlTypeTraits* traits = GgmlType(t->type);
  if (traits == nullptr) {
    return Reject(ErrorCode::kCorruptMetadata, type_at,
                  "tensor '" + t->name + "' has unknown ggml type " + std::to_string(t->type));
  }
  const uint64_t row = n_dims > 0 ? t->dims[0] : 1;
  if (row % traits->block_size != 0) {
    return Reject(ErrorCode::kCorruptMetadata, type_at,
                  "tensor '" + t->name + "' row of " + std::to_string(row) + " is not a multiple of the " +
                      traits->name + " block size " + std::to_string(traits->block_size));
  }
  if (__builtin_mul_overflow(elements / traits->block_size, traits->type_size, &t->n_bytes)) {
    return Reject(ErrorCode::kCorruptMetadata, type_at, "tensor '" + t->name + "' size in bytes overflows");
  }
  return Read(&t->offset, "tensor offset");
}

Result<Header> Parser::Run() {
  Header h;
  // A file too short to hold the magic is no GGUF at all, not a truncated one.
  if (file_size_ < 4) return Fail(Error::AtOffset(ErrorCode::kNotGguf, path_, 0, "file too short for GGUF magic"));
  if (!Have(4, "magic")) return Failed();
  if (std::memcmp(Here(), "GGUF", 4) != 0) return Fail(Error::AtOffset(ErrorCode::kNotGguf, path_, 0, "bad magic"));
  pos_ = 4;

  if (!Read(&h.version, "version")) return Failed();
  if (h.version != 2 && h.version != 3) {
    std::string what = "unsupported GGUF version " + std::to_string(h.version) + " (supported: 2, 3)";
    // A byte-swapped small version: a big-endian file.
    if ((h.version & 0xffffu) == 0) what += "; big-endian file?";
    return Fail(Error::AtOffset(ErrorCode::kUnsupportedVersion, path_, 4, std::move(what)));
  }

  uint64_t n_tensors = 0, n_kv = 0;
  if (!Read(&n_tensors, "tensor count") || !Read(&n_kv, "metadata count")) return Failed();
  constexpr auto kMaxSigned = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (n_tensors > kMaxSigned) {
    return Fail(Error::AtOffset(ErrorCode::kCorruptMetadata, path_, 8, "negative tensor count"));
  }
  if (n_kv > kMaxSigned) {
    return Fail(Error::AtOffset(ErrorCode::kCorruptMetadata, path_, 16, "negative metadata count"));
  }
  // Both tables follow; each record has a minimum size. Neither product can overflow once each fits.
  if (!CountFits(n_kv, kMinKvBytes, "metadata count", 16) ||
      !CountFits(n_tensors, kMinTensorBytes, "tensor count", 8)) {
    return Failed();
  }
  if (n_kv * kMinKvBytes + n_tensors * kMinTensorBytes > file_size_ - pos_) {
    return Fail(
        Error::AtOffset(ErrorCode::kTruncated, path_, 8, "tensor and metadata counts need more than the file holds"));
  }

  for (uint64_t k = 0; k < n_kv; ++k) {
    if (!ReadKv(&h)) return Failed();
  }

  h.alignment = kDefaultAlignment;
  if (auto it = h.kv.find("general.alignment"); it != h.kv.end()) {
    const Value& a = it->second;
    if (a.type != ValueType::kUint32 || a.u == 0 || !std::has_single_bit(a.u)) {
      return Fail(Error::AtOffset(ErrorCode::kCorruptMetadata, path_, a.offset,
                                  "general.alignment must be a non-zero power of two uint32"));
    }
    h.alignment = a.u;
  }

  // Bounded by the bytes at hand (and a typical model's count), so a bogus count cannot make this large;
  // the vector grows past it as real records are read.
  h.tensors.reserve(std::min<uint64_t>({n_tensors, Avail() / kMinTensorBytes, kTensorReserveCap}));
  std::vector<uint64_t> info_at;  // where each tensor info starts, for messages
  info_at.reserve(h.tensors.capacity());
  for (uint64_t k = 0; k < n_tensors; ++k) {
    info_at.push_back(pos_);
    h.tensors.emplace_back();
    if (!ReadTensorInfo(&h.tensors.back())) return Failed();
  }
  {
    // Views into h.tensors, which no longer changes.
    std::unordered_set<std::string_view> names;
    names.reserve(h.tensors.size());
    for (size_t k = 0; k < h.tensors.size(); ++k) {
      if (!names.insert(h.tensors[k].name).second) {
        return Fail(Error::AtOffset(ErrorCode::kCorruptMetadata, path_, info_at[k],
                                    "duplicate tensor name '" + h.tensors[k].name + "'"));
      }
    }
  }

  // Tensor data starts at the next alignment boundary. Like llama.cpp, a file without tensors may end
  // right after its metadata, unpadded.
  h.data_offset = pos_;
  if (n_tensors > 0) {
    h.data_offset = (pos_ + h.alignment - 1) / h.alignment * h.alignment;  // pos_ < 2^48, alignment < 2^32
    if (!Skip(h.data_offset - pos_, "padding before tensor data")) return Failed();
  }
  HashTo(h.data_offset);
  const uint64_t data_size = file_size_ - h.data_offset;
  for (size_t k = 0; k < h.tensors.size(); ++k) {
    const TensorInfo& t = h.tensors[k];
    if (t.offset % h.alignment != 0) {
      return Fail(Error::AtOffset(ErrorCode::kCorruptMetadata, path_, info_at[k],
                                  "tensor '" + t.name + "' offset " + std::to_string(t.offset) + " is not aligned to " +
                                      std::to_string(h.alignment)));
    }
    if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
      return Fail(Error::AtOffset(ErrorCode::kTruncated, path_, info_at[k],
                                  "tensor '" + t.name + "' data [" + std::to_string(t.offset) + ", +" +
                                      std::to_string(t.n_bytes) + ") runs past the " + std::to_string(data_size) +
                                      "-byte data section"));
    }
  }
  return h;
}

using format::Fd;

Error OpenError(const std::string& path, int err) {
  const ErrorCode code = (err == ENOENT || err == ENOTDIR) ? ErrorCode::kNotFound : ErrorCode::kIoError;
  return Error(code, path + ": cannot open: " + std::strerror(err));
}

// Reads the header of the file at `path` in one forward pass; `sha`, when set, receives [0, data_offset).
Result<Header> ReadFromFile(const std::string& path, Sha256* sha, uint64_t* file_size) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Fail(OpenError(path, errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Fail(OpenError(path, errno));
  if (S_ISDIR(st.st_mode)) return Fail(ErrorCode::kIoError, path + ": is a directory");
  *file_size = static_cast<uint64_t>(st.st_size);
  FileSource source;
  source.fd = fd.get();
  source.sha = sha;
  return Parser(&source, *file_size, path).Run();
}

// Sets *out from an integer key when present. Arrays (per-layer values in some models) give 0.
Status GetU32(const Header& h, const std::string& key, uint32_t* out, const std::string& path) {
  auto it = h.kv.find(key);
  if (it == h.kv.end()) return {};
  const Value& v = it->second;
  if (v.type == ValueType::kArray) {
    *out = 0;
    return {};
  }
  const std::optional<uint64_t> u = v.AsUint();
  if (!u || *u > std::numeric_limits<uint32_t>::max()) {
    return Fail(Error::AtOffset(ErrorCode::kCorruptMetadata, path, v.offset, key + " is not a uint32"));
  }
  *out = static_cast<uint32_t>(*u);
  return {};
}

Status GetString(const Header& h, const std::string& key, std::string* out, const std::string& path) {
  auto it = h.kv.find(key);
  if (it == h.kv.end()) return {};
  if (it->second.type != ValueType::kString) {
    return Fail(Error::AtOffset(ErrorCode::kCorruptMetadata, path, it->second.offset, key + " is not a string"));
  }
  *out = it->second.s;
  return {};
}

std::string_view PoolingName(uint64_t p) {
  static constexpr std::array<std::string_view, 5> kNames = {"none", "mean", "cls", "last", "rank"};
  return p < kNames.size() ? kNames[p] : "unknown";
}

}  // namespace

std::optional<uint64_t> Value::AsUint() const {
  switch (type) {
    case ValueType::kUint8:
    case ValueType::kUint16:
    case ValueType::kUint32:
    case ValueType::kUint64:
      return u;
    case ValueType::kInt8:
    case ValueType::kInt16:
    case ValueType::kInt32:
    case ValueType::kInt64:
      if (i < 0) return std::nullopt;
      return static_cast<uint64_t>(i);
    default:
      return std::nullopt;
  }
}

std::optional<std::string> Value::AsString() const {
  if (type != ValueType::kString) return std::nullopt;
  return s;
}

Result<Header> ParseHeader(std::span<const uint8_t> bytes, uint64_t file_size, const std::string& path) {
  return Parser(bytes, file_size, path).Run();
}

Result<Header> ReadHeader(const std::string& path) {
  uint64_t file_size = 0;
  return ReadFromFile(path, nullptr, &file_size);
}

Result<ModelInfo> Describe(const std::string& path) {
  // The digest is fed as the parse reads: see docs/gguf.md for what it covers.
  Sha256 sha;
  uint64_t file_size = 0;
  Result<Header> parsed = ReadFromFile(path, &sha, &file_size);
  if (!parsed) return Fail(std::move(parsed.error()));
  const Header& h = *parsed;

  ModelInfo info;
  info.path = path;
  info.backend = "gguf";
  info.format_version = h.version;
  info.file_size = file_size;
  info.data_offset = h.data_offset;
  info.tensor_count = h.tensors.size();

  Status st;
  auto check = [&st](Status s) {
    if (st && !s) st = std::move(s);
  };
  check(GetString(h, "general.architecture", &info.architecture, path));
  check(GetString(h, "general.name", &info.name, path));
  if (!info.architecture.empty()) {
    const std::string& a = info.architecture;
    check(GetU32(h, a + ".context_length", &info.context_length, path));
    check(GetU32(h, a + ".embedding_length", &info.embedding_length, path));
    check(GetU32(h, a + ".block_count", &info.block_count, path));
    check(GetU32(h, a + ".attention.head_count", &info.head_count, path));
    info.head_count_kv = info.head_count;
    check(GetU32(h, a + ".attention.head_count_kv", &info.head_count_kv, path));
    check(GetU32(h, a + ".vocab_size", &info.vocab_size, path));
    if (auto it = h.kv.find(a + ".pooling_type"); it != h.kv.end()) {
      const std::optional<uint64_t> p = it->second.AsUint();
      info.pooling = p ? PoolingName(*p) : "unknown";
    }
  }
  if (!st) return Fail(std::move(st.error()));

  if (!h.kv.contains(info.architecture + ".vocab_size")) {
    if (auto it = h.kv.find("tokenizer.ggml.tokens"); it != h.kv.end()) {
      const Value& v = it->second;
      if (v.type != ValueType::kArray || v.array_count > std::numeric_limits<uint32_t>::max()) {
        return Fail(
            Error::AtOffset(ErrorCode::kCorruptMetadata, path, v.offset, "tokenizer.ggml.tokens is not a token array"));
      }
      info.vocab_size = static_cast<uint32_t>(v.array_count);
    }
  }
  info.has_chat_template = h.kv.contains("tokenizer.chat_template");

  // Parameters and the dominant tensor type by bytes (the file type when general.file_type is absent).
  std::array<uint64_t, kGgmlTypeCount> bytes_by_type{};
  for (const TensorInfo& t : h.tensors) {
    uint64_t elements = 1;
    for (uint64_t d : t.dims) elements *= d;  // checked against overflow by the parser
    info.parameter_count = elements > std::numeric_limits<uint64_t>::max() - info.parameter_count
                               ? std::numeric_limits<uint64_t>::max()
                               : info.parameter_count + elements;
    bytes_by_type[t.type] += t.n_bytes;  // each n_bytes lies within the file; the sum cannot realistically wrap
  }
  if (auto it = h.kv.find("general.file_type"); it != h.kv.end()) {
    const std::optional<uint64_t> ft = it->second.AsUint();
    if (!ft || *ft > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
      return Fail(Error::AtOffset(ErrorCode::kCorruptMetadata, path, it->second.offset,
                                  "general.file_type is not a non-negative integer"));
    }
    info.file_type = static_cast<int32_t>(*ft);
    info.file_type_name = FileTypeName(info.file_type);
  } else if (!h.tensors.empty()) {
    const auto top = std::max_element(bytes_by_type.begin(), bytes_by_type.end());  // first of equals
    // All-empty tensors weigh nothing: then the first tensor's type stands for the file.
    const uint32_t type = *top > 0 ? static_cast<uint32_t>(top - bytes_by_type.begin()) : h.tensors.front().type;
    std::string name = GgmlType(type)->name;
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
    info.file_type_name = std::move(name);
  }

  // The header bytes are in; the file size completes the digest.
  std::array<uint8_t, 8> size_le{};
  for (size_t k = 0; k < size_le.size(); ++k) size_le[k] = static_cast<uint8_t>(file_size >> (8 * k));
  sha.Update(size_le.data(), size_le.size());
  info.digest = "sha256:" + sha.HexDigest();
  return info;
}

bool HasGgufMagic(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return false;
  std::array<char, 4> magic{};
  return ::pread(fd.get(), magic.data(), magic.size(), 0) == 4 && std::memcmp(magic.data(), "GGUF", 4) == 0;
}

}  // namespace modeld::gguf
