// The session on a recurrent model (generated tiny-mamba), through the public contract.
//
// A recurrent memory holds one state per sequence, the state after its last token: it cannot drop a
// tail. The adapter must then clear it and re-prefill from token 0 (reuse_fallback), and stay
// exactly as correct as a fresh session; appending after the resident tokens needs no fallback.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "llama/llama_session.h"
#include "llama/test_models.h"
#include "modeld/service.h"

namespace modeld {
namespace {

namespace fs = std::filesystem;

// As in llama_session_test: warm and cold logits may differ by summation order only. On tiny-mamba
// an edit 40+ tokens back, beyond the convolutions' reach, still moves the last logits by ~5e-3
// (model_writer_test's TinyMambaStateCarriesTheHistory), so a wrong state cannot hide under this.
constexpr float kLogitTolerance = 1e-4f;

std::string MambaModel() { return testing::GeneratedModel("tiny-mamba", "recurrent-test-tiny-mamba"); }

std::unique_ptr<Session> Open(const std::string& ws, SessionConfig cfg = {}) {
  OpenSessionRequest req;
  req.model_path = MambaModel();
  req.workspace_id = ws;
  if (cfg.n_ctx == SessionConfig{}.n_ctx) cfg.n_ctx = 2048;
  cfg.threads = 2;
  req.config = cfg;
  auto s = Service().OpenSession(req);
  EXPECT_TRUE(s.has_value()) << s.error().ToString();
  return s ? std::move(*s) : nullptr;
}

using testing::EditRandomFile;
using testing::MakeFiles;
using testing::Manifest;

SuffixInput Suffix(const std::string& digest, const std::vector<std::string>& turns) {
  SuffixInput in;
  in.prefix_digest = digest;
  for (size_t i = 0; i < turns.size(); ++i) {
    in.segments.push_back(ManifestSegment::Make("turn:" + std::to_string(i), SegmentKind::kUser, turns[i]));
  }
  return in;
}

std::vector<float> Logits(Session& s) {
  auto l = dynamic_cast<llama::LlamaSession&>(s).LastLogits();
  EXPECT_TRUE(l.has_value()) << l.error().ToString();
  return l ? *l : std::vector<float>{};
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size() || a.empty()) return INFINITY;
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

std::string Greedy(Session& s, int n = 8) {
  DecodeConfig dc;
  dc.max_tokens = n;
  auto r = s.Decode(dc, {});
  EXPECT_TRUE(r.has_value()) << r.error().ToString();
  return r ? r->text : "";
}

ContextReport Report(Session& s) {
  auto r = s.Report();
  EXPECT_TRUE(r.has_value());
  return r ? *r : ContextReport{};
}

// What a fresh session computes for (manifest, suffix turns): its last logits and greedy text.
struct Cold {
  std::vector<float> logits;
  std::string text;
};
Cold ColdRun(const ContextManifest& m, const std::vector<std::string>& turns, int n_decode = 8) {
  auto s = Open("cold");
  Cold c;
  if (!s) return c;
  auto ps = s->EnsurePrefix({m, {}});
  EXPECT_TRUE(ps.has_value()) << ps.error().ToString();
  if (!ps) return c;
  EXPECT_FALSE(ps->reuse_fallback);
  if (!turns.empty()) {
    auto ss = s->PrefillSuffix(Suffix(ps->manifest_digest, turns));
    EXPECT_TRUE(ss.has_value()) << ss.error().ToString();
  }
  c.logits = Logits(*s);
  c.text = Greedy(*s, n_decode);
  EXPECT_EQ(Report(*s).reuse_fallbacks, 0) << "a fresh session never needs a fallback";
  return c;
}

TEST(RecurrentSession, ModelIsRecurrentAndReportsNoPartialTrim) {
  auto s = Open("report");
  ASSERT_NE(s, nullptr);
  const auto r = Report(*s);
  EXPECT_FALSE(r.partial_trim);
  EXPECT_EQ(r.reuse_fallbacks, 0);
  EXPECT_EQ(r.tokens_resident, 0);
}

// (1) An edit in an early segment: the state can't be rolled back to the edit, so everything is
// re-prefilled from token 0 and the result says so; the result equals a fresh session's.
TEST(RecurrentSession, EarlyEditFallsBackToFullPrefill) {
  std::mt19937 rng(31);
  auto files = MakeFiles(rng, 4);
  auto s = Open("early-edit");
  ASSERT_NE(s, nullptr);
  auto first = s->EnsurePrefix({Manifest(files), {}});
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  EXPECT_FALSE(first->reuse_fallback) << "nothing was resident: not a fallback";
  EXPECT_EQ(first->tokens_reused, 0);
  EXPECT_EQ(first->tokens_prefilled, first->tokens_resident);

  files[0].insert(files[0].size() / 2, " /*edit*/ ");  // segment 1 of 5
  const auto edited = Manifest(files);
  auto st = s->EnsurePrefix({edited, {}});
  ASSERT_TRUE(st.has_value()) << st.error().ToString();
  int64_t total = 0;
  for (int32_t n : st->segment_tokens) total += n;
  EXPECT_TRUE(st->reuse_fallback);
  EXPECT_EQ(st->tokens_reused, 0);
  EXPECT_EQ(st->tokens_prefilled, total);
  EXPECT_EQ(st->tokens_resident, total);
  EXPECT_EQ(st->first_diff_segment, 0) << "nothing was reused, so segment 0 is the first not reused";

  auto r = Report(*s);
  EXPECT_FALSE(r.partial_trim);
  EXPECT_EQ(r.reuse_fallbacks, 1);
  EXPECT_EQ(r.tokens_resident, total);
  EXPECT_EQ(r.prefix_tokens, total);
  EXPECT_EQ(r.total_reused, 0);
  EXPECT_EQ(r.total_prefilled, first->tokens_prefilled + total);

  const Cold cold = ColdRun(edited, {});
  EXPECT_LE(MaxAbsDiff(Logits(*s), cold.logits), kLogitTolerance);
  EXPECT_EQ(Greedy(*s), cold.text);
  EXPECT_EQ(Report(*s).reuse_fallbacks, 1) << "reading the logits and decoding needed no further fallback";
}

// A recurrent session forks too (its state copies into the fork) and the fork answers as the
// original does. The copy itself is not observable here: the fork's first decode recomputes from
// token 0, as the logits are not part of the state and a recurrent memory cannot drop just the
// last token to re-evaluate it.
TEST(RecurrentSession, ForkCopiesTheState) {
  std::mt19937 rng(41);
  auto s = Open("fork");
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->EnsurePrefix({Manifest(MakeFiles(rng, 2)), {}}).has_value());
  auto fork = s->Fork();
  ASSERT_TRUE(fork.has_value()) << fork.error().ToString();
  EXPECT_EQ(Report(**fork).tokens_resident, Report(*s).tokens_resident);
  EXPECT_EQ(Report(**fork).total_prefilled, 0);
  const std::string from_fork = Greedy(**fork);
  EXPECT_EQ(from_fork, Greedy(*s));
}

// The cold baseline (reuse off) re-prefills from 0 on every call by choice: not a fallback.
TEST(RecurrentSession, ReuseOffIsNotCountedAsFallback) {
  std::mt19937 rng(37);
  auto files = MakeFiles(rng, 2);
  SessionConfig cfg;
  cfg.reuse = false;
  auto s = Open("reuse-off", cfg);
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->EnsurePrefix({Manifest(files), {}}).has_value());
  files[0] += " more";
  auto st = s->EnsurePrefix({Manifest(files), {}});
  ASSERT_TRUE(st.has_value());
  EXPECT_FALSE(st->reuse_fallback);
  EXPECT_EQ(st->tokens_reused, 0);
  EXPECT_EQ(Report(*s).reuse_fallbacks, 0);
}

