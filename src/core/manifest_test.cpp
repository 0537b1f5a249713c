#include "modeld/manifest.h"

#include <gtest/gtest.h>

namespace modeld {
namespace {

TEST(Manifest, SegmentDigestDependsOnContentAndSpecialParsingOnly) {
  auto a = ManifestSegment::Make("a", SegmentKind::kFile, "int x;");
  auto b = ManifestSegment::Make("b", SegmentKind::kSystem, "int x;");
  auto c = ManifestSegment::Make("a", SegmentKind::kFile, "int x;", true);
  auto d = ManifestSegment::Make("a", SegmentKind::kFile, "int y;");
  EXPECT_EQ(a.digest, b.digest);  // ids and kinds are labels
  EXPECT_NE(a.digest, c.digest);
  EXPECT_NE(a.digest, d.digest);
  EXPECT_EQ(a.digest.size(), 64u);
}

TEST(Manifest, DigestCoversOrderAndEverySegment) {
  ContextManifest m1, m2, m3;
  m1.Add("s", SegmentKind::kSystem, "sys");
  m1.Add("f", SegmentKind::kFile, "file");
  m2.Add("f", SegmentKind::kFile, "file");
  m2.Add("s", SegmentKind::kSystem, "sys");
  m3.Add("s", SegmentKind::kSystem, "sys");
  m3.Add("f", SegmentKind::kFile, "file!");
  EXPECT_NE(m1.Digest(), m2.Digest());
  EXPECT_NE(m1.Digest(), m3.Digest());
  // Segment boundaries matter: "ab" | "c" is not "a" | "bc".
  ContextManifest x, y;
  x.Add("1", SegmentKind::kOther, "ab");
  x.Add("2", SegmentKind::kOther, "c");
  y.Add("1", SegmentKind::kOther, "a");
  y.Add("2", SegmentKind::kOther, "bc");
  EXPECT_NE(x.Digest(), y.Digest());
}

TEST(Manifest, ValidateCatchesStaleDigestsAndDuplicateIds) {
  ContextManifest m;
  m.Add("a", SegmentKind::kFile, "one");
  m.Add("b", SegmentKind::kFile, "two");
  EXPECT_TRUE(m.Validate().has_value());
  m.mutable_segments()[1].content = "changed behind the digest's back";
  auto e = m.Validate();
  ASSERT_FALSE(e.has_value());
  EXPECT_TRUE(e.error().Is(ErrorCode::kManifestMismatch));
  ContextManifest dup;
  dup.Add("a", SegmentKind::kFile, "one");
  dup.Add("a", SegmentKind::kFile, "two");
  ASSERT_FALSE(dup.Validate().has_value());
  EXPECT_TRUE(dup.Validate().error().Is(ErrorCode::kInvalidArgument));
}

TEST(Manifest, KindNamesRoundTrip) {
  for (auto k : {SegmentKind::kSystem, SegmentKind::kTools, SegmentKind::kRepoMap, SegmentKind::kFile,
                 SegmentKind::kConversation, SegmentKind::kUser, SegmentKind::kChangeNote, SegmentKind::kTemplate,
                 SegmentKind::kOther}) {
    EXPECT_EQ(SegmentKindFromName(SegmentKindName(k)), k);
  }
  EXPECT_FALSE(SegmentKindFromName("bogus").has_value());
}

}  // namespace
}  // namespace modeld
