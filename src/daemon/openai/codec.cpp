#include "daemon/openai/codec.h"

#include <openssl/evp.h>

#include <cmath>
#include <cstring>
#include <random>

namespace modeld::daemon::openai {
namespace {

Error Bad(std::string param, std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message)).WithField(std::move(param));
}

// A string member of an object, "" when it is absent or not a string (nlohmann's value() throws).
std::string StrOr(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A number parameter, or the error naming it.
Status Number(const Json& body, const char* key, float lo, float hi, float* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_number()) return Fail(Bad(key, std::string("'") + key + "' must be a number"));
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi)) {
    return Fail(Bad(key, std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                             "], got " + std::to_string(v)));
  }
  *out = static_cast<float>(v);
  return {};
}

Status Integer(const Json& body, const char* key, int64_t lo, int64_t hi, int64_t* out, bool* given = nullptr) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_number_integer()) return Fail(Bad(key, std::string("'") + key + "' must be an integer"));
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return Fail(Bad(key, std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                             "], got " + std::to_string(v)));
  }
  *out = v;
  if (given) *given = true;
  return {};
}

Status String(const Json& body, const char* key, std::string* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_string()) return Fail(Bad(key, std::string("'") + key + "' must be a string"));
  *out = it->get<std::string>();
  return {};
}

// Sampling and limits shared by chat and text completions. llama-server's defaults where the
// request says nothing (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, a random seed).
Status ReadSampling(const Json& body, DecodeConfig* d) {
  d->temperature = 0.8f;
  d->top_k = 40;
  d->top_p = 0.95f;
  d->min_p = 0.05f;
  d->repeat_penalty = 1.0f;
  d->seed = std::random_device{}();
  if (auto s = Number(body, "temperature", 0, 2, &d->temperature); !s) return s;
  if (auto s = Number(body, "top_p", 0, 1, &d->top_p); !s) return s;
  if (d->top_p <= 0) d->top_p = 1e-6f;  // OpenAI allows 0: the most likely token only
  if (auto s = Number(body, "min_p", 0, 1, &d->min_p); !s) return s;
  if (auto s = Number(body, "presence_penalty", -2, 2, &d->presence_penalty); !s) return s;
  if (auto s = Number(body, "frequency_penalty", -2, 2, &d->frequency_penalty); !s) return s;
  if (auto s = Number(body, "repeat_penalty", 0.01f, kMaxRepeatPenalty, &d->repeat_penalty); !s) return s;
  int64_t top_k = d->top_k;
  if (auto s = Integer(body, "top_k", 0, kMaxTopK, &top_k); !s) return s;
  d->top_k = static_cast<int32_t>(top_k);
  int64_t seed = 0;
  bool seeded = false;
  if (auto s = Integer(body, "seed", INT64_MIN, INT64_MAX, &seed, &seeded); !s) return s;
  if (seeded) d->seed = static_cast<uint64_t>(seed);
  // max_completion_tokens replaces max_tokens; either caps the answer.
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    int64_t n = d->max_tokens;
    if (auto s = Integer(body, key, 1, INT32_MAX, &n); !s) return s;
    d->max_tokens = static_cast<int32_t>(n);
  }
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      d->stop = {it->get<std::string>()};
    } else if (it->is_array()) {
      for (const auto& s : *it) {
        if (!s.is_string()) return Fail(Bad("stop", "'stop' must be a string or an array of strings"));
        d->stop.push_back(s.get<std::string>());
      }
    } else {
      return Fail(Bad("stop", "'stop' must be a string or an array of strings"));
    }
    std::erase_if(d->stop, [](const std::string& s) { return s.empty(); });
  }
  // What would change the answer and cannot be honored is refused, never ignored.
  if (auto it = body.find("n"); it != body.end() && !it->is_null() && !(it->is_number_integer() && *it == 1)) {
    return Fail(Bad("n", "only n = 1 is supported: one answer per request"));
  }
  if (auto it = body.find("logprobs"); it != body.end() && !it->is_null() && !(it->is_boolean() && !*it)) {
    return Fail(Bad("logprobs", "logprobs are not supported"));
  }
  if (auto it = body.find("top_logprobs"); it != body.end() && !it->is_null() && !(it->is_number() && *it == 0)) {
    return Fail(Bad("top_logprobs", "logprobs are not supported"));
  }
  if (auto it = body.find("logit_bias"); it != body.end() && !it->is_null() && !(it->is_object() && it->empty())) {
    return Fail(Bad("logit_bias", "logit_bias is not supported"));
  }
  return {};
}

