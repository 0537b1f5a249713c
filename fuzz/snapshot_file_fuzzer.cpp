// libFuzzer target: the snapshot file decoders of src/snapshot/snapshot_file.h (Decode, HeadBytes,
// DecodeInfo) on arbitrary files.
//
// Input: one selector byte, then the file. An even selector feeds the file as it is; an odd one first
// makes its two checksums right (the header's over [0,40) + meta, when the header's meta_len fits in
// the file; the trailing one over everything before it), so mutations get past the checksums into the
// meta's JSON, its fields and the coherence checks. Checked on every input:
//  - no crash, no uncaught exception, no undefined behaviour (UBSan), no huge allocation (a header
//    claiming huge sizes must be refused before anything is allocated);
//  - DecodeInfo on the head alone (HeadBytes of it) agrees with DecodeInfo on the whole file;
//  - a file that decodes has a head that decodes (DecodeInfo), with the same fields;
//  - the file in parts (as SnapshotStore::ReadParts splits it, by StateRangeOf) decodes exactly when
//    the whole file does, to the same tokens and state;
//  - a decoded file encodes (Encode), the encoding decodes, and encodes again to the same bytes; in
//    parts (EncodeParts) it is the same bytes.
#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "snapshot/snapshot_file.h"

namespace {

using namespace modeld;
using namespace modeld::snapshot;

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "snapshot_file_fuzzer: property violated: %s\n", what);
  std::abort();
}

void Reseal(std::string* b) {
  if (b->size() >= kFixedHeaderBytes) {
    uint64_t meta_len;
    std::memcpy(&meta_len, b->data() + 16, 8);
    if (meta_len <= b->size() - kFixedHeaderBytes) {
      std::string head = b->substr(0, 40) + b->substr(kFixedHeaderBytes, meta_len);
      const uint64_t sum = XXH3_64bits(head.data(), head.size());
      std::memcpy(b->data() + 40, &sum, 8);
    }
  }
  if (b->size() >= kFixedHeaderBytes + kTrailerBytes) {
    const uint64_t sum = XXH3_64bits(b->data(), b->size() - kTrailerBytes);
    std::memcpy(b->data() + b->size() - kTrailerBytes, &sum, 8);
  }
}

bool SameInfo(const SnapshotInfo& a, const SnapshotInfo& b) {
  const SnapshotIdentity &x = a.identity, &y = b.identity;
  return a.workspace == b.workspace && a.model == b.model && a.saved_unix_ms == b.saved_unix_ms &&
         a.n_tokens == b.n_tokens && a.state_bytes == b.state_bytes && a.file_bytes == b.file_bytes &&
         a.prefix_digest == b.prefix_digest && a.files == b.files && a.log_entries == b.log_entries &&
         x.backend == y.backend && x.backend_build == y.backend_build && x.model_digest == y.model_digest &&
         x.model_fingerprint == y.model_fingerprint && x.architecture == y.architecture && x.n_layer == y.n_layer &&
         x.n_embd == y.n_embd && x.n_head_kv == y.n_head_kv && x.n_vocab == y.n_vocab && x.kv_type == y.kv_type &&
         x.flash_attn == y.flash_attn && x.n_ctx == y.n_ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string file(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) Reseal(&file);
  const int64_t n = static_cast<int64_t>(file.size());

  auto info = DecodeInfo(file, n);
  if (!info) (void)info.error().ToString();
  // The head alone says the same as the whole file.
  if (auto head = HeadBytes(std::string_view(file).substr(0, std::min(file.size(), kFixedHeaderBytes)));
      head && *head <= file.size()) {
    auto from_head = DecodeInfo(std::string_view(file).substr(0, *head), n);
    if (from_head.has_value() != info.has_value()) Die("DecodeInfo of the head disagrees with the whole file's");
    if (info && !SameInfo(*info, *from_head)) Die("DecodeInfo of the head gives other fields");
  } else if (info) {
    Die("DecodeInfo accepted a file whose header HeadBytes refuses");
  }

  auto f = Decode(file);
  // In parts, where the header puts them (the store reads them only when they add up to the file).
  std::optional<Result<SnapshotFile>> from_parts;
  if (auto range = StateRangeOf(std::string_view(file).substr(0, std::min(file.size(), kFixedHeaderBytes)));
      range && range->at + range->len + kTrailerBytes == file.size()) {
    EncodedFile parts{file.substr(0, range->at), file.substr(range->at, range->len),
                      file.substr(range->at + range->len)};
    from_parts = Decode(std::move(parts));
    if (from_parts->has_value() != f.has_value()) Die("Decode in parts disagrees with the whole file's");
    if (f && ((*from_parts)->session.tokens != f->session.tokens || (*from_parts)->session.state != f->session.state)) {
      Die("Decode in parts gives other tokens or state");
    }
  }
  if (!f) {
    (void)f.error().ToString();
    return 0;
  }
  if (!from_parts) Die("a file decodes but its header's parts do not add up to it");
  if (!info) Die("a file decodes but its head does not");
  SnapshotInfo expect = *info;
  expect.n_tokens = static_cast<int64_t>(f->session.tokens.size());
  expect.state_bytes = static_cast<int64_t>(f->session.state.size());
  if (!SameInfo(*info, expect) || info->workspace != f->workspace || info->model != f->model ||
      info->prefix_digest != f->session.prefix_digest) {
    Die("DecodeInfo and Decode disagree");
  }

  auto encoded = Encode(*f);
  if (!encoded) Die("a decoded file does not encode");
  auto again = Decode(*encoded);
  if (!again) Die("an encoded file does not decode");
  auto encoded_again = Encode(*again);
  if (!encoded_again || *encoded_again != *encoded) Die("encode(decode(encode(x))) != encode(x)");
  SnapshotFile copy = *again;
  auto in_parts = EncodeParts(std::move(copy));
  if (!in_parts || in_parts->head + in_parts->state + in_parts->trailer != *encoded) {
    Die("EncodeParts differs from Encode");
  }
  if (again->session.tokens != f->session.tokens || again->session.state != f->session.state) {
    Die("tokens or state changed in the round trip");
  }
  return 0;
}
