// The snapshot file format: round trips, and refusal of every damaged or incoherent file.
#include "snapshot/snapshot_file.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <nlohmann/json.hpp>

#if defined(__GNUC__) && !defined(__clang__)
// GCC pairs the replaced operator new below with free() and warns; they are the same allocator here.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

// The largest single allocation since the last reset, to show that a header claiming huge sizes is
// refused without allocating them.
namespace {
std::atomic<size_t> g_max_alloc{0};
}
void* operator new(size_t n) {
  size_t seen = g_max_alloc.load(std::memory_order_relaxed);
  while (n > seen && !g_max_alloc.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace modeld::snapshot {
namespace {

using Json = nlohmann::json;

SnapshotFile Full() {
  SnapshotFile f;
  f.workspace = "proj-1:main@host+x.y_z";
  f.model = "qwen2.5-coder";
  f.saved_unix_ms = 1732982400123;
  f.config.n_ctx = 8192;
  f.config.n_batch = 256;
  f.config.n_ubatch = 128;
  f.config.threads = 2;
  f.config.kv_type = "q8_0";
  f.config.flash_attn = true;
  f.config.seed = 0xfedcba9876543210ull;  // above int64's range
  f.config.reuse = false;
  SnapshotIdentity& id = f.session.identity;
  id.backend = "gguf";
  id.backend_build = "llama.cpp de3ff815";
  id.model_digest = std::string(64, 'a');
  id.model_fingerprint = "xxh3:0123456789abcdef";
  id.architecture = "qwen2";
  id.n_layer = 24;
  id.n_embd = 896;
  id.n_head_kv = 2;
  id.n_vocab = 1000;
  id.kv_type = "q8_0";
  id.flash_attn = true;
  id.n_ctx = 8192;
  for (int i = 0; i < 300; ++i) f.session.tokens.push_back((i * 37 + 11) % 1000);
  f.session.prefix_digest = std::string(64, 'b');
  f.session.prefix_segments = {{"system", std::string(64, '1'), SegmentKind::kSystem, 0, 10},
                               {"file:src/ä.cc", std::string(64, '2'), SegmentKind::kFile, 10, 190},
                               {"note:0", std::string(64, '3'), SegmentKind::kChangeNote, 200, 0}};
  f.session.suffix_segments = {{"user", std::string(64, '4'), SegmentKind::kUser, 200, 50}};
  f.session.total_reused = 1234;
  f.session.total_prefilled = 5678;
  f.session.total_generated = 91;
  for (int i = 0; i < 5000; ++i) f.session.state.push_back(static_cast<char>(i * 7));  // with NULs
  WorkspaceState w;
  w.mode = AssemblyMode::kInPlace;  // not the default
  w.prefilled = true;
  w.asked = true;
  w.system = "You are a helpful assistant. ✓";
  w.tools = "";
  w.repo_map = "src/\n  main.cc\n";
  w.base = {{"src/main.cc", "int main() {}\n"}, {"docs/日本語.md", "# こんにちは\n\"quoted\" \\ tab\t\n"}};
  w.files = {{"src/main.cc", "int main() { return 1; }\n"}, {"docs/日本語.md", "# こんにちは\n"}, {"new.txt", ""}};
  w.log = {
      {LogEntry::kTurn, "user", "what does main do? 🙂", std::nullopt},
      {LogEntry::kTurn, "assistant", "it returns", std::string("it returns 0")},
      {LogEntry::kNote, "", "--- src/main.cc\n@@ 1 @@\n-int main() {}\n+int main() { return 1; }\n", std::nullopt}};
  w.compactions = 3;
  w.compactions_in_place = 1;
  w.generation = 4;
  w.rewrites = 5;
  w.prefilled_log_size = 2;
  w.prefilled_rewrites = 5;
  w.context_tokens = 250;
  w.log_tokens = 60;
  w.note_tokens = 20;
  f.workspace_state = w;
  return f;
}

SnapshotFile Bare() {
  SnapshotFile f = Full();
  f.workspace = "bare";
  f.workspace_state.reset();
  f.session.tokens = {1, 2, 3};
  f.session.prefix_digest = "";
  f.session.prefix_segments.clear();
  f.session.suffix_segments.clear();
  f.session.state = "";
  return f;
}

std::string MustEncode(const SnapshotFile& f) {
  auto b = Encode(f);
  EXPECT_TRUE(b.has_value()) << b.error().ToString();
  return b ? *b : std::string();
}

void ExpectSame(const SnapshotIdentity& a, const SnapshotIdentity& b) {
  EXPECT_EQ(a.backend, b.backend);
  EXPECT_EQ(a.backend_build, b.backend_build);
  EXPECT_EQ(a.model_digest, b.model_digest);
  EXPECT_EQ(a.model_fingerprint, b.model_fingerprint);
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.n_layer, b.n_layer);
  EXPECT_EQ(a.n_embd, b.n_embd);
  EXPECT_EQ(a.n_head_kv, b.n_head_kv);
  EXPECT_EQ(a.n_vocab, b.n_vocab);
  EXPECT_EQ(a.kv_type, b.kv_type);
  EXPECT_EQ(a.flash_attn, b.flash_attn);
  EXPECT_EQ(a.n_ctx, b.n_ctx);
}

void ExpectSame(const std::vector<SnapshotSegment>& a, const std::vector<SnapshotSegment>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].id, b[i].id);
    EXPECT_EQ(a[i].digest, b[i].digest);
    EXPECT_EQ(a[i].kind, b[i].kind);
    EXPECT_EQ(a[i].start, b[i].start);
    EXPECT_EQ(a[i].n_tokens, b[i].n_tokens);
  }
}

