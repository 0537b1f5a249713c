// The session table without a backend: a fake session stands in, so these run
// in the adapter-less build too.
#include "daemon/session_manager.h"

#include <gtest/gtest.h>

#include <chrono>
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
    return r;
  }
  Result<std::vector<int32_t>> Tokenize(std::string_view text, bool) override {
    return std::vector<int32_t>(text.size(), 1);
  }
  Status Close() override { return {}; }
};

SessionManager Manager() {
  return SessionManager(
      [](const std::string&, const std::string&, const SessionConfig&,
         const ProgressFunc&) -> Result<std::unique_ptr<Session>> { return std::make_unique<FakeSession>(); },
      0, 0, nullptr);
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

}  // namespace
}  // namespace modeld::daemon
