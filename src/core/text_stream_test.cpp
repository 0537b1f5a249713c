#include "core/text_stream.h"

#include <gtest/gtest.h>

namespace modeld {
namespace {

TEST(TextStream, NeverSplitsAUtf8Character) {
  TextStream ts;
  const std::string euro = "\xE2\x82\xAC";  // €
  EXPECT_EQ(ts.Push("a"), "a");
  EXPECT_EQ(ts.Push(euro.substr(0, 1)), "");
  EXPECT_EQ(ts.Push(euro.substr(1, 1)), "");
  EXPECT_EQ(ts.Push(euro.substr(2, 1) + "b"), euro + "b");
  EXPECT_EQ(ts.Flush(), "");
}

TEST(TextStream, InvalidBytesBecomeReplacementCharacters) {
  TextStream ts;
  EXPECT_EQ(ts.Push("x\xFFy"), "x\xEF\xBF\xBDy");
  EXPECT_EQ(ts.Push("\xC3"), "");         // incomplete: held
  EXPECT_EQ(ts.Flush(), "\xEF\xBF\xBD");  // still incomplete at the end
  TextStream t2;
  EXPECT_EQ(t2.Push("\xC3(z"), "\xEF\xBF\xBD(z");  // a lead byte followed by a non-continuation
}

TEST(TextStream, StopStringEndsTheStreamAndIsNotEmitted) {
  TextStream ts({"</end>"});
  std::string out;
  for (std::string_view p : {"hello <", "/en", "d> world"}) out += ts.Push(p);
  EXPECT_TRUE(ts.stopped());
  EXPECT_EQ(out, "hello ");
  EXPECT_EQ(ts.Push("more"), "");
  EXPECT_EQ(ts.Flush(), "");
}

TEST(TextStream, PartialStopPrefixIsReleasedWhenItDoesNotMatch) {
  TextStream ts({"STOP"});
  EXPECT_EQ(ts.Push("abc ST"), "abc ");
  EXPECT_EQ(ts.Push("O"), "");
  EXPECT_EQ(ts.Push("P"), "");
  EXPECT_TRUE(ts.stopped());
  TextStream t2({"STOP"});
  EXPECT_EQ(t2.Push("abc ST"), "abc ");
  EXPECT_EQ(t2.Push("ATE"), "STATE");
  EXPECT_FALSE(t2.stopped());
}

TEST(TextStream, EarliestOfSeveralStopsWins) {
  TextStream ts({"bb", "a"});
  EXPECT_EQ(ts.Push("xxabbb"), "xx");
  EXPECT_TRUE(ts.stopped());
}

}  // namespace
}  // namespace modeld