Status ReadStreamOptions(const Json& body, bool* stream, bool* include_usage) {
  if (auto it = body.find("stream"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) return Fail(Bad("stream", "'stream' must be a boolean"));
    *stream = it->get<bool>();
  }
  if (auto it = body.find("stream_options"); it != body.end() && it->is_object()) {
    if (auto u = it->find("include_usage"); u != it->end() && u->is_boolean()) *include_usage = u->get<bool>();
  }
  return {};
}

// Message content: a string, null, or an array of text parts (joined, as llama-server does).
Result<std::string> Content(const Json& c, const std::string& param) {
  if (c.is_null()) return std::string();
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) return Fail(Bad(param, "content must be a string or an array of content parts"));
  std::string out;
  for (size_t j = 0; j < c.size(); ++j) {
    const auto& part = c[j];
    const std::string p = param + "[" + std::to_string(j) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return Fail(Bad(p, "a content part is an object with a 'type'"));
    }
    const std::string type = part["type"].get<std::string>();
    if (type != "text") {
      return Fail(Bad(p + ".type", "content parts of type '" + type + "' are not supported: this model reads text"));
    }
    if (!part.contains("text") || !part["text"].is_string()) return Fail(Bad(p + ".text", "a text part needs 'text'"));
    if (!out.empty()) out += "\n";
    out += part["text"].get<std::string>();
  }
  return out;
}

