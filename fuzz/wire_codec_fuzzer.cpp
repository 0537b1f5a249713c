// libFuzzer target: every JSON decoder of src/wire/codec.h on arbitrary request bodies.
//
// Input: one selector byte, then the body. The selector picks the decoder (the letters make the seed
// files readable; any other byte picks by value):
//   o ParseObject          s SegmentFromJson     S SegmentsFromJson    c SessionConfigFromJson
//   d DecodeConfigFromJson m ModelInfoFromJson   p PrefixStatusFromJson u SuffixStatusFromJson
//   r DecodeResultFromJson R ContextReportFromJson e ErrorFromJson
// Every body also goes through ParseObject, as the daemon's handlers do. Checked on every input:
//  - no crash, no uncaught exception, no undefined behaviour (UBSan), no huge allocation;
//  - a decoded value encodes (ToJson) to JSON that decodes again to the same value (round trip),
//    and both the value and any error serialize with dump() without throwing, as the daemon replies.
//
// A fixed finding stays covered: IntOr once converted a JSON float outside int64's range (1e300, or
// an integer literal above 2^64) to int64_t, undefined behaviour (codec_test: IntegerFieldsNeverConvertFloats).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "wire/codec.h"

namespace {

using namespace modeld;
using wire::Json;

[[noreturn]] void Die(const char* what, const Json& j) {
  std::fprintf(stderr, "wire_codec_fuzzer: property violated: %s\n  json: %s\n", what,
               j.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
  std::abort();
}

void DumpError(const Error& e) { (void)wire::Dump(wire::ToJson(e)); }

// Decode j; when it decodes, encode, decode again and require the same encoding.
template <class Decode>
void RoundTrip(const Json& j, Decode decode) {
  auto first = decode(j);
  if (!first) return DumpError(first.error());
  const Json encoded = wire::ToJson(*first);
  (void)wire::Dump(encoded);
  auto second = decode(encoded);
  if (!second) Die("the encoding of a decoded value does not decode", encoded);
  if (wire::ToJson(*second) != encoded) Die("decode(encode(x)) != x", encoded);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);

  // What the daemon does with every request body.
  if (auto obj = wire::ParseObject(body); obj) {
    (void)wire::Dump(*obj);
  } else {
    DumpError(obj.error());
  }

  const Json j = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;

  static constexpr std::string_view kSelectors = "osScdmpurRe";
  char sel = static_cast<char>(data[0]);
  if (kSelectors.find(sel) == std::string_view::npos) sel = kSelectors[data[0] % kSelectors.size()];

  switch (sel) {
    case 'o':
      break;  // done above
    case 's':
      RoundTrip(j, [](const Json& x) { return wire::SegmentFromJson(x); });
      break;
    case 'S': {
      auto segs = wire::SegmentsFromJson(j);
      if (!segs) {
        DumpError(segs.error());
        break;
      }
      Json arr = Json::array();
      for (const ManifestSegment& s : *segs) arr.push_back(wire::ToJson(s));
      auto again = wire::SegmentsFromJson(arr);
      if (!again || again->size() != segs->size()) Die("segments do not decode again", arr);
      for (size_t k = 0; k < segs->size(); ++k) {
        if (wire::ToJson((*again)[k]) != arr[k]) Die("segment round trip", arr[k]);
      }
      (void)wire::Dump(arr);
      break;
    }
    case 'c':
      RoundTrip(j, [](const Json& x) { return wire::SessionConfigFromJson(x, SessionConfig{}); });
      break;
    case 'd':
      RoundTrip(j, [](const Json& x) { return wire::DecodeConfigFromJson(x); });
      break;
    case 'm':
      RoundTrip(j, [](const Json& x) { return wire::ModelInfoFromJson(x); });
      break;
    case 'p':
      RoundTrip(j, [](const Json& x) { return wire::PrefixStatusFromJson(x); });
      break;
    case 'u':
      RoundTrip(j, [](const Json& x) { return wire::SuffixStatusFromJson(x); });
      break;
    case 'r':
      RoundTrip(j, [](const Json& x) { return wire::DecodeResultFromJson(x); });
      break;
    case 'R':
      RoundTrip(j, [](const Json& x) { return wire::ContextReportFromJson(x); });
      break;
    case 'e': {
      const Error e = wire::ErrorFromJson(j);
      const Json encoded = wire::ToJson(e);
      (void)wire::Dump(encoded);
      if (wire::ToJson(wire::ErrorFromJson(encoded)) != encoded) Die("error round trip", encoded);
      break;
    }
  }
  return 0;
}
