// OpenAI's /v1 API over the daemon (docs/openai.md): chat completions with the model's own chat
// template and tool calls, completions, embeddings and the model list, served from many warm
// conversations at once.
#pragma once

#include "daemon/context.h"
#include "daemon/http/http.h"

namespace modeld::daemon::openai {

// Adds the API's routes. `ctx` outlives the router's use.
void RegisterOpenAiApi(http::Router& router, ServerContext& ctx);

}  // namespace modeld::daemon::openai
