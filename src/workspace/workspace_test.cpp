// Edit-aware assembly on a real session: exact (warm == cold), faithful
// (the files can be rebuilt from the context), and cheap (an edit costs its
// note's tokens).
#include "modeld/workspace.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <optional>
#include <random>
#include <thread>

#include "llama/llama_session.h"
#include "llama/model_writer.h"
#include "llama/test_models.h"
#include "modeld/service.h"
#include "workspace/text_format.h"

namespace modeld {
namespace {

namespace fs = std::filesystem;

std::string TinyModel() { return testing::GeneratedModel("tiny", "workspace-test-tiny"); }

std::unique_ptr<Session> Open(const std::string& ws, int n_ctx = 8192) {
  OpenSessionRequest req;
  req.model_path = TinyModel();
  req.workspace_id = ws;
  req.config.n_ctx = n_ctx;
  req.config.threads = 2;
  auto s = Service().OpenSession(req);
  EXPECT_TRUE(s.has_value()) << s.error().ToString();
  return std::move(*s);
}

std::string RandomCode(std::mt19937& rng, int lines) {
  static const std::vector<std::string> words = {"int", "x",    "=",           "return", "if",  "(",
                                                 ")",   "{",    "}",           ";",      "foo", "bar",
                                                 "//",  "TODO", "std::string", "auto",   "é",   "</file>"};
  std::string s;
  for (int l = 0; l < lines; ++l) {
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < n; ++i) s += words[rng() % words.size()] + (i + 1 < n ? " " : "");
    s += "\n";
  }
  return s;
}

std::string EditLines(std::mt19937& rng, std::string text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(text.substr(start, nl - start));
  }
  const size_t at = lines.empty() ? 0 : rng() % lines.size();
  switch (rng() % 3) {
    case 0:
      lines.insert(lines.begin() + static_cast<long>(at), "int added_" + std::to_string(rng() % 1000) + " = 1;");
      break;
    case 1:
      if (!lines.empty()) lines.erase(lines.begin() + static_cast<long>(at));
      break;
    default:
      if (!lines.empty()) lines[at] = "// changed " + std::to_string(rng() % 1000);
      break;
  }
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return a.size() == b.size() ? d : INFINITY;
}

TEST(Workspace, RandomEditsStayExactFaithfulAndCheap) {
  std::mt19937 rng(42);
  auto session = Open("ws");
  Workspace w(session.get());
  // Free text that looks like the format's blocks, and a repo map without a final newline.
  ASSERT_TRUE(w.SetSystem("You are a coding assistant.\n<file path=\"fake\" lines=\"1\">").has_value());
  ASSERT_TRUE(w.SetRepoMap("src/a.cc\nsrc/b.cc\nsrc/c.cc").has_value());
  for (const char* p : {"src/a.cc", "src/b.cc", "src/c.cc"}) ASSERT_TRUE(w.PutFile(p, RandomCode(rng, 30)).has_value());
  DecodeConfig dc;
  dc.max_tokens = 6;
  ASSERT_TRUE(w.Ask("What does this code do?", dc, {}).has_value());

  for (int step = 0; step < 25; ++step) {
    const auto files = w.files();
    auto it = files.begin();
    std::advance(it, static_cast<long>(rng() % files.size()));
    const std::string text_before = w.AssembledText();
    switch (rng() % 6) {
      case 0:
      case 1:
      case 2: {  // an edit: prefills exactly the note's tokens
        ASSERT_TRUE(w.Prefill().has_value());
        auto put = w.PutFile(it->first, EditLines(rng, it->second));
        ASSERT_TRUE(put.has_value());
        const ContextManifest m = w.Manifest();
        int64_t note_tokens = 0;
        for (size_t i = m.size() - 3; i < m.size(); ++i) {
          note_tokens +=
              static_cast<int64_t>(session->Tokenize(m.segments()[i].content, m.segments()[i].parse_special)->size());
        }
        auto st = w.Prefill();
        ASSERT_TRUE(st.has_value());
        EXPECT_EQ(st->tokens_prefilled, note_tokens) << "step " << step << ": " << put->change;
        EXPECT_EQ(st->tokens_reused, st->tokens_resident - note_tokens);
        break;
      }
      case 3: {
        const std::string p = "src/new" + std::to_string(step) + ".cc";
        ASSERT_TRUE(w.PutFile(p, RandomCode(rng, 5)).has_value());
        break;
      }
      case 4:
        if (files.size() > 2) {
          ASSERT_TRUE(w.RenameFile(it->first, it->first + ".old").has_value());
        } else {
          ASSERT_TRUE(w.AddTurn("user", "please keep going").has_value());
        }
        break;
      default:
        if (files.size() > 2) {
          ASSERT_TRUE(w.RemoveFile(it->first).has_value());
        }
        break;
    }
    // Faithful: the assembled text alone gives back every file exactly.
    auto rebuilt = workspace::ReconstructFiles(w.AssembledText());
    ASSERT_TRUE(rebuilt.has_value()) << rebuilt.error().ToString();
    EXPECT_EQ(*rebuilt, w.files()) << "step " << step;
    // Append-only: the new context starts with the old one.
    EXPECT_EQ(w.AssembledText().compare(0, text_before.size(), text_before), 0) << "step " << step;
  }
}

