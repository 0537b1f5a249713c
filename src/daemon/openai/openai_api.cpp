#include "daemon/openai/openai_api.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <functional>
#include <memory>
#include <stop_token>

#include "daemon/conversations.h"
#include "daemon/openai/codec.h"

namespace modeld::daemon::openai {
namespace {

using Clock = std::chrono::steady_clock;
using LeasePtr = std::shared_ptr<SessionManager::Lease>;

// One generation on a conversation: what is prefilled and how it is decoded.
struct Generation {
  const ServedModel* model = nullptr;
  std::string text;             // the prompt as one parse_special segment
  std::vector<int32_t> tokens;  // its tokens (what the conversation is matched on)
  DecodeConfig decode;          // max_tokens 0: to the end of the context
  std::string hint;
  const char* prompt_param = "messages";  // the request field a prompt that does not fit is blamed on
};

struct Outcome {
  PrefixStatus prefix;
  DecodeResult decode;
  Usage usage;
};

// A request's own stop: the daemon's, or the client leaving. Shared with a streamed reply.
class RequestStop {
 public:
  explicit RequestStop(std::stop_token daemon) : link_(std::move(daemon), Requester{&source_}) {}
  void Request() { source_.request_stop(); }
  std::stop_token token() const { return source_.get_token(); }

 private:
  struct Requester {
    std::stop_source* s;
    void operator()() const { s->request_stop(); }
  };
  std::stop_source source_;
  std::stop_callback<Requester> link_;
};

// A prompt longer than this many bytes per token of the context cannot fit (real text averages
// 3-5): refused before the template or the tokenizer sees it.
constexpr int64_t kMaxPromptBytesPerToken = 32;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

// The conversation hint: the X-Modeld-Workspace header, else the body's cache key or user.
std::string Hint(const http::Request& req, const std::string& cache_key) {
  std::string h = req.Header("x-modeld-workspace");
  return h.empty() ? cache_key : h;
}

// A workspace served as a model: "ws:NAME"; "ws:NAME:edit_aware" (or the header
// X-Modeld-Assembly: edit_aware) opts in to edit-aware re-sent messages.
constexpr std::string_view kWorkspaceModelPrefix = "ws:";
constexpr std::string_view kEditAwareSuffix = ":edit_aware";

// The answer on a workspace model: plain text, as the workspace's turns hold it.
class PlainTextParser : public ChatParser {
 public:
  PlainTextParser() { message_.role = ChatRole::kAssistant; }
  Result<std::vector<ChatDelta>> Update(std::string_view text, bool /*partial*/) override {
    std::vector<ChatDelta> out;
    if (text.size() > message_.content.size() && text.substr(0, message_.content.size()) == message_.content) {
      out.push_back(ChatDelta{});
      out.back().content = std::string(text.substr(message_.content.size()));
      message_.content = std::string(text);
    }
    return out;
  }
  const ChatMessage& message() const override { return message_; }

 private:
  ChatMessage message_;
};

class OpenAiApi {
 public:
  explicit OpenAiApi(ServerContext& ctx) : ctx_(ctx), convs_(ctx.sessions.get()) {}

  void ChatCompletions(const http::Request& req, http::Response& res);
  void Completions(const http::Request& req, http::Response& res);
  void Embeddings(const http::Request& req, http::Response& res);
  void Models(http::Response& res);
  void Model(const std::string& id, http::Response& res);