void ExpectSame(const SnapshotFile& a, const SnapshotFile& b) {
  EXPECT_EQ(a.workspace, b.workspace);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.saved_unix_ms, b.saved_unix_ms);
  EXPECT_EQ(a.config.n_ctx, b.config.n_ctx);
  EXPECT_EQ(a.config.n_batch, b.config.n_batch);
  EXPECT_EQ(a.config.n_ubatch, b.config.n_ubatch);
  EXPECT_EQ(a.config.threads, b.config.threads);
  EXPECT_EQ(a.config.kv_type, b.config.kv_type);
  EXPECT_EQ(a.config.flash_attn, b.config.flash_attn);
  EXPECT_EQ(a.config.seed, b.config.seed);
  EXPECT_EQ(a.config.reuse, b.config.reuse);
  ExpectSame(a.session.identity, b.session.identity);
  EXPECT_EQ(a.session.tokens, b.session.tokens);
  EXPECT_EQ(a.session.prefix_digest, b.session.prefix_digest);
  ExpectSame(a.session.prefix_segments, b.session.prefix_segments);
  ExpectSame(a.session.suffix_segments, b.session.suffix_segments);
  EXPECT_EQ(a.session.total_reused, b.session.total_reused);
  EXPECT_EQ(a.session.total_prefilled, b.session.total_prefilled);
  EXPECT_EQ(a.session.total_generated, b.session.total_generated);
  EXPECT_EQ(a.session.state, b.session.state);
  ASSERT_EQ(a.workspace_state.has_value(), b.workspace_state.has_value());
  if (!a.workspace_state) return;
  const WorkspaceState& x = *a.workspace_state;
  const WorkspaceState& y = *b.workspace_state;
  EXPECT_EQ(x.mode, y.mode);
  EXPECT_EQ(x.prefilled, y.prefilled);
  EXPECT_EQ(x.asked, y.asked);
  EXPECT_EQ(x.system, y.system);
  EXPECT_EQ(x.tools, y.tools);
  EXPECT_EQ(x.repo_map, y.repo_map);
  EXPECT_EQ(x.base, y.base);
  EXPECT_EQ(x.files, y.files);
  ASSERT_EQ(x.log.size(), y.log.size());
  for (size_t i = 0; i < x.log.size(); ++i) {
    EXPECT_EQ(x.log[i].kind, y.log[i].kind);
    EXPECT_EQ(x.log[i].role, y.log[i].role);
    EXPECT_EQ(x.log[i].text, y.log[i].text);
    EXPECT_EQ(x.log[i].sent, y.log[i].sent);
  }
  EXPECT_EQ(x.compactions, y.compactions);
  EXPECT_EQ(x.compactions_in_place, y.compactions_in_place);
  EXPECT_EQ(x.generation, y.generation);
  EXPECT_EQ(x.rewrites, y.rewrites);
  EXPECT_EQ(x.prefilled_log_size, y.prefilled_log_size);
  EXPECT_EQ(x.prefilled_rewrites, y.prefilled_rewrites);
  EXPECT_EQ(x.context_tokens, y.context_tokens);
  EXPECT_EQ(x.log_tokens, y.log_tokens);
  EXPECT_EQ(x.note_tokens, y.note_tokens);
}