TEST(Workspace, WarmEqualsColdAndEditsCostTheirNotesNotTheRest) {
  std::mt19937 rng(7);
  auto warm_session = Open("warm");
  auto inplace_session = Open("inplace");
  Workspace warm(warm_session.get());
  WorkspaceOptions ip;
  ip.mode = AssemblyMode::kInPlace;
  Workspace inplace(inplace_session.get(), ip);
  const std::vector<std::string> paths = {"src/first.cc", "src/second.cc", "src/third.cc", "src/fourth.cc"};
  for (Workspace* w : {&warm, &inplace}) ASSERT_TRUE(w->SetSystem("You are a coding assistant.").has_value());
  for (const auto& p : paths) {
    const std::string code = RandomCode(rng, 25);
    ASSERT_TRUE(warm.PutFile(p, code).has_value());
    ASSERT_TRUE(inplace.PutFile(p, code).has_value());
  }
  DecodeConfig dc;
  dc.max_tokens = 8;
  for (int turn = 0; turn < 3; ++turn) {
    if (turn > 0) {
      // Edit the FIRST file: in place, this re-prefills nearly everything after it.
      const std::string edited = EditLines(rng, warm.files().at(paths[0]));
      ASSERT_TRUE(warm.PutFile(paths[0], edited).has_value());
      ASSERT_TRUE(inplace.PutFile(paths[0], edited).has_value());
    }
    const std::string q = "turn " + std::to_string(turn) + ": anything wrong?";
    const ContextManifest before = warm.Manifest();
    const auto question = warm.QuestionSegments(q);
    auto a = warm.Ask(q, dc, {});
    ASSERT_TRUE(a.has_value()) << a.error().ToString();
    auto b = inplace.Ask(q, dc, {});
    ASSERT_TRUE(b.has_value()) << b.error().ToString();
    EXPECT_EQ(warm.files(), inplace.files());
    if (turn > 0) {
      EXPECT_LT(a->prefix.tokens_prefilled * 5, b->prefix.tokens_prefilled)
          << "edit-aware " << a->prefix.tokens_prefilled << " vs in place " << b->prefix.tokens_prefilled;
    }
    // Warm == cold: a fresh session fed the same context and question greedily says the same.
    auto cold = Open("cold");
    auto ps = cold->EnsurePrefix({before, {}});
    ASSERT_TRUE(ps.has_value());
    ASSERT_TRUE(cold->PrefillSuffix({ps->manifest_digest, question, {}}).has_value());
    auto dr = cold->Decode(dc, {});
    ASSERT_TRUE(dr.has_value());
    EXPECT_EQ(dr->text, a->decode.text) << "turn " << turn;
    // And after the whole history (question and answer now in the log), the logits agree.
    ASSERT_TRUE(warm.Prefill().has_value());
    ASSERT_TRUE(cold->EnsurePrefix({warm.Manifest(), {}}).has_value());
    auto wl = dynamic_cast<llama::LlamaSession&>(*warm_session).LastLogits();
    auto cl = dynamic_cast<llama::LlamaSession&>(*cold).LastLogits();
    ASSERT_TRUE(wl.has_value() && cl.has_value());
    EXPECT_LE(MaxAbsDiff(*wl, *cl), 1e-4f) << "turn " << turn;
  }
}

// With the model's own template (Llama 3.2's here, markers derived from it), the workspace's
// prompt is what that template renders for the same conversation, and stays exact (warm == cold).
TEST(Workspace, TheModelsOwnTemplateRendersTheWorkspace) {
  auto spec = llama::PresetSpec("tiny-llama", MODELD_VOCAB_DIR);
  ASSERT_TRUE(spec.has_value());
  spec->vocab_path = std::string(MODELD_VOCAB_DIR) + "/ggml-vocab-llama-bpe.gguf";
  std::ifstream tf(std::string(MODELD_VOCAB_DIR) + "/templates/meta-llama-Llama-3.2-3B-Instruct.jinja");
  spec->chat_template.assign(std::istreambuf_iterator<char>(tf), std::istreambuf_iterator<char>());
  ASSERT_FALSE(spec->chat_template.empty());
  const std::string path = std::string(MODELD_TEST_TMP) + "/workspace-llama3.gguf";
  fs::create_directories(MODELD_TEST_TMP);
  ASSERT_TRUE(llama::WriteRandomModel(*spec, path).has_value());
  OpenSessionRequest req;
  req.model_path = path;
  req.config.n_ctx = 4096;
  req.config.threads = 2;
  auto format = Service().OpenChatFormat(req);
  ASSERT_TRUE(format.has_value()) << format.error().ToString();
  auto markers = DeriveChatMarkers(**format);
  ASSERT_TRUE(markers.has_value()) << markers.error().ToString();
  auto warm_session = Service().OpenSession(req);
  ASSERT_TRUE(warm_session.has_value());
  WorkspaceOptions opt;
  opt.markers = *markers;
  Workspace w(warm_session->get(), opt);
  std::mt19937 rng(3);
  ASSERT_TRUE(w.SetSystem("You are a coding assistant.").has_value());
  ASSERT_TRUE(w.PutFile("src/a.cc", RandomCode(rng, 12)).has_value());
  DecodeConfig dc;
  dc.max_tokens = 6;
  auto first = w.Ask("What does a.cc do?", dc, {});
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  ASSERT_TRUE(w.PutFile("src/a.cc", EditLines(rng, w.files().at("src/a.cc"))).has_value());

  // The template's own rendering: the system message holds the stable part, then the turns.
  const std::string q2 = "And now?";
  std::string full = w.AssembledText();
  for (const auto& s : w.QuestionSegments(q2)) full += s.content;
  ChatRequest chat;
  std::string system;
  const ContextManifest manifest = w.Manifest();  // named: a range-for over a temporary's member dangles
  for (const auto& s : manifest.segments()) {
    if (s.kind == SegmentKind::kSystem || s.kind == SegmentKind::kFile) system += s.content;
  }
  const auto msg = [](ChatRole r, std::string text) {
    ChatMessage m;
    m.role = r;
    m.content = std::move(text);
    return m;
  };
  chat.messages.push_back(msg(ChatRole::kSystem, system));
  for (const auto& s : manifest.segments()) {
    if (s.kind == SegmentKind::kUser || s.kind == SegmentKind::kChangeNote)
      chat.messages.push_back(msg(ChatRole::kUser, s.content));
    if (s.kind == SegmentKind::kConversation) {
      const bool answer = chat.messages.back().role == ChatRole::kUser;
      chat.messages.push_back(msg(answer ? ChatRole::kAssistant : ChatRole::kUser, s.content));
    }
  }
  chat.messages.push_back(msg(ChatRole::kUser, q2));
  auto rendered = (*format)->Apply(chat);
  ASSERT_TRUE(rendered.has_value());
  // Llama 3's template trims each message; the workspace keeps a message's text as it is (its
  // format ends every block with a newline), the one difference.
  std::string trimmed = full;
  for (const std::string& close : {markers->system.close, markers->user.close, markers->assistant.close}) {
    for (size_t at = 0; (at = trimmed.find(close, at)) != std::string::npos; at += close.size() - 1) {
      while (at > 0 && std::isspace(static_cast<unsigned char>(trimmed[at - 1]))) trimmed.erase(--at, 1);
      ++at;
    }
  }
  for (const std::string& open : {markers->user.open, markers->assistant.open}) {
    for (size_t at = 0; (at = trimmed.find(open, at)) != std::string::npos;) {
      at += open.size();
      while (at < trimmed.size() && std::isspace(static_cast<unsigned char>(trimmed[at]))) trimmed.erase(at, 1);
    }
  }
  EXPECT_EQ(trimmed, rendered->text);
  EXPECT_EQ(full.rfind("<|begin_of_text|><|start_header_id|>system<|end_header_id|>", 0), 0u) << full;

  // Exact: the warm session after the edit holds what a cold prefill of the same context holds.
  ASSERT_TRUE(w.Prefill().has_value());
  auto cold = Service().OpenSession(req);
  ASSERT_TRUE(cold.has_value());
  ASSERT_TRUE((*cold)->EnsurePrefix({w.Manifest(), {}}).has_value());
  auto wl = dynamic_cast<llama::LlamaSession&>(**warm_session).LastLogits();
  auto cl = dynamic_cast<llama::LlamaSession&>(**cold).LastLogits();
  ASSERT_TRUE(wl.has_value() && cl.has_value());
  EXPECT_LE(MaxAbsDiff(*wl, *cl), 1e-4f);
}

