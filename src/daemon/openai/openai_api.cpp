#include "daemon/openai/openai_api.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <memory>

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
  DecodeConfig decode;
  std::string hint;
};

struct Outcome {
  PrefixStatus prefix;
  DecodeResult decode;
  Usage usage;
};

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

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
  std::vector<ModelEntry> Entries() const;
  // n_ctx of a conversation's session on `m`.
  int32_t ChatCtx(const ServedModel& m) const;
  // Checks the prompt against the context, then takes the conversation to serve it on.
  Result<LeasePtr> Place(Generation& g, Conversations::Placement* where);
  // Prefills the prompt (reusing what the conversation holds) and decodes.
  Result<Outcome> Run(SessionManager::Lease& lease, const std::string& id, const Generation& g,
                      const ProgressFunc& progress, const ChunkCallback& on_chunk);
  // Keep-alive comments on a stream during a long prefill (at most one a second).
  ProgressFunc PrefillComments(http::EventStream& es, const std::string& id) const;

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

Result<LeasePtr> OpenAiApi::Place(Generation& g, Conversations::Placement* where) {
  const int32_t n_ctx = ChatCtx(*g.model);
  const auto n_prompt = static_cast<int64_t>(g.tokens.size());
  const int64_t want = g.decode.max_tokens > 0 ? g.decode.max_tokens : 1;
  if (n_prompt + want > n_ctx) {
    return Fail(Error::ContextOverflow("prompt", n_prompt, want, n_ctx).WithField("messages"));
  }
  if (g.decode.max_tokens <= 0) g.decode.max_tokens = static_cast<int32_t>(n_ctx - n_prompt);  // to the end
  if (auto ok = ValidateDecodeConfig(g.decode); !ok) return Fail(ok.error());
  SessionConfig cfg;
  cfg.n_ctx = n_ctx;
  cfg.threads = ctx_.opt.threads;
  cfg.flash_attn = ctx_.opt.chat_flash_attn;
  auto lease = convs_.Acquire(g.model->name, g.tokens, g.hint, cfg, {}, where);
  if (!lease) return Fail(lease.error());
  if (!where->forked_from.empty()) {
    ctx_.Log("modeld: %s starts from a copy of %s's KV\n", where->id, where->forked_from);
  }
  return std::make_shared<SessionManager::Lease>(std::move(*lease));
}

Result<Outcome> OpenAiApi::Run(SessionManager::Lease& lease, const std::string& id, const Generation& g,
                               const ProgressFunc& progress, const ChunkCallback& on_chunk) {
  Session& s = lease.session();
  ContextManifest m;
  m.Add("conversation", SegmentKind::kConversation, g.text, /*parse_special=*/true);
  const auto t0 = Clock::now();
  auto prefix = s.EnsurePrefix(PrefixInput{std::move(m), ctx_.LoggedProgress(id, progress), 0, ctx_.stop.get_token()});
  if (!prefix) return Fail(prefix.error());
  convs_.Record(id, g.tokens);
  ctx_.metrics.AddTokens(prefix->tokens_reused, prefix->tokens_prefilled, 0);
  ctx_.metrics.prefill_seconds.Observe(std::chrono::duration<double>(Clock::now() - t0).count());
  DecodeConfig dc = g.decode;
  dc.cancel = ctx_.stop.get_token();
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

ProgressFunc OpenAiApi::PrefillComments(http::EventStream& es, const std::string& id) const {
  return [&es, id, last = Clock::now()](const Progress& p) mutable {
    if (Clock::now() - last < std::chrono::seconds(1)) return;
    last = Clock::now();
    es.Comment(id + " " + p.stage + " " + std::to_string(p.done) + "/" + std::to_string(p.total));
  };
}

void OpenAiApi::ChatCompletions(const http::Request& req, http::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  auto parsed = ParseChatCompletion(*body);
  if (!parsed) return ReplyError(res, parsed.error());
  auto model = FindModel(parsed->model);
  if (!model) return ReplyError(res, model.error());
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
  g.decode.constraint = prompt->constraint;
  g.hint = req.Header("x-modeld-workspace");
  if (g.hint.empty()) g.hint = parsed->cache_key;
  Conversations::Placement where;
  auto lease = Place(g, &where);
  if (!lease) return ReplyError(res, lease.error());

  const ReplyHeader header{NewId("chatcmpl-"), Now(), (*model)->name};
  auto parser = prompt->parser;
  if (!parsed->stream) {
    auto out = Run(**lease, where.id, g, {}, {});
    (*lease)->Release();
    if (!out) return ReplyError(res, out.error());
    auto final = parser->Update(out->decode.text, /*partial=*/false);
    if (!final) return ReplyError(res, final.error());
    const ChatMessage& msg = parser->message();
    return res.SetJson(
        200, ChatCompletionJson(header, msg, FinishReasonFor(out->decode.finish, !msg.tool_calls.empty()), out->usage));
  }
  res.content_type = "text/event-stream";
  res.headers.push_back({"Cache-Control", "no-cache"});
  res.stream = [this, lease = *lease, g = std::move(g), parser, header, id = where.id,
                include_usage = parsed->include_usage](http::Sink& sink) {
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
      if (ctx_.stopping) return false;
      if (!sink.Open()) {
        gone = true;
        return false;
      }
      if (c.text.empty()) return true;
      generated += c.text;
      auto deltas = parser->Update(generated, /*partial=*/true);
      if (deltas && !send(*deltas)) {
        gone = true;
        return false;
      }
      return true;
    };
    auto out = Run(*lease, id, g, PrefillComments(es, id), on_chunk);
    lease->Release();
    if (gone) return false;
    if (!out) {
      es.Send(ErrorJson(out.error()));
      return true;
    }
    auto final = parser->Update(out->decode.text, /*partial=*/false);
    if (!final) {
      es.Send(ErrorJson(final.error()));
      return true;
    }
    if (!send(*final)) return false;
    if (!role_sent) send({ChatDelta{}});
    const ChatMessage& msg = parser->message();
    es.Send(ChatFinishChunkJson(header, FinishReasonFor(out->decode.finish, !msg.tool_calls.empty())));
    if (include_usage) es.Send(UsageChunkJson(header, "chat.completion.chunk", out->usage));
    es.SendData("[DONE]");
    return true;
  };
}

