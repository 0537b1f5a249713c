// OpenAI's wire format for the daemon's /v1 API: requests read into the contract's types
// (modeld/chat.h, DecodeConfig), replies and stream chunks written from them. The one place the
// API's JSON is made or read; docs/openai.md lists what is honored, ignored and refused.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "modeld/chat.h"
#include "modeld/error.h"
#include "modeld/session.h"
#include "wire/codec.h"

namespace modeld::daemon::openai {

using wire::Json;

// OpenAI's own limits on a request, checked before anything is allocated.
inline constexpr size_t kMaxMessages = 100000;  // messages of a conversation
inline constexpr size_t kMaxTools = 128;
inline constexpr size_t kMaxEmbeddingInputs = 2048;
inline constexpr size_t kMaxToolNameBytes = 64;

struct ChatCompletionRequest {
  std::string model;
  ChatRequest chat;
  DecodeConfig decode;  // max_tokens 0: until the context is full
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::string cache_key;       // prompt_cache_key, else user: a hint for the conversation
};
// kInvalidArgument naming the parameter (Error::field) for what is malformed or cannot be
// honored (n > 1, logprobs, logit_bias, images, ...).
Result<ChatCompletionRequest> ParseChatCompletion(const Json& body);

// A chat for a workspace model (ws:NAME, docs/openai.md): what the workspace takes from it.
struct WorkspaceChat {
  std::optional<std::string> system;                       // the leading system messages, joined
  std::vector<std::pair<std::string, std::string>> turns;  // the earlier messages: "user"/"assistant", text
  std::string question;                                    // the last message, a user's
};
// The workspace holds text turns: tools, tool calls and results, a response_format, a system
// message after the first turn and a conversation that does not end with a user message are
// kInvalidArgument naming the parameter.
Result<WorkspaceChat> ToWorkspaceChat(const ChatRequest& chat);

struct CompletionRequest {
  std::string model;
  std::string prompt;
  DecodeConfig decode;  // max_tokens: OpenAI's default 16
  bool stream = false;
  bool include_usage = false;
  std::string cache_key;
};
Result<CompletionRequest> ParseCompletion(const Json& body);

struct EmbeddingsRequest {
  std::string model;
  std::vector<std::string> inputs;
  bool base64 = false;  // encoding_format "base64": little-endian float32, base64
};
Result<EmbeddingsRequest> ParseEmbeddings(const Json& body);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // of prompt_tokens, reused from what the session held
  int64_t completion_tokens = 0;
  double prompt_ms = 0;  // the prefill of the tokens not cached
  double predicted_ms = 0;
};
Json UsageJson(const Usage& u);
// llama-server's "timings" object, so tools that read it (and our benchmark) see the reuse.
Json TimingsJson(const Usage& u);

// "stop", "length" or "tool_calls".
std::string FinishReasonFor(FinishReason r, bool tool_calls);

struct ReplyHeader {
  std::string id;  // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;
  std::string model;
};
Json ChatCompletionJson(const ReplyHeader& h, const ChatMessage& m, const std::string& finish, const Usage& u);
// A chunk with one delta; `role` in the first chunk only.
Json ChatChunkJson(const ReplyHeader& h, const ChatDelta& d, bool role);
Json ChatFinishChunkJson(const ReplyHeader& h, const std::string& finish);
// The last chunk when stream_options.include_usage: empty choices and the usage.
Json UsageChunkJson(const ReplyHeader& h, const char* object, const Usage& u);

Json CompletionJson(const ReplyHeader& h, const std::string& text, const std::string& finish, const Usage& u);
Json CompletionChunkJson(const ReplyHeader& h, const std::string& text, const char* finish);

Json EmbeddingsJson(const std::string& model, const std::vector<std::vector<float>>& vectors, bool base64,
                    int64_t prompt_tokens);

struct ModelEntry {
  std::string id;
  int64_t created = 0;  // the file's modification time
  Json extra;           // modeld's own facts (path, digest, architecture, ...), merged in
};
Json ModelJson(const ModelEntry& m);
Json ModelListJson(const std::vector<ModelEntry>& models);

// {"error": {"message", "type", "param", "code"}}: code is modeld's CodeName, except a context
// overflow, which is OpenAI's "context_length_exceeded" with OpenAI's wording.
Json ErrorJson(const Error& e);
int ErrorStatus(const Error& e);

// A fresh id: prefix + 24 alphanumerics.
std::string NewId(const char* prefix);

}  // namespace modeld::daemon::openai