TEST(Workspace, BadInputIsRefusedAndChangesNothing) {
  auto session = Open("bad");
  Workspace w(session.get());
  ASSERT_TRUE(w.PutFile("src/ok.cc", "int x;\n").has_value());
  ASSERT_TRUE(w.Prefill().has_value());
  const std::string before = w.AssembledText();
  const auto files = w.files();
  EXPECT_TRUE(w.PutFile("../etc/passwd", "x").error().Is(ErrorCode::kInvalidArgument));
  EXPECT_TRUE(w.PutFile("/abs/path", "x").error().Is(ErrorCode::kInvalidArgument));
  EXPECT_TRUE(w.PutFile("a/../b", "x").error().Is(ErrorCode::kInvalidArgument));
  EXPECT_TRUE(w.PutFile("bin.dat", std::string("\x7f"
                                               "ELF\0\0\x01",
                                               7))
                  .error()
                  .Is(ErrorCode::kInvalidArgument));
  EXPECT_TRUE(w.PutFile("huge.txt", std::string((1 << 20) + 1, 'a')).error().Is(ErrorCode::kInvalidArgument));
  EXPECT_TRUE(w.RemoveFile("src/missing.cc").error().Is(ErrorCode::kNotFound));
  EXPECT_TRUE(w.RenameFile("src/missing.cc", "x.cc").error().Is(ErrorCode::kNotFound));
  ASSERT_TRUE(w.PutFile("src/two.cc", "int y;\n").has_value());
  const std::string with_two = w.AssembledText();
  EXPECT_TRUE(w.RenameFile("src/ok.cc", "src/two.cc").error().Is(ErrorCode::kInvalidArgument));
  EXPECT_TRUE(w.AddTurn("system", "sneaky").error().Is(ErrorCode::kInvalidArgument));
  EXPECT_EQ(w.AssembledText(), with_two);
  EXPECT_NE(before, with_two);
  EXPECT_EQ(w.files().size(), files.size() + 1);
}

TEST(Workspace, PathsAreNfcSoBothSpellingsNameOneFileAndInvalidUtf8IsRefused) {
  const std::string nfc = "src/caf\xC3\xA9.c", nfd = "src/cafe\xCC\x81.c";  // U+00E9 / e + U+0301
  auto session = Open("nfc");
  Workspace w(session.get());
  auto put = w.PutFile(nfd, "int x;\n");
  ASSERT_TRUE(put.has_value()) << put.error().ToString();
  EXPECT_EQ(put->change, "add");
  EXPECT_EQ(w.files(), (std::map<std::string, std::string>{{nfc, "int x;\n"}}));
  put = w.PutFile(nfc, "int x;\n");
  ASSERT_TRUE(put.has_value()) << put.error().ToString();
  EXPECT_EQ(put->change, "unchanged");
  ASSERT_TRUE(w.Prefill().has_value());
  put = w.PutFile(nfd, "int y;\n");  // the same file: a change note, not a second file
  ASSERT_TRUE(put.has_value()) << put.error().ToString();
  EXPECT_NE(put->change, "add");
  EXPECT_EQ(w.files(), (std::map<std::string, std::string>{{nfc, "int y;\n"}}));
  EXPECT_EQ(*workspace::ReconstructFiles(w.AssembledText()), w.files());

  const std::string before = w.AssembledText();
  auto bad_put = w.PutFile("src/\xFF.c", "x\n");
  ASSERT_FALSE(bad_put.has_value());
  EXPECT_TRUE(bad_put.error().Is(ErrorCode::kInvalidArgument));
  EXPECT_NE(bad_put.error().message().find("UTF-8"), std::string::npos) << bad_put.error().message();
  EXPECT_TRUE(w.RemoveFile("src/caf\xC3").error().Is(ErrorCode::kInvalidArgument));
  EXPECT_TRUE(w.RenameFile(nfd, "d/\xED\xA0\x80").error().Is(ErrorCode::kInvalidArgument));
  EXPECT_TRUE(w.RenameFile("\xC0\xAF", "x.c").error().Is(ErrorCode::kInvalidArgument));
  EXPECT_EQ(w.AssembledText(), before);

  ASSERT_TRUE(w.RenameFile(nfd, "src/be\xCC\x81.c").has_value());
  EXPECT_EQ(w.files(), (std::map<std::string, std::string>{{"src/b\xC3\xA9.c", "int y;\n"}}));
  EXPECT_EQ(*workspace::ReconstructFiles(w.AssembledText()), w.files());
  ASSERT_TRUE(w.RemoveFile("src/be\xCC\x81.c").has_value());
  EXPECT_TRUE(w.files().empty());
  EXPECT_EQ(*workspace::ReconstructFiles(w.AssembledText()), w.files());
}

TEST(Workspace, CompactionFoldsNotesKeepsConversationAndStaysFaithful) {
  std::mt19937 rng(3);
  auto session = Open("compact", 4096);
  WorkspaceOptions opt;
  opt.compact_notes_share = 0.05;  // ~200 tokens of notes
  Workspace w(session.get(), opt);
  ASSERT_TRUE(w.PutFile("src/a.cc", RandomCode(rng, 40)).has_value());
  ASSERT_TRUE(w.PutFile("src/b.cc", RandomCode(rng, 40)).has_value());
  DecodeConfig dc;
  dc.max_tokens = 4;
  ASSERT_TRUE(w.Ask("first question", dc, {}).has_value());
  bool compacted = false;
  for (int i = 0; i < 12 && !compacted; ++i) {
    ASSERT_TRUE(w.PutFile("src/a.cc", EditLines(rng, w.files().at("src/a.cc"))).has_value());
    ASSERT_TRUE(w.PutFile("src/b.cc", EditLines(rng, w.files().at("src/b.cc"))).has_value());
    auto r = w.Ask("question " + std::to_string(i), dc, {});
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    compacted = r->compacted;
  }
  ASSERT_TRUE(compacted);
  EXPECT_EQ(w.Stats().notes, 0);  // the compacting ask folded its turn's notes too
  auto rebuilt = workspace::ReconstructFiles(w.AssembledText());
  ASSERT_TRUE(rebuilt.has_value());
  EXPECT_EQ(*rebuilt, w.files());
  // The conversation survived: every question is still in the context.
  const std::string text = w.AssembledText();
  EXPECT_NE(text.find("first question"), std::string::npos);
}

