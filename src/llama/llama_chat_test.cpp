// The llama.cpp ChatFormat: prompts rendered from the models' own templates read as llama.cpp's
// own code renders and tokenizes them, required tool calls hold on a random-weight model, and
// answers parse back into content and calls.
#include "llama/llama_chat.h"

#include <chat.h>
#include <common.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "llama/model_writer.h"
#include "modeld/service.h"

namespace modeld::llama {
namespace {

std::string ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A tiny random model on `vocab` (a models/ggml-vocab-*.gguf stem), with `tmpl` as its template
// when not empty (else the vocabulary's own).
std::string Model(const std::string& vocab, const std::string& tmpl_file, const std::string& name) {
  auto spec = PresetSpec("tiny", MODELD_VOCAB_DIR);
  EXPECT_TRUE(spec.has_value());
  spec->vocab_path = std::string(MODELD_VOCAB_DIR) + "/ggml-vocab-" + vocab + ".gguf";
  if (vocab != "qwen2") spec->arch = "llama";
  if (!tmpl_file.empty()) spec->chat_template = ReadText(std::string(MODELD_TEMPLATES) + "/" + tmpl_file);
  std::filesystem::create_directories(MODELD_TEST_TMP);
  const std::string path = std::string(MODELD_TEST_TMP) + "/chat-" + name + ".gguf";
  auto ok = WriteRandomModel(*spec, path);
  EXPECT_TRUE(ok.has_value()) << ok.error().ToString();
  return path;
}

ModelInfo Info(const std::string& path) {
  OpenSessionRequest req;
  req.model_path = path;
  auto info = Service().Describe(req);
  EXPECT_TRUE(info.has_value());
  return *info;
}

ChatMessage Msg(ChatRole role, std::string content) {
  ChatMessage m;
  m.role = role;
  m.content = std::move(content);
  return m;
}

ChatRequest Conversation() {
  ChatRequest r;
  r.messages = {Msg(ChatRole::kSystem, "You are a careful coding assistant."),
                Msg(ChatRole::kUser, "What does std::move do?"),
                Msg(ChatRole::kAssistant, "It casts to an rvalue reference."),
                Msg(ChatRole::kUser, "And std::forward? Answer in one line, é → ü.")};
  return r;
}

struct Case {
  const char* vocab;
  const char* tmpl;  // "" = the vocabulary's own template
  // llama.cpp's built-in renderer reads this template as the template itself does (Phi-3's
  // built-in keeps a system turn its Jinja folds into the user's; Llama 3.2's Jinja adds a date
  // header; Gemma 4 has no built-in).
  bool builtin;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.vocab << (c.tmpl[0] ? std::string(" + ") + c.tmpl : ""); }

class RenderTest : public ::testing::TestWithParam<Case> {};

// Same text as llama.cpp's own built-in renderer (llama_chat_apply_template, written per template
// by hand, independent of the Jinja engine), and the same tokens as llama-server evaluates.
TEST_P(RenderTest, MatchesLlamaCppsRenderingAndTokens) {
  const Case c = GetParam();
  const std::string name = std::string(c.vocab) + (c.tmpl[0] ? "-file" : "");
  const ModelInfo info = Info(Model(c.vocab, c.tmpl, name));
  auto format = OpenLlamaChatFormat(info, "");
  ASSERT_TRUE(format.has_value()) << format.error().ToString();
  const ChatRequest req = Conversation();
  auto prompt = (*format)->Apply(req);
  ASSERT_TRUE(prompt.has_value()) << prompt.error().ToString();
  EXPECT_EQ(prompt->constraint, nullptr);

  auto vocab_model = LlamaModel::LoadVocab(info);
  ASSERT_TRUE(vocab_model.has_value());
  const llama_vocab* vocab = (*vocab_model)->vocab();
  // llama-server: the Jinja prompt, tokenized adding the vocabulary's specials.
  common_chat_templates_inputs in;
  for (const auto& m : req.messages) {
    common_chat_msg cm;
    cm.role = std::string(ChatRoleName(m.role));
    cm.content = m.content;
    in.messages.push_back(cm);
  }
  auto tmpls = common_chat_templates_init((*vocab_model)->get(), "");
  const auto server_prompt = common_chat_templates_apply(tmpls.get(), in).prompt;
  const auto server_tokens = common_tokenize(vocab, server_prompt, /*add_special=*/true, /*parse_special=*/true);
  auto ours = (*format)->Tokenize(prompt->text);
  ASSERT_TRUE(ours.has_value());
  EXPECT_EQ(*ours, std::vector<int32_t>(server_tokens.begin(), server_tokens.end()));

  if (!c.builtin) return;
  // llama.cpp's built-in renderer of the same template.
  std::vector<llama_chat_message> msgs;
  std::vector<std::string> roles;
  for (const auto& m : req.messages) roles.emplace_back(ChatRoleName(m.role));
  for (size_t i = 0; i < req.messages.size(); ++i) msgs.push_back({roles[i].c_str(), req.messages[i].content.c_str()});
  const std::string src = (*format)->source();
  std::vector<char> buf(1 << 16);
  const int32_t n = llama_chat_apply_template(src.c_str(), msgs.data(), msgs.size(), /*add_ass=*/true, buf.data(),
                                              static_cast<int32_t>(buf.size()));
  ASSERT_GT(n, 0) << "llama.cpp has no built-in renderer for this template";
  const std::string builtin(buf.data(), static_cast<size_t>(n));
  std::string text = prompt->text;
  // The built-in renderer leaves the BOS to the tokenizer, as llama-server's tokenize does.
  char piece[64];
  if (llama_vocab_get_add_bos(vocab)) {
    const int32_t k = llama_token_to_piece(vocab, llama_vocab_bos(vocab), piece, sizeof piece, 0, true);
    ASSERT_GT(k, 0);
    ASSERT_EQ(text.rfind(std::string(piece, static_cast<size_t>(k)), 0), 0u);
    text.erase(0, static_cast<size_t>(k));
    if (builtin.rfind(std::string(piece, static_cast<size_t>(k)), 0) == 0)
      text.insert(0, piece, static_cast<size_t>(k));
  }
  EXPECT_EQ(text, builtin);
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, RenderTest,
                         ::testing::Values(Case{"qwen2", "", true}, Case{"command-r", "", true},
                                           Case{"qwen2", "Qwen-Qwen2.5-7B-Instruct.jinja", true},
                                           Case{"phi-3", "", false},
                                           Case{"llama-bpe", "meta-llama-Llama-3.2-3B-Instruct.jinja", false},
                                           Case{"llama-spm", "mistralai-Mistral-Nemo-Instruct-2407.jinja", false},
                                           Case{"gemma-4", "", false}),
                         [](const auto& p) {
                           std::string s = std::string(p.param.vocab) + (p.param.tmpl[0] ? "_file" : "_own");
                           for (char& ch : s) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return s;
                         });

class ToolsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    info_ = new ModelInfo(Info(Model("qwen2", "Qwen-Qwen2.5-7B-Instruct.jinja", "qwen25")));
  }
  static void TearDownTestSuite() { delete info_; }
  static ChatRequest Weather(ToolChoice choice) {
    ChatRequest r;
    r.messages = {Msg(ChatRole::kUser, "Weather in Paris?")};
    r.tools = {
        {"get_weather", "The weather in a city",
         R"({"type":"object","properties":{"city":{"type":"string","enum":["Paris","Tokyo"]}},"required":["city"]})"}};
    r.tool_choice = choice;
    return r;
  }
  static ModelInfo* info_;
};
ModelInfo* ToolsTest::info_ = nullptr;