uint64_t U64At(const std::string& b, size_t at) {
  uint64_t v;
  std::memcpy(&v, b.data() + at, 8);
  return v;
}
uint32_t U32At(const std::string& b, size_t at) {
  uint32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}
void PutU64(std::string* b, size_t at, uint64_t v) { std::memcpy(b->data() + at, &v, 8); }
void PutU32(std::string* b, size_t at, uint32_t v) { std::memcpy(b->data() + at, &v, 4); }

// The test's own writer of the layout (docs/snapshot.md), independent of Encode: the header's
// fields as given, both checksums made right.
std::string Seal(const std::string& meta, const std::string& tokens_bytes, const std::string& state,
                 uint32_t version = 1, uint32_t flags = 0) {
  std::string b("MODELDSN", 8);
  b.resize(48);
  PutU32(&b, 8, version);
  PutU32(&b, 12, flags);
  PutU64(&b, 16, meta.size());
  PutU64(&b, 24, tokens_bytes.size() / 4);
  PutU64(&b, 32, state.size());
  const std::string head = b.substr(0, 40) + meta;
  PutU64(&b, 40, XXH3_64bits(head.data(), head.size()));
  b += meta + tokens_bytes + state;
  const uint64_t sum = XXH3_64bits(b.data(), b.size());
  b.append(reinterpret_cast<const char*>(&sum), 8);
  return b;
}

struct Parts {
  Json meta;
  std::string tokens, state;
};

Parts Split(const std::string& b) {
  const uint64_t meta_len = U64At(b, 16), n_tokens = U64At(b, 24), state_len = U64At(b, 32);
  Parts p;
  p.meta = Json::parse(b.substr(48, meta_len));
  p.tokens = b.substr(48 + meta_len, 4 * n_tokens);
  p.state = b.substr(48 + meta_len + 4 * n_tokens, state_len);
  return p;
}

// The file with its meta edited, checksums made right again.
std::string WithMeta(const std::string& b, const std::function<void(Json&)>& edit) {
  Parts p = Split(b);
  edit(p.meta);
  return Seal(p.meta.dump(), p.tokens, p.state);
}

std::string Head(const std::string& b) {
  auto n = HeadBytes(std::string_view(b).substr(0, kFixedHeaderBytes));
  EXPECT_TRUE(n.has_value());
  return b.substr(0, n ? *n : 0);
}

TEST(SnapshotFile, RoundTripFull) {
  const SnapshotFile f = Full();
  const std::string b = MustEncode(f);
  auto d = Decode(b);
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  ExpectSame(f, *d);
  // Deterministic: the decoded file encodes to the same bytes.
  EXPECT_EQ(MustEncode(*d), b);
}