// Running short of room is a reason to compact only when folding the notes gives the room back.
TEST(Workspace, CompactionIsDueWhenShortOfRoomOnlyIfFoldingNotesHelps) {
  std::mt19937 rng(9);
  auto session = Open("room", 1024);
  WorkspaceOptions opt;
  opt.compact_notes_share = 1.0;     // only the room rule
  opt.compact_room_share = 0.5;      // short of room past 512 tokens
  opt.compact_in_background = true;  // so that a due compaction is seen, not done by Prefill
  Workspace w(session.get(), opt);
  ASSERT_TRUE(w.PutFile("src/a.cc", RandomCode(rng, 12)).has_value());
  ASSERT_TRUE(w.Prefill().has_value());
  ASSERT_LT(w.Stats().context_tokens, 512);
  // A conversation that fills the context is not something compaction can fold.
  while (w.Stats().context_tokens < 560) {
    ASSERT_TRUE(w.AddTurn("user", "a long remark about the code, " + std::to_string(rng())).has_value());
    ASSERT_TRUE(w.Prefill().has_value());
  }
  ASSERT_TRUE(w.PutFile("src/a.cc", EditLines(rng, w.files().at("src/a.cc"))).has_value());
  ASSERT_TRUE(w.Prefill().has_value());
  EXPECT_GT(w.Stats().note_tokens, 0);
  EXPECT_FALSE(w.CompactionDue()) << "folding " << w.Stats().note_tokens << " note tokens cannot give the room back";

  // Notes that do take the room: due, and compacting gives it back.
  auto s2 = Open("room2", 1024);
  Workspace v(s2.get(), opt);
  ASSERT_TRUE(v.PutFile("src/a.cc", RandomCode(rng, 12)).has_value());
  ASSERT_TRUE(v.Prefill().has_value());
  for (int i = 0; i < 100 && v.Stats().context_tokens < 560; ++i) {
    ASSERT_TRUE(v.PutFile("src/a.cc", EditLines(rng, v.files().at("src/a.cc"))).has_value());
    ASSERT_TRUE(v.Prefill().has_value());
  }
  ASSERT_GE(v.Stats().context_tokens, 560);
  EXPECT_TRUE(v.CompactionDue());
  ASSERT_TRUE(v.Compact().has_value());
  EXPECT_EQ(v.Stats().note_tokens, 0);
  EXPECT_FALSE(v.CompactionDue());
}

// Compaction puts the edited files last, so the next compaction keeps the KV of the others.
TEST(Workspace, CompactionMovesEditedFilesLastSoTheNextOneReusesTheRest) {
  std::mt19937 rng(13);
  auto session = Open("order");
  Workspace w(session.get());
  ASSERT_TRUE(w.PutFile("src/hot.cc", RandomCode(rng, 6)).has_value());
  ASSERT_TRUE(w.PutFile("src/b.cc", RandomCode(rng, 40)).has_value());
  ASSERT_TRUE(w.PutFile("src/c.cc", RandomCode(rng, 40)).has_value());
  ASSERT_TRUE(w.Prefill().has_value());
  ASSERT_TRUE(w.PutFile("src/hot.cc", EditLines(rng, w.files().at("src/hot.cc"))).has_value());
  auto first = w.Compact();
  ASSERT_TRUE(first.has_value());
  const std::string text = w.AssembledText();
  EXPECT_LT(text.find("src/b.cc"), text.find("src/hot.cc"));
  EXPECT_LT(text.find("src/c.cc"), text.find("src/hot.cc"));
  EXPECT_EQ(*workspace::ReconstructFiles(text), w.files());

  ASSERT_TRUE(w.PutFile("src/hot.cc", EditLines(rng, w.files().at("src/hot.cc"))).has_value());
  auto second = w.Compact();
  ASSERT_TRUE(second.has_value());
  // Everything up to the hot file was kept: the two big files at least.
  EXPECT_GT(second->tokens_reused, 3 * second->tokens_prefilled)
      << "reused " << second->tokens_reused << ", prefilled " << second->tokens_prefilled;
  EXPECT_EQ(*workspace::ReconstructFiles(w.AssembledText()), w.files());
}

TEST(Workspace, OverflowEvenAfterCompactionIsTypedAndChangesNothing) {
  std::mt19937 rng(5);
  auto session = Open("overflow", 512);
  Workspace w(session.get());
  ASSERT_TRUE(w.PutFile("src/a.cc", RandomCode(rng, 20)).has_value());
  ASSERT_TRUE(w.Prefill().has_value());
  ASSERT_TRUE(w.PutFile("src/big.cc", RandomCode(rng, 400)).has_value());
  auto e = w.Prefill();
  ASSERT_FALSE(e.has_value());
  ASSERT_TRUE(e.error().Is(ErrorCode::kContextOverflow)) << e.error().ToString();
  EXPECT_EQ(e.error().overflow()->n_ctx, 512);
  // Still usable: removing the big file makes it fit again.
  ASSERT_TRUE(w.RemoveFile("src/big.cc").has_value());
  auto ok = w.Prefill();
  EXPECT_TRUE(ok.has_value()) << ok.error().ToString();
}

// Background compaction: a plan from a snapshot is prefilled in a second
// session while the first keeps taking changes; adopting it carries them
// over, so nothing is lost or mixed, and the result is exact and faithful.
TEST(Workspace, CompactionInASecondSessionCarriesOverWhatCameAfterThePlan) {
  std::mt19937 rng(11);
  auto first = Open("first");
  WorkspaceOptions opt;
  opt.compact_in_background = true;
  opt.compact_notes_share = 0.01;
  Workspace w(first.get(), opt);
  ASSERT_TRUE(w.PutFile("src/a.cc", RandomCode(rng, 30)).has_value());
  ASSERT_TRUE(w.PutFile("src/b.cc", RandomCode(rng, 30)).has_value());
  DecodeConfig dc;
  dc.max_tokens = 4;
  ASSERT_TRUE(w.Ask("first question", dc, {}).has_value());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(w.PutFile("src/a.cc", EditLines(rng, w.files().at("src/a.cc"))).has_value());
  ASSERT_TRUE(w.Prefill().has_value());
  ASSERT_TRUE(w.CompactionDue());  // in the background mode the prefill did not compact by itself
  const CompactionPlan plan = w.PlanCompaction();

  // Meanwhile the workspace keeps serving on its first session.
  ASSERT_TRUE(w.PutFile("src/b.cc", EditLines(rng, w.files().at("src/b.cc"))).has_value());
  ASSERT_TRUE(w.Ask("asked during compaction", dc, {}).has_value());
  ASSERT_TRUE(w.PutFile("src/c.cc", "int c;\n").has_value());

  auto second = Open("second");
  ASSERT_TRUE(second->EnsurePrefix({plan.manifest, {}}).has_value());
  auto adopted = w.AdoptCompaction(plan, second.get());
  ASSERT_TRUE(adopted.has_value()) << adopted.error().ToString();
  // Only what came after the plan was prefilled on the new session.
  EXPECT_LT(adopted->tokens_prefilled, adopted->tokens_resident / 2);
  EXPECT_EQ(w.Stats().compactions, 1);
  EXPECT_EQ(w.Stats().notes, 2);  // b's edit and c's add, made after the plan
  auto rebuilt = workspace::ReconstructFiles(w.AssembledText());
  ASSERT_TRUE(rebuilt.has_value());
  EXPECT_EQ(*rebuilt, w.files());
  EXPECT_NE(w.AssembledText().find("asked during compaction"), std::string::npos);
  // Warm == cold on the adopted session.
  auto cold = Open("cold");
  ASSERT_TRUE(cold->EnsurePrefix({w.Manifest(), {}}).has_value());
  auto wl = dynamic_cast<llama::LlamaSession&>(*second).LastLogits();
  auto cl = dynamic_cast<llama::LlamaSession&>(*cold).LastLogits();
  ASSERT_TRUE(wl.has_value() && cl.has_value());
  EXPECT_LE(MaxAbsDiff(*wl, *cl), 1e-4f);
  // A plan made before that compaction is now stale, and refused without change.
  const std::string text = w.AssembledText();
  auto stale = w.AdoptCompaction(plan, cold.get());
  ASSERT_FALSE(stale.has_value());
  EXPECT_TRUE(stale.error().Is(ErrorCode::kCancelled));
  EXPECT_EQ(w.AssembledText(), text);
}