void OpenAiApi::Completions(const http::Request& req, http::Response& res) {
  auto body = wire::ParseObject(req.body);
  if (!body) return ReplyError(res, body.error());
  auto parsed = ParseCompletion(*body);
  if (!parsed) return ReplyError(res, parsed.error());
  auto model = FindModel(parsed->model);
  if (!model) return ReplyError(res, model.error());
  auto format = ctx_.ChatFormatFor(**model);
  if (!format) return ReplyError(res, format.error());
  Generation g;
  g.model = *model;
  g.text = (*format)->RawPrompt(parsed->prompt);
  auto tokens = (*format)->Tokenize(g.text);
  if (!tokens) return ReplyError(res, tokens.error());
  if (tokens->empty())
    return ReplyError(res, Error(ErrorCode::kInvalidArgument, "the prompt is empty").WithField("prompt"));
  g.tokens = std::move(*tokens);
  g.decode = parsed->decode;
  g.hint = req.Header("x-modeld-workspace");
  if (g.hint.empty()) g.hint = parsed->cache_key;
  Conversations::Placement where;
  auto lease = Place(g, &where);
  if (!lease) return ReplyError(res, lease.error());
  const ReplyHeader header{NewId("cmpl-"), Now(), (*model)->name};
  if (!parsed->stream) {
    auto out = Run(**lease, where.id, g, {}, {});
    (*lease)->Release();
    if (!out) return ReplyError(res, out.error());
    return res.SetJson(
        200, CompletionJson(header, out->decode.text, FinishReasonFor(out->decode.finish, false), out->usage));
  }
  res.content_type = "text/event-stream";
  res.headers.push_back({"Cache-Control", "no-cache"});
  res.stream = [this, lease = *lease, g = std::move(g), header, id = where.id,
                include_usage = parsed->include_usage](http::Sink& sink) {
    http::EventStream es(sink, http::EventStream::Framing::kSse);
    bool gone = false;
    auto on_chunk = [&](const StreamChunk& c) {
      if (ctx_.stopping) return false;
      if (!sink.Open()) {
        gone = true;
        return false;
      }
      if (!c.text.empty() && !es.Send(CompletionChunkJson(header, c.text, nullptr))) {
        gone = true;
        return false;
      }
      return true;
    };
    auto out = Run(*lease, id, g, PrefillComments(es, id), on_chunk);
    lease->Release();
    if (gone) return false;
    if (!out) {
      es.Send(ErrorJson(out.error()));
      return true;
    }
    const std::string finish = FinishReasonFor(out->decode.finish, false);
    es.Send(CompletionChunkJson(header, "", finish.c_str()));
    if (include_usage) es.Send(UsageChunkJson(header, "text_completion", out->usage));
    es.SendData("[DONE]");
    return true;
  };
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
    EmbedRequest er;
    er.model_path = (*model)->info.path;
    er.model_digest = (*model)->info.digest;
    er.input = input;
    er.threads = ctx_.opt.threads;
    er.gate = ctx_.gate;
    auto e = Service().Embed(er);
    if (!e) return ReplyError(res, e.error());
    n_tokens += e->n_tokens;
    vectors.push_back(std::move(e->values));
  }
  res.SetJson(200, EmbeddingsJson((*model)->name, vectors, parsed->base64, n_tokens));
}

std::vector<ModelEntry> OpenAiApi::Entries() const {
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
  return out;
}

void OpenAiApi::Models(http::Response& res) {
  const auto entries = Entries();
  Json j = ModelListJson(entries);
  // The native protocol's list (docs/protocol.md), kept beside OpenAI's.
  Json native = Json::array();
  for (const auto& e : entries) native.push_back(e.extra);
  j["models"] = native;
  res.SetJson(200, j);
}

void OpenAiApi::Model(const std::string& id, http::Response& res) {
  for (const auto& e : Entries()) {
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
