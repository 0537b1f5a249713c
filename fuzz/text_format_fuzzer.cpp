// libFuzzer target: the edit-aware text format (src/workspace/text_format.h).
//
// Two modes, by the first byte:
//  * 0x00..0x07: round trip. The rest is up to six fields separated by NUL bytes:
//      old \0 new \0 path \0 pre \0 mid \0 post
//    (missing fields are empty; an invalid path becomes "f.txt"), context = first byte - 1 (-1..6).
//    Checked (abort when violated):
//      ApplyHunks(old, DiffLines(old, new, context)) == new;
//      MakeChange(path, old, new, context) is an edit whose hunks apply to give new, or a full note of new;
//      ReconstructFiles(Esc(pre) + RenderFile(path, old) + Esc(mid) + RenderNote(note) + Esc(post))
//        == {path: new}, for the MakeChange note and for the plain edit note of DiffLines' hunks
//        (pre and mid end with '\n' when non-empty: the assembler's guarantee 2 of
//        docs/context-assembly.md);
//      UnescapeFreeText(EscapeFreeText(x)) == x for pre, mid and post;
//      UnescapeContentLine(EscapeContentLine(l)) == l for every line l of old and new.
//  * anything else: the whole input is an assembled context: ReconstructFiles(input) must not crash, and
//    when it succeeds, rendering the files it returns as <file> blocks reconstructs the same files.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "workspace/text_format.h"

namespace {

using namespace modeld::workspace;

[[noreturn]] void Die(const char* what, std::string_view a = {}, std::string_view b = {}) {
  std::fprintf(stderr,
               "text_format_fuzzer: property violated: %s\n--- a (%zu bytes) ---\n%.*s\n--- b (%zu bytes) ---\n%.*s\n",
               what, a.size(), static_cast<int>(a.size()), a.data(), b.size(), static_cast<int>(b.size()), b.data());
  std::abort();
}

void ExpectOnly(const std::string& assembled, const std::string& path, const std::string& content, const char* what) {
  auto files = ReconstructFiles(assembled);
  if (!files) Die(what, assembled, files.error().message());
  if (files->size() != 1 || !files->contains(path)) Die(what, assembled, "wrong set of files");
  if (files->at(path) != content) Die(what, files->at(path), content);
}

std::string EndLine(std::string s) {
  if (!s.empty() && s.back() != '\n') s += '\n';
  return s;
}

void RoundTrip(int context, std::string_view rest) {
  std::vector<std::string> f;
  size_t pos = 0;
  while (f.size() < 5) {
    const size_t z = rest.find('\0', pos);
    if (z == std::string_view::npos) break;
    f.emplace_back(rest.substr(pos, z - pos));
    pos = z + 1;
  }
  f.emplace_back(rest.substr(std::min(pos, rest.size())));
  f.resize(6);
  const std::string& old_text = f[0];
  const std::string& new_text = f[1];
  const std::string path = ValidatePath(f[2]) ? f[2] : std::string("f.txt");
  const std::string pre = EndLine(f[3]), mid = EndLine(f[4]), post = f[5];

  for (const std::string* t : {&pre, &mid, &post}) {
    if (UnescapeFreeText(EscapeFreeText(*t)) != *t) Die("UnescapeFreeText(EscapeFreeText(x)) != x", *t);
  }

  for (const std::string* t : {&old_text, &new_text}) {
    for (size_t p = 0; p < t->size();) {
      const size_t nl = std::min(t->find('\n', p), t->size());
      const std::string_view line = std::string_view(*t).substr(p, nl - p);
      const std::string escaped = EscapeContentLine(line);
      const std::optional<std::string_view> back = UnescapeContentLine(escaped);
      if (!back || *back != line) Die("UnescapeContentLine(EscapeContentLine(l)) != l", line);
      p = nl + 1;
    }
  }

  const std::vector<Hunk> hunks = DiffLines(old_text, new_text, context);
  auto applied = ApplyHunks(old_text, hunks);
  if (!applied) Die("ApplyHunks(old, DiffLines(old, new)) failed", applied.error().message());
  if (*applied != new_text) Die("ApplyHunks(old, DiffLines(old, new)) != new", *applied, new_text);

  const ChangeNote note = MakeChange(path, old_text, new_text, context);
  if (note.path != path) Die("MakeChange: wrong path", note.path, path);
  if (note.kind == NoteKind::kEdit) {
    auto a = ApplyHunks(old_text, note.hunks);
    if (!a || *a != new_text) Die("MakeChange's hunks do not give new", a ? *a : a.error().message(), new_text);
  } else if (note.kind != NoteKind::kFull || note.content != new_text) {
    Die("MakeChange is neither an edit nor a full note of new");
  }

  const std::string head = EscapeFreeText(pre) + RenderFile(path, old_text) + EscapeFreeText(mid);
  const std::string tail = EscapeFreeText(post);
  ExpectOnly(head + RenderNote(note) + tail, path, new_text, "ReconstructFiles(file + MakeChange note) != new");

  ChangeNote edit;
  edit.path = path;
  edit.hunks = hunks;
  ExpectOnly(head + RenderNote(edit) + tail, path, new_text, "ReconstructFiles(file + DiffLines edit) != new");
}

void Reconstruct(std::string_view input) {
  auto files = ReconstructFiles(input);
  if (!files) return;
  std::string again;
  for (const auto& [path, content] : *files) {
    if (!ValidatePath(path)) Die("ReconstructFiles returned an invalid path", path);
    again += RenderFile(path, content);
  }
  auto second = ReconstructFiles(again);
  if (!second) Die("rendered files do not reconstruct", again, second.error().message());
  if (*second != *files) Die("rendered files reconstruct to other files", again);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (data[0] < 8) {
    RoundTrip(static_cast<int>(data[0]) - 1, input.substr(1));
  } else {
    Reconstruct(input);
  }
  return 0;
}