 private:
  static void ReplyError(http::Response& res, const Error& e) { res.SetJson(ErrorStatus(e), ErrorJson(e)); }
  Result<const ServedModel*> FindModel(const std::string& name) const;
  // The served models, and with `workspaces` the open workspaces as ws:NAME.
  std::vector<ModelEntry> Entries(bool workspaces) const;
  // n_ctx of a conversation's session on `m`.
  int32_t ChatCtx(const ServedModel& m) const;
  // kContextOverflow when `bytes` of prompt text cannot fit in a context of n_ctx tokens.
  static Status CheckPromptBytes(int64_t n_ctx, int64_t bytes, const char* param);
  // Checks the prompt against the context, then takes the conversation to serve it on.
  Result<LeasePtr> Place(Generation& g, Conversations::Placement* where);
  // Prefills the prompt (reusing what the conversation holds) and decodes. A new conversation
  // whose prefill did not finish is closed: it holds nothing worth its memory.
  Result<Outcome> Run(SessionManager::Lease& lease, const Conversations::Placement& where, const Generation& g,
                      std::stop_token cancel, const ProgressFunc& progress, const ChunkCallback& on_chunk);
  // Keep-alive comments on a stream during a long prefill (at most one a second); a failed write
  // (the client left) stops the request.
  static ProgressFunc PrefillComments(http::EventStream& es, const std::string& id, std::shared_ptr<RequestStop> stop);
  // A generation to serve: prefills and decodes, then releases what it holds.
  using Runner = std::function<Result<Outcome>(std::stop_token cancel, const ProgressFunc& progress,
                                               const ChunkCallback& on_chunk)>;
  Runner OnConversation(LeasePtr lease, Conversations::Placement where, Generation g);
  // Serves a generation as a whole reply or a stream. A chat's answer goes through `parser` into
  // chat deltas; without a parser, raw text chunks (a completion).
  void Reply(const http::Request& req, http::Response& res, Runner run, const std::string& id,
             std::shared_ptr<ChatParser> parser, const ReplyHeader& header, bool stream, bool include_usage);
  // A chat on a workspace model (ws:NAME or X-Modeld-Workspace): the workspace's context ahead of
  // the conversation, which joins the workspace's log.
  void WorkspaceChatCompletion(const http::Request& req, http::Response& res, ChatCompletionRequest parsed,
                               const std::string& ws, bool edit_aware);

