#include "daemon/openai/codec.h"

#include <gtest/gtest.h>

namespace modeld::daemon::openai {
namespace {

Result<ChatCompletionRequest> Chat(const char* body) { return ParseChatCompletion(Json::parse(body)); }

TEST(OpenAiCodec, ReadsAChatRequestWithToolsAndSampling) {
  auto r = Chat(R"({"model":"m","stream":true,"stream_options":{"include_usage":true},
    "messages":[{"role":"developer","content":"sys"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
                  "function":{"name":"f","arguments":"{\"x\":1}"}}]},
                {"role":"tool","tool_call_id":"call_1","content":"42"}],
    "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
    "tool_choice":"required","temperature":0.2,"top_p":0.5,"seed":7,"max_completion_tokens":9,
    "stop":"END","presence_penalty":0.5,"user":"u1","metadata":{"a":"b"},"store":false})");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->model, "m");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  ASSERT_EQ(r->chat.messages.size(), 4u);
  EXPECT_EQ(r->chat.messages[0].role, ChatRole::kSystem);
  EXPECT_EQ(r->chat.messages[1].content, "a\nb");
  ASSERT_EQ(r->chat.messages[2].tool_calls.size(), 1u);
  EXPECT_EQ(r->chat.messages[2].tool_calls[0].arguments, R"({"x":1})");
  EXPECT_EQ(r->chat.messages[3].tool_call_id, "call_1");
  ASSERT_EQ(r->chat.tools.size(), 1u);
  EXPECT_EQ(r->chat.tool_choice, ToolChoice::kRequired);
  EXPECT_FLOAT_EQ(r->decode.temperature, 0.2f);
  EXPECT_EQ(r->decode.seed, 7u);
  EXPECT_EQ(r->decode.max_tokens, 9);
  EXPECT_EQ(r->decode.stop, std::vector<std::string>{"END"});
  EXPECT_FLOAT_EQ(r->decode.presence_penalty, 0.5f);
  EXPECT_EQ(r->cache_key, "u1");
}

TEST(OpenAiCodec, ANamedFunctionIsTheOnlyToolAndRequired) {
  auto r = Chat(R"({"messages":[{"role":"user","content":"x"}],
    "tools":[{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"b"}}],
    "tool_choice":{"type":"function","function":{"name":"b"}}})");
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->chat.tools.size(), 1u);
  EXPECT_EQ(r->chat.tools[0].name, "b");
  EXPECT_EQ(r->chat.tool_choice, ToolChoice::kRequired);
  EXPECT_EQ(r->decode.max_tokens, 0);  // absent: to the end of the context
}

TEST(OpenAiCodec, WhatCannotBeHonoredIsRefusedNamingTheParameter) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"messages":[{"role":"user","content":"x"}],"n":2})", "n"},
      {R"({"messages":[{"role":"user","content":"x"}],"logprobs":true})", "logprobs"},
      {R"({"messages":[{"role":"user","content":"x"}],"logit_bias":{"1":5}})", "logit_bias"},
      {R"({"messages":[]})", "messages"},
      {R"({"messages":[{"role":"robot","content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]})",
       "messages[0].content[0].type"},
      {R"({"messages":[{"role":"user","content":"x"}],"temperature":3})", "temperature"},
      {R"({"messages":[{"role":"user","content":"x"}],"max_tokens":0})", "max_tokens"},
      {R"({"messages":[{"role":"user","content":"x"}],"tool_choice":"required"})", "tool_choice"},
      {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"a b"}}]})",
       "tools[0].function.name"},
      {R"({"messages":[{"role":"user","content":"x"}],"functions":[]})", "functions"},
      {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}})", "response_format.type"},
  };
  for (const auto& [body, param] : cases) {
    auto r = Chat(body);
    ASSERT_FALSE(r.has_value()) << body;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << body;
    EXPECT_EQ(r.error().field(), param) << body;
    const Json e = ErrorJson(r.error());
    EXPECT_EQ(e["error"]["param"], param);
    EXPECT_EQ(e["error"]["type"], "invalid_request_error");
    EXPECT_EQ(ErrorStatus(r.error()), 400);
  }
}

TEST(OpenAiCodec, ResponseFormatsBecomeASchema) {
  auto obj = Chat(R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})");
  ASSERT_TRUE(obj.has_value());
  EXPECT_EQ(obj->chat.json_schema, R"({"type":"object"})");
  auto sch = Chat(R"({"messages":[{"role":"user","content":"x"}],
    "response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"array"}}}})");
  ASSERT_TRUE(sch.has_value());
  EXPECT_EQ(sch->chat.json_schema, R"({"type":"array"})");
}

