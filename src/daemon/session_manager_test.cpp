// The session table without a backend: a fake session stands in, so these run
// in the adapter-less build too.
#include "daemon/session_manager.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>

namespace modeld::daemon {
namespace {

// Enough of a session for the workspace layer: one token per byte, prefills that
// only count.
class FakeSession final : public Session {
 public:
  Result<PrefixStatus> EnsurePrefix(const PrefixInput& in) override {
    PrefixStatus st;
    for (const auto& s : in.manifest.segments()) {
      st.segment_tokens.push_back(static_cast<int32_t>(s.content.size()));
      st.tokens_resident += static_cast<int64_t>(s.content.size());
    }
    st.tokens_prefilled = st.tokens_resident;
    st.manifest_digest = in.manifest.Digest();
    return st;
  }
  Result<SuffixStatus> PrefillSuffix(const SuffixInput&) override { return SuffixStatus{}; }
  Result<DecodeResult> Decode(const DecodeConfig&, const ChunkCallback&) override { return DecodeResult{}; }
  Result<ContextReport> Report() override {
    ContextReport r;
    r.n_ctx = 4096;
    r.kv_bytes = kKvBytes;
    return r;
  }
  static constexpr int64_t kKvBytes = 100;
  Result<std::vector<int32_t>> Tokenize(std::string_view text, bool) override {
    return std::vector<int32_t>(text.size(), 1);
  }
  Status Close() override { return {}; }
};

// Plans every session at FakeSession::kKvBytes; `opens` counts the sessions actually opened.
SessionManager Manager(int64_t kv_budget = 0, std::atomic<int>* opens = nullptr,
                       std::function<void()> during_open = {}) {
  return SessionManager(
      [](const std::string& model, const SessionConfig& cfg) -> Result<SessionPlan> {
        if (model == "bad") return Fail(OutOfRange("config.n_ctx", "small", "big"));
        SessionPlan p;
        p.config = cfg;
        p.kv_bytes = FakeSession::kKvBytes;
        return p;
      },
      [opens, during_open](const std::string&, const std::string&, const SessionConfig&,
                           const ProgressFunc&) -> Result<std::unique_ptr<Session>> {
        if (opens) ++*opens;
        if (during_open) during_open();
        return std::make_unique<FakeSession>();
      },
      kv_budget, 0, nullptr);
}

// `GET /v1/workspaces/{ws}` reads the snapshot: it must answer while a long call holds the workspace.
TEST(SessionManager, SnapshotAnswersWhileACallHoldsTheWorkspaceAndShowsItsEffectAfter) {
  auto m = Manager();
  ASSERT_TRUE(m.Open("ws", "model", {}, {}, {}).has_value());
  auto lease = m.Acquire("ws");
  ASSERT_TRUE(lease.has_value());
  ASSERT_TRUE(lease->entry().assembly->PutFile("src/a.cc", "int a;\n").has_value());

  auto snap = std::async(std::launch::async, [&] { return m.GetSnapshot("ws"); });
  const bool answered = snap.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  if (!answered) lease->Release();  // else the waiting snapshot would hang the test
  ASSERT_TRUE(answered) << "the snapshot waited for the call";
  auto during = snap.get();
  ASSERT_TRUE(during.has_value());
  EXPECT_EQ(during->stats.files, 0);  // as of the last finished call
  EXPECT_TRUE(during->file_sizes.empty());

  lease->Release();
  auto after = m.GetSnapshot("ws");
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->stats.files, 1);
  ASSERT_EQ(after->file_sizes.size(), 1u);
  EXPECT_EQ(after->file_sizes[0].first, "src/a.cc");
  EXPECT_EQ(after->file_sizes[0].second, 7);
}

TEST(SessionManager, SnapshotOfAMissingOrClosedWorkspaceIsTyped) {
  auto m = Manager();
  EXPECT_TRUE(m.GetSnapshot("nope").error().Is(ErrorCode::kNotFound));
  ASSERT_TRUE(m.Open("ws", "model", {}, {}, {}).has_value());
  ASSERT_TRUE(m.Close("ws").has_value());
  EXPECT_TRUE(m.GetSnapshot("ws").error().Is(ErrorCode::kSessionClosed));
}

// A compaction's second session counts in the KV budget: reserving it evicts idle sessions, is
// refused when only busy ones are left, and gives the room back when dropped.
TEST(SessionManager, SpareSessionsCountInTheKvBudget) {
  auto m = Manager(3 * FakeSession::kKvBytes);
  ASSERT_TRUE(m.Open("a", "model", {}, {}, {}).has_value());
  ASSERT_TRUE(m.Open("b", "model", {}, {}, {}).has_value());
  ASSERT_TRUE(m.Open("c", "model", {}, {}, {}).has_value());
  EXPECT_EQ(m.TotalBytes(), 3 * FakeSession::kKvBytes);
  {
    auto lease_c = m.Acquire("c");
    ASSERT_TRUE(lease_c.has_value());
    auto kv = m.ReserveSpare(*lease_c);
    ASSERT_TRUE(kv.has_value()) << kv.error().ToString();
    EXPECT_EQ(m.TotalBytes(), 3 * FakeSession::kKvBytes);  // "a", the least recently used, went
    EXPECT_TRUE(m.Acquire("a").error().Is(ErrorCode::kSessionUnavailable));
    // "b" busy too: no room for a second reservation.
    auto lease_b = m.Acquire("b");
    ASSERT_TRUE(lease_b.has_value());
    auto refused = m.ReserveSpare(*lease_b);
    ASSERT_FALSE(refused.has_value());
    EXPECT_TRUE(refused.error().Is(ErrorCode::kBusy));
    EXPECT_EQ(m.TotalBytes(), 3 * FakeSession::kKvBytes);
  }
  EXPECT_EQ(m.TotalBytes(), 2 * FakeSession::kKvBytes);  // the reservation ended with its scope
  ASSERT_TRUE(m.Open("d", "model", {}, {}, {}).has_value());
  EXPECT_TRUE(m.Acquire("b").has_value());  // room for "d" without evicting
}

// Nothing is opened for a session the plan refuses or the budget cannot hold: the checks come
// before any allocation.
TEST(SessionManager, RefusedPlansAndOversizedSessionsOpenNothing) {
  std::atomic<int> opens{0};
  auto small = Manager(FakeSession::kKvBytes - 1, &opens);
  auto over = small.Open("ws", "model", {}, {}, {});
  ASSERT_FALSE(over.has_value());
  EXPECT_TRUE(over.error().Is(ErrorCode::kInvalidArgument)) << over.error().ToString();
  EXPECT_EQ(over.error().field(), "config.n_ctx");
  auto m = Manager(0, &opens);
  auto bad = m.Open("ws", "bad", {}, {}, {});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().field(), "config.n_ctx");
  EXPECT_EQ(opens, 0);
  EXPECT_EQ(small.TotalBytes(), 0);
}