// (2) Turns with random edits (anywhere, including none): each turn's last logits and greedy text
// equal a fresh session's. Every turn after the first must drop the previous turn's suffix and
// generated tokens, which a recurrent memory can only do by starting over: one fallback per turn,
// and none anywhere else.
TEST(RecurrentSession, WarmEqualsColdAfterRandomEdits) {
  std::mt19937 rng(7);
  auto files = MakeFiles(rng, 5);
  auto warm = Open("warm");
  ASSERT_NE(warm, nullptr);
  for (int turn = 0; turn < 6; ++turn) {
    SCOPED_TRACE("turn " + std::to_string(turn));
    if (turn > 0 && turn != 3) {  // turn 3: the same manifest again
      EditRandomFile(rng, files, turn);
    }
    const auto m = Manifest(files);
    const std::vector<std::string> q = {"question " + std::to_string(turn) + ": what changed?"};

    auto ps = warm->EnsurePrefix({m, {}});
    ASSERT_TRUE(ps.has_value()) << ps.error().ToString();
    EXPECT_EQ(ps->reuse_fallback, turn > 0);
    EXPECT_EQ(ps->tokens_reused, 0);
    EXPECT_EQ(ps->tokens_prefilled, ps->tokens_resident);
    auto ss = warm->PrefillSuffix(Suffix(ps->manifest_digest, q));
    ASSERT_TRUE(ss.has_value()) << ss.error().ToString();
    EXPECT_FALSE(ss->reuse_fallback) << "the suffix is appended right after the resident prefix";
    EXPECT_EQ(ss->tokens_reused, 0);
    EXPECT_EQ(ss->tokens_resident, ps->tokens_resident + ss->tokens_prefilled);

    const auto w_logits = Logits(*warm);
    const std::string w_text = Greedy(*warm);
    const Cold c = ColdRun(m, q);
    const float diff = MaxAbsDiff(w_logits, c.logits);
    RecordProperty("max_logit_diff_turn" + std::to_string(turn), std::to_string(diff));
    EXPECT_LE(diff, kLogitTolerance);
    EXPECT_EQ(w_text, c.text);
    EXPECT_EQ(Report(*warm).reuse_fallbacks, turn);
  }
}

