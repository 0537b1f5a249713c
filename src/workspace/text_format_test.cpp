#include "workspace/text_format.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace modeld::workspace {
namespace {

// Lines that look like the format's own markup: content must never be read as it.
const std::vector<std::string> kTrickyLines = {
    "</file>",
    "<file path=\"x\" lines=\"3\">",
    "@@ -1 +1 @@",
    "</change>",
    "<change path=\"x\" kind=\"remove\"/>",
    "\\ No newline at end of file",
    "+added?",
    "-removed?",
    " ",
    "",
    "\r",
    "caf\xC3\xA9 \xE2\x82\xAC",
};

void ExpectRoundTrip(const std::string& a, const std::string& b, int context) {
  const std::vector<Hunk> hunks = DiffLines(a, b, context);
  auto applied = ApplyHunks(a, hunks);
  ASSERT_TRUE(applied.has_value()) << applied.error().ToString();
  EXPECT_EQ(*applied, b) << "old=" << testing::PrintToString(a) << " new=" << testing::PrintToString(b);
  // The rendered note parses back to the same hunks and the same result.
  ChangeNote note;
  note.path = "f";
  note.hunks = hunks;
  auto files = ReconstructFiles(RenderFile("f", a) + RenderNote(note));
  ASSERT_TRUE(files.has_value()) << files.error().ToString();
  EXPECT_EQ(files->at("f"), b);
}

TEST(DiffLines, HandCases) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", ""},
      {"", "a\n"},
      {"a\n", ""},
      {"", "a"},
      {"a", ""},
      {"a", "a\n"},  // only the final newline changes
      {"a\n", "a"},
      {"a\nb", "a\nb\n"},
      {"a\nb\n", "a\nc"},
      {"\n", ""},
      {"", "\n"},
      {"\n", "\n\n"},
      {"a\r\nb\r\n", "a\r\nB\r\n"},  // CRLF kept in lines
      {"a\r\nb\r\n", "a\nb\n"},
      {"x\ry\n", "x\ry"},
      {"caf\xC3\xA9\n\xE2\x82\xAC\n", "caf\xC3\xA9\n\xE2\x82\xAC!\n"},
      {"1\n2\n3\n4\n5\n6\n7\n8\n9\n", "1\n2\nthree\n4\n5\n6\n7\neight\n9\n"},
      {"a\nb\nc", "x\na\nb\nc"},
      {"a\nb\nc", "a\nb\nc\nd"},
  };
  for (const auto& [a, b] : cases) {
    for (int ctx : {0, 1, 3}) ExpectRoundTrip(a, b, ctx);
  }
}

TEST(DiffLines, IdenticalTextsGiveNoHunks) {
  EXPECT_TRUE(DiffLines("", "", 1).empty());
  EXPECT_TRUE(DiffLines("a\nb", "a\nb", 1).empty());
  EXPECT_TRUE(DiffLines("a\nb\n", "a\nb\n", 3).empty());
}

TEST(DiffLines, UsesUnifiedDiffShape) {
  const std::vector<Hunk> hunks = DiffLines("a\nb\nc\nd\n", "a\nB\nc\nd\n", 1);
  ASSERT_EQ(hunks.size(), 1u);
  EXPECT_EQ(hunks[0].old_start, 1);
  EXPECT_EQ(hunks[0].old_count, 3);
  EXPECT_EQ(hunks[0].new_start, 1);
  EXPECT_EQ(hunks[0].new_count, 3);
  EXPECT_EQ(hunks[0].lines, (std::vector<std::string>{" a", "-b", "+B", " c"}));

  // Missing final newline on one side: the last line changes, with the marker.
  const std::vector<Hunk> nl = DiffLines("x\ny", "x\ny\n", 0);
  ASSERT_EQ(nl.size(), 1u);
  EXPECT_EQ(nl[0].lines, (std::vector<std::string>{"-y", std::string(kNoNewlineMarker), "+y"}));

  // Pure insertion into an empty file: starts are 0 when a count is 0.
  const std::vector<Hunk> ins = DiffLines("", "p\n", 1);
  ASSERT_EQ(ins.size(), 1u);
  EXPECT_EQ(ins[0].old_start, 0);
  EXPECT_EQ(ins[0].old_count, 0);
  EXPECT_EQ(ins[0].new_start, 1);
  EXPECT_EQ(ins[0].new_count, 1);
}