// The budget is held while a session is being opened, so two opens cannot both take the last
// room; an open waiting for room made by busy sessions is refused as busy, not over-committed.
TEST(SessionManager, AnOpenUnderWayHoldsItsRoomInTheBudget) {
  std::promise<void> entered, release;
  auto released = release.get_future().share();
  std::atomic<int> opens{0};
  auto m = Manager(FakeSession::kKvBytes, &opens, [&, first = std::make_shared<std::atomic<bool>>(true)] {
    if (first->exchange(false)) {
      entered.set_value();
      released.wait();
    }
  });
  auto slow = std::async(std::launch::async, [&] { return m.Open("a", "model", {}, {}, {}); });
  entered.get_future().wait();  // "a" is being opened, its room reserved
  EXPECT_EQ(m.TotalBytes(), FakeSession::kKvBytes);
  auto second = m.Open("b", "model", {}, {}, {});  // answers at once: not held up by the slow open
  ASSERT_FALSE(second.has_value());
  EXPECT_TRUE(second.error().Is(ErrorCode::kBusy)) << second.error().ToString();
  release.set_value();
  ASSERT_TRUE(slow.get().has_value());
  EXPECT_EQ(m.TotalBytes(), FakeSession::kKvBytes);
  EXPECT_EQ(opens, 1);
}

}  // namespace
}  // namespace modeld::daemon
