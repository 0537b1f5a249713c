#include "modeld/error.h"

#include <gtest/gtest.h>

#include <set>

namespace modeld {
namespace {

TEST(Error, EveryCodeHasAStableUniqueNameThatRoundTrips) {
  const ErrorCode all[] = {ErrorCode::kSessionUnavailable, ErrorCode::kSessionClosed,   ErrorCode::kContextOverflow,
                           ErrorCode::kUnsupportedFeature, ErrorCode::kSessionFatal,    ErrorCode::kManifestMismatch,
                           ErrorCode::kBackendMismatch,    ErrorCode::kNotGguf,         ErrorCode::kTruncated,
                           ErrorCode::kUnsupportedVersion, ErrorCode::kCorruptMetadata, ErrorCode::kInvalidArgument,
                           ErrorCode::kNotFound,           ErrorCode::kIoError,         ErrorCode::kBusy,
                           ErrorCode::kCancelled,          ErrorCode::kInternal,        ErrorCode::kUnauthorized,
                           ErrorCode::kSnapshotMismatch,   ErrorCode::kCorruptSnapshot};
  std::set<std::string_view> names;
  for (auto c : all) {
    auto n = CodeName(c);
    EXPECT_TRUE(names.insert(n).second) << n;
    EXPECT_EQ(CodeFromName(n), c);
  }
  // The wire names the protocol carries.
  EXPECT_EQ(CodeName(ErrorCode::kContextOverflow), "context_overflow");
  EXPECT_EQ(CodeName(ErrorCode::kSessionFatal), "session_fatal");
  EXPECT_EQ(CodeName(ErrorCode::kManifestMismatch), "manifest_mismatch");
  EXPECT_FALSE(CodeFromName("no_such_code").has_value());
}

TEST(Error, ContextOverflowCarriesItsCounts) {
  Error e = Error::ContextOverflow("prefill_suffix", 100, 50, 128);
  EXPECT_TRUE(e.Is(ErrorCode::kContextOverflow));
  EXPECT_FALSE(e.Is(ErrorCode::kSessionFatal));
  ASSERT_TRUE(e.overflow().has_value());
  EXPECT_EQ(e.overflow()->stage, "prefill_suffix");
  EXPECT_EQ(e.overflow()->resident, 100);
  EXPECT_EQ(e.overflow()->additional, 50);
  EXPECT_EQ(e.overflow()->n_ctx, 128);
  EXPECT_NE(e.ToString().find("context_overflow"), std::string::npos);
}

TEST(Error, DetailsOfOtherCodes) {
  EXPECT_EQ(Error::UnsupportedFeature("tools").feature(), "tools");
  EXPECT_EQ(Error::ManifestMismatch("digest differs").reason(), "digest differs");
  Error f = Error::AtOffset(ErrorCode::kTruncated, "/m.gguf", 42, "string runs past the end");
  EXPECT_EQ(f.offset(), 42u);
  EXPECT_NE(f.message().find("/m.gguf"), std::string::npos);
  EXPECT_NE(f.message().find("42"), std::string::npos);
}

}  // namespace
}  // namespace modeld
