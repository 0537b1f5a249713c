// Conversation placement without a backend: a fake session stands in.
#include "daemon/conversations.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>

namespace modeld::daemon {
namespace {

class FakeSession final : public Session {
 public:
  Result<PrefixStatus> EnsurePrefix(const PrefixInput&) override { return PrefixStatus{}; }
  Result<SuffixStatus> PrefillSuffix(const SuffixInput&) override { return SuffixStatus{}; }
  Result<DecodeResult> Decode(const DecodeConfig&, const ChunkCallback&) override { return DecodeResult{}; }
  Result<ContextReport> Report() override {
    ContextReport r;
    r.n_ctx = 4096;
    return r;
  }
  Result<std::vector<int32_t>> Tokenize(std::string_view text, bool) override {
    return std::vector<int32_t>(text.size(), 1);
  }
  Status Close() override { return {}; }
  Result<std::unique_ptr<Session>> Fork() override {
    if (!forkable) return Fail(Error::UnsupportedFeature("fork"));
    return std::unique_ptr<Session>(std::make_unique<FakeSession>());
  }
  static inline std::atomic<bool> forkable{true};
};

struct Fixture {
  // Every session 100 bytes; `budget` 0 = unlimited.
  explicit Fixture(int64_t budget = 0, int max_sessions = 64)
      : sessions(
            [](const std::string&, const SessionConfig& cfg) -> Result<SessionPlan> {
              SessionPlan p;
              p.config = cfg;
              p.kv_bytes = 100;
              return p;
            },
            [this](const std::string&, const std::string&, const SessionConfig&,
                   const ProgressFunc&) -> Result<std::unique_ptr<Session>> {
              ++opens;
              return std::make_unique<FakeSession>();
            },
            budget, max_sessions, nullptr),
        convs(&sessions) {}

  // Places `tokens`, records them as the conversation's prompt, releases; returns the placement.
  Conversations::Placement Turn(const std::vector<int32_t>& tokens, const std::string& hint = "") {
    Conversations::Placement where;
    auto lease = convs.Acquire("m", tokens, hint, SessionConfig{}, {}, &where);
    EXPECT_TRUE(lease.has_value()) << lease.error().ToString();
    if (!lease) return where;
    convs.Record(where.id, tokens);
    return where;
  }