TEST(DiffLines, IsMinimalAndMergesCloseHunks) {
  std::string a, b;
  for (int i = 0; i < 20; ++i) a += "l" + std::to_string(i) + "\n";
  b = a;
  b.replace(b.find("l3\n"), 3, "L3\n");
  b.replace(b.find("l6\n"), 3, "L6\n");
  b.replace(b.find("l15\n"), 4, "L15\n");
  const std::vector<Hunk> hunks = DiffLines(a, b, 1);
  // l3/l6 are 2 unchanged lines apart (<= 2*context): one hunk; l15 is far.
  ASSERT_EQ(hunks.size(), 2u);
  int changed = 0;
  for (const Hunk& h : hunks) {
    for (const std::string& l : h.lines) changed += (l[0] == '+' || l[0] == '-');
  }
  EXPECT_EQ(changed, 6);
  EXPECT_EQ(DiffLines(a, b, 0).size(), 3u);
}

std::string RandomLine(std::mt19937& rng) {
  std::uniform_int_distribution<int> pick(0, 9);
  const int k = pick(rng);
  if (k < 3) return kTrickyLines[rng() % kTrickyLines.size()];
  if (k < 8) return "line" + std::to_string(rng() % 8);  // few distinct lines: many matches
  std::string s;
  const int len = static_cast<int>(rng() % 6);
  for (int i = 0; i < len; ++i) s += "ab\r\xC3\xA9 <>"[rng() % 8];
  return s;
}

std::string RandomText(std::mt19937& rng, int max_lines) {
  std::string t;
  const int n = static_cast<int>(rng() % (max_lines + 1));
  for (int i = 0; i < n; ++i) t += RandomLine(rng) + "\n";
  if (!t.empty() && rng() % 3 == 0) t.pop_back();  // no final newline
  return t;
}

// One random edit: line insert/delete/replace, character insert/delete
// (which may add or remove a '\n'), or toggling the final newline.
std::string RandomEdit(std::mt19937& rng, std::string t) {
  std::vector<size_t> starts = {0};
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '\n' && i + 1 < t.size()) starts.push_back(i + 1);
  }
  const size_t at = starts[rng() % starts.size()];
  switch (rng() % 7) {
    case 0:
      t.insert(at, RandomLine(rng) + "\n");
      break;
    case 1: {  // delete a line
      const size_t nl = t.find('\n', at);
      t.erase(at, nl == std::string::npos ? std::string::npos : nl - at + 1);
      break;
    }
    case 2: {  // replace a line's text
      const size_t nl = t.find('\n', at);
      t.replace(at, nl == std::string::npos ? std::string::npos : nl - at, RandomLine(rng));
      break;
    }
    case 3:
      t.insert(t.empty() ? 0 : rng() % (t.size() + 1), 1, "x\n\r\xC3"[rng() % 4]);
      break;
    case 4:
      if (!t.empty()) t.erase(rng() % t.size(), 1);
      break;
    case 5:
      if (!t.empty() && t.back() == '\n') {
        t.pop_back();
      } else {
        t += '\n';
      }
      break;
    default:
      t += RandomLine(rng);
      break;
  }
  return t;
}

TEST(DiffLines, RandomEditSequencesRoundTrip) {
  std::mt19937 rng(12345);
  for (int seq = 0; seq < 1500; ++seq) {
    std::string cur = RandomText(rng, 30);
    for (int step = 0; step < 8; ++step) {
      std::string next = cur;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) next = RandomEdit(rng, next);
      const int ctx = static_cast<int>(rng() % 4);
      const std::vector<Hunk> hunks = DiffLines(cur, next, ctx);
      auto applied = ApplyHunks(cur, hunks);
      ASSERT_TRUE(applied.has_value()) << applied.error().ToString();
      ASSERT_EQ(*applied, next) << "seq " << seq << " step " << step;
      if (cur == next) {
        EXPECT_TRUE(hunks.empty());
      }
      cur = next;
    }
  }
}

TEST(DiffLines, UnrelatedTextsRoundTrip) {
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    const std::string a = RandomText(rng, 40), b = RandomText(rng, 40);
    auto applied = ApplyHunks(a, DiffLines(a, b, static_cast<int>(rng() % 3)));
    ASSERT_TRUE(applied.has_value()) << applied.error().ToString();
    ASSERT_EQ(*applied, b);
  }
}