TEST(SnapshotFile, EncodedInPartsIsTheSameFileWithoutCopyingTheState) {
  for (const SnapshotFile& f : {Full(), Bare()}) {
    const std::string whole = MustEncode(f);
    SnapshotFile moved = f;
    const char* state_data = moved.session.state.data();
    auto parts = EncodeParts(std::move(moved));
    ASSERT_TRUE(parts.has_value()) << parts.error().ToString();
    EXPECT_EQ(parts->head + parts->state + parts->trailer, whole);
    EXPECT_EQ(parts->size(), whole.size());
    if (!f.session.state.empty()) {
      EXPECT_EQ(parts->state.data(), state_data) << "the state was copied";
    }
  }
  SnapshotFile bad = Full();
  bad.workspace = "no/slashes";
  EXPECT_TRUE(EncodeParts(std::move(bad)).error().Is(ErrorCode::kInvalidArgument));
}

TEST(SnapshotFile, RoundTripBare) {
  const SnapshotFile f = Bare();
  const std::string b = MustEncode(f);
  auto d = Decode(b);
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  ExpectSame(f, *d);
  EXPECT_FALSE(d->workspace_state.has_value());
  EXPECT_EQ(Split(b).meta["workspace_state"], Json(nullptr));
}

TEST(SnapshotFile, RoundTripNoTokensNoState) {
  SnapshotFile f = Bare();
  f.session.tokens.clear();
  auto d = Decode(MustEncode(f));
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  ExpectSame(f, *d);
}

TEST(SnapshotFile, LayoutAsDocumented) {
  const SnapshotFile f = Full();
  const std::string b = MustEncode(f);
  EXPECT_EQ(b.substr(0, 8), "MODELDSN");
  EXPECT_EQ(U32At(b, 8), 1u);
  EXPECT_EQ(U32At(b, 12), 0u);
  const uint64_t meta_len = U64At(b, 16);
  EXPECT_EQ(U64At(b, 24), f.session.tokens.size());
  EXPECT_EQ(U64At(b, 32), f.session.state.size());
  EXPECT_EQ(b.size(), 48 + meta_len + 4 * f.session.tokens.size() + f.session.state.size() + 8);
  // The test's own sealer gives the same bytes: both checksums are where the doc says.
  const Parts p = Split(b);
  EXPECT_EQ(Seal(b.substr(48, meta_len), p.tokens, p.state), b);
  int32_t t0;
  std::memcpy(&t0, b.data() + 48 + meta_len, 4);
  EXPECT_EQ(t0, f.session.tokens[0]);
  EXPECT_EQ(p.state, f.session.state);
  // The meta names every field.
  EXPECT_EQ(p.meta["workspace"], f.workspace);
  EXPECT_EQ(p.meta["identity"]["model_fingerprint"], f.session.identity.model_fingerprint);
  EXPECT_EQ(p.meta["prefix_segments"][1]["kind"], "file");
  EXPECT_EQ(p.meta["workspace_state"]["log"][2]["kind"], "note");
  EXPECT_EQ(p.meta["workspace_state"]["log"][1]["sent"], "it returns 0");
  EXPECT_FALSE(p.meta["workspace_state"]["log"][0].contains("sent"));
}

