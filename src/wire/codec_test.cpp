#include "wire/codec.h"

#include <gtest/gtest.h>

namespace modeld::wire {
namespace {

TEST(Codec, ErrorsRoundTripWithTheirDetails) {
  const Error o = Error::ContextOverflow("decode", 10, 20, 16);
  Error back = ErrorFromJson(ToJson(o));
  EXPECT_TRUE(back.Is(ErrorCode::kContextOverflow));
  ASSERT_TRUE(back.overflow().has_value());
  EXPECT_EQ(back.overflow()->stage, "decode");
  EXPECT_EQ(back.overflow()->resident, 10);
  EXPECT_EQ(back.overflow()->additional, 20);
  EXPECT_EQ(back.overflow()->n_ctx, 16);
  EXPECT_EQ(back.message(), o.message());

  EXPECT_EQ(ErrorFromJson(ToJson(Error::UnsupportedFeature("tools"))).feature(), "tools");
  EXPECT_EQ(ErrorFromJson(ToJson(Error::ManifestMismatch("why"))).reason(), "why");
  Error ev = ErrorFromJson(ToJson(Error(ErrorCode::kSessionUnavailable, "gone").WithReason("evicted")));
  EXPECT_TRUE(ev.Is(ErrorCode::kSessionUnavailable));
  EXPECT_EQ(ev.reason(), "evicted");
  EXPECT_TRUE(ErrorFromJson(Json{{"code", "no_such"}}).Is(ErrorCode::kInternal));
  EXPECT_EQ(HttpStatus(ErrorCode::kContextOverflow), 422);
  EXPECT_EQ(HttpStatus(ErrorCode::kBusy), 409);
}

TEST(Codec, SegmentsComputeDigestsAndRefuseWrongOnes) {
  auto s = SegmentFromJson(Json{{"id", "f"}, {"kind", "file"}, {"content", "int x;"}});
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->digest, SegmentDigest("int x;", false));
  auto same = SegmentFromJson(ToJson(*s));
  ASSERT_TRUE(same.has_value());
  EXPECT_EQ(same->digest, s->digest);
  auto wrong = SegmentFromJson(Json{{"id", "f"}, {"content", "int x;"}, {"digest", "00"}});
  ASSERT_FALSE(wrong.has_value());
  EXPECT_TRUE(wrong.error().Is(ErrorCode::kManifestMismatch));
  auto bad_kind = SegmentFromJson(Json{{"content", "x"}, {"kind", "poem"}});
  ASSERT_FALSE(bad_kind.has_value());
  EXPECT_TRUE(bad_kind.error().Is(ErrorCode::kInvalidArgument));
  EXPECT_FALSE(SegmentFromJson(Json{{"id", "no content"}}).has_value());
  EXPECT_FALSE(SegmentFromJson(Json{{"content", 5}}).has_value());
  EXPECT_FALSE(SegmentsFromJson(Json::object()).has_value());
}

TEST(Codec, DecodeConfigIsStrict) {
  auto ok = DecodeConfigFromJson(Json{{"max_tokens", 7}, {"temperature", 0.5}, {"stop", {"a", "b"}}});
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->max_tokens, 7);
  EXPECT_FLOAT_EQ(ok->temperature, 0.5f);
  EXPECT_EQ(ok->stop, (std::vector<std::string>{"a", "b"}));
  for (const Json& bad :
       {Json{{"max_tokns", 7}}, Json{{"max_tokens", "7"}}, Json{{"max_tokens", 1.5}}, Json{{"max_tokens", 1e12}},
        Json{{"stop", "x"}}, Json{{"stop", {1}}}, Json{{"seed", -1}}, Json::array()}) {
    auto r = DecodeConfigFromJson(bad);
    ASSERT_FALSE(r.has_value()) << bad.dump();
    EXPECT_TRUE(r.error().Is(ErrorCode::kInvalidArgument));
  }
}