// Added + removed lines must equal N + M - 2 * LCS (Myers finds a shortest edit script).
TEST(DiffLines, IsMinimalAgainstLcs) {
  std::mt19937 rng(31337);
  for (int iter = 0; iter < 400; ++iter) {
    const std::string a = RandomText(rng, 15);
    std::string b = a;
    for (int e = 0; e < 1 + static_cast<int>(rng() % 6); ++e) b = RandomEdit(rng, b);
    auto split = [](const std::string& t) {
      std::vector<std::string> out;
      size_t pos = 0;
      while (pos < t.size()) {
        const size_t nl = t.find('\n', pos);
        const size_t end = nl == std::string::npos ? t.size() : nl + 1;
        out.push_back(t.substr(pos, end - pos));
        pos = end;
      }
      return out;
    };
    const std::vector<std::string> x = split(a), y = split(b);
    std::vector<std::vector<int>> lcs(x.size() + 1, std::vector<int>(y.size() + 1, 0));
    for (size_t i = x.size(); i-- > 0;) {
      for (size_t j = y.size(); j-- > 0;) {
        lcs[i][j] = x[i] == y[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
      }
    }
    int changed = 0;
    for (const Hunk& h : DiffLines(a, b, 2)) {
      for (const std::string& l : h.lines) changed += (l[0] == '+' || l[0] == '-');
    }
    ASSERT_EQ(changed, static_cast<int>(x.size() + y.size()) - 2 * lcs[0][0])
        << testing::PrintToString(a) << " -> " << testing::PrintToString(b);
  }
}

// The bounded diff inside MakeChange must decide exactly as the stated rule on the full diff.
TEST(MakeChange, FollowsTheRuleExactly) {
  std::mt19937 rng(555);
  for (int iter = 0; iter < 3000; ++iter) {
    const std::string a = RandomText(rng, 24);
    std::string b = a;
    for (int e = 0; e < 1 + static_cast<int>(rng() % 8); ++e) b = RandomEdit(rng, b);
    const int ctx = static_cast<int>(rng() % 3);
    ChangeNote edit;
    edit.path = "p";
    edit.hunks = DiffLines(a, b, ctx);
    int64_t changed = 0;
    for (const Hunk& h : edit.hunks) {
      for (const std::string& l : h.lines) changed += (l[0] == '+' || l[0] == '-');
    }
    ChangeNote full;
    full.kind = NoteKind::kFull;
    full.path = "p";
    full.content = b;
    const bool want_full =
        changed > std::max<int64_t>(1, CountLines(b) / 3) || RenderNote(edit).size() > RenderNote(full).size();
    const ChangeNote got = MakeChange("p", a, b, ctx);
    ASSERT_EQ(got.kind, want_full ? NoteKind::kFull : NoteKind::kEdit) << iter;
    ASSERT_EQ(got, want_full ? full : edit);
  }
}

TEST(MakeChange, LargeRewriteStopsEarly) {
  std::string a, b;
  for (int i = 0; i < 30000; ++i) {
    a += "a" + std::to_string(i) + "\n";
    b += "b" + std::to_string(i) + "\n";
  }
  const ChangeNote note = MakeChange("big", a, b);  // the bounded diff gives up after ~10k changes
  EXPECT_EQ(note.kind, NoteKind::kFull);
}

TEST(DiffLines, LargeFileFewChangesIsFast) {
  std::string a;
  for (int i = 0; i < 50000; ++i) a += "row " + std::to_string(i) + "\n";
  std::string b = a;
  b.replace(b.find("row 100\n"), 8, "ROW 100\n");
  b += "tail\n";
  const std::vector<Hunk> hunks = DiffLines(a, b, 1);
  EXPECT_EQ(hunks.size(), 2u);
  EXPECT_EQ(*ApplyHunks(a, hunks), b);
}

TEST(ApplyHunks, RejectsHunksThatDoNotMatch) {
  const std::string a = "a\nb\nc\n";
  std::vector<Hunk> hunks = DiffLines(a, "a\nB\nc\n", 1);
  ASSERT_EQ(hunks.size(), 1u);
  EXPECT_TRUE(ApplyHunks(a, hunks).has_value());

  auto expect_invalid = [&](std::string_view text, const std::vector<Hunk>& hs) {
    auto r = ApplyHunks(text, hs);
    ASSERT_FALSE(r.has_value());
    EXPECT_TRUE(r.error().Is(ErrorCode::kInvalidArgument));
  };
  expect_invalid("a\nx\nc\n", hunks);  // the removed line differs
  expect_invalid("a\nb\nc", hunks);    // context "c" is shown with a '\n' the file lacks
  Hunk bad = hunks[0];
  bad.old_count = 4;
  expect_invalid(a, {bad});
  bad = hunks[0];
  bad.old_start = 2;
  expect_invalid(a, {bad});
  bad = hunks[0];
  bad.new_start = 5;
  expect_invalid(a, {bad});
  bad = hunks[0];
  bad.lines.push_back("?");
  expect_invalid(a, {bad});
  bad = hunks[0];
  bad.lines.insert(bad.lines.begin(), std::string(kNoNewlineMarker));
  expect_invalid(a, {bad});
  bad = hunks[0];
  bad.lines[2] = "+B";
  bad.lines.insert(bad.lines.begin() + 3, std::string(kNoNewlineMarker));  // no newline mid-file
  expect_invalid(a, {bad});
  expect_invalid(a, {hunks[0], hunks[0]});  // overlapping
  bad = hunks[0];
  bad.old_start = -1;
  expect_invalid(a, {bad});
  expect_invalid("", hunks);
}

TEST(MakeChange, OneLineChangeInALargeFileIsAnEdit) {
  std::string a;
  for (int i = 0; i < 300; ++i) a += "    int value_" + std::to_string(i) + " = compute(" + std::to_string(i) + ");\n";
  std::string b = a;
  const std::string old_line = "    int value_150 = compute(150);\n";
  const std::string new_line = "    int value_150 = compute(150) + 1;\n";
  b.replace(b.find(old_line), old_line.size(), new_line);
  const ChangeNote note = MakeChange("src/big.cc", a, b);
  ASSERT_EQ(note.kind, NoteKind::kEdit);
  const std::string rendered = RenderNote(note);
  EXPECT_LT(rendered.size(), 200 + old_line.size() + new_line.size()) << rendered;
  EXPECT_EQ(*ReconstructFiles(RenderFile("src/big.cc", a) + rendered),
            (std::map<std::string, std::string>{{"src/big.cc", b}}));
}

TEST(MakeChange, RewriteIsFull) {
  std::string a, b;
  for (int i = 0; i < 30; ++i) {
    a += "old " + std::to_string(i) + "\n";
    b += "new " + std::to_string(i) + "\n";
  }
  const ChangeNote note = MakeChange("x", a, b);
  EXPECT_EQ(note.kind, NoteKind::kFull);
  EXPECT_EQ(note.content, b);
  // A third of the lines changed is still an edit; more is a rewrite.
  std::string c = a, d = a;
  for (int i = 0; i < 5; ++i) c.replace(c.find("old " + std::to_string(i) + "\n"), 4, "NEW ");  // 10 changed lines
  for (int i = 0; i < 6; ++i) d.replace(d.find("old " + std::to_string(i) + "\n"), 4, "NEW ");  // 12 changed lines
  EXPECT_EQ(MakeChange("x", a, c).kind, NoteKind::kEdit);
  EXPECT_EQ(MakeChange("x", a, d).kind, NoteKind::kFull);
  // Tiny files: one changed line pair already exceeds the minimum of 1.
  EXPECT_EQ(MakeChange("x", "a\n", "b\n").kind, NoteKind::kFull);
  EXPECT_EQ(MakeChange("x", "a\n", "a\n").kind, NoteKind::kEdit);
  EXPECT_TRUE(MakeChange("x", "a\n", "a\n").hunks.empty());
}

TEST(Render, FileBlockAndNotes) {
  EXPECT_EQ(RenderFile("src/a.cc", "int a;\nint b;\n"),
            "<file path=\"src/a.cc\" lines=\"2\">\nint a;\nint b;\n</file>\n");
  EXPECT_EQ(RenderFile("e", ""), "<file path=\"e\" lines=\"0\">\n</file>\n");
  EXPECT_EQ(RenderFile("n", "\n"), "<file path=\"n\" lines=\"1\">\n\n</file>\n");
  EXPECT_EQ(RenderFile("t", "abc"), "<file path=\"t\" lines=\"1\">\nabc\n\\ No newline at end of file\n</file>\n");
  ChangeNote edit;
  edit.path = "src/a.cc";
  edit.hunks = DiffLines("int a;\nint b;\n", "int a;\nint c;\n", 1);
  EXPECT_EQ(RenderNote(edit),
            "<change path=\"src/a.cc\" kind=\"edit\">\n@@ -1,2 +1,2 @@\n int a;\n-int b;\n+int c;\n</change>\n");
  ChangeNote rm;
  rm.kind = NoteKind::kRemove;
  rm.path = "a";
  EXPECT_EQ(RenderNote(rm), "<change path=\"a\" kind=\"remove\"/>\n");
  ChangeNote mv;
  mv.kind = NoteKind::kRename;
  mv.path = "a";
  mv.new_path = "b/c";
  EXPECT_EQ(RenderNote(mv), "<change path=\"a\" kind=\"rename\" to=\"b/c\"/>\n");
  ChangeNote add;
  add.kind = NoteKind::kAdd;
  add.path = "n";
  add.content = "x";
  EXPECT_EQ(RenderNote(add),
            "<change path=\"n\" kind=\"add\" lines=\"1\">\nx\n\\ No newline at end of file\n</change>\n");
}

TEST(ValidatePath, AcceptsAndRejects) {
  for (std::string_view ok : {"src/a.cc", "a", "dir/sub/file.txt", ".hidden/x", "a..b", "sp ace/\xC3\xA9.txt"}) {
    EXPECT_TRUE(ValidatePath(ok).has_value()) << ok;
  }
  const std::vector<std::string> bad = {
      "",     "/abs", "../x", "a/../b", "a/./b", "a\\b", "a\"b", "a\nb",
      "a<b",  "a>b",  ".",    "..",     "a/",    "a//b", "a\tb", std::string(2000, 'x'),
      "a\x7f"};
  for (const std::string& p : bad) {
    auto s = ValidatePath(p);
    ASSERT_FALSE(s.has_value()) << testing::PrintToString(p);
    EXPECT_TRUE(s.error().Is(ErrorCode::kInvalidArgument));
  }
  EXPECT_TRUE(ValidatePath(std::string(1024, 'x')).has_value());
  EXPECT_FALSE(ValidatePath(std::string(1025, 'x')).has_value());
}

TEST(EscapeFreeText, OnlyBlockOpeningLinesChangeAndItIsReversible) {
  const std::string text =
      "hi\n<file path=\"a\" lines=\"1\">\n x <file \n<change path=\"a\" kind=\"remove\"/>\n\\<file already\n"
      "</file>\n<filex\n<file ";
  const std::string esc = EscapeFreeText(text);
  EXPECT_EQ(
      esc,
      "hi\n\\<file path=\"a\" lines=\"1\">\n x <file \n\\<change path=\"a\" kind=\"remove\"/>\n\\\\<file already\n"
      "</file>\n<filex\n\\<file ");
  EXPECT_EQ(UnescapeFreeText(esc), text);
  EXPECT_EQ(EscapeFreeText("plain\ntext"), "plain\ntext");
  auto files = ReconstructFiles(esc);
  ASSERT_TRUE(files.has_value()) << files.error().ToString();
  EXPECT_TRUE(files->empty());
  // Unescaped, the same text is a (malformed) block: a typed error.
  EXPECT_FALSE(ReconstructFiles(text).has_value());
}

TEST(ReconstructFiles, ContentThatLooksLikeMarkup) {
  std::string tricky;
  for (const std::string& l : kTrickyLines) tricky += l + "\n";
  const std::map<std::string, std::string> want = {
      {"tricky", tricky},
      {"just_newline", "\n"},
      {"no_newline", "no newline at all"},
      {"empty", ""},
      {"marker_last", "x\n\\ No newline at end of file"},
      {"crlf", "a\r\nb\r\n"},
  };
  std::string assembled = "<|im_start|>system\nYou are helpful.\n";
  for (const auto& [p, c] : want) assembled += RenderFile(p, c);
  assembled += "<|im_end|>\n";
  auto files = ReconstructFiles(assembled);
  ASSERT_TRUE(files.has_value()) << files.error().ToString();
  EXPECT_EQ(*files, want);
}

std::string RandomPath(std::mt19937& rng) {
  static const std::vector<std::string> dirs = {"", "src/", "src/sub/", "docs/", "caf\xC3\xA9 dir/"};
  return dirs[rng() % dirs.size()] + "f" + std::to_string(rng() % 12) + ".txt";
}

std::string RandomConversation(std::mt19937& rng) {
  std::string t = "<|im_start|>user\n";
  const int n = static_cast<int>(rng() % 4);
  for (int i = 0; i < n; ++i) t += rng() % 2 ? RandomLine(rng) + "\n" : "please fix " + RandomPath(rng) + "\n";
  if (rng() % 2) t += "<file path=\"" + RandomPath(rng) + "\" lines=\"1\">\n";  // would be a block unescaped
  if (rng() % 2) t += "<change path=\"x\" kind=\"remove\"/>\n";
  return EscapeFreeText(t) + "<|im_end|>\n";
}

TEST(ReconstructFiles, RandomSessionsReconstructExactly) {
  std::mt19937 rng(2024);
  int edits = 0, fulls = 0;
  for (int seq = 0; seq < 500; ++seq) {
    std::map<std::string, std::string> truth;
    std::string assembled = "<|im_start|>system\nrepo:\n";
    const int initial = static_cast<int>(rng() % 5);
    for (int i = 0; i < initial; ++i) truth[RandomPath(rng)] = RandomText(rng, 25);
    for (const auto& [p, c] : truth) assembled += RenderFile(p, c);
    assembled += "<|im_end|>\n";
    for (int op = 0; op < 20; ++op) {
      assembled += RandomConversation(rng);
      auto any_file = [&]() {
        auto it = truth.begin();
        std::advance(it, rng() % truth.size());
        return it->first;
      };
      ChangeNote note;
      const int what = static_cast<int>(rng() % 10);
      if (truth.empty() || what == 0) {
        std::string p = RandomPath(rng);
        if (truth.contains(p)) continue;
        note.kind = NoteKind::kAdd;
        note.path = p;
        note.content = RandomText(rng, 15);
        truth[p] = note.content;
      } else if (what <= 5) {
        const std::string p = any_file();
        std::string next = truth[p];
        const int n = 1 + static_cast<int>(rng() % 3);
        for (int e = 0; e < n; ++e) next = RandomEdit(rng, next);
        note = MakeChange(p, truth[p], next, static_cast<int>(rng() % 3));
        (note.kind == NoteKind::kEdit ? edits : fulls)++;
        truth[p] = next;
      } else if (what == 6) {
        note.kind = NoteKind::kFull;
        note.path = any_file();
        note.content = RandomText(rng, 10);
        truth[note.path] = note.content;
      } else if (what == 7) {
        note.kind = NoteKind::kRemove;
        note.path = any_file();
        truth.erase(note.path);
      } else {
        note.kind = NoteKind::kRename;
        note.path = any_file();
        note.new_path = RandomPath(rng);
        if (truth.contains(note.new_path)) continue;
        truth[note.new_path] = truth[note.path];
        truth.erase(note.path);
      }
      assembled += RenderNote(note);
    }
    assembled += "<|im_start|>user\nWhat next?\n";
    auto files = ReconstructFiles(assembled);
    ASSERT_TRUE(files.has_value()) << "seq " << seq << ": " << files.error().ToString();
    ASSERT_EQ(*files, truth) << "seq " << seq;
  }
  EXPECT_GT(edits, 1000);
  EXPECT_GT(fulls, 100);
}

void ExpectMalformed(const std::string& text) {
  auto r = ReconstructFiles(text);
  ASSERT_FALSE(r.has_value()) << testing::PrintToString(text);
  EXPECT_TRUE(r.error().Is(ErrorCode::kInvalidArgument));
  EXPECT_TRUE(r.error().offset().has_value()) << r.error().ToString();
}

TEST(ReconstructFiles, MalformedInputIsATypedError) {
  const std::string good = RenderFile("a", "1\n2\n3\n") + RenderNote(MakeChange("a", "1\n2\n3\n", "1\nX\n3\n"));
  ASSERT_TRUE(ReconstructFiles(good).has_value());
  // Truncated anywhere inside a block.
  for (size_t cut = 1; cut < good.size() - 1; ++cut) {
    if (good[cut - 1] == '\n' && good.substr(cut).starts_with("<change")) continue;  // a clean block boundary
    const std::string prefix = good.substr(0, cut);
    const size_t nl = prefix.rfind('\n');
    const std::string_view tail = std::string_view(prefix).substr(nl == std::string::npos ? 0 : nl + 1);
    // A cut inside the opening keyword leaves plain text, not a block.
    if (std::string_view("<file").starts_with(tail) || std::string_view("<change").starts_with(tail)) continue;
    if (tail == "</file>") continue;  // a closing tag may end the text
    ExpectMalformed(prefix);
  }
  ExpectMalformed("<file path=\"a\" lines=\"3\">\n1\n2\n</file>\n");               // count too large
  ExpectMalformed("<file path=\"a\" lines=\"1\">\n1\n2\n</file>\n");               // count too small
  ExpectMalformed("<file path=\"a\" lines=\"x\">\n</file>\n");                     // bad count
  ExpectMalformed("<file path=\"a\" lines=\"01\">\n1\n</file>\n");                 // non-canonical count
  ExpectMalformed("<file path=\"a\" lines=\"99999999999999999999\">\n</file>\n");  // overflow
  ExpectMalformed("<file path=\"/a\" lines=\"0\">\n</file>\n");                    // bad path
  ExpectMalformed("<file path=\"a\">\n</file>\n");                                 // missing attribute
  ExpectMalformed("<file path=\"a\" lines=\"0\" >\n</file>\n");                    // stray space
  ExpectMalformed("<file nonsense\n");
  ExpectMalformed("<change path=\"a\" kind=\"edit\">\n</change>\n");  // edit of unknown file
  ExpectMalformed("<change path=\"a\" kind=\"remove\"/>\n");          // remove of unknown file
  ExpectMalformed("<change path=\"a\" kind=\"explode\"/>\n");         // unknown kind
  ExpectMalformed(RenderFile("a", "x\n") + "<change path=\"a\" kind=\"add\" lines=\"0\">\n</change>\n");
  ExpectMalformed(RenderFile("a", "x\n") + RenderFile("b", "") + "<change path=\"a\" kind=\"rename\" to=\"b\"/>\n");
  ExpectMalformed(RenderFile("a", "x\n") + "<change path=\"a\" kind=\"rename\" to=\"../b\"/>\n");
  const std::string a = RenderFile("a", "1\n2\n3\n");
  ExpectMalformed(a + "<change path=\"a\" kind=\"edit\">\n@@ -2 +2 @@\n-9\n+X\n</change>\n");         // no match
  ExpectMalformed(a + "<change path=\"a\" kind=\"edit\">\n@@ -2 +2 @@\n-2\n+X\n+Y\n</change>\n");     // too many
  ExpectMalformed(a + "<change path=\"a\" kind=\"edit\">\n@@ -2,2 +2 @@\n-2\n+X\n</change>\n");       // too few
  ExpectMalformed(a + "<change path=\"a\" kind=\"edit\">\n@@ -2 +2 @@\n*2\n+X\n</change>\n");         // bad tag
  ExpectMalformed(a + "<change path=\"a\" kind=\"edit\">\n@@ -2 +2\n-2\n+X\n</change>\n");            // bad header
  ExpectMalformed(a + "<change path=\"a\" kind=\"edit\">\n@@ -9 +9 @@\n-2\n+X\n</change>\n");         // past end
  ExpectMalformed(a + "<change path=\"a\" kind=\"edit\">\n@@ -2 +2 @@\n-2\n+X\nstray\n</change>\n");  // junk
  ExpectMalformed(a +
                  "<change path=\"a\" kind=\"edit\">\n@@ -2 +2 @@\n-2\n+X\n\\ No newline at end of file\n</change>\n");
}

TEST(ReconstructFiles, MutatedInputNeverCrashes) {
  std::mt19937 rng(99);
  std::string base;
  std::string content = RandomText(rng, 20);
  base += RenderFile("a", content);
  for (int i = 0; i < 5; ++i) {
    const std::string next = RandomEdit(rng, RandomEdit(rng, content));
    base += "chat\n" + RenderNote(MakeChange("a", content, next));
    content = next;
  }
  ASSERT_EQ(ReconstructFiles(base)->at("a"), content);
  const std::string alphabet = "\n<>/@-+ \\\"=0123456789acdefghilnoprstwx,";
  for (int i = 0; i < 5000; ++i) {
    std::string m = base;
    const int muts = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < muts; ++k) {
      const size_t at = rng() % m.size();
      switch (rng() % 3) {
        case 0:
          m[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          m.erase(at, 1 + rng() % 3);
          break;
        default:
          m.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
      }
      if (m.empty()) m = "x";
    }
    auto r = ReconstructFiles(m);  // any answer is fine; it must not crash
    if (!r) {
      EXPECT_TRUE(r.error().Is(ErrorCode::kInvalidArgument));
    }
  }
}

}  // namespace
}  // namespace modeld::workspace