// Loading a repository with eager prefills in between puts the files in the
// stable part (no notes); after the first ask a new file is a note; a
// cancelled ask leaves no trace.
TEST(Workspace, InitialLoadStaysStableAndCancelledAsksLeaveNoTrace) {
  std::mt19937 rng(2);
  auto session = Open("load");
  Workspace w(session.get());
  for (int i = 0; i < 3; ++i) {
    auto put = w.PutFile("src/f" + std::to_string(i) + ".cc", RandomCode(rng, 10));
    ASSERT_TRUE(put.has_value());
    EXPECT_EQ(put->change, "add");
    auto st = w.Prefill();  // as the daemon's eager prefill does after each put
    ASSERT_TRUE(st.has_value());
  }
  EXPECT_EQ(w.Stats().notes, 0);
  EXPECT_EQ(w.Stats().log_entries, 0);
  // An edit of a prefilled file is a note even before the first ask.
  ASSERT_TRUE(w.PutFile("src/f0.cc", EditLines(rng, w.files().at("src/f0.cc"))).has_value());
  EXPECT_EQ(w.Stats().notes, 1);

  DecodeConfig dc;
  dc.max_tokens = 8;
  std::stop_source stop;
  dc.cancel = stop.get_token();
  int seen = 0;
  auto cancelled = w.Ask("a question the user gives up on", dc, [&](const StreamChunk&) {
    if (++seen == 2) stop.request_stop();
    return true;
  });
  ASSERT_TRUE(cancelled.has_value());
  EXPECT_EQ(cancelled->decode.finish, FinishReason::kCancelled);
  EXPECT_EQ(w.Stats().log_entries, 1);  // just the note
  EXPECT_EQ(w.AssembledText().find("gives up on"), std::string::npos);

  dc.cancel = {};
  ASSERT_TRUE(w.Ask("a question answered", dc, {}).has_value());
  EXPECT_EQ(w.Stats().log_entries, 3);
  auto put = w.PutFile("src/late.cc", "int late;\n");
  ASSERT_TRUE(put.has_value());
  EXPECT_EQ(w.Stats().notes, 2);  // after the first ask, a new file is an add note
  auto rebuilt = workspace::ReconstructFiles(w.AssembledText());
  ASSERT_TRUE(rebuilt.has_value());
  EXPECT_EQ(*rebuilt, w.files());
}

// An ask that would overflow while the owner's compaction is under way finishes that compaction
// (PrefillHooks::finish_compaction) rather than redoing it in place; with none under way
// (kNotFound) the workspace compacts in place.
TEST(Workspace, OverflowFinishesTheCompactionUnderWayInsteadOfRedoingIt) {
  for (const bool under_way : {true, false}) {
    SCOPED_TRACE(under_way ? "compaction under way" : "none under way");
    std::mt19937 rng(21);
    auto first = Open("of-first", 1024);
    WorkspaceOptions opt;
    opt.compact_in_background = true;
    Workspace w(first.get(), opt);
    auto tokens = [&](const std::string& text) { return static_cast<int64_t>(first->Tokenize(text, false)->size()); };
    ASSERT_TRUE(w.PutFile("src/a.cc", RandomCode(rng, 20)).has_value());
    ASSERT_TRUE(w.PutFile("src/b.cc", RandomCode(rng, 20)).has_value());
    DecodeConfig dc;
    dc.max_tokens = 4;
    ASSERT_TRUE(w.Ask("first question", dc, {}).has_value());
    while (!w.CompactionDue()) {
      ASSERT_TRUE(w.PutFile("src/a.cc", EditLines(rng, w.files().at("src/a.cc"))).has_value());
      ASSERT_TRUE(w.Prefill().has_value());  // background mode: never compacts by itself short of overflow
    }
    const CompactionPlan plan = w.PlanCompaction();
    auto second = Open("of-second", 1024);
    ASSERT_TRUE(second->EnsurePrefix({plan.manifest, {}}).has_value());
    const int64_t second_before = second->Report()->tokens_resident;
    // A new file that does not fit next to the notes, but does once they are folded in.
    const int64_t room = 1024 - w.Stats().context_tokens;
    std::string big;
    while (tokens(big) < room + 20) big += RandomCode(rng, 4);
    ASSERT_TRUE(w.PutFile("src/c.cc", big).has_value());
    const int64_t resident_before = first->Report()->tokens_resident;

    int calls = 0;
    PrefillHooks hooks;
    hooks.finish_compaction = [&](const ProgressFunc&) -> Result<PrefixStatus> {
      ++calls;
      if (!under_way) return Fail(ErrorCode::kNotFound, "no compaction under way");
      return w.AdoptCompaction(plan, second.get());
    };
    auto r = w.Ask("after the big file", dc, {}, hooks);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(r->compacted);
    EXPECT_EQ(w.Stats().compactions, 1);
    auto rebuilt = workspace::ReconstructFiles(w.AssembledText());
    ASSERT_TRUE(rebuilt.has_value());
    EXPECT_EQ(*rebuilt, w.files());
    if (under_way) {
      // The compacted context lives in the second session; the first was left as it was, and only
      // what came after the plan (the big file's note) was prefilled.
      EXPECT_EQ(first->Report()->tokens_resident, resident_before);
      EXPECT_GT(second->Report()->tokens_resident, w.Stats().context_tokens);
      EXPECT_LT(r->prefix.tokens_prefilled, tokens(big) + 40);
    } else {
      EXPECT_EQ(second->Report()->tokens_resident, second_before);  // compacted in place, not there
      EXPECT_GT(first->Report()->tokens_resident, w.Stats().context_tokens);
    }
  }
}