bool ValidToolName(const std::string& n) {
  if (n.empty() || n.size() > kMaxToolNameBytes) return false;
  for (char c : n) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

Result<ChatMessage> ReadMessage(const Json& m, size_t i) {
  const std::string p = "messages[" + std::to_string(i) + "]";
  if (!m.is_object()) return Fail(Bad(p, "a message is an object"));
  auto role_it = m.find("role");
  if (role_it == m.end() || !role_it->is_string()) return Fail(Bad(p + ".role", "a message needs a 'role'"));
  auto role = ChatRoleFromName(role_it->get<std::string>());
  if (!role) {
    return Fail(Bad(p + ".role",
                    "unknown role '" + role_it->get<std::string>() + "' (system, developer, user, assistant, tool)"));
  }
  ChatMessage out;
  out.role = *role;
  if (auto it = m.find("content"); it != m.end()) {
    auto c = Content(*it, p + ".content");
    if (!c) return Fail(c.error());
    out.content = std::move(*c);
  }
  if (auto it = m.find("reasoning_content"); it != m.end() && it->is_string()) out.reasoning_content = *it;
  if (out.role == ChatRole::kAssistant) {
    if (auto it = m.find("tool_calls"); it != m.end() && !it->is_null()) {
      if (!it->is_array()) return Fail(Bad(p + ".tool_calls", "'tool_calls' must be an array"));
      for (size_t j = 0; j < it->size(); ++j) {
        const auto& tc = (*it)[j];
        const std::string tp = p + ".tool_calls[" + std::to_string(j) + "]";
        if (!tc.is_object() || !tc.contains("function") || !tc["function"].is_object()) {
          return Fail(
              Bad(tp, "a tool call is {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}"));
        }
        const auto& fn = tc["function"];
        ToolCall call;
        if (tc.contains("id") && tc["id"].is_string()) call.id = tc["id"];
        if (!fn.contains("name") || !fn["name"].is_string()) return Fail(Bad(tp + ".function.name", "missing name"));
        call.name = fn["name"];
        if (auto a = fn.find("arguments"); a != fn.end()) {
          call.arguments = a->is_string() ? a->get<std::string>() : wire::Dump(*a);
        }
        out.tool_calls.push_back(std::move(call));
      }
    }
  }
  if (out.role == ChatRole::kTool) {
    if (auto it = m.find("tool_call_id"); it != m.end() && it->is_string()) out.tool_call_id = *it;
    if (auto it = m.find("name"); it != m.end() && it->is_string()) out.tool_name = *it;
  }
  return out;
}

Status ReadTools(const Json& body, ChatRequest* chat) {
  if (body.contains("functions") || body.contains("function_call")) {
    return Fail(Bad("functions", "the deprecated 'functions'/'function_call' are not supported: use 'tools'"));
  }
  auto it = body.find("tools");
  if (it != body.end() && !it->is_null()) {
    if (!it->is_array()) return Fail(Bad("tools", "'tools' must be an array"));
    if (it->size() > kMaxTools) return Fail(Bad("tools", "at most " + std::to_string(kMaxTools) + " tools"));
    for (size_t i = 0; i < it->size(); ++i) {
      const auto& t = (*it)[i];
      const std::string p = "tools[" + std::to_string(i) + "]";
      if (!t.is_object() || StrOr(t, "type") != "function" || !t.contains("function") || !t["function"].is_object()) {
        return Fail(
            Bad(p, "a tool is {\"type\": \"function\", \"function\": {\"name\", \"description\", \"parameters\"}}"));
      }
      const auto& fn = t["function"];
      ChatTool tool;
      if (!fn.contains("name") || !fn["name"].is_string() || !ValidToolName(fn["name"])) {
        return Fail(Bad(p + ".function.name", "a tool name is 1-64 characters of a-z A-Z 0-9 _ -"));
      }
      tool.name = fn["name"];
      if (fn.contains("description") && fn["description"].is_string()) tool.description = fn["description"];
      if (auto pa = fn.find("parameters"); pa != fn.end() && !pa->is_null()) {
        if (!pa->is_object()) return Fail(Bad(p + ".function.parameters", "'parameters' must be a JSON Schema object"));
        tool.parameters = wire::Dump(*pa);
      } else {
        tool.parameters = R"({"type":"object","properties":{}})";
      }
      chat->tools.push_back(std::move(tool));
    }
  }
  if (auto pt = body.find("parallel_tool_calls"); pt != body.end() && !pt->is_null()) {
    if (!pt->is_boolean()) return Fail(Bad("parallel_tool_calls", "'parallel_tool_calls' must be a boolean"));
    chat->parallel_tool_calls = pt->get<bool>();
  }
  auto tc = body.find("tool_choice");
  if (tc == body.end() || tc->is_null()) {
    chat->tool_choice = ToolChoice::kAuto;
  } else if (tc->is_string()) {
    const std::string c = tc->get<std::string>();
    if (c == "auto") {
      chat->tool_choice = ToolChoice::kAuto;
    } else if (c == "none") {
      chat->tool_choice = ToolChoice::kNone;
    } else if (c == "required") {
      chat->tool_choice = ToolChoice::kRequired;
    } else {
      return Fail(Bad("tool_choice", "'tool_choice' is \"auto\", \"none\", \"required\" or a named function"));
    }
  } else if (tc->is_object() && StrOr(*tc, "type") == "function" && tc->contains("function") &&
             (*tc)["function"].is_object() && (*tc)["function"].contains("name") &&
             (*tc)["function"]["name"].is_string()) {
    // A named function: the answer is a call of it, so it is the only tool offered.
    const std::string name = (*tc)["function"]["name"];
    std::erase_if(chat->tools, [&](const ChatTool& t) { return t.name != name; });
    if (chat->tools.empty())
      return Fail(Bad("tool_choice", "tool_choice names '" + name + "', which is not in 'tools'"));
    chat->tool_choice = ToolChoice::kRequired;
  } else {
    return Fail(Bad("tool_choice", "'tool_choice' is \"auto\", \"none\", \"required\" or a named function"));
  }
  if (chat->tool_choice == ToolChoice::kRequired && chat->tools.empty()) {
    return Fail(Bad("tool_choice", "tool_choice \"required\" needs 'tools'"));
  }
  return {};
}

Status ReadResponseFormat(const Json& body, ChatRequest* chat) {
  auto it = body.find("response_format");
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_object() || !it->contains("type") || !(*it)["type"].is_string()) {
    return Fail(
        Bad("response_format", "'response_format' is {\"type\": \"text\" | \"json_object\" | \"json_schema\"}"));
  }
  const std::string type = (*it)["type"];
  if (type == "text") return {};
  if (type == "json_object") {
    chat->json_schema = R"({"type":"object"})";
    return {};
  }
  if (type == "json_schema") {
    auto js = it->find("json_schema");
    if (js == it->end() || !js->is_object() || !js->contains("schema") || !(*js)["schema"].is_object()) {
      return Fail(Bad("response_format.json_schema.schema", "a json_schema response format needs a 'schema' object"));
    }
    chat->json_schema = (*js)["schema"].empty() ? R"({"type":"object"})" : wire::Dump((*js)["schema"]);
    return {};
  }
  return Fail(Bad("response_format.type", "unknown response_format type '" + type + "'"));
}

