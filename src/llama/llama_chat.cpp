#include "llama/llama_chat.h"

#include <chat.h>
#include <common.h>
#include <sampling.h>

#include <algorithm>
#include <mutex>
#include <random>
#include <regex>

namespace modeld::llama {
namespace {

// OpenAI-style call ids ("call_" + 24 alphanumerics) for calls the model wrote without one.
std::string NewToolCallId() {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, sizeof(kChars) - 2);
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += kChars[pick(rng)];
  return id;
}

// llama.cpp's tool-call grammars allow free text before the first call even when a call is
// required (`root ::= ... until-N? tool-calls`), so a weak model can write text until max_tokens
// and never call. A required call starts at once: the optional text item of the root goes.
std::string WithoutTextBeforeCalls(const std::string& grammar) {
  static const std::regex kRoot(R"((^|\n)root ::= [^\n]*)");
  static const std::regex kUntil(R"( until-[0-9]+\?)");
  std::smatch m;
  if (!std::regex_search(grammar, m, kRoot)) return grammar;
  const std::string root = std::regex_replace(m.str(), kUntil, "");
  return grammar.substr(0, static_cast<size_t>(m.position())) + root + grammar.substr(m.position() + m.length());
}

// llama.cpp's grammar for per-call markers (`<tool_call>...</tool_call>`) allows any number of
// calls even without parallel_tool_calls; OpenAI's false means one call at most.
std::string WithOneCall(const std::string& grammar) {
  static const std::regex kCalls(R"((^|\n)tool-calls ::= \((.*)\)\+(\n|$))");
  return std::regex_replace(grammar, kCalls, "$1tool-calls ::= $2$3");
}

common_chat_msg ToCommon(const ChatMessage& m) {
  common_chat_msg c;
  c.role = std::string(ChatRoleName(m.role));
  c.content = m.content;
  c.reasoning_content = m.reasoning_content;
  c.tool_call_id = m.tool_call_id;
  c.tool_name = m.tool_name;
  for (const auto& t : m.tool_calls) c.tool_calls.push_back(common_chat_tool_call{t.name, t.arguments, t.id});
  return c;
}

ChatMessage FromCommon(const common_chat_msg& c) {
  ChatMessage m;
  m.role = ChatRole::kAssistant;
  m.content = c.content;
  m.reasoning_content = c.reasoning_content;
  for (const auto& t : c.tool_calls) m.tool_calls.push_back(ToolCall{t.id, t.name, t.arguments});
  return m;
}

class LlamaChatParser final : public ChatParser {
 public:
  explicit LlamaChatParser(common_chat_parser_params params) : params_(std::move(params)) {}

  Result<std::vector<ChatDelta>> Update(std::string_view text, bool partial) override {
    common_chat_msg now;
    if (!Parse(text, partial, &now) && !(!partial && Parse(text, /*partial=*/true, &now))) {
      // Not readable yet, or (a final text) not even as a cut-off answer: what was read stands.
      if (partial || !prev_.empty()) return std::vector<ChatDelta>{};
      now = common_chat_msg{};  // nothing read at all: the answer is plain content
      now.role = "assistant";
      now.content = std::string(text);
    }
    now.set_tool_call_ids(ids_, NewToolCallId);
    std::vector<common_chat_msg_diff> diffs;
    try {
      diffs = common_chat_msg_diff::compute_diffs(prev_, now);
    } catch (const std::exception&) {
      // A read that takes back what was streamed (fewer calls, another name): what was streamed
      // stands, since a client cannot unread a delta.
      return std::vector<ChatDelta>{};
    }
    std::vector<ChatDelta> out;
    for (const auto& d : diffs) {
      ChatDelta cd;
      cd.content = d.content_delta;
      cd.reasoning_content = d.reasoning_content_delta;
      if (d.tool_call_index != std::string::npos) {
        cd.tool_index = static_cast<int32_t>(d.tool_call_index);
        cd.tool_id = d.tool_call_delta.id;
        cd.tool_name = d.tool_call_delta.name;
        cd.tool_arguments = d.tool_call_delta.arguments;
      }
      out.push_back(std::move(cd));
    }
    prev_ = std::move(now);
    message_ = FromCommon(prev_);
    return out;
  }
  const ChatMessage& message() const override { return message_; }