// Compaction keeps the conversation, so once the conversation itself fills n_ctx every ask
// overflows; the error says how to go on, and a compaction keeping only the last turns does.
TEST(Workspace, CompactionKeepingTheLastTurnsGetsAFullConversationGoing) {
  std::mt19937 rng(8);
  auto session = Open("keep-turns", 512);
  Workspace w(session.get());
  const std::string file = RandomCode(rng, 8);
  ASSERT_TRUE(w.PutFile("src/a.cc", file).has_value());
  DecodeConfig dc;
  dc.max_tokens = 24;
  std::optional<Error> overflow;
  int asked = 0;
  for (; asked < 200 && !overflow; ++asked) {
    auto r = w.Ask("question " + std::to_string(asked) + ": what does it do?", dc, {});
    if (!r) overflow = r.error();
  }
  ASSERT_TRUE(overflow.has_value()) << "the conversation never filled n_ctx";
  ASSERT_TRUE(overflow->Is(ErrorCode::kContextOverflow)) << overflow->ToString();
  EXPECT_NE(overflow->message().find("keep_turns"), std::string::npos) << overflow->message();
  const int64_t turns = w.Stats().log_entries;

  // An odd count would start with an answer: its question is gone, so the answer goes too.
  auto compacted = w.Compact({}, 3);
  ASSERT_TRUE(compacted.has_value()) << compacted.error().ToString();
  EXPECT_EQ(w.Stats().log_entries, 2);
  EXPECT_LT(w.Stats().log_entries, turns);
  const std::string text = w.AssembledText();
  EXPECT_NE(text.find("question " + std::to_string(asked - 2) + ":"), std::string::npos);  // the last answered one
  EXPECT_EQ(text.find("question 0:"), std::string::npos);
  auto rebuilt = workspace::ReconstructFiles(text);
  ASSERT_TRUE(rebuilt.has_value());
  EXPECT_EQ(rebuilt->at("src/a.cc"), file);
  auto again = w.Ask("and now?", dc, {});
  EXPECT_TRUE(again.has_value()) << again.error().ToString();
}

// The answer's room (max_tokens) overflowing compacts too, when folding the notes in makes room.
TEST(Workspace, AnAnswerThatWouldOverflowCompactsFirst) {
  std::mt19937 rng(13);
  auto session = Open("decode-room", 1024);
  WorkspaceOptions opt;
  opt.compact_in_background = true;  // notes stay until a call would overflow
  Workspace w(session.get(), opt);
  ASSERT_TRUE(w.PutFile("src/a.cc", RandomCode(rng, 20)).has_value());
  DecodeConfig dc;
  dc.max_tokens = 4;
  ASSERT_TRUE(w.Ask("first", dc, {}).has_value());
  while (w.Stats().context_tokens < 700) {
    ASSERT_TRUE(w.PutFile("src/a.cc", EditLines(rng, w.files().at("src/a.cc"))).has_value());
    ASSERT_TRUE(w.Prefill().has_value());
  }
  ASSERT_EQ(w.Stats().compactions, 0);
  // The question fits; the question plus max_tokens does not.
  dc.max_tokens = static_cast<int32_t>(1024 - w.Stats().context_tokens - 2);
  auto r = w.Ask("and the answer needs room", dc, {});
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_TRUE(r->compacted);
  EXPECT_EQ(w.Stats().compactions, 1);
  EXPECT_EQ(w.Stats().notes, 0);
}

// Runs `change` on another thread and waits for it up to 60 s: a change never waits for a prefill,
// so from inside one (its progress callback) it must finish. Joined by the destructor.
class OtherThread {
 public:
  template <class F>
  bool Run(F change) {
    auto done = std::make_shared<std::promise<void>>();
    auto f = done->get_future();
    thread_ = std::thread([change, done]() mutable {
      change();
      done->set_value();
    });
    return f.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  }
  ~OtherThread() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::thread thread_;
};

TEST(Workspace, ChangesDuringAPrefillNeverWaitAndAppendsLetItFinish) {
  std::mt19937 rng(21);
  auto session = Open("changes-during-prefill");
  Workspace w(session.get());
  for (const char* p : {"src/a.cc", "src/b.cc", "src/c.cc"})
    ASSERT_TRUE(w.PutFile(p, RandomCode(rng, 150)).has_value());
  ASSERT_TRUE(w.Prefill().has_value());
  const std::string edited = EditLines(rng, w.files().at("src/a.cc"));
  ASSERT_TRUE(w.PutFile("src/b.cc", EditLines(rng, w.files().at("src/b.cc"))).has_value());
  ASSERT_TRUE(w.PutFile("src/d.cc", RandomCode(rng, 150)).has_value());  // a note of several batches

  OtherThread other;
  bool finished = false, asked = false;
  PrefillHooks hooks;
  hooks.yield_to_changes = true;
  hooks.progress = [&](const Progress&) {
    if (asked) return;
    asked = true;
    finished = other.Run([&] {
      EXPECT_TRUE(w.PutFile("src/a.cc", edited).has_value());
      EXPECT_TRUE(w.AddTurn("user", "a turn while it prefills").has_value());
      EXPECT_FALSE(w.AssembledText().empty());
      EXPECT_EQ(w.Stats().files, 4);
    });
  };
  auto st = w.Prefill(hooks);
  EXPECT_TRUE(finished) << "a change waited for the prefill";
  // Appends leave what it prefills valid: it finishes, and the next prefill adds only them.
  ASSERT_TRUE(st.has_value()) << st.error().ToString();
  EXPECT_TRUE(w.Stale());
  auto next = w.Prefill();
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->tokens_reused, st->tokens_resident);
  EXPECT_FALSE(w.Stale());
  EXPECT_EQ(w.files().at("src/a.cc"), edited);
  EXPECT_EQ(*workspace::ReconstructFiles(w.AssembledText()), w.files());
}

