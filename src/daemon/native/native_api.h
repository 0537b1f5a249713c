// The daemon's own protocol (docs/protocol.md): models, sessions by workspace, the low-level
// prefix/suffix/decode calls, workspaces, embeddings, health and metrics. Streams are NDJSON.
#pragma once

#include "daemon/context.h"
#include "daemon/http/http.h"

namespace modeld::daemon {

// Adds the protocol's routes. `ctx` outlives the router's use.
void RegisterNativeApi(http::Router& router, ServerContext& ctx);

}  // namespace modeld::daemon