std::string CacheKey(const Json& body) {
  for (const char* k : {"prompt_cache_key", "user"}) {
    if (auto it = body.find(k); it != body.end() && it->is_string() && !it->get<std::string>().empty()) {
      return it->get<std::string>().substr(0, 256);
    }
  }
  return {};
}

Json ToolCallJson(const ToolCall& c) {
  return {{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}};
}

Json Header(const ReplyHeader& h, const char* object) {
  return {
      {"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}, {"system_fingerprint", "modeld"}};
}

}  // namespace

Result<WorkspaceChat> ToWorkspaceChat(const ChatRequest& chat) {
  const auto refuse = [](const std::string& what, const char* field) {
    return Fail(
        Error(ErrorCode::kInvalidArgument, what + " on a workspace model (ws:NAME): its context holds text turns")
            .WithField(field));
  };
  if (!chat.tools.empty()) return refuse("tools are not supported", "tools");
  if (!chat.json_schema.empty()) return refuse("response_format is not supported", "response_format");
  WorkspaceChat w;
  for (const auto& m : chat.messages) {
    if (m.role == ChatRole::kTool || !m.tool_calls.empty())
      return refuse("tool calls and results are not supported", "messages");
    if (m.role == ChatRole::kSystem) {
      if (!w.turns.empty())
        return refuse("a system message after the conversation started is not supported", "messages");
      w.system = w.system ? *w.system + "\n\n" + m.content : m.content;
      continue;
    }
    w.turns.emplace_back(std::string(ChatRoleName(m.role)), m.content);
  }
  if (w.turns.empty() || w.turns.back().first != "user") {
    return Fail(
        Error(ErrorCode::kInvalidArgument, "a chat on a workspace model ends with a user message (the question)")
            .WithField("messages"));
  }
  w.question = std::move(w.turns.back().second);
  w.turns.pop_back();
  return w;
}

Result<ChatCompletionRequest> ParseChatCompletion(const Json& body) {
  ChatCompletionRequest r;
  r.decode.max_tokens = 0;
  if (auto s = String(body, "model", &r.model); !s) return Fail(s.error());
  auto msgs = body.find("messages");
  if (msgs == body.end() || !msgs->is_array() || msgs->empty()) {
    return Fail(Bad("messages", "'messages' must be a non-empty array"));
  }
  if (msgs->size() > kMaxMessages)
    return Fail(Bad("messages", "at most " + std::to_string(kMaxMessages) + " messages"));
  for (size_t i = 0; i < msgs->size(); ++i) {
    auto m = ReadMessage((*msgs)[i], i);
    if (!m) return Fail(m.error());
    r.chat.messages.push_back(std::move(*m));
  }
  if (auto s = ReadTools(body, &r.chat); !s) return Fail(s.error());
  if (auto s = ReadResponseFormat(body, &r.chat); !s) return Fail(s.error());
  if (!r.chat.json_schema.empty() && r.chat.tool_choice == ToolChoice::kRequired) {
    return Fail(Bad("response_format", "a required tool call and a response format exclude each other"));
  }
  if (auto s = ReadSampling(body, &r.decode); !s) return Fail(s.error());
  if (auto s = ReadStreamOptions(body, &r.stream, &r.include_usage); !s) return Fail(s.error());
  // llama-server's chat_template_kwargs.enable_thinking, and OpenAI's reasoning_effort "none".
  if (auto k = body.find("chat_template_kwargs"); k != body.end() && k->is_object()) {
    if (auto e = k->find("enable_thinking"); e != k->end() && e->is_boolean()) r.chat.enable_thinking = *e;
  }
  if (StrOr(body, "reasoning_effort") == "none") r.chat.enable_thinking = false;
  r.cache_key = CacheKey(body);
  return r;
}

Result<CompletionRequest> ParseCompletion(const Json& body) {
  CompletionRequest r;
  r.decode.max_tokens = 16;  // OpenAI's default for completions
  if (auto s = String(body, "model", &r.model); !s) return Fail(s.error());
  auto p = body.find("prompt");
  if (p == body.end()) return Fail(Bad("prompt", "missing 'prompt'"));
  if (p->is_string()) {
    r.prompt = p->get<std::string>();
  } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
    r.prompt = (*p)[0].get<std::string>();
  } else {
    return Fail(Bad("prompt", "'prompt' must be a string (one prompt per request)"));
  }
  if (auto it = body.find("suffix"); it != body.end() && !it->is_null()) {
    return Fail(Bad("suffix", "'suffix' is not supported on /v1/completions"));
  }
  if (auto it = body.find("echo"); it != body.end() && !it->is_null() && !(it->is_boolean() && !*it)) {
    return Fail(Bad("echo", "echo is not supported"));
  }
  if (auto s = ReadSampling(body, &r.decode); !s) return Fail(s.error());
  if (auto s = ReadStreamOptions(body, &r.stream, &r.include_usage); !s) return Fail(s.error());
  r.cache_key = CacheKey(body);
  return r;
}