TEST_F(ToolsTest, ARequiredCallIsWhatARandomModelAnswers) {
  auto format = OpenLlamaChatFormat(*info_, "");
  ASSERT_TRUE(format.has_value());
  EXPECT_TRUE((*format)->supports_tools());
  auto prompt = (*format)->Apply(Weather(ToolChoice::kRequired));
  ASSERT_TRUE(prompt.has_value()) << prompt.error().ToString();
  ASSERT_NE(prompt->constraint, nullptr);
  OpenSessionRequest req;
  req.model_path = info_->path;
  auto session = Service().OpenSession(req);
  ASSERT_TRUE(session.has_value()) << session.error().ToString();
  ContextManifest m;
  m.Add("chat", SegmentKind::kConversation, prompt->text, true);
  ASSERT_TRUE((*session)->EnsurePrefix(PrefixInput{m, {}, 0, {}}).has_value());
  for (uint64_t seed : {1u, 2u, 3u}) {  // greedy and sampled
    DecodeConfig dc;
    dc.max_tokens = 200;
    dc.temperature = seed == 1 ? 0.0f : 1.0f;
    dc.seed = seed;
    dc.constraint = prompt->constraint;
    dc.stop = prompt->stops;
    ASSERT_TRUE((*session)->EnsurePrefix(PrefixInput{m, {}, 0, {}}).has_value());
    auto r = (*session)->Decode(dc, {});
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    auto p = (*format)->Apply(Weather(ToolChoice::kRequired));
    auto d = p->parser->Update(r->text, /*partial=*/false);
    ASSERT_TRUE(d.has_value());
    const ChatMessage& msg = p->parser->message();
    ASSERT_GE(msg.tool_calls.size(), 1u) << r->text;
    EXPECT_EQ(msg.tool_calls[0].name, "get_weather");
    const auto args = nlohmann::json::parse(msg.tool_calls[0].arguments);
    EXPECT_TRUE(args["city"] == "Paris" || args["city"] == "Tokyo") << msg.tool_calls[0].arguments;
    EXPECT_EQ(msg.tool_calls[0].id.rfind("call_", 0), 0u);
  }
}

