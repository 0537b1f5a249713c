#include "modeld/chat.h"

namespace modeld {

std::string_view ChatRoleName(ChatRole role) {
  switch (role) {
    case ChatRole::kSystem:
      return "system";
    case ChatRole::kUser:
      return "user";
    case ChatRole::kAssistant:
      return "assistant";
    case ChatRole::kTool:
      return "tool";
  }
  return "user";
}

std::optional<ChatRole> ChatRoleFromName(std::string_view name) {
  if (name == "system" || name == "developer") return ChatRole::kSystem;
  if (name == "user") return ChatRole::kUser;
  if (name == "assistant") return ChatRole::kAssistant;
  if (name == "tool") return ChatRole::kTool;
  return std::nullopt;
}

}  // namespace modeld

namespace modeld {
namespace {

constexpr std::string_view kSys = "\x02SYSTEM\x03";
constexpr std::string_view kU1 = "\x02USER1\x03";
constexpr std::string_view kA1 = "\x02ASSISTANT1\x03";
constexpr std::string_view kU2 = "\x02USER2\x03";

Result<std::string> Render(const ChatFormat& f, std::vector<std::pair<ChatRole, std::string_view>> msgs, bool gen) {
  ChatRequest r;
  for (const auto& [role, text] : msgs) {
    ChatMessage m;
    m.role = role;
    m.content = std::string(text);
    r.messages.push_back(std::move(m));
  }
  r.add_generation_prompt = gen;
  auto p = f.Apply(r);
  if (!p) return Fail(Error::UnsupportedFeature("chat template markers: " + p.error().message()));
  return std::move(p->text);
}

// Splits `text` at the sentinels, which must all appear, once each and in order: the pieces
// before, between and after them.
std::optional<std::vector<std::string>> Split(const std::string& text, std::initializer_list<std::string_view> marks) {
  std::vector<std::string> out;
  size_t at = 0;
  for (auto m : marks) {
    const size_t i = text.find(m, at);
    if (i == std::string::npos) return std::nullopt;
    out.push_back(text.substr(at, i - at));
    at = i + m.size();
  }
  out.push_back(text.substr(at));
  return out;
}

bool StripPrefix(std::string* s, const std::string& prefix) {
  if (s->compare(0, prefix.size(), prefix) != 0) return false;
  s->erase(0, prefix.size());
  return true;
}

bool StripSuffix(std::string* s, const std::string& suffix) {
  if (s->size() < suffix.size() || s->compare(s->size() - suffix.size(), suffix.size(), suffix) != 0) return false;
  s->resize(s->size() - suffix.size());
  return true;
}

Error NotAConcatenation(const std::string& why) {
  return Error::UnsupportedFeature("chat template markers: the template is not a plain sequence of messages (" + why +
                                   ")");
}

}  // namespace

Result<ChatMarkers> DeriveChatMarkers(const ChatFormat& f) {
  using R = ChatRole;
  // One user message: start + user.open + U1 + user.close.
  auto one = Render(f, {{R::kUser, kU1}}, false);
  if (!one) return Fail(one.error());
  auto p1 = Split(*one, {kU1});
  if (!p1) return Fail(NotAConcatenation("a user message is not rendered verbatim"));
  ChatMarkers m;
  m.user.close = (*p1)[1];
  const std::string start_and_open = (*p1)[0];
  // Two user messages in a row: the piece between them is user.close + user.open.
  auto two = Render(f, {{R::kUser, kU1}, {R::kUser, kU2}}, false);
  if (!two) return Fail(two.error());  // a template that insists on alternating roles (Mistral's)
  auto p2 = Split(*two, {kU1, kU2});
  if (!p2 || (*p2)[0] != start_and_open || (*p2)[2] != m.user.close) {
    return Fail(NotAConcatenation("consecutive user messages are merged"));
  }
  m.user.open = (*p2)[1];
  if (!StripPrefix(&m.user.open, m.user.close)) return Fail(NotAConcatenation("a user message's end changes"));
  std::string start = start_and_open;
  if (!StripSuffix(&start, m.user.open)) return Fail(NotAConcatenation("the first user message opens differently"));
  // user, assistant, user and the generation prompt.
  auto three = Render(f, {{R::kUser, kU1}, {R::kAssistant, kA1}, {R::kUser, kU2}}, true);
  if (!three) return Fail(three.error());
  auto p3 = Split(*three, {kU1, kA1, kU2});
  if (!p3 || (*p3)[0] != start_and_open) return Fail(NotAConcatenation("messages are reordered or rewritten"));
  m.assistant.open = (*p3)[1];
  m.assistant.close = (*p3)[2];
  std::string gen = (*p3)[3];
  if (!StripPrefix(&m.assistant.open, m.user.close) || !StripSuffix(&m.assistant.close, m.user.open) ||
      !StripPrefix(&gen, m.user.close)) {
    return Fail(NotAConcatenation("an answer is not a message of its own"));
  }
  if (gen != m.assistant.open) return Fail(NotAConcatenation("the generation prompt is not an answer's opening"));
  // A system message and a user message: its own role, or folded into the user's message.
  auto sys = Render(f, {{R::kSystem, kSys}, {R::kUser, kU1}}, false);
  if (!sys) return Fail(sys.error());
  auto ps = Split(*sys, {kSys, kU1});
  if (!ps || (*ps)[2] != m.user.close) return Fail(NotAConcatenation("the system message is reordered"));
  std::string sys_close = (*ps)[1];
  if (StripSuffix(&sys_close, m.user.open)) {
    m.system = {(*ps)[0], sys_close};  // the whole head: a BOS, a preamble, the system opening
  } else {
    m.start = start;  // folded: the system text becomes a user turn of its own
    m.system = m.user;
    m.system_as_user = true;
  }
  return m;
}

}  // namespace modeld