  std::atomic<int> opens{0};
  SessionManager sessions;
  Conversations convs;
};

std::vector<int32_t> Seq(int from, int n) {
  std::vector<int32_t> v;
  for (int i = 0; i < n; ++i) v.push_back(from + i);
  return v;
}

std::vector<int32_t> Cat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(Conversations, ATurnThatExtendsTheLastPromptGoesToItsConversation) {
  Fixture f;
  const auto sys = Seq(1, 500);
  const auto t1 = f.Turn(Cat(sys, Seq(10000, 20)));
  EXPECT_TRUE(t1.fresh);
  const auto t2 = f.Turn(Cat(Cat(sys, Seq(10000, 20)), Seq(20000, 30)));
  EXPECT_FALSE(t2.fresh);
  EXPECT_EQ(t2.id, t1.id);
  EXPECT_EQ(t2.matched, 520);
  EXPECT_EQ(f.opens, 1);
}

TEST(Conversations, ASecondConversationSharingOnlyTheSystemPromptGetsItsOwn) {
  Fixture f;
  const auto sys = Seq(1, 500);
  const auto a1 = f.Turn(Cat(sys, Seq(10000, 100)));
  const auto b1 = f.Turn(Cat(sys, Seq(30000, 100)));  // shares 500 of a1's 600 tokens
  EXPECT_NE(b1.id, a1.id);
  EXPECT_TRUE(b1.fresh);
  const auto a2 = f.Turn(Cat(Cat(sys, Seq(10000, 100)), Seq(40000, 10)));
  const auto b2 = f.Turn(Cat(Cat(sys, Seq(30000, 100)), Seq(50000, 10)));
  EXPECT_EQ(a2.id, a1.id);
  EXPECT_EQ(b2.id, b1.id);
}

TEST(Conversations, ATailTheTemplateRendersAnewStillMatches) {
  Fixture f;
  const auto prompt = Seq(1, 300);
  const auto t1 = f.Turn(prompt);
  auto next = Seq(1, 294);  // the last 6 tokens differ (within kTailSlack)
  next = Cat(next, Seq(900, 40));
  const auto t2 = f.Turn(next);
  EXPECT_EQ(t2.id, t1.id);
  EXPECT_EQ(t2.matched, 294);
  auto far = Seq(1, 200);  // 100 tokens of its prompt gone: a different conversation
  far = Cat(far, Seq(700, 5));
  EXPECT_NE(f.Turn(far).id, t1.id);
}

TEST(Conversations, ANewConversationWithAShortFirstMessageIsNotTakenForAnother) {
  Fixture f;
  const auto sys = Seq(1, 100);                                     // below kMinForkTokens: no copy either
  const auto a = f.Turn(Cat(Cat(sys, Seq(7000, 12)), Seq(50, 3)));  // system, a short message, a generation prompt
  const auto b = f.Turn(Cat(Cat(sys, Seq(8000, 12)), Seq(50, 3)));  // another short first message
  EXPECT_NE(a.id, b.id);
  EXPECT_TRUE(b.fresh);
}

TEST(Conversations, AHintNarrowsButNeverMakesAMismatchAHit) {
  Fixture f;
  const auto a = f.Turn(Seq(1, 100), "key-a");
  // Same tokens, another key: not a candidate.
  EXPECT_NE(f.Turn(Cat(Seq(1, 100), Seq(500, 5)), "key-b").id, a.id);
  // The right key but other tokens: not a hit either.
  EXPECT_NE(f.Turn(Seq(9000, 100), "key-a").id, a.id);
  // The right key and a continuation.
  EXPECT_EQ(f.Turn(Cat(Seq(1, 100), Seq(600, 5)), "key-a").id, a.id);
}

TEST(Conversations, ABusyConversationIsWaitedFor) {
  Fixture f;
  const auto prompt = Seq(1, 100);
  const auto t1 = f.Turn(prompt);
  auto held = f.sessions.Acquire(t1.id);
  ASSERT_TRUE(held.has_value());
  auto second = std::async(std::launch::async, [&] { return f.Turn(Cat(prompt, Seq(500, 5))); });
  EXPECT_EQ(second.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  held->Release();
  EXPECT_EQ(second.get().id, t1.id);
}

TEST(Conversations, AnEvictedConversationIsForgottenAndANewOneOpened) {
  Fixture f(/*budget=*/100);  // room for one session
  const auto a = f.Turn(Seq(1, 100));
  const auto b = f.Turn(Seq(5000, 100));  // evicts a
  EXPECT_NE(a.id, b.id);
  const auto a2 = f.Turn(Cat(Seq(1, 100), Seq(600, 5)));
  EXPECT_TRUE(a2.fresh);
  EXPECT_NE(a2.id, a.id);
  EXPECT_LE(f.convs.size(), 2u);  // records follow the session table
}

TEST(Conversations, ANewConversationSharingALongPrefixStartsFromACopy) {
  Fixture f;
  const auto sys = Seq(1, 400);  // >= kMinForkTokens
  const auto a1 = f.Turn(Cat(sys, Seq(10000, 100)));
  const auto b1 = f.Turn(Cat(sys, Seq(30000, 100)));
  EXPECT_TRUE(b1.fresh);
  EXPECT_EQ(b1.forked_from, a1.id);
  EXPECT_EQ(b1.matched, 400);
  EXPECT_EQ(f.opens, 1);  // the copy opened nothing
  // Both go on warm, each in its own session.
  EXPECT_EQ(f.Turn(Cat(Cat(sys, Seq(10000, 100)), Seq(40000, 5))).id, a1.id);
  EXPECT_EQ(f.Turn(Cat(Cat(sys, Seq(30000, 100)), Seq(50000, 5))).id, b1.id);
  // A short shared prefix is not worth a copy.
  const auto c1 = f.Turn(Cat(Seq(1, 100), Seq(60000, 100)));
  EXPECT_TRUE(c1.forked_from.empty());
  EXPECT_EQ(f.opens, 2);
}

TEST(Conversations, ABusyDonorOrABackendWithoutForkMeansAColdOpenNotAWait) {
  Fixture f;
  const auto sys = Seq(1, 400);
  const auto a1 = f.Turn(Cat(sys, Seq(10000, 100)));
  {
    auto held = f.sessions.Acquire(a1.id);
    ASSERT_TRUE(held.has_value());
    const auto b1 = f.Turn(Cat(sys, Seq(30000, 100)));  // would deadlock if it waited for a1
    EXPECT_TRUE(b1.forked_from.empty());
    EXPECT_EQ(f.opens, 2);
  }
  FakeSession::forkable = false;
  const auto c1 = f.Turn(Cat(sys, Seq(50000, 100)));
  FakeSession::forkable = true;
  EXPECT_TRUE(c1.fresh);
  EXPECT_TRUE(c1.forked_from.empty());
  EXPECT_EQ(f.opens, 3);
}

}  // namespace
}  // namespace modeld::daemon