// (3) A pure append (the same segments and more) continues from the state at the end: no fallback,
// every resident token reused, the same result as a fresh session. Likewise for the suffix.
TEST(RecurrentSession, PureAppendReusesWithoutFallback) {
  std::mt19937 rng(41);
  auto files = MakeFiles(rng, 4);
  const std::vector<std::string> head(files.begin(), files.begin() + 2);
  auto s = Open("append");
  ASSERT_NE(s, nullptr);
  auto a = s->EnsurePrefix({Manifest(head), {}});
  ASSERT_TRUE(a.has_value());

  auto b = s->EnsurePrefix({Manifest(files), {}});
  ASSERT_TRUE(b.has_value()) << b.error().ToString();
  EXPECT_FALSE(b->reuse_fallback);
  EXPECT_EQ(b->tokens_reused, a->tokens_resident);
  EXPECT_EQ(b->tokens_prefilled, b->tokens_resident - a->tokens_resident);
  EXPECT_EQ(b->first_diff_segment, 3) << "segments 0..2 (system, file 0, file 1) were reused";
  const Cold cold_prefix = ColdRun(Manifest(files), {});
  EXPECT_LE(MaxAbsDiff(Logits(*s), cold_prefix.logits), kLogitTolerance);

  // The suffix: one turn, then the same turn and another.
  const std::vector<std::string> t1 = {"first question"};
  const std::vector<std::string> t2 = {"first question", "and a follow-up"};
  auto s1 = s->PrefillSuffix(Suffix(b->manifest_digest, t1));
  ASSERT_TRUE(s1.has_value());
  EXPECT_FALSE(s1->reuse_fallback);
  auto s2 = s->PrefillSuffix(Suffix(b->manifest_digest, t2));
  ASSERT_TRUE(s2.has_value()) << s2.error().ToString();
  EXPECT_FALSE(s2->reuse_fallback);
  EXPECT_EQ(s2->tokens_reused, s1->tokens_prefilled);
  EXPECT_EQ(s2->tokens_resident, s1->tokens_resident + s2->tokens_prefilled);

  const Cold cold = ColdRun(Manifest(files), t2);
  EXPECT_LE(MaxAbsDiff(Logits(*s), cold.logits), kLogitTolerance);
  EXPECT_EQ(Greedy(*s), cold.text);
  const auto r = Report(*s);
  EXPECT_EQ(r.reuse_fallbacks, 0);
  EXPECT_EQ(r.total_reused, a->tokens_resident + s2->tokens_reused);
}

// The same manifest again with nothing in between: nothing to trim, nothing to prefill, and the
// state (and the last logits) are still those of the last token, so decoding needs no fallback.
TEST(RecurrentSession, UnchangedPrefixNeedsNoFallback) {
  std::mt19937 rng(43);
  const auto m = Manifest(MakeFiles(rng, 3));
  auto s = Open("unchanged");
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->EnsurePrefix({m, {}}).has_value());
  auto again = s->EnsurePrefix({m, {}});
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(again->reuse_fallback);
  EXPECT_EQ(again->tokens_prefilled, 0);
  EXPECT_EQ(again->tokens_reused, again->tokens_resident);

  const Cold cold = ColdRun(m, {});
  EXPECT_EQ(Greedy(*s), cold.text);
  EXPECT_EQ(Report(*s).reuse_fallbacks, 0) << "decoding after an unchanged EnsurePrefix re-prefilled everything";

  // The same for the suffix: the same suffix twice with nothing in between, then decode.
  const std::vector<std::string> q = {"a question"};
  auto a = s->PrefillSuffix(Suffix(again->manifest_digest, q));  // drops the generated tokens
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->reuse_fallback);
  auto b = s->PrefillSuffix(Suffix(again->manifest_digest, q));
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b->reuse_fallback);
  EXPECT_EQ(b->tokens_prefilled, 0);
  EXPECT_EQ(Greedy(*s), ColdRun(m, q).text);
  EXPECT_EQ(Report(*s).reuse_fallbacks, 1) << "decoding after an unchanged PrefillSuffix re-prefilled everything";
}

