// libFuzzer target: the OpenAI API's request decoders (src/daemon/openai/codec.h) on arbitrary bodies.
//
// Input: one selector byte, then the body: c ParseChatCompletion, t ParseCompletion, e ParseEmbeddings
// (any other byte picks by value). Checked on every input:
//  - no crash, no uncaught exception (a throwing nlohmann accessor would be a 500), no undefined
//    behaviour (UBSan), no huge allocation;
//  - a refusal names its parameter and serializes in OpenAI's error shape with a 4xx status;
//  - an accepted request's values are within the contract's ranges (ValidateDecodeConfig, once the
//    daemon fills max_tokens), and the replies made from it serialize.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "daemon/openai/codec.h"

namespace {

using namespace modeld;
using namespace modeld::daemon::openai;

[[noreturn]] void Die(const char* what, const std::string& detail) {
  std::fprintf(stderr, "openai_codec_fuzzer: property violated: %s\n  %s\n", what, detail.c_str());
  std::abort();
}

void CheckRefusal(const Error& e) {
  const int status = ErrorStatus(e);
  if (status < 400 || status >= 500) Die("a request refusal is not a 4xx", e.ToString());
  if (e.code() == ErrorCode::kInvalidArgument && e.field().empty()) Die("a refusal names no parameter", e.ToString());
  (void)wire::Dump(ErrorJson(e));
}

void CheckDecode(DecodeConfig d) {
  if (d.max_tokens <= 0) d.max_tokens = 1;  // the daemon fills it from the context left
  if (auto ok = ValidateDecodeConfig(d); !ok)
    Die("an accepted request is out of the contract's ranges", ok.error().ToString());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto obj = wire::ParseObject(body);
  if (!obj) return 0;
  const ReplyHeader h{NewId("chatcmpl-"), 0, "m"};
  switch (data[0] % 3) {
    case 0: {  // 'c' = 99
      auto r = ParseChatCompletion(*obj);
      if (!r) return CheckRefusal(r.error()), 0;
      CheckDecode(r->decode);
      if (r->chat.messages.empty()) Die("a chat request without messages was accepted", "");
      ChatMessage answer = r->chat.messages.back();
      (void)wire::Dump(ChatCompletionJson(h, answer, "stop", Usage{}));
      ChatDelta d;
      d.content = answer.content;
      (void)wire::Dump(ChatChunkJson(h, d, true));
      // As a workspace model would read it: a question and text turns, or a refusal naming a field.
      if (auto w = ToWorkspaceChat(r->chat)) {
        if (w->turns.size() >= r->chat.messages.size()) Die("a workspace chat without its question", "");
      } else {
        CheckRefusal(w.error());
      }
      break;
    }
    case 1: {  // 't' = 116
      auto r = ParseCompletion(*obj);
      if (!r) return CheckRefusal(r.error()), 0;
      CheckDecode(r->decode);
      (void)wire::Dump(CompletionJson(h, r->prompt, "length", Usage{}));
      break;
    }
    default: {  // 'e' = 101
      auto r = ParseEmbeddings(*obj);
      if (!r) return CheckRefusal(r.error()), 0;
      if (r->inputs.empty() || r->inputs.size() > kMaxEmbeddingInputs) Die("inputs out of range", "");
      break;
    }
  }
  return 0;
}