TEST(Workspace, AChangeInPlaceStopsAYieldingPrefillWhichKeepsItsKv) {
  std::mt19937 rng(22);
  auto session = Open("in-place-yield");
  WorkspaceOptions opt;
  opt.mode = AssemblyMode::kInPlace;
  Workspace w(session.get(), opt);
  for (const char* p : {"src/a.cc", "src/b.cc", "src/c.cc"})
    ASSERT_TRUE(w.PutFile(p, RandomCode(rng, 150)).has_value());
  const std::string edited = EditLines(rng, w.files().at("src/c.cc"));

  OtherThread other;
  bool finished = false;
  int64_t done_when_changed = -1;
  PrefillHooks hooks;
  hooks.yield_to_changes = true;
  hooks.progress = [&](const Progress& p) {
    if (done_when_changed >= 0) return;
    done_when_changed = p.done;
    finished = other.Run([&] { EXPECT_TRUE(w.PutFile("src/c.cc", edited).has_value()); });
  };
  auto st = w.Prefill(hooks);
  EXPECT_TRUE(finished) << "a change waited for the prefill";
  ASSERT_FALSE(st.has_value()) << "an obsolete eager prefill ran to its end";
  EXPECT_TRUE(st.error().Is(ErrorCode::kCancelled)) << st.error().ToString();
  EXPECT_TRUE(w.Stale());
  // The next one has the newest content and keeps what the stopped one computed before the edit.
  auto next = w.Prefill();
  ASSERT_TRUE(next.has_value()) << next.error().ToString();
  EXPECT_GE(next->tokens_reused, done_when_changed);
  EXPECT_EQ(workspace::ReconstructFiles(w.AssembledText())->at("src/c.cc"), edited);

  // Exact: the same as a cold prefill of the newest content.
  auto cold = Open("in-place-yield-cold");
  Workspace c(cold.get(), opt);
  for (const auto& [path, content] : w.files()) ASSERT_TRUE(c.PutFile(path, content).has_value());
  ASSERT_TRUE(c.Prefill().has_value());
  EXPECT_EQ(c.AssembledText(), w.AssembledText());
  DecodeConfig dc;
  dc.max_tokens = 8;
  auto a = w.Ask("next?", dc, {});
  auto b = c.Ask("next?", dc, {});
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(a->decode.text, b->decode.text);
}

TEST(Workspace, TurnsOfAnAskComeBeforeChangesMadeWhileItAnswered) {
  std::mt19937 rng(23);
  auto session = Open("ask-then-change");
  Workspace w(session.get());
  ASSERT_TRUE(w.PutFile("src/a.cc", RandomCode(rng, 40)).has_value());
  ASSERT_TRUE(w.Prefill().has_value());
  const std::string edited = EditLines(rng, w.files().at("src/a.cc"));
  OtherThread other;
  bool finished = false, changed = false;
  DecodeConfig dc;
  dc.max_tokens = 6;
  auto r = w.Ask("what is it?", dc, [&](const StreamChunk&) {
    if (!changed) {
      changed = true;
      finished = other.Run([&] { EXPECT_TRUE(w.PutFile("src/a.cc", edited).has_value()); });
    }
    return true;
  });
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  ASSERT_TRUE(changed);
  EXPECT_TRUE(finished) << "a change waited for the ask";
  // The model answered without the edit: the note follows the answer, and the KV stays valid.
  const std::string text = w.AssembledText();
  ASSERT_NE(text.find("what is it?"), std::string::npos);
  EXPECT_LT(text.find("what is it?"), text.rfind("src/a.cc"));
  EXPECT_TRUE(w.Stale());
  auto next = w.Prefill();
  ASSERT_TRUE(next.has_value());
  EXPECT_GT(next->tokens_reused, r->prefix.tokens_resident);  // the question at least
  EXPECT_EQ(*workspace::ReconstructFiles(text), w.files());
}

TEST(Workspace, AConversationSentWholeExtendsOrReplacesTurnsAndKeepsNotes) {
  std::mt19937 rng(24);
  auto session = Open("conversation");
  Workspace w(session.get());
  ASSERT_TRUE(w.PutFile("src/a.cc", RandomCode(rng, 40)).has_value());
  DecodeConfig dc;
  dc.max_tokens = 4;
  using Turns = std::vector<std::pair<std::string, std::string>>;
  auto c = w.SetConversation(Turns{{"user", "hello"}, {"assistant", "hi"}});
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->appended, 2);
  auto first = w.Ask("first question", dc, {});
  ASSERT_TRUE(first.has_value());
  const std::string answer = first->decode.text;
  ASSERT_TRUE(w.PutFile("src/a.cc", EditLines(rng, w.files().at("src/a.cc"))).has_value());  // a note
  ASSERT_TRUE(w.Prefill().has_value());

  // The client sends it all back, plus a turn: kept, appended; only the new turn is prefilled.
  Turns turns{{"user", "hello"}, {"assistant", "hi"}, {"user", "first question"}, {"assistant", answer}};
  c = w.SetConversation(turns);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->kept, 4);
  EXPECT_EQ(c->replaced, 0);
  EXPECT_EQ(c->appended, 0);
  EXPECT_FALSE(w.Stale());

  // A rewritten history: the turns from the first that differs are replaced; the note stays, and
  // the file's KV is reused.
  const int64_t resident = w.Stats().context_tokens;
  c = w.SetConversation(Turns{{"user", "hello"}, {"assistant", "a summary of it all"}});
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->kept, 1);
  EXPECT_EQ(c->replaced, 3);
  EXPECT_EQ(c->appended, 1);
  const std::string text = w.AssembledText();
  EXPECT_EQ(text.find("first question"), std::string::npos);
  EXPECT_NE(text.find("a summary of it all"), std::string::npos);
  EXPECT_EQ(w.Stats().notes, 1);
  EXPECT_EQ(*workspace::ReconstructFiles(text), w.files());
  auto st = w.Prefill();
  ASSERT_TRUE(st.has_value());
  EXPECT_GT(st->tokens_reused, 0);
  EXPECT_LT(st->tokens_prefilled, resident / 2);

  EXPECT_FALSE(w.SetConversation(Turns{{"system", "no"}}).has_value());
}