TEST_F(ToolsTest, StreamedDeltasAddUpToTheFinalMessage) {
  auto format = OpenLlamaChatFormat(*info_, "");
  ASSERT_TRUE(format.has_value());
  auto prompt = (*format)->Apply(Weather(ToolChoice::kAuto));
  ASSERT_TRUE(prompt.has_value());
  const std::string text =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Tokyo\"}}\n</tool_call>";
  std::string content, args, id, name;
  for (size_t n = 1; n <= text.size(); n += 3) {
    auto d = prompt->parser->Update(text.substr(0, n), /*partial=*/true);
    ASSERT_TRUE(d.has_value());
    for (const auto& x : *d) {
      content += x.content;
      if (x.tool_index == 0) {
        if (!x.tool_id.empty()) id = x.tool_id;
        name += x.tool_name;
        args += x.tool_arguments;
      }
    }
  }
  auto d = prompt->parser->Update(text, /*partial=*/false);
  ASSERT_TRUE(d.has_value());
  for (const auto& x : *d) {
    content += x.content;
    if (x.tool_index == 0) args += x.tool_arguments;
  }
  const ChatMessage& msg = prompt->parser->message();
  ASSERT_EQ(msg.tool_calls.size(), 1u);
  EXPECT_EQ(content, msg.content);
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(id, msg.tool_calls[0].id);
  EXPECT_EQ(nlohmann::json::parse(args), nlohmann::json::parse(msg.tool_calls[0].arguments));
}

// An answer cut short inside a call (max_tokens, a stop string) ends as what was read: never an
// error after deltas went out, never a call taken back.
TEST_F(ToolsTest, AnAnswerCutShortInsideACallKeepsWhatWasStreamed) {
  auto format = OpenLlamaChatFormat(*info_, "");
  ASSERT_TRUE(format.has_value());
  auto prompt = (*format)->Apply(Weather(ToolChoice::kRequired));
  ASSERT_TRUE(prompt.has_value());
  const std::string cut = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Tok";
  auto partial = prompt->parser->Update(cut, /*partial=*/true);
  ASSERT_TRUE(partial.has_value());
  ASSERT_EQ(prompt->parser->message().tool_calls.size(), 1u);
  auto final = prompt->parser->Update(cut, /*partial=*/false);
  ASSERT_TRUE(final.has_value()) << final.error().ToString();
  ASSERT_EQ(prompt->parser->message().tool_calls.size(), 1u);
  EXPECT_EQ(prompt->parser->message().tool_calls[0].name, "get_weather");
}