// (4) The suffix changes after a decode (the generated tokens and part of the old suffix must go),
// and Decode after each such trim: always the fresh session's result.
TEST(RecurrentSession, ChangedSuffixAndDecodeAfterTrimMatchCold) {
  std::mt19937 rng(47);
  const auto m = Manifest(MakeFiles(rng, 3));
  const std::vector<std::string> q1 = {"explain the function in file 1"};
  const std::vector<std::string> q2 = {"explain the function in file 2, briefly"};  // same start as q1
  auto s = Open("suffix");
  ASSERT_NE(s, nullptr);
  auto ps = s->EnsurePrefix({m, {}});
  ASSERT_TRUE(ps.has_value());
  const int64_t prefix_n = ps->tokens_resident;

  auto a = s->PrefillSuffix(Suffix(ps->manifest_digest, q1));
  ASSERT_TRUE(a.has_value());
  EXPECT_FALSE(a->reuse_fallback);
  // Two decodes in a row: the second continues from the first's state (nothing to trim) and the
  // two equal one longer decode of a fresh session.
  const Cold cold1 = ColdRun(m, q1, 6);
  const std::string part1 = Greedy(*s, 3);
  const std::string part2 = Greedy(*s, 3);
  EXPECT_EQ(part1 + part2, cold1.text);
  int64_t fallbacks = 0;
  EXPECT_EQ(Report(*s).reuse_fallbacks, fallbacks);

  // A changed suffix after a decode.
  auto b = s->PrefillSuffix(Suffix(ps->manifest_digest, q2));
  ASSERT_TRUE(b.has_value()) << b.error().ToString();
  ++fallbacks;
  EXPECT_TRUE(b->reuse_fallback);
  EXPECT_EQ(b->tokens_reused, 0);
  EXPECT_EQ(b->tokens_prefilled, b->tokens_resident) << "the prefix is re-prefilled too";
  EXPECT_EQ(b->tokens_resident - prefix_n, static_cast<int64_t>(s->Tokenize(q2[0], false)->size()));
  const Cold cold2 = ColdRun(m, q2, 6);
  EXPECT_LE(MaxAbsDiff(Logits(*s), cold2.logits), kLogitTolerance);
  EXPECT_EQ(Greedy(*s, 6), cold2.text);
  auto r = Report(*s);
  EXPECT_EQ(r.reuse_fallbacks, fallbacks);
  EXPECT_EQ(r.prefix_tokens, prefix_n);
  EXPECT_EQ(r.suffix_tokens, b->tokens_resident - prefix_n);
  EXPECT_EQ(r.generated_tokens, r.tokens_resident - b->tokens_resident);

  // The same suffix again: only the generated tokens go, still a fallback, still the same result.
  auto c = s->PrefillSuffix(Suffix(ps->manifest_digest, q2));
  ASSERT_TRUE(c.has_value());
  ++fallbacks;
  EXPECT_TRUE(c->reuse_fallback);
  EXPECT_EQ(c->tokens_prefilled, c->tokens_resident);
  EXPECT_EQ(Greedy(*s, 6), cold2.text);

  // Back to the bare prefix (suffix and generated tokens dropped), then decode from it.
  auto d = s->EnsurePrefix({m, {}});
  ASSERT_TRUE(d.has_value());
  ++fallbacks;
  EXPECT_TRUE(d->reuse_fallback);
  EXPECT_EQ(d->tokens_reused, 0);
  EXPECT_EQ(d->tokens_prefilled, prefix_n);
  const Cold cold0 = ColdRun(m, {}, 6);
  EXPECT_LE(MaxAbsDiff(Logits(*s), cold0.logits), kLogitTolerance);
  EXPECT_EQ(Greedy(*s, 6), cold0.text);
  r = Report(*s);
  EXPECT_EQ(r.reuse_fallbacks, fallbacks);
  EXPECT_EQ(r.suffix_tokens, 0);
}

}  // namespace
}  // namespace modeld