 private:
  bool Parse(std::string_view text, bool partial, common_chat_msg* out) const {
    try {
      *out = common_chat_parse(std::string(text), partial, params_);
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }

  common_chat_parser_params params_;
  common_chat_msg prev_;
  std::vector<std::string> ids_;
  ChatMessage message_{ChatRole::kAssistant, {}, {}, {}, {}, {}};
};

class LlamaChatFormat final : public ChatFormat {
 public:
  LlamaChatFormat(std::shared_ptr<LlamaModel> vocab, common_chat_templates_ptr tmpls)
      : vocab_(std::move(vocab)), tmpls_(std::move(tmpls)) {
    source_ = common_chat_templates_source(tmpls_.get());
    const auto caps = common_chat_templates_get_caps(tmpls_.get());
    auto it = caps.find("supports_tools");
    supports_tools_ = it != caps.end() && it->second;
    const llama_vocab* v = vocab_->vocab();
    if (llama_vocab_get_add_bos(v) && llama_vocab_bos(v) != LLAMA_TOKEN_NULL) bos_ = Special(llama_vocab_bos(v));
    if (llama_vocab_get_add_eos(v) && llama_vocab_eos(v) != LLAMA_TOKEN_NULL) eos_ = Special(llama_vocab_eos(v));
  }

  Result<ChatPrompt> Apply(const ChatRequest& req) const override {
    common_chat_templates_inputs in;
    for (const auto& m : req.messages) in.messages.push_back(ToCommon(m));
    for (const auto& t : req.tools) in.tools.push_back(common_chat_tool{t.name, t.description, t.parameters});
    in.tool_choice = req.tool_choice == ToolChoice::kRequired ? COMMON_CHAT_TOOL_CHOICE_REQUIRED
                     : req.tool_choice == ToolChoice::kNone   ? COMMON_CHAT_TOOL_CHOICE_NONE
                                                              : COMMON_CHAT_TOOL_CHOICE_AUTO;
    in.parallel_tool_calls = req.parallel_tool_calls;
    in.json_schema = req.json_schema;
    in.add_generation_prompt = req.add_generation_prompt;
    in.enable_thinking = req.enable_thinking;
    in.reasoning_format = COMMON_REASONING_FORMAT_DEEPSEEK;  // llama-server's default
    in.use_jinja = true;
    common_chat_params p;
    try {
      std::lock_guard lock(mu_);
      p = common_chat_templates_apply(tmpls_.get(), in);
    } catch (const std::exception& e) {
      return Fail(ErrorCode::kInvalidArgument,
                  std::string("the chat template cannot render this request: ") + e.what());
    }
    ChatPrompt out;
    // llama-server tokenizes the prompt adding the vocab's BOS (and EOS); as text they read the same.
    out.text = bos_ + p.prompt + eos_;
    out.stops = p.additional_stops;
    out.format = common_chat_format_name(p.format);

    const bool tools = !req.tools.empty() && req.tool_choice != ToolChoice::kNone;
    if (!p.grammar.empty()) {
      auto c = std::make_shared<LlamaConstraint>();
      c->grammar_type = tools ? COMMON_GRAMMAR_TYPE_TOOL_CALLS : COMMON_GRAMMAR_TYPE_OUTPUT_FORMAT;
      // A required call is constrained from the first token, whatever the template's own choice:
      // the API promises a call.
      const bool required = tools && req.tool_choice == ToolChoice::kRequired;
      c->grammar = required ? WithoutTextBeforeCalls(p.grammar) : p.grammar;
      if (tools && !req.parallel_tool_calls) c->grammar = WithOneCall(c->grammar);
      c->lazy = p.grammar_lazy && !required;
      c->generation_prompt = p.generation_prompt;
      c->model_digest = vocab_->info().digest;
      for (const auto& t : p.preserved_tokens) {
        auto ids = vocab_->Tokenize(t, /*parse_special=*/true);
        if (ids && ids->size() == 1) c->preserved_tokens.insert(ids->front());
      }
      for (const auto& t : p.grammar_triggers) {  // as llama-server resolves them
        LlamaConstraint::Trigger tr{static_cast<int>(t.type), t.value, t.token};
        if (t.type == COMMON_GRAMMAR_TRIGGER_TYPE_WORD) {
          auto ids = vocab_->Tokenize(t.value, true);
          if (ids && ids->size() == 1 && c->preserved_tokens.contains(ids->front())) {
            tr.type = COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN;
            tr.token = ids->front();
          }
        }
        c->triggers.push_back(std::move(tr));
      }
      if (c->lazy && c->triggers.empty()) c->lazy = false;
      out.constraint = std::move(c);
    } else if (tools && req.tool_choice == ToolChoice::kRequired) {
      return Fail(Error(ErrorCode::kUnsupportedFeature,
                        "this model's chat template (" + out.format +
                            ") gives no tool-call grammar, so a required tool call cannot be enforced; "
                            "serve it with --chat-template-file FILE of a template with tool support")
                      .WithField("tool_choice"));
    }

    common_chat_parser_params pp(p);
    pp.reasoning_format = COMMON_REASONING_FORMAT_DEEPSEEK;
    pp.parse_tool_calls = tools;
    try {
      if (!p.parser.empty()) pp.parser.load(p.parser);
    } catch (const std::exception& e) {
      return Fail(ErrorCode::kInternal, std::string("loading the template's answer parser: ") + e.what());
    }
    out.parser = std::make_shared<LlamaChatParser>(std::move(pp));
    return out;
  }