TEST(SnapshotFile, DecodeInfoFromTheHeadAlone) {
  for (const SnapshotFile& f : {Full(), Bare()}) {
    const std::string b = MustEncode(f);
    const std::string head = Head(b);
    ASSERT_LT(head.size(), b.size());
    auto info = DecodeInfo(head, static_cast<int64_t>(b.size()));
    ASSERT_TRUE(info.has_value()) << info.error().ToString();
    EXPECT_EQ(info->workspace, f.workspace);
    EXPECT_EQ(info->model, f.model);
    EXPECT_EQ(info->saved_unix_ms, f.saved_unix_ms);
    ExpectSame(info->identity, f.session.identity);
    EXPECT_EQ(info->n_tokens, static_cast<int64_t>(f.session.tokens.size()));
    EXPECT_EQ(info->state_bytes, static_cast<int64_t>(f.session.state.size()));
    EXPECT_EQ(info->file_bytes, static_cast<int64_t>(b.size()));
    EXPECT_EQ(info->prefix_digest, f.session.prefix_digest);
    EXPECT_EQ(info->files, f.workspace_state ? 3 : 0);
    EXPECT_EQ(info->log_entries, f.workspace_state ? 3 : 0);
    // The whole file is a head too.
    EXPECT_TRUE(DecodeInfo(b, static_cast<int64_t>(b.size())).has_value());
    // A head cut short, or a file size that disagrees with the header, is refused.
    auto cut = DecodeInfo(head.substr(0, head.size() - 1), static_cast<int64_t>(b.size()));
    ASSERT_FALSE(cut.has_value());
    EXPECT_TRUE(cut.error().Is(ErrorCode::kTruncated)) << cut.error().ToString();
    auto shorter = DecodeInfo(head, static_cast<int64_t>(b.size()) - 1);
    ASSERT_FALSE(shorter.has_value());
    EXPECT_TRUE(shorter.error().Is(ErrorCode::kTruncated)) << shorter.error().ToString();
    auto longer = DecodeInfo(head, static_cast<int64_t>(b.size()) + 1);
    ASSERT_FALSE(longer.has_value());
    EXPECT_TRUE(longer.error().Is(ErrorCode::kCorruptSnapshot)) << longer.error().ToString();
  }
}

// Positions across every part of the file: each header byte, and the first, middle and last bytes
// of the meta, the tokens, the state and the trailing checksum.
std::vector<size_t> FlipPositions(const std::string& b) {
  const uint64_t meta_len = U64At(b, 16), n_tokens = U64At(b, 24), state_len = U64At(b, 32);
  std::vector<size_t> at;
  for (size_t i = 0; i < 48; ++i) at.push_back(i);
  const size_t tokens = 48 + meta_len, state = tokens + 4 * n_tokens, trailer = state + state_len;
  for (auto [from, len] : {std::pair<size_t, size_t>{48, meta_len}, {tokens, 4 * n_tokens}, {state, state_len}}) {
    at.insert(at.end(), {from, from + 1, from + len / 2, from + len - 1});
  }
  for (size_t i = trailer; i < b.size(); ++i) at.push_back(i);
  return at;
}