TEST(OpenAiCodec, AContextOverflowReadsAsOpenAis) {
  const Error e = Error::ContextOverflow("prompt", 5000, 100, 4096).WithField("messages");
  const Json j = ErrorJson(e);
  EXPECT_EQ(ErrorStatus(e), 400);
  EXPECT_EQ(j["error"]["code"], "context_length_exceeded");
  EXPECT_NE(j["error"]["message"].get<std::string>().find("maximum context length is 4096"), std::string::npos);
  EXPECT_EQ(j["error"]["param"], "messages");
}

TEST(OpenAiCodec, ChunksCarryToolCallDeltasByIndex) {
  const ReplyHeader h{"chatcmpl-x", 1, "m"};
  ChatDelta first;
  first.tool_index = 0;
  first.tool_id = "call_a";
  first.tool_name = "f";
  first.tool_arguments = "{\"x\"";
  const Json c = ChatChunkJson(h, first, /*role=*/true);
  const Json& d = c["choices"][0]["delta"];
  EXPECT_EQ(d["role"], "assistant");
  EXPECT_EQ(d["tool_calls"][0]["index"], 0);
  EXPECT_EQ(d["tool_calls"][0]["id"], "call_a");
  EXPECT_EQ(d["tool_calls"][0]["type"], "function");
  EXPECT_EQ(d["tool_calls"][0]["function"]["name"], "f");
  ChatDelta more;
  more.tool_index = 0;
  more.tool_arguments = ":1}";
  const Json m = ChatChunkJson(h, more, false);
  EXPECT_FALSE(m["choices"][0]["delta"]["tool_calls"][0].contains("id"));
  EXPECT_EQ(m["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], ":1}");
  const Json u = UsageChunkJson(h, "chat.completion.chunk", Usage{10, 4, 2, 0, 0});
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
  EXPECT_EQ(u["usage"]["total_tokens"], 12);
}

TEST(OpenAiCodec, EmbeddingsInBase64AreLittleEndianFloats) {
  const Json j = EmbeddingsJson("e", {{1.0f, -2.0f}}, /*base64=*/true, 3);
  EXPECT_EQ(j["data"][0]["embedding"], "AACAPwAAAMA=");  // 1.0f, -2.0f
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);
  auto bad = ParseEmbeddings(Json::parse(R"({"input":[1,2]})"));
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().field(), "input");
}

TEST(OpenAiCodec, AWorkspaceChatIsSystemTurnsAndAQuestion) {
  auto r = Chat(R"({"model":"ws:proj","messages":[{"role":"system","content":"be brief"},
    {"role":"developer","content":"tests first"},{"role":"user","content":"a"},
    {"role":"assistant","content":"b"},{"role":"user","content":"c?"}]})");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  auto w = ToWorkspaceChat(r->chat);
  ASSERT_TRUE(w.has_value()) << w.error().ToString();
  EXPECT_EQ(w->system, "be brief\n\ntests first");
  EXPECT_EQ(w->turns, (std::vector<std::pair<std::string, std::string>>{{"user", "a"}, {"assistant", "b"}}));
  EXPECT_EQ(w->question, "c?");

  auto no_system = ToWorkspaceChat(Chat(R"({"model":"m","messages":[{"role":"user","content":"q"}]})")->chat);
  ASSERT_TRUE(no_system.has_value());
  EXPECT_FALSE(no_system->system.has_value());

  // What a workspace cannot hold is refused, naming the parameter.
  const std::pair<const char*, const char*> refused[] = {
      {R"({"model":"m","messages":[{"role":"user","content":"q"}],
           "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]})",
       "tools"},
      {R"({"model":"m","messages":[{"role":"user","content":"q"}],"response_format":{"type":"json_object"}})",
       "response_format"},
      {R"({"model":"m","messages":[{"role":"user","content":"q"},{"role":"tool","tool_call_id":"c","content":"1"}]})",
       "messages"},
      {R"({"model":"m","messages":[{"role":"user","content":"q"},{"role":"system","content":"late"},
           {"role":"user","content":"q2"}]})",
       "messages"},
      {R"({"model":"m","messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]})", "messages"},
      {R"({"model":"m","messages":[{"role":"system","content":"only"}]})", "messages"},
  };
  for (const auto& [body, field] : refused) {
    auto c = Chat(body);
    ASSERT_TRUE(c.has_value()) << body << ": " << c.error().ToString();
    auto w2 = ToWorkspaceChat(c->chat);
    ASSERT_FALSE(w2.has_value()) << body;
    EXPECT_TRUE(w2.error().Is(ErrorCode::kInvalidArgument));
    EXPECT_EQ(w2.error().field(), field) << body;
  }
}

}  // namespace
}  // namespace modeld::daemon::openai
