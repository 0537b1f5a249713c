// Many OpenAI conversations warm at once. A stateless request carries its whole conversation;
// each conversation lives in a session of the SessionManager (so the KV budget, LRU eviction,
// metrics and /v1/sessions cover them) under an id of its own, and a request is served from the
// one whose last prompt it continues, verified on tokens.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/session_manager.h"

namespace modeld::daemon {

// Conversation ids: '~' is outside the native protocol's workspace names, so none collides.
inline constexpr char kConversationPrefix[] = "~chat-";
// Tokens at the end of a conversation's last prompt that a continuation may render differently
// (a generation prompt: Qwen3's with its empty think block is 8). Small, so that a new
// conversation whose first message is short is not taken for the continuation of another.
inline constexpr int64_t kTailSlack = 8;
// A new conversation sharing at least this many tokens with a resident one starts from a copy of
// its KV (Session::Fork): a shared system prompt costs memory, not compute.
inline constexpr int64_t kMinForkTokens = 256;

class Conversations {
 public:
  explicit Conversations(SessionManager* sessions) : sessions_(sessions) {}

  struct Placement {
    std::string id;
    int64_t matched = 0;      // tokens of the request shared with the conversation's last prompt
    bool fresh = false;       // a new conversation
    std::string forked_from;  // a new conversation started from a copy of this one's KV
  };
  // Length of the common prefix of two token lists.
  static int64_t CommonPrefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

  // The conversation to serve `tokens` on model `model`: the one whose last prompt they continue
  // (all of it but at most kTailSlack tokens), with the longest match, waiting while it is busy;
  // else a new one: a Fork of the idle conversation sharing the longest prefix with them when that
  // is at least kMinForkTokens (the backend permitting), else opened with `cfg`. So a side request
  // or a second conversation that shares only a system prompt starts its own instead of cutting a
  // long conversation short, and does not prefill the shared part again. A non-empty `hint` (a client's
  // cache key) narrows the candidates to conversations with that hint; it never makes a token
  // mismatch count as a match.
  Result<SessionManager::Lease> Acquire(const std::string& model, const std::vector<int32_t>& tokens,
                                        const std::string& hint, const SessionConfig& cfg, const ProgressFunc& progress,
                                        Placement* out);
  // After a prefill on `id`: the prompt it now holds.
  void Record(const std::string& id, std::vector<int32_t> tokens);
  void Forget(const std::string& id);  // its session was closed
  size_t size();

 private:
  struct Conversation {
    std::string model;
    std::string hint;
    std::vector<int32_t> tokens;  // the last prompt prefilled
    bool opening = false;         // its session is being made: not pruned meanwhile
  };
  // The best continuation candidate, or "" when none qualifies. With mu_ held.
  std::string BestLocked(const std::string& model, const std::vector<int32_t>& tokens, const std::string& hint,
                         int64_t* matched) const;
  // The conversation sharing the longest prefix with `tokens`, whatever its hint. With mu_ held.
  std::string LongestSharedLocked(const std::string& model, const std::vector<int32_t>& tokens, int64_t* shared) const;
  // A new conversation from a copy of `donor`'s session; an error when it cannot be made now
  // (the donor busy or gone, no room, a backend without Fork).
  Result<SessionManager::Lease> ForkNew(const std::string& donor, const std::string& model, const std::string& hint,
                                        Placement* out);
  // A new conversation's id and record (pruning those whose sessions left). With mu_ held.
  std::string NewIdLocked(const std::string& model, const std::string& hint);
  void Opened(const std::string& id);  // its session is in the table

  SessionManager* sessions_;
  std::mutex mu_;
  std::map<std::string, Conversation> convs_;  // GUARDED_BY(mu_)
  uint64_t next_id_ = 1;                       // GUARDED_BY(mu_)
};

}  // namespace modeld::daemon