Result<EmbeddingsRequest> ParseEmbeddings(const Json& body) {
  EmbeddingsRequest r;
  if (auto s = String(body, "model", &r.model); !s) return Fail(s.error());
  auto in = body.find("input");
  if (in == body.end()) return Fail(Bad("input", "missing 'input'"));
  if (in->is_string()) {
    r.inputs.push_back(in->get<std::string>());
  } else if (in->is_array() && !in->empty()) {
    if (in->size() > kMaxEmbeddingInputs) {
      return Fail(Bad("input", "at most " + std::to_string(kMaxEmbeddingInputs) + " inputs"));
    }
    for (const auto& s : *in) {
      if (!s.is_string()) return Fail(Bad("input", "'input' must be a string or an array of strings"));
      r.inputs.push_back(s.get<std::string>());
    }
  } else {
    return Fail(Bad("input", "'input' must be a string or a non-empty array of strings"));
  }
  for (const auto& s : r.inputs) {
    if (s.empty()) return Fail(Bad("input", "an input is empty"));
  }
  std::string enc = "float";
  if (auto s = String(body, "encoding_format", &enc); !s) return Fail(s.error());
  if (enc != "float" && enc != "base64") return Fail(Bad("encoding_format", "'encoding_format' is float or base64"));
  r.base64 = enc == "base64";
  if (auto it = body.find("dimensions"); it != body.end() && !it->is_null()) {
    return Fail(Bad("dimensions", "'dimensions' is not supported: the model's own size is returned"));
  }
  return r;
}

Json UsageJson(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

Json TimingsJson(const Usage& u) {
  const auto per_second = [](int64_t n, double ms) { return ms > 0 ? 1000.0 * static_cast<double>(n) / ms : 0.0; };
  const int64_t prefilled = u.prompt_tokens - u.cached_tokens;
  return {{"cache_n", u.cached_tokens},
          {"prompt_n", prefilled},
          {"prompt_ms", u.prompt_ms},
          {"prompt_per_second", per_second(prefilled, u.prompt_ms)},
          {"predicted_n", u.completion_tokens},
          {"predicted_ms", u.predicted_ms},
          {"predicted_per_second", per_second(u.completion_tokens, u.predicted_ms)}};
}

std::string FinishReasonFor(FinishReason r, bool tool_calls) {
  if (r == FinishReason::kLength) return "length";
  return tool_calls ? "tool_calls" : "stop";
}

Json ChatCompletionJson(const ReplyHeader& h, const ChatMessage& m, const std::string& finish, const Usage& u) {
  Json msg = {{"role", "assistant"},
              {"content", m.content.empty() && !m.tool_calls.empty() ? Json() : Json(m.content)}};
  if (!m.reasoning_content.empty()) msg["reasoning_content"] = m.reasoning_content;
  if (!m.tool_calls.empty()) {
    Json calls = Json::array();
    for (const auto& c : m.tool_calls) calls.push_back(ToolCallJson(c));
    msg["tool_calls"] = calls;
  }
  Json j = Header(h, "chat.completion");
  j["choices"] = Json::array({{{"index", 0}, {"message", msg}, {"logprobs", nullptr}, {"finish_reason", finish}}});
  j["usage"] = UsageJson(u);
  j["timings"] = TimingsJson(u);
  return j;
}

Json ChatChunkJson(const ReplyHeader& h, const ChatDelta& d, bool role) {
  Json delta = Json::object();
  if (role) delta["role"] = "assistant";
  if (!d.content.empty() || (role && d.reasoning_content.empty() && d.tool_index < 0)) delta["content"] = d.content;
  if (!d.reasoning_content.empty()) delta["reasoning_content"] = d.reasoning_content;
  if (d.tool_index >= 0) {
    Json call = {{"index", d.tool_index}};
    if (!d.tool_id.empty()) {
      call["id"] = d.tool_id;
      call["type"] = "function";
    }
    Json fn = Json::object();
    if (!d.tool_name.empty()) fn["name"] = d.tool_name;
    fn["arguments"] = d.tool_arguments;
    call["function"] = fn;
    delta["tool_calls"] = Json::array({call});
  }
  Json j = Header(h, "chat.completion.chunk");
  j["choices"] = Json::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
  return j;
}

Json ChatFinishChunkJson(const ReplyHeader& h, const std::string& finish) {
  Json j = Header(h, "chat.completion.chunk");
  j["choices"] =
      Json::array({{{"index", 0}, {"delta", Json::object()}, {"logprobs", nullptr}, {"finish_reason", finish}}});
  return j;
}

Json UsageChunkJson(const ReplyHeader& h, const char* object, const Usage& u) {
  Json j = Header(h, object);
  j["choices"] = Json::array();
  j["usage"] = UsageJson(u);
  j["timings"] = TimingsJson(u);
  return j;
}

Json CompletionJson(const ReplyHeader& h, const std::string& text, const std::string& finish, const Usage& u) {
  Json j = Header(h, "text_completion");
  j["choices"] = Json::array({{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}}});
  j["usage"] = UsageJson(u);
  j["timings"] = TimingsJson(u);
  return j;
}