  Result<std::vector<int32_t>> Tokenize(std::string_view text) const override {
    auto t = vocab_->Tokenize(text, /*parse_special=*/true);
    if (!t) return Fail(t.error());
    return std::vector<int32_t>(t->begin(), t->end());
  }
  std::string RawPrompt(std::string_view prompt) const override { return bos_ + std::string(prompt) + eos_; }
  const std::string& source() const override { return source_; }
  bool supports_tools() const override { return supports_tools_; }

 private:
  std::string Special(llama_token t) const {
    char buf[256];
    const int32_t n = llama_token_to_piece(vocab_->vocab(), t, buf, sizeof buf, 0, /*special=*/true);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

  std::shared_ptr<LlamaModel> vocab_;
  common_chat_templates_ptr tmpls_;
  mutable std::mutex mu_;  // one render at a time on the shared templates
  std::string source_;
  bool supports_tools_ = false;
  std::string bos_, eos_;
};

}  // namespace

void LlamaConstraint::ApplyTo(common_params_sampling& p) const {
  p.grammar = common_grammar(static_cast<common_grammar_type>(grammar_type), grammar);
  p.grammar_lazy = lazy;
  p.grammar_triggers.clear();
  for (const auto& t : triggers) {
    p.grammar_triggers.push_back(
        common_grammar_trigger{static_cast<common_grammar_trigger_type>(t.type), t.value, t.token});
  }
  p.preserved_tokens = preserved_tokens;
  p.generation_prompt = generation_prompt;
}

Result<std::shared_ptr<const ChatFormat>> OpenLlamaChatFormat(const ModelInfo& info,
                                                              const std::string& override_template) {
  auto vocab = LlamaModel::LoadVocab(info);
  if (!vocab) return Fail(vocab.error());
  common_chat_templates_ptr tmpls;
  try {
    tmpls = common_chat_templates_init((*vocab)->get(), override_template);
  } catch (const std::exception& e) {
    return Fail(Error(ErrorCode::kInvalidArgument, std::string("the chat template does not parse: ") + e.what())
                    .WithField(override_template.empty() ? "tokenizer.chat_template" : "chat_template"));
  }
  if (!tmpls) return Fail(ErrorCode::kInvalidArgument, "the chat template does not parse");
  return std::shared_ptr<const ChatFormat>(std::make_shared<LlamaChatFormat>(std::move(*vocab), std::move(tmpls)));
}

}  // namespace modeld::llama