  ServerContext& ctx_;
  Conversations convs_;
};

Result<const ServedModel*> OpenAiApi::FindModel(const std::string& name) const {
  auto m = ctx_.ModelOrError(name);
  if (!m) {
    return Fail(Error(ErrorCode::kNotFound, "The model '" + name + "' does not exist on this server (see /v1/models)")
                    .WithField("model"));
  }
  return m;
}

int32_t OpenAiApi::ChatCtx(const ServedModel& m) const {
  if (ctx_.opt.chat_ctx > 0) return ctx_.opt.chat_ctx;
  const auto trained = static_cast<int32_t>(m.info.context_length);
  return trained > 0 ? std::min(kDefaultChatCtx, trained) : kDefaultCtx;
}

Status OpenAiApi::CheckPromptBytes(int64_t n_ctx, int64_t bytes, const char* param) {
  if (bytes <= n_ctx * kMaxPromptBytesPerToken) return {};
  return Fail(Error(ErrorCode::kContextOverflow,
                    "This model's maximum context length is " + std::to_string(n_ctx) + " tokens. However, your " +
                        param + " are " + std::to_string(bytes) + " bytes, far more than fits (at most " +
                        std::to_string(kMaxPromptBytesPerToken) + " bytes per token are read).")
                  .WithField(param));
}

Result<LeasePtr> OpenAiApi::Place(Generation& g, Conversations::Placement* where) {
  const int32_t n_ctx = ChatCtx(*g.model);
  const auto n_prompt = static_cast<int64_t>(g.tokens.size());
  const int64_t want = g.decode.max_tokens > 0 ? g.decode.max_tokens : 1;
  if (n_prompt + want > n_ctx) {
    // Blame max_tokens when the prompt alone would fit.
    const char* param = g.decode.max_tokens > 0 && n_prompt < n_ctx ? "max_tokens" : g.prompt_param;
    return Fail(Error::ContextOverflow("prompt", n_prompt, want, n_ctx).WithField(param));
  }
  if (g.decode.max_tokens <= 0) g.decode.max_tokens = static_cast<int32_t>(n_ctx - n_prompt);  // to the end
  if (auto ok = ValidateDecodeConfig(g.decode); !ok) return Fail(ok.error());
  SessionConfig cfg;
  cfg.n_ctx = n_ctx;
  cfg.threads = ctx_.opt.threads;
  cfg.flash_attn = ctx_.opt.chat_flash_attn;
  auto lease = convs_.Acquire(g.model->name, g.tokens, g.hint, cfg, {}, where);
  if (!lease) {
    // The operator's settings, not the request, when the context size or budget cannot be had.
    if (lease.error().field() == "config.n_ctx") {
      return Fail(Error(ErrorCode::kSessionUnavailable,
                        "a conversation's session cannot be made with this daemon's --ctx-size or --kv-budget-mb: " +
                            lease.error().message()));
    }
    return Fail(lease.error());
  }
  if (!where->forked_from.empty()) {
    ctx_.Log("modeld: %s starts from a copy of %s's KV\n", where->id, where->forked_from);
  }
  return std::make_shared<SessionManager::Lease>(std::move(*lease));
}

Result<Outcome> OpenAiApi::Run(SessionManager::Lease& lease, const Conversations::Placement& where, const Generation& g,
                               std::stop_token cancel, const ProgressFunc& progress, const ChunkCallback& on_chunk) {
  Session& s = lease.session();
  ContextManifest m;
  m.Add("conversation", SegmentKind::kConversation, g.text, /*parse_special=*/true);
  const auto t0 = Clock::now();
  auto prefix = s.EnsurePrefix(PrefixInput{std::move(m), ctx_.LoggedProgress(where.id, progress), 0, cancel});
  if (!prefix) {
    if (where.fresh) {
      lease.Release();
      (void)ctx_.sessions->Close(where.id);
      convs_.Forget(where.id);
    }
    return Fail(prefix.error());
  }
  convs_.Record(where.id, g.tokens);
  ctx_.metrics.AddTokens(prefix->tokens_reused, prefix->tokens_prefilled, 0);
  ctx_.metrics.prefill_seconds.Observe(std::chrono::duration<double>(Clock::now() - t0).count());
  DecodeConfig dc = g.decode;
  dc.cancel = cancel;
  const auto t1 = Clock::now();
  auto r = s.Decode(dc, on_chunk);
  if (!r) return Fail(r.error());
  ctx_.metrics.AddTokens(0, 0, r->tokens_generated);
  ctx_.metrics.decode_seconds.Observe(std::chrono::duration<double>(Clock::now() - t1).count());
  if (r->tokens_generated > 0) ctx_.metrics.first_token_seconds.Observe(r->first_token_ms / 1000.0);
  Outcome out{*prefix, *r, {}};
  out.usage.prompt_tokens = static_cast<int64_t>(g.tokens.size());
  out.usage.cached_tokens = std::min(prefix->tokens_reused, out.usage.prompt_tokens);
  out.usage.completion_tokens = r->tokens_generated;
  out.usage.prompt_ms = prefix->prefill_ms;
  out.usage.predicted_ms = r->decode_ms;
  return out;
}

ProgressFunc OpenAiApi::PrefillComments(http::EventStream& es, const std::string& id,
                                        std::shared_ptr<RequestStop> stop) {
  return [&es, id, stop, last = Clock::now()](const Progress& p) mutable {
    if (Clock::now() - last < std::chrono::seconds(1)) return;
    last = Clock::now();
    if (!es.Comment(id + " " + p.stage + " " + std::to_string(p.done) + "/" + std::to_string(p.total))) {
      stop->Request();
    }
  };
}

Error Stopping() { return Error(ErrorCode::kCancelled, "the daemon is stopping; the answer was cut short"); }

OpenAiApi::Runner OpenAiApi::OnConversation(LeasePtr lease, Conversations::Placement where, Generation g) {
  return [this, lease, where = std::move(where), g = std::move(g)](std::stop_token cancel, const ProgressFunc& progress,
                                                                   const ChunkCallback& on_chunk) {
    auto out = Run(*lease, where, g, std::move(cancel), progress, on_chunk);
    lease->Release();
    return out;
  };
}

void OpenAiApi::Reply(const http::Request& req, http::Response& res, Runner run, const std::string& id,
                      std::shared_ptr<ChatParser> parser, const ReplyHeader& header, bool stream, bool include_usage) {
  auto stop = std::make_shared<RequestStop>(ctx_.stop.get_token());
  const bool chat = parser != nullptr;
  if (!stream) {
    // No stream to notice a departed client on: ask the connection between batches and tokens.
    const auto closed = req.closed;
    auto out = run(
        stop->token(),
        [&](const Progress&) {
          if (closed()) stop->Request();
        },
        [&](const StreamChunk&) { return !closed(); });
    if (!out) return ReplyError(res, out.error());
    if (out->decode.finish == FinishReason::kCancelled) return ReplyError(res, Stopping());
    if (!chat) {
      return res.SetJson(
          200, CompletionJson(header, out->decode.text, FinishReasonFor(out->decode.finish, false), out->usage));
    }
    (void)parser->Update(out->decode.text, /*partial=*/false);
    const ChatMessage& msg = parser->message();
    return res.SetJson(
        200, ChatCompletionJson(header, msg, FinishReasonFor(out->decode.finish, !msg.tool_calls.empty()), out->usage));
  }
  res.content_type = "text/event-stream";
  res.headers.push_back({"Cache-Control", "no-cache"});
  res.stream = [run = std::move(run), id, parser, header, include_usage, chat, stop](http::Sink& sink) {
    http::EventStream es(sink, http::EventStream::Framing::kSse);
    std::string generated;
    bool role_sent = false;
    bool gone = false;
    auto send = [&](const std::vector<ChatDelta>& deltas) {
      for (const auto& d : deltas) {
        if (!es.Send(ChatChunkJson(header, d, !role_sent))) return false;
        role_sent = true;
      }
      return true;
    };
    auto on_chunk = [&](const StreamChunk& c) {
      if (!sink.Open()) {
        gone = true;
        return false;
      }
      if (c.text.empty()) return true;
      bool sent = true;
      if (chat) {
        generated += c.text;
        if (auto deltas = parser->Update(generated, /*partial=*/true)) sent = send(*deltas);
      } else {
        sent = es.Send(CompletionChunkJson(header, c.text, nullptr));
      }
      gone = !sent;
      return sent;
    };
    auto out = run(stop->token(), PrefillComments(es, id, stop), on_chunk);
    if (gone || !sink.Open()) return false;
    // An error once the stream started is an SSE error event (the clients raise it); so is an
    // answer the daemon's stop cut short, which must not read as complete.
    if (!out || out->decode.finish == FinishReason::kCancelled) {
      es.Send(ErrorJson(out ? Stopping() : out.error()));
      return true;
    }
    bool tool_calls = false;
    if (chat) {
      auto final = parser->Update(out->decode.text, /*partial=*/false);
      if (final && !send(*final)) return false;
      if (!role_sent && !send({ChatDelta{}})) return false;
      tool_calls = !parser->message().tool_calls.empty();
      es.Send(ChatFinishChunkJson(header, FinishReasonFor(out->decode.finish, tool_calls)));
    } else {
      es.Send(CompletionChunkJson(header, "", FinishReasonFor(out->decode.finish, false).c_str()));
    }
    if (include_usage) es.Send(UsageChunkJson(header, chat ? "chat.completion.chunk" : "text_completion", out->usage));
    es.SendData("[DONE]");
    return true;
  };
}

void OpenAiApi::WorkspaceChatCompletion(const http::Request& req, http::Response& res, ChatCompletionRequest parsed,
                                        const std::string& ws, bool edit_aware) {
  auto chat = ToWorkspaceChat(parsed.chat);
  if (!chat) return ReplyError(res, chat.error());
  const auto no_workspace = [&] {
    return Error(ErrorCode::kNotFound, "There is no workspace '" + ws +
                                           "' on this server: open it first (modeld ws open, or modeld ws watch DIR)")
        .WithField("model");
  };
  if (ws.starts_with(kConversationPrefix)) return ReplyError(res, no_workspace());
  auto lease = ctx_.sessions->Acquire(ws, /*wait=*/true);
  if (!lease) return ReplyError(res, lease.error().Is(ErrorCode::kNotFound) ? no_workspace() : lease.error());
  auto shared = std::make_shared<SessionManager::Lease>(std::move(*lease));
  Workspace& w = *shared->entry().assembly;
  // Checked before the workspace changes: a refused request changes nothing.
  auto rep = shared->session().Report();
  if (!rep) return ReplyError(res, rep.error());
  // The conversation joins the workspace's context: it must fit there as a chat must fit its own.
  int64_t bytes = static_cast<int64_t>(chat->question.size() + chat->system.value_or("").size());
  for (const auto& t : chat->turns) bytes += static_cast<int64_t>(t.second.size());
  if (auto ok = CheckPromptBytes(rep->n_ctx, bytes, "messages"); !ok) return ReplyError(res, ok.error());
  DecodeConfig dc = parsed.decode;
  // Unset: a quarter of the context (compaction keeps that much room).
  if (dc.max_tokens <= 0) dc.max_tokens = std::max<int32_t>(1, static_cast<int32_t>(rep->n_ctx / 4));
  if (auto ok = ValidateDecodeConfig(dc); !ok) return ReplyError(res, ok.error());
  if (auto ok = w.CheckAsk(chat->question, dc); !ok) return ReplyError(res, ok.error());
  if (chat->system) {
    if (auto ok = w.SetSystem(*chat->system); !ok) return ReplyError(res, Error(ok.error()).WithField("messages"));
  }
  auto change = w.SetConversation(chat->turns, edit_aware);
  if (!change) return ReplyError(res, Error(change.error()).WithField("messages"));
  if (change->replaced > 0) {
    ctx_.Log("modeld: workspace %s: the client rewrote its conversation (%s turns replaced)\n", ws,
             std::to_string(change->replaced));
  }
  Runner run = [this, shared, ws, question = chat->question, dc](std::stop_token cancel, const ProgressFunc& progress,
                                                                 const ChunkCallback& on_chunk) -> Result<Outcome> {
    Workspace& w = *shared->entry().assembly;
    DecodeConfig d = dc;
    d.cancel = std::move(cancel);
    const auto t0 = Clock::now();
    auto r = w.Ask(question, d, on_chunk,
                   ctx_.workers->Hooks(shared.get(), /*wait=*/true, ctx_.LoggedProgress(ws, progress)));
    ctx_.EndAsk(*shared, ws, r, std::chrono::duration<double>(Clock::now() - t0).count());
    if (!r) return Fail(r.error());
    if (r->decode.tokens_generated > 0) ctx_.metrics.first_token_seconds.Observe(r->decode.first_token_ms / 1000.0);
    Outcome out{r->prefix, r->decode, {}};
    out.usage.prompt_tokens = r->suffix.tokens_resident;
    out.usage.cached_tokens = std::min(r->prefix.tokens_reused + r->suffix.tokens_reused, out.usage.prompt_tokens);
    out.usage.completion_tokens = r->decode.tokens_generated;
    out.usage.prompt_ms = r->prefix.prefill_ms + r->suffix.prefill_ms;
    out.usage.predicted_ms = r->decode.decode_ms;
    return out;
  };
  const std::string model =
      parsed.model.starts_with(kWorkspaceModelPrefix) ? parsed.model : std::string(kWorkspaceModelPrefix) + ws;
  Reply(req, res, std::move(run), ws, std::make_shared<PlainTextParser>(),
        ReplyHeader{NewId("chatcmpl-"), Now(), model}, parsed.stream, parsed.include_usage);
}

void OpenAiApi::ChatCompletions(const http::Request& req, http::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  auto parsed = ParseChatCompletion(*body);
  if (!parsed) return ReplyError(res, parsed.error());
  // A workspace model: named by the model (ws:NAME) or the header (any model name).
  std::string ws = req.Header("x-modeld-workspace");
  const std::string assembly = req.Header("x-modeld-assembly");
  if (!assembly.empty() && assembly != "edit_aware" && assembly != "plain") {
    return ReplyError(res, Error(ErrorCode::kInvalidArgument,
                                 "X-Modeld-Assembly is 'edit_aware' or 'plain', not '" + assembly + "'"));
  }
  bool edit_aware = assembly == "edit_aware";
  if (parsed->model.starts_with(kWorkspaceModelPrefix)) {
    std::string named = parsed->model.substr(kWorkspaceModelPrefix.size());
    if (named.ends_with(kEditAwareSuffix)) {
      named.resize(named.size() - kEditAwareSuffix.size());
      edit_aware = true;
    }
    if (!ws.empty() && ws != named) {
      return ReplyError(res, Error(ErrorCode::kInvalidArgument, "the model '" + parsed->model +
                                                                    "' and the X-Modeld-Workspace header '" + ws +
                                                                    "' name different workspaces")
                                 .WithField("model"));
    }
    ws = named;
  }
  if (!ws.empty()) return WorkspaceChatCompletion(req, res, std::move(*parsed), ws, edit_aware);
  auto model = FindModel(parsed->model);
  if (!model) return ReplyError(res, model.error());
  int64_t bytes = 0;
  for (const auto& m : parsed->chat.messages) bytes += static_cast<int64_t>(m.content.size());
  for (const auto& t : parsed->chat.tools) bytes += static_cast<int64_t>(t.description.size() + t.parameters.size());
  if (auto ok = CheckPromptBytes(ChatCtx(**model), bytes, "messages"); !ok) return ReplyError(res, ok.error());
  auto format = ctx_.ChatFormatFor(**model);
  if (!format) return ReplyError(res, format.error());
  auto prompt = (*format)->Apply(parsed->chat);
  if (!prompt) return ReplyError(res, prompt.error());
  auto tokens = (*format)->Tokenize(prompt->text);
  if (!tokens) return ReplyError(res, tokens.error());

  Generation g;
  g.model = *model;
  g.text = std::move(prompt->text);
  g.tokens = std::move(*tokens);
  g.decode = parsed->decode;
  for (const auto& s : prompt->stops) {
    if (std::find(g.decode.stop.begin(), g.decode.stop.end(), s) == g.decode.stop.end()) g.decode.stop.push_back(s);
  }
  if (g.decode.stop.size() > kMaxStopStrings) {
    return ReplyError(
        res, Error(ErrorCode::kInvalidArgument, "at most " + std::to_string(kMaxStopStrings - prompt->stops.size()) +
                                                    " stop strings with this model's template (it adds its own)")
                 .WithField("stop"));
  }
  g.decode.constraint = prompt->constraint;
  g.hint = Hint(req, parsed->cache_key);
  Conversations::Placement where;
  auto lease = Place(g, &where);
  if (!lease) return ReplyError(res, lease.error());
  const std::string id = where.id;
  Reply(req, res, OnConversation(*lease, std::move(where), std::move(g)), id, prompt->parser,
        ReplyHeader{NewId("chatcmpl-"), Now(), (*model)->name}, parsed->stream, parsed->include_usage);
}

void OpenAiApi::Completions(const http::Request& req, http::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  auto parsed = ParseCompletion(*body);
  if (!parsed) return ReplyError(res, parsed.error());
  auto model = FindModel(parsed->model);
  if (!model) return ReplyError(res, model.error());
  if (auto ok = CheckPromptBytes(ChatCtx(**model), static_cast<int64_t>(parsed->prompt.size()), "prompt"); !ok) {
    return ReplyError(res, ok.error());
  }
  auto format = ctx_.ChatFormatFor(**model);
  if (!format) return ReplyError(res, format.error());
  Generation g;
  g.model = *model;
  g.prompt_param = "prompt";
  g.text = (*format)->RawPrompt(parsed->prompt);
  auto tokens = (*format)->Tokenize(g.text);
  if (!tokens) return ReplyError(res, tokens.error());
  if (tokens->empty()) {
    return ReplyError(res, Error(ErrorCode::kInvalidArgument, "the prompt is empty").WithField("prompt"));
  }
  g.tokens = std::move(*tokens);
  g.decode = parsed->decode;
  g.hint = Hint(req, parsed->cache_key);
  Conversations::Placement where;
  auto lease = Place(g, &where);
  if (!lease) return ReplyError(res, lease.error());
  const std::string id = where.id;
  Reply(req, res, OnConversation(*lease, std::move(where), std::move(g)), id, nullptr,
        ReplyHeader{NewId("cmpl-"), Now(), (*model)->name}, parsed->stream, parsed->include_usage);
}

void OpenAiApi::Embeddings(const http::Request& req, http::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  auto parsed = ParseEmbeddings(*body);
  if (!parsed) return ReplyError(res, parsed.error());
  auto model = FindModel(parsed->model);
  if (!model) return ReplyError(res, model.error());
  std::vector<std::vector<float>> vectors;
  int64_t n_tokens = 0;
  for (const auto& input : parsed->inputs) {
    auto e = ctx_.Embed(**model, input);
    if (!e) return ReplyError(res, e.error());
    n_tokens += e->n_tokens;
    vectors.push_back(std::move(e->values));
  }
  res.SetJson(200, EmbeddingsJson((*model)->name, vectors, parsed->base64, n_tokens));
}

std::vector<ModelEntry> OpenAiApi::Entries(bool workspaces) const {
  std::vector<ModelEntry> out;
  for (const auto& m : ctx_.models) {
    ModelEntry e;
    e.id = m.name;
    if (struct stat st{}; ::stat(m.info.path.c_str(), &st) == 0) e.created = static_cast<int64_t>(st.st_mtime);
    // The native protocol's facts ride along, so one list serves both kinds of client.
    e.extra = {{"model", m.name},
               {"path", m.info.path},
               {"digest", m.info.digest},
               {"architecture", m.info.architecture},
               {"context_length", m.info.context_length},
               {"pooling", m.info.pooling}};
    out.push_back(std::move(e));
  }
  if (!workspaces) return out;
  for (const auto& s : ctx_.sessions->List()) {
    const std::string& ws = s.report.workspace_id;
    if (ws.starts_with(kConversationPrefix)) continue;
    ModelEntry e;
    e.id = std::string(kWorkspaceModelPrefix) + ws;
    e.extra = {{"workspace", ws}, {"model", s.model}};
    out.push_back(std::move(e));
  }
  return out;
}

void OpenAiApi::Models(http::Response& res) {
  Json j = ModelListJson(Entries(/*workspaces=*/true));
  // The native protocol's list (docs/protocol.md), kept beside OpenAI's.
  Json native = Json::array();
  for (const auto& e : Entries(/*workspaces=*/false)) native.push_back(e.extra);
  j["models"] = native;
  res.SetJson(200, j);
}

void OpenAiApi::Model(const std::string& id, http::Response& res) {
  for (const auto& e : Entries(/*workspaces=*/true)) {
    if (e.id == id) return res.SetJson(200, ModelJson(e));
  }
  ReplyError(res, Error(ErrorCode::kNotFound, "The model '" + id + "' does not exist on this server (see /v1/models)")
                      .WithField("model"));
}

}  // namespace

void RegisterOpenAiApi(http::Router& router, ServerContext& ctx) {
  auto api = std::make_shared<OpenAiApi>(ctx);
  router.Post("/v1/chat/completions",
              [api](const http::Request& req, http::Response& res) { api->ChatCompletions(req, res); });
  router.Post("/v1/completions", [api](const http::Request& req, http::Response& res) { api->Completions(req, res); });
  router.Post("/v1/embeddings", [api](const http::Request& req, http::Response& res) { api->Embeddings(req, res); });
  router.Get("/v1/models", [api](const http::Request&, http::Response& res) { api->Models(res); });
  router.Get("/v1/models/:id",
             [api](const http::Request& req, http::Response& res) { api->Model(req.params.at("id"), res); });
}

}  // namespace modeld::daemon::openai