// A tool that re-sends whole files inside its messages: with edit_aware, an edited early message
// keeps its resident version and the change goes after the conversation as a note, so the turn
// prefills the note, not everything after the message; the KV is a cold prefill of that view.
TEST(Workspace, ReSentMessagesEditedAreToldAsNotesWhenEditAware) {
  std::mt19937 rng(25);
  auto session = Open("re-sent");
  Workspace w(session.get());
  const std::string code = RandomCode(rng, 80);
  using Turns = std::vector<std::pair<std::string, std::string>>;
  Turns turns{{"user", "Here is src/a.cc:\n" + code + "What does it do?"}};
  DecodeConfig dc;
  dc.max_tokens = 4;
  ASSERT_TRUE(w.SetConversation(turns, true).has_value());
  auto a1 = w.Ask("And the first line?", dc, {});
  ASSERT_TRUE(a1.has_value());
  turns.push_back({"user", "And the first line?"});
  turns.push_back({"assistant", a1->decode.text});
  const int64_t resident = w.Stats().context_tokens;

  // The file edited: the tool sends its first message again with the new content, and a question.
  turns[0].second = "Here is src/a.cc:\n" + EditLines(rng, code) + "What does it do?";
  auto c = w.SetConversation(turns, true);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->kept, 3);
  EXPECT_EQ(c->edited, 1);
  EXPECT_EQ(c->replaced, 0);
  const std::string text = w.AssembledText();
  EXPECT_NE(text.find("<message-change index=\"1\" kind="), std::string::npos) << text;
  auto st = w.Prefill();
  ASSERT_TRUE(st.has_value());
  EXPECT_GE(st->tokens_reused, resident - 2);  // all but the answer's tail
  EXPECT_LT(st->tokens_prefilled, resident / 4) << "the note, not the message and everything after it";

  // Sent once more unchanged: nothing to do. The edited version is what it compares with.
  c = w.SetConversation(turns, true);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->kept, 3);
  EXPECT_EQ(c->edited, 0);
  EXPECT_FALSE(w.Stale());

  // Exact: a cold session prefilled with the same view has the same logits.
  auto cold = Open("re-sent-cold");
  ASSERT_TRUE(cold->EnsurePrefix({w.Manifest(), {}}).has_value());
  auto wl = dynamic_cast<llama::LlamaSession&>(*session).LastLogits();
  auto cl = dynamic_cast<llama::LlamaSession&>(*cold).LastLogits();
  ASSERT_TRUE(wl.has_value() && cl.has_value());
  EXPECT_LT(MaxAbsDiff(*wl, *cl), 1e-4f);

  // Compaction folds the note into the message: the model then reads the message as last sent.
  ASSERT_TRUE(w.Compact().has_value());
  const std::string compact = w.AssembledText();
  EXPECT_EQ(compact.find("<message-change"), std::string::npos);
  EXPECT_NE(compact.find(workspace::EscapeFreeText(turns[0].second)), std::string::npos);

  // Without edit_aware the same edit replaces the conversation from that message.
  turns[0].second += "\nplease hurry";
  c = w.SetConversation(turns, false);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->kept, 0);
  EXPECT_EQ(c->replaced, 3);
  EXPECT_EQ(c->appended, 3);
}

// A message edited (edit-aware) while a compaction was being built: after the adoption the entry
// still knows what was sent, so the same conversation sent again finds nothing new to tell.
TEST(Workspace, AMessageEditedDuringACompactionIsToldOnce) {
  std::mt19937 rng(26);
  auto session = Open("edit-during-compaction");
  Workspace w(session.get());
  const std::string code = RandomCode(rng, 60);
  using Turns = std::vector<std::pair<std::string, std::string>>;
  Turns turns{{"user", "Here is a.cc:\n" + code}, {"assistant", "I see it."}, {"user", "Fine."}};
  ASSERT_TRUE(w.SetConversation(turns, true).has_value());
  ASSERT_TRUE(w.PutFile("src/b.cc", RandomCode(rng, 20)).has_value());
  ASSERT_TRUE(w.Prefill().has_value());
  ASSERT_TRUE(w.PutFile("src/b.cc", EditLines(rng, w.files().at("src/b.cc"))).has_value());  // a note to fold
  ASSERT_TRUE(w.Prefill().has_value());
  const CompactionPlan plan = w.PlanCompaction();

  turns[0].second = "Here is a.cc:\n" + EditLines(rng, code);
  auto c = w.SetConversation(turns, true);
  ASSERT_TRUE(c.has_value());
  ASSERT_EQ(c->edited, 1);
  auto fresh = Open("edit-during-compaction-fresh");
  ASSERT_TRUE(fresh->EnsurePrefix({plan.manifest, {}}).has_value());
  auto adopted = w.AdoptCompaction(plan, fresh.get());
  ASSERT_TRUE(adopted.has_value()) << adopted.error().ToString();

  c = w.SetConversation(turns, true);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->edited, 0) << "the edit was told again";
  EXPECT_EQ(c->kept, 3);
  const std::string text = w.AssembledText();
  EXPECT_EQ(text.find("<message-change"), text.rfind("<message-change")) << "one note for one edit";
  EXPECT_NE(text.find("<message-change"), std::string::npos);
}

}  // namespace
}  // namespace modeld

namespace modeld {
namespace {

// A workspace exported with its session's snapshot and restored over a session restored from it
// is whole: the same files, log and stats, nothing left to prefill, and its next answer is the
// live workspace's.
TEST(WorkspaceSnapshot, RestoredWorkspaceIsWholeAndAnswersAsTheLiveOne) {
  std::mt19937 rng(31);
  auto live_session = Open("ws-snap");
  Workspace live(live_session.get());
  ASSERT_TRUE(live.SetSystem("You review code.").has_value());
  for (int f = 0; f < 3; ++f) ASSERT_TRUE(live.PutFile("src/f" + std::to_string(f) + ".cc", RandomCode(rng, 20)));
  DecodeConfig dc;
  dc.max_tokens = 4;
  ASSERT_TRUE(live.Ask("what is here?", dc, {}).has_value());
  ASSERT_TRUE(live.PutFile("src/f1.cc", EditLines(rng, live.files().at("src/f1.cc"))).has_value());  // a note
  ASSERT_TRUE(live.Prefill().has_value());

  auto snap = live_session->Snapshot();
  ASSERT_TRUE(snap.has_value()) << snap.error().ToString();
  const WorkspaceState state = live.Export();
  EXPECT_EQ(state.log.size(), 3u);  // question, answer, note

  OpenSessionRequest req;
  req.model_path = TinyModel();
  req.workspace_id = "ws-snap";
  req.config.n_ctx = 8192;
  req.config.threads = 2;
  auto session = Service().RestoreSession(req, *snap);
  ASSERT_TRUE(session.has_value()) << session.error().ToString();
  auto restored = Workspace::Restore(session->get(), {}, state);
  ASSERT_TRUE(restored.has_value()) << restored.error().ToString();
  Workspace& ws = **restored;
  EXPECT_EQ(ws.files(), live.files());
  EXPECT_EQ(ws.AssembledText(), live.AssembledText());
  EXPECT_EQ(ws.Stats().log_entries, live.Stats().log_entries);
  EXPECT_EQ(ws.Stats().context_tokens, live.Stats().context_tokens);
  EXPECT_FALSE(ws.Stale());
  auto p = ws.Prefill();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->tokens_prefilled, 0);

  dc.max_tokens = 12;
  auto a = live.Ask("and now?", dc, {});
  auto b = ws.Ask("and now?", dc, {});
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(b->decode.text, a->decode.text);
  EXPECT_EQ(b->prefix.tokens_prefilled, a->prefix.tokens_prefilled);
  EXPECT_EQ(b->suffix.tokens_prefilled, a->suffix.tokens_prefilled);

  // A state that breaks the limits in force is refused, not half restored.
  WorkspaceOptions small;
  small.max_file_bytes = 8;
  auto refused = Workspace::Restore(session->get(), small, state);
  ASSERT_FALSE(refused.has_value());
  EXPECT_TRUE(refused.error().Is(ErrorCode::kInvalidArgument));
  WorkspaceState bad = state;
  bad.prefilled_log_size = 99;
  EXPECT_FALSE(Workspace::Restore(session->get(), {}, bad).has_value());
}

}  // namespace
}  // namespace modeld