TEST(SnapshotFile, EverySingleByteFlipIsRefused) {
  const std::string b = MustEncode(Full());
  const size_t head_bytes = Head(b).size();
  const size_t state_at = head_bytes + 4 * U64At(b, 24), state_len = U64At(b, 32);
  int checked = 0;
  for (size_t at : FlipPositions(b)) {
    for (uint8_t mask : {0x01, 0x10, 0x80, 0xff}) {
      std::string bad = b;
      bad[at] = static_cast<char>(bad[at] ^ mask);
      auto d = Decode(bad);
      ASSERT_FALSE(d.has_value()) << "flip 0x" << std::hex << int(mask) << " at " << std::dec << at;
      const ErrorCode code = d.error().code();
      if (at >= 8 && at < 12) {
        EXPECT_EQ(code, ErrorCode::kUnsupportedVersion) << at << ": " << d.error().ToString();
      } else if (at >= 16 && at < 24 && code == ErrorCode::kTruncated) {
        // meta_len grown past the file's end: nothing tells it from a file cut short.
        EXPECT_GT(U64At(bad, 16) + 48, bad.size()) << at;
      } else {
        EXPECT_EQ(code, ErrorCode::kCorruptSnapshot) << at << ": " << d.error().ToString();
      }
      // In parts, as a store's ReadParts gives them.
      EncodedFile parts{bad.substr(0, state_at), bad.substr(state_at, state_len), bad.substr(state_at + state_len)};
      EXPECT_FALSE(Decode(std::move(parts)).has_value()) << "in parts, flip at " << at;
      if (at < head_bytes) {  // list/show trust the head only once its own checksum says so
        auto info = DecodeInfo(std::string_view(bad).substr(0, head_bytes), static_cast<int64_t>(bad.size()));
        EXPECT_FALSE(info.has_value()) << "DecodeInfo, flip at " << at;
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 4 * 68);
}

TEST(SnapshotFile, EveryTruncationIsRefused) {
  for (const SnapshotFile& f : {Full(), Bare()}) {
    const std::string b = MustEncode(f);
    std::vector<size_t> lengths;
    for (size_t n = 0; n < 64 && n < b.size(); ++n) lengths.push_back(n);
    for (size_t n = 64; n < b.size(); n += 97) lengths.push_back(n);
    for (size_t n = b.size() > 16 ? b.size() - 16 : 0; n < b.size(); ++n) lengths.push_back(n);
    for (size_t n : lengths) {
      auto d = Decode(std::string_view(b).substr(0, n));
      ASSERT_FALSE(d.has_value()) << n;
      EXPECT_TRUE(d.error().Is(ErrorCode::kTruncated)) << n << ": " << d.error().ToString();
      auto info = DecodeInfo(std::string_view(b).substr(0, std::min(n, Head(b).size())), static_cast<int64_t>(n));
      EXPECT_FALSE(info.has_value()) << n;
    }
    // And bytes past the end.
    auto d = Decode(b + std::string(1, '\0'));
    ASSERT_FALSE(d.has_value());
    EXPECT_TRUE(d.error().Is(ErrorCode::kCorruptSnapshot)) << d.error().ToString();
  }
}

TEST(SnapshotFile, HugeSizesAreRefusedWithoutAllocating) {
  const std::string good = MustEncode(Bare());
  struct Case {
    size_t at;
    uint64_t value;
    ErrorCode want;
  };
  const Case cases[] = {
      {16, uint64_t{1} << 63, ErrorCode::kCorruptSnapshot},  // meta_len
      {16, ~uint64_t{0}, ErrorCode::kCorruptSnapshot},       // meta_len
      {16, (uint64_t{512} << 20) + 1, ErrorCode::kCorruptSnapshot},
      {16, uint64_t{512} << 20, ErrorCode::kTruncated},      // at the limit: the file is too short
      {24, uint64_t{1} << 40, ErrorCode::kCorruptSnapshot},  // n_tokens
      {24, (uint64_t{1} << 24) + 1, ErrorCode::kCorruptSnapshot},
      {24, ~uint64_t{0} / 4 + 1, ErrorCode::kCorruptSnapshot},  // 4 * n_tokens overflows
      {32, uint64_t{1} << 62, ErrorCode::kCorruptSnapshot},     // state_len
      {32, (uint64_t{64} << 30) + 1, ErrorCode::kCorruptSnapshot},
      {32, ~uint64_t{0} - 100, ErrorCode::kCorruptSnapshot},  // the sum would wrap around
  };
  for (const Case& c : cases) {
    for (size_t keep : {size_t{48}, good.size()}) {
      std::string bad = good.substr(0, keep);
      PutU64(&bad, c.at, c.value);
      g_max_alloc = 0;
      auto d = Decode(bad);
      auto info = DecodeInfo(bad, static_cast<int64_t>(bad.size()));
      auto head = HeadBytes(std::string_view(bad).substr(0, 48));
      const size_t max_alloc = g_max_alloc;
      ASSERT_FALSE(d.has_value()) << c.at << "=" << c.value;
      EXPECT_EQ(d.error().code(), c.want) << c.at << "=" << c.value << ": " << d.error().ToString();
      EXPECT_FALSE(info.has_value());
      EXPECT_EQ(head.has_value(), c.want == ErrorCode::kTruncated);
      EXPECT_LT(max_alloc, size_t{64} << 10) << c.at << "=" << c.value;
    }
  }
}

TEST(SnapshotFile, VersionAndFlagsAreChecked) {
  const std::string b = MustEncode(Full());
  const Parts p = Split(b);
  const std::string meta = b.substr(48, U64At(b, 16));
  auto v2 = Decode(Seal(meta, p.tokens, p.state, /*version=*/2));
  ASSERT_FALSE(v2.has_value());
  EXPECT_TRUE(v2.error().Is(ErrorCode::kUnsupportedVersion)) << v2.error().ToString();
  auto flags = Decode(Seal(meta, p.tokens, p.state, 1, /*flags=*/1));
  ASSERT_FALSE(flags.has_value());
  EXPECT_TRUE(flags.error().Is(ErrorCode::kCorruptSnapshot)) << flags.error().ToString();
  auto magic = Decode("MODELDSX" + b.substr(8));
  ASSERT_FALSE(magic.has_value());
  EXPECT_TRUE(magic.error().Is(ErrorCode::kCorruptSnapshot));
  auto empty = Decode(std::string_view(""));
  ASSERT_FALSE(empty.has_value());
  EXPECT_TRUE(empty.error().Is(ErrorCode::kTruncated));
}

// Resealed files whose checksums are right but whose content makes no sense.
TEST(SnapshotFile, IncoherentContentIsRefused) {
  const std::string b = MustEncode(Full());
  // The resealer itself keeps a good file good.
  ASSERT_TRUE(Decode(WithMeta(b, [](Json&) {})).has_value());

  struct Case {
    const char* name;
    std::function<void(Json&)> edit;
    bool in_head = true;  // DecodeInfo sees it too
  };
  const Case cases[] = {
      {"overlapping segments", [](Json& m) { m["suffix_segments"][0]["start"] = 199; }},
      {"a gap between segments", [](Json& m) { m["suffix_segments"][0]["start"] = 201; }},
      {"prefix not from 0", [](Json& m) { m["prefix_segments"][0]["start"] = 1; }},
      {"segments past the tokens", [](Json& m) { m["suffix_segments"][0]["n_tokens"] = 101; }},
      {"a negative segment", [](Json& m) { m["prefix_segments"][2]["n_tokens"] = -1; }},
      {"an unknown segment kind", [](Json& m) { m["prefix_segments"][0]["kind"] = "bogus"; }},
      {"segments without a prefix", [](Json& m) { m["prefix_digest"] = ""; }},
      {"more tokens than n_ctx", [](Json& m) { m["identity"]["n_ctx"] = 299; }},
      {"tokens outside the vocabulary", [](Json& m) { m["identity"]["n_vocab"] = 500; }, false},
      {"prefilled_log_size > log size", [](Json& m) { m["workspace_state"]["prefilled_log_size"] = 4; }},
      {"a negative prefilled_log_size", [](Json& m) { m["workspace_state"]["prefilled_log_size"] = -1; }},
      {"a turn of an unknown role", [](Json& m) { m["workspace_state"]["log"][0]["role"] = "system"; }},
      {"an unknown assembly mode", [](Json& m) { m["workspace_state"]["mode"] = "sideways"; }},
      {"an unknown log kind", [](Json& m) { m["workspace_state"]["log"][0]["kind"] = "memo"; }},
      {"a file twice",
       [](Json& m) {
         m["workspace_state"]["files"].push_back({{"path", "new.txt"}, {"content", "x"}});
       }},
      {"a bad workspace id", [](Json& m) { m["workspace"] = "a/b"; }},
      {"an empty workspace id", [](Json& m) { m["workspace"] = ""; }},
      {"a missing field", [](Json& m) { m["identity"].erase("n_vocab"); }},
      {"a missing section", [](Json& m) { m.erase("config"); }},
      {"a wrong type", [](Json& m) { m["config"]["n_ctx"] = "8192"; }},
      {"a float for an integer", [](Json& m) { m["saved_unix_ms"] = 1.5; }},
      {"an int32 out of range", [](Json& m) { m["config"]["n_batch"] = int64_t{1} << 40; }},
      {"an int64 out of range", [](Json& m) { m["totals"]["reused"] = ~uint64_t{0}; }},
      {"a negative seed", [](Json& m) { m["config"]["seed"] = -1; }},
      {"a workspace state of the wrong type", [](Json& m) { m["workspace_state"] = 3; }},
      {"not an object",
       [](Json& m) {
         m = Json::array({1, 2});
       }},
  };
  for (const Case& c : cases) {
    const std::string bad = WithMeta(b, c.edit);
    auto d = Decode(bad);
    ASSERT_FALSE(d.has_value()) << c.name;
    EXPECT_TRUE(d.error().Is(ErrorCode::kCorruptSnapshot)) << c.name << ": " << d.error().ToString();
    auto info = DecodeInfo(Head(bad), static_cast<int64_t>(bad.size()));
    EXPECT_EQ(info.has_value(), !c.in_head) << c.name;
  }
  // A meta that is not JSON at all.
  const Parts p = Split(b);
  for (const char* meta : {"", "{", "{\"workspace\": \"\xff\"}", "null"}) {
    auto d = Decode(Seal(meta, p.tokens, p.state));
    ASSERT_FALSE(d.has_value()) << meta;
    EXPECT_TRUE(d.error().Is(ErrorCode::kCorruptSnapshot)) << d.error().ToString();
  }
}

// Encode refuses what Decode would: nothing it writes fails to read back.
TEST(SnapshotFile, EncodeRefusesIncoherentContent) {
  const std::vector<std::pair<const char*, std::function<void(SnapshotFile&)>>> cases = {
      {"overlapping segments", [](SnapshotFile& f) { f.session.suffix_segments[0].start = 199; }},
      {"segments past the tokens", [](SnapshotFile& f) { f.session.tokens.resize(240); }},
      {"prefilled_log_size > log size", [](SnapshotFile& f) { f.workspace_state->prefilled_log_size = 4; }},
      {"a bad workspace id", [](SnapshotFile& f) { f.workspace = std::string(129, 'a'); }},
      {"tokens outside the vocabulary", [](SnapshotFile& f) { f.session.tokens[5] = 1000; }},
      {"a negative token", [](SnapshotFile& f) { f.session.tokens[5] = -1; }},
      {"invalid UTF-8", [](SnapshotFile& f) { f.workspace_state->files["src/main.cc"] = "\xff\xfe"; }},
      {"invalid UTF-8 in a sent", [](SnapshotFile& f) { f.workspace_state->log[1].sent = "\xc3"; }},
      {"no backend", [](SnapshotFile& f) { f.session.identity.backend.clear(); }},
  };
  for (const auto& [name, edit] : cases) {
    SnapshotFile f = Full();
    edit(f);
    auto b = Encode(f);
    ASSERT_FALSE(b.has_value()) << name;
    EXPECT_TRUE(b.error().Is(ErrorCode::kInvalidArgument)) << name << ": " << b.error().ToString();
  }
}

TEST(SnapshotFile, WorkspaceIds) {
  EXPECT_TRUE(ValidWorkspaceId("a"));
  EXPECT_TRUE(ValidWorkspaceId("."));
  EXPECT_TRUE(ValidWorkspaceId(".."));
  EXPECT_TRUE(ValidWorkspaceId("A-z_0.9:@+"));
  EXPECT_TRUE(ValidWorkspaceId(std::string(128, 'x')));
  EXPECT_FALSE(ValidWorkspaceId(""));
  EXPECT_FALSE(ValidWorkspaceId(std::string(129, 'x')));
  EXPECT_FALSE(ValidWorkspaceId("a/b"));
  EXPECT_FALSE(ValidWorkspaceId("a b"));
  EXPECT_FALSE(ValidWorkspaceId(std::string("a\0b", 3)));
  EXPECT_FALSE(ValidWorkspaceId("é"));
}

}  // namespace
}  // namespace modeld::snapshot