TEST_F(ToolsTest, ABrokenOverrideTemplateIsATypedError) {
  auto format = OpenLlamaChatFormat(*info_, "{% for m in messages %}{{ m.content ");
  ASSERT_FALSE(format.has_value());
  EXPECT_EQ(format.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(ToolsTest, AConstraintFromAnotherModelIsRefused) {
  auto format = OpenLlamaChatFormat(*info_, "");
  auto prompt = (*format)->Apply(Weather(ToolChoice::kRequired));
  ASSERT_TRUE(prompt.has_value());
  OpenSessionRequest req;
  req.model_path = Model("qwen2", "", "other");
  auto session = Service().OpenSession(req);
  ASSERT_TRUE(session.has_value());
  ContextManifest m;
  m.Add("chat", SegmentKind::kConversation, "hello", false);
  ASSERT_TRUE((*session)->EnsurePrefix(PrefixInput{m, {}, 0, {}}).has_value());
  DecodeConfig dc;
  dc.constraint = prompt->constraint;
  auto r = (*session)->Decode(dc, {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace modeld::llama

namespace modeld::llama {
namespace {

struct MarkersCase {
  const char* vocab;
  const char* tmpl;
  enum { kExact, kFolded, kUnsupported } expect;  // kFolded: the template has no system role of its own
};
void PrintTo(const MarkersCase& c, std::ostream* os) { *os << c.vocab << " + " << (c.tmpl[0] ? c.tmpl : "own"); }

class MarkersTest : public ::testing::TestWithParam<MarkersCase> {};

// Markers derived from the template rebuild exactly what the template renders for a conversation
// of real text (the workspace layer's prompt is made of them).
TEST_P(MarkersTest, RebuildTheTemplatesRendering) {
  const MarkersCase c = GetParam();
  const ModelInfo info = Info(Model(c.vocab, c.tmpl, std::string("markers-") + c.vocab));
  auto format = OpenLlamaChatFormat(info, "");
  ASSERT_TRUE(format.has_value());
  auto m = DeriveChatMarkers(**format);
  if (c.expect == MarkersCase::kUnsupported) {  // the workspace then keeps its ChatML/plain markers
    ASSERT_FALSE(m.has_value());
    EXPECT_EQ(m.error().code(), ErrorCode::kUnsupportedFeature);
    return;
  }
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->system_as_user, c.expect == MarkersCase::kFolded);
  ChatRequest req = Conversation();
  auto rendered = (*format)->Apply(req);
  ASSERT_TRUE(rendered.has_value());
  std::string text = m->start + m->system.open + req.messages[0].content + m->system.close;
  for (size_t i = 1; i < req.messages.size(); ++i) {
    const RoleMarkers& r = req.messages[i].role == ChatRole::kUser ? m->user : m->assistant;
    text += r.open + req.messages[i].content + r.close;
  }
  text += m->assistant.open;
  if (c.expect == MarkersCase::kExact) {
    EXPECT_EQ(text, rendered->text);
  } else {  // the system text is a turn of its own; the rest reads as the template renders it
    ChatRequest no_system = req;
    no_system.messages.erase(no_system.messages.begin());
    auto tail = (*format)->Apply(no_system);
    ASSERT_TRUE(tail.has_value());
    const std::string own_turn = m->start + m->user.open + req.messages[0].content + m->user.close;
    ASSERT_EQ(text.rfind(own_turn, 0), 0u);
    EXPECT_EQ(m->start + text.substr(own_turn.size()), tail->text);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Templates, MarkersTest,
    ::testing::Values(MarkersCase{"qwen2", "", MarkersCase::kExact},
                      MarkersCase{"qwen2", "Qwen-Qwen2.5-7B-Instruct.jinja", MarkersCase::kExact},
                      MarkersCase{"qwen2", "Qwen3-Coder.jinja", MarkersCase::kExact},
                      MarkersCase{"llama-bpe", "meta-llama-Llama-3.2-3B-Instruct.jinja", MarkersCase::kExact},
                      MarkersCase{"gemma-4", "", MarkersCase::kExact}, MarkersCase{"phi-3", "", MarkersCase::kFolded},
                      MarkersCase{"llama-spm", "mistralai-Mistral-Nemo-Instruct-2407.jinja",
                                  MarkersCase::kUnsupported}),
    [](const auto& p) {
      std::string s = std::string(p.param.vocab) + "_" + (p.param.tmpl[0] ? p.param.tmpl : "own");
      for (char& ch : s) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return s;
    });

}  // namespace
}  // namespace modeld::llama