Json CompletionChunkJson(const ReplyHeader& h, const std::string& text, const char* finish) {
  Json j = Header(h, "text_completion");
  j["choices"] = Json::array(
      {{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish ? Json(finish) : Json()}}});
  return j;
}

Json EmbeddingsJson(const std::string& model, const std::vector<std::vector<float>>& vectors, bool base64,
                    int64_t prompt_tokens) {
  Json data = Json::array();
  for (size_t i = 0; i < vectors.size(); ++i) {
    Json e = {{"object", "embedding"}, {"index", i}};
    if (base64) {
      const auto& v = vectors[i];
      const size_t n = v.size() * sizeof(float);  // x86-64 and arm64 are little-endian, as the format wants
      std::string out(4 * ((n + 2) / 3), '\0');
      const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                      reinterpret_cast<const unsigned char*>(v.data()), static_cast<int>(n));
      out.resize(static_cast<size_t>(std::max(len, 0)));
      e["embedding"] = out;
    } else {
      e["embedding"] = vectors[i];
    }
    data.push_back(std::move(e));
  }
  return {{"object", "list"},
          {"data", data},
          {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

Json ModelJson(const ModelEntry& m) {
  Json j = {{"id", m.id}, {"object", "model"}, {"created", m.created}, {"owned_by", "modeld"}};
  if (m.extra.is_object()) {
    for (const auto& [k, v] : m.extra.items()) j[k] = v;
  }
  return j;
}

Json ModelListJson(const std::vector<ModelEntry>& models) {
  Json data = Json::array();
  for (const auto& m : models) data.push_back(ModelJson(m));
  return {{"object", "list"}, {"data", data}};
}

int ErrorStatus(const Error& e) {
  switch (e.code()) {
    case ErrorCode::kContextOverflow:
    case ErrorCode::kUnsupportedFeature:
      return 400;  // OpenAI's status for both
    case ErrorCode::kBusy:
      return 429;  // clients back off and retry
    default:
      return wire::HttpStatus(e.code());
  }
}

Json ErrorJson(const Error& e) {
  const int status = ErrorStatus(e);
  std::string type = status >= 500 ? "server_error" : "invalid_request_error";
  if (status == 401) type = "authentication_error";
  if (status == 404) type = "not_found_error";
  if (status == 429) type = "rate_limit_error";
  std::string code(CodeName(e.code()));
  if (e.code() == ErrorCode::kNotFound && e.field() == "model") code = "model_not_found";
  std::string message = e.message();
  if (e.code() == ErrorCode::kContextOverflow) {
    code = "context_length_exceeded";
    if (const auto& o = e.overflow()) {
      message = "This model's maximum context length is " + std::to_string(o->n_ctx) +
                " tokens. However, you requested " + std::to_string(o->resident + o->additional) + " tokens (" +
                std::to_string(o->resident) + " in the messages, " + std::to_string(o->additional) +
                " in the completion). Please reduce the length of the messages or completion.";
    }
  }
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", e.field().empty() ? Json() : Json(e.field())},
            {"code", code}}}};
}

std::string NewId(const char* prefix) {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, sizeof(kChars) - 2);
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += kChars[pick(rng)];
  return id;
}

}  // namespace modeld::daemon::openai