TEST(Codec, StatusesAndReportsRoundTrip) {
  PrefixStatus p;
  p.manifest_digest = "abc";
  p.tokens_reused = 5;
  p.tokens_prefilled = 6;
  p.tokens_resident = 11;
  p.first_diff_segment = 2;
  p.segment_tokens = {4, 7};
  auto pb = PrefixStatusFromJson(ToJson(p));
  ASSERT_TRUE(pb.has_value());
  EXPECT_EQ(pb->segment_tokens, p.segment_tokens);
  EXPECT_EQ(pb->first_diff_segment, 2);
  ContextReport r;
  r.workspace_id = "ws";
  r.n_ctx = 64;
  r.kv_bytes = 1234;
  r.segments.push_back({"s", SegmentKind::kSystem, 0, 3});
  auto rb = ContextReportFromJson(ToJson(r));
  ASSERT_TRUE(rb.has_value());
  EXPECT_EQ(rb->workspace_id, "ws");
  EXPECT_EQ(rb->kv_bytes, 1234);
  ASSERT_EQ(rb->segments.size(), 1u);
  EXPECT_EQ(rb->segments[0].kind, SegmentKind::kSystem);
  DecodeResult d;
  d.finish = FinishReason::kStop;
  d.text = "hi";
  auto db = DecodeResultFromJson(ToJson(d));
  ASSERT_TRUE(db.has_value());
  EXPECT_EQ(db->finish, FinishReason::kStop);
}

TEST(Codec, ParseObjectRefusesDeepNestingBeforeAnythingRecursesOnIt) {
  const auto nested = [](int depth) {
    return "{\"a\":" + std::string(static_cast<size_t>(depth - 1), '[') +
           std::string(static_cast<size_t>(depth - 1), ']') + "}";
  };
  auto ok = ParseObject(nested(kMaxJsonDepth));
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  (void)Dump(*ok);
  auto deep = ParseObject(nested(1 << 20));  // would overflow dump()'s recursion
  ASSERT_FALSE(deep.has_value());
  EXPECT_EQ(deep.error().code(), ErrorCode::kInvalidArgument);
}

TEST(Codec, ParseObjectRefusesNonObjects) {
  EXPECT_TRUE(ParseObject("{}").has_value());
  EXPECT_FALSE(ParseObject("{").has_value());
  EXPECT_FALSE(ParseObject("[1]").has_value());
  EXPECT_FALSE(ParseObject("").has_value());
  EXPECT_TRUE(ParseObject("nul").error().Is(ErrorCode::kInvalidArgument));
}

// Found by fuzz/wire_codec_fuzzer (fuzz/regressions): a float out of int64's range was converted
// (undefined behaviour); an integer field that is not an integer reads as absent.
TEST(Codec, IntegerFieldsNeverConvertFloats) {
  auto e = ErrorFromJson(Json::parse(R"({"code":"context_overflow","resident":1e300,"additional":88888888888888888888,
                                         "n_ctx":7.0})"));
  ASSERT_TRUE(e.overflow().has_value());
  EXPECT_EQ(e.overflow()->resident, 0);
  EXPECT_EQ(e.overflow()->additional, 0);
  EXPECT_EQ(e.overflow()->n_ctx, 0);
  auto r = ContextReportFromJson(Json::parse(R"({"segments":[{"id":"a","start":-1e300,"n_tokens":3}]})"));
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->segments.at(0).start, 0);
  EXPECT_EQ(r->segments.at(0).n_tokens, 3);
}

// Found by fuzz/gguf_header_fuzzer: GGUF strings are bytes, and a reply carrying one that is not
// UTF-8 (a model's name) threw from dump(). Dump replaces it.
TEST(Codec, DumpReplacesInvalidUtf8) {
  ModelInfo m;
  m.name = "caf\xe9";
  std::string out;
  ASSERT_NO_THROW(out = Dump(ToJson(m)));
  EXPECT_NE(out.find("caf\xef\xbf\xbd"), std::string::npos) << out;
}

}  // namespace
}  // namespace modeld::wire
