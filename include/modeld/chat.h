// Chat: a conversation rendered with the model's own chat template, and the model's answer read
// back as content, reasoning and tool calls. Backend-neutral: the llama.cpp adapter implements it
// with llama.cpp's common library (its Jinja engine, per-model tool-call formats and grammars);
// another backend brings its own templating.
//
// A request goes: ChatFormat::Apply -> prompt text (+ stop strings, an output constraint and a
// parser) -> a session prefills the text and decodes with the constraint -> the parser turns the
// generated text into a ChatMessage and streaming deltas.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modeld/error.h"
#include "modeld/session.h"

namespace modeld {

enum class ChatRole { kSystem, kUser, kAssistant, kTool };
std::string_view ChatRoleName(ChatRole role);  // "system", "user", "assistant", "tool"
// Also reads OpenAI's "developer" as kSystem.
std::optional<ChatRole> ChatRoleFromName(std::string_view name);

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text of the arguments object
};

struct ChatMessage {
  ChatRole role = ChatRole::kUser;
  std::string content;
  std::string reasoning_content;     // a thinking model's reasoning, kept apart from content
  std::vector<ToolCall> tool_calls;  // assistant
  std::string tool_call_id;          // tool: the call this answers
  std::string tool_name;             // tool: the function's name, when known
};

struct ChatTool {
  std::string name;
  std::string description;
  std::string parameters;  // JSON Schema text of the arguments object
};

enum class ToolChoice { kAuto, kNone, kRequired };

struct ChatRequest {
  std::vector<ChatMessage> messages;
  std::vector<ChatTool> tools;
  // kRequired: the answer is a call of one of `tools` (for a named function, tools holds only it).
  ToolChoice tool_choice = ToolChoice::kAuto;
  bool parallel_tool_calls = false;
  // The answer is a JSON value matching this JSON Schema ("{}": any JSON object); "" = free text.
  std::string json_schema;
  bool add_generation_prompt = true;
  bool enable_thinking = true;  // for templates that can switch a model's reasoning on and off
};

// One step of a streamed answer: text appended to content or reasoning, or to one tool call.
struct ChatDelta {
  std::string content;
  std::string reasoning_content;
  int32_t tool_index = -1;  // >= 0: this delta belongs to the answer's tool call of that index
  std::string tool_id;      // set in a call's first delta
  std::string tool_name;    // set in a call's first delta
  std::string tool_arguments;
};

// Reads a generated answer in the template's own syntax.
class ChatParser {
 public:
  virtual ~ChatParser() = default;
  // `text` is everything generated so far; `partial`: more may follow. Returns what changed
  // since the previous call; message() is the answer as read so far.
  virtual Result<std::vector<ChatDelta>> Update(std::string_view text, bool partial) = 0;
  virtual const ChatMessage& message() const = 0;
};

struct ChatPrompt {
  // The rendered conversation with special tokens as text: prefilled as one segment with
  // parse_special, it reads as the tokens the backend's own server would evaluate (a BOS the
  // model adds is included).
  std::string text;
  std::vector<std::string> stops;  // the template's own end-of-turn strings, to add to the decode's
  // Constrains the decode to the tool-call syntax or the JSON schema (DecodeConfig::constraint);
  // null when the answer is free.
  std::shared_ptr<const DecodeConstraint> constraint;
  std::shared_ptr<ChatParser> parser;  // fresh for this prompt's answer
  std::string format;                  // the backend's name for the template's syntax, for logs
};

// A model's chat template (or an operator's override of it). Thread-safe: many requests share one.
class ChatFormat {
 public:
  virtual ~ChatFormat() = default;
  // kInvalidArgument when the template cannot render the request (it raises an error, or the
  // request uses what the template cannot express).
  virtual Result<ChatPrompt> Apply(const ChatRequest& req) const = 0;
  // The tokens a session evaluates for a prompt's text (one parse_special segment).
  virtual Result<std::vector<int32_t>> Tokenize(std::string_view text) const = 0;
  // The text a session prefills for a raw completion prompt: with the specials the backend's own
  // server adds (a BOS), so Tokenize reads what that server evaluates.
  virtual std::string RawPrompt(std::string_view prompt) const = 0;
  virtual const std::string& source() const = 0;  // the template text in use
  virtual bool supports_tools() const = 0;        // the template renders tool definitions
};

// How a template wraps one role's message, as literal text (special tokens as text).
struct RoleMarkers {
  std::string open;
  std::string close;
};

// A template read as markers around each message: what a prompt built of separate segments (the
// workspace layer's) uses to read as the template renders the same conversation, which always
// begins with a system message: start + system.open + SYSTEM + system.close, then each turn as
// role.open + TEXT + role.close, and an answer opens with assistant.open. system.open holds what
// the template writes before the system text (a BOS the model adds, a preamble).
struct ChatMarkers {
  std::string start;  // "" unless system_as_user: then what precedes the first user message
  RoleMarkers system, user, assistant;
  // The template has no system role of its own (Gemma, Mistral, Phi-3 fold it into the first user
  // message): `system` then holds the user markers and the system text is a user turn of its own.
  bool system_as_user = false;
};

// Derives a template's markers by rendering short conversations of sentinel messages with
// `format` (its own engine, not a second one). kUnsupportedFeature for a template that is not a
// sequence of messages: one that reorders them, merges consecutive ones or refuses them.
Result<ChatMarkers> DeriveChatMarkers(const ChatFormat& format);

}  // namespace modeld
