// The text format modeld uses to show files, and edits to them, to the model.
//
// The prompt keeps each file as first sent (a <file> block) and describes later
// edits as <change> notes appended to a log, so the KV cache of everything
// before the note stays valid. The format is faithful: ReconstructFiles turns
// the assembled text back into every file's exact bytes. Extents are always
// taken from counts (lines="N", hunk headers), never by scanning for a closing
// tag, so file content that looks like markup cannot confuse the parser; and
// such content lines are escaped (EscapeContentLine), so they cannot confuse
// the model reading the text either. Paths are NFC UTF-8 (NormalizePath).
// docs/context-assembly.md is the specification.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modeld/error.h"

namespace modeld::workspace {

// Follows the line (in a hunk or a block) that has no '\n' after it: only a
// file's last line can be one. Same text as unified diff.
inline constexpr std::string_view kNoNewlineMarker = "\\ No newline at end of file";

// One hunk of a line diff. Line numbers are 1-based; when a count is 0 the
// start is the line after which the change sits (0 = top), as in unified diff.
struct Hunk {
  int64_t old_start = 0, old_count = 0, new_start = 0, new_count = 0;
  // Each starts with ' ' (context), '-' (removed) or '+' (added); no '\n'.
  // kNoNewlineMarker may follow the line that is its file's last line with no
  // final newline; it counts toward neither count.
  std::vector<std::string> lines;

  bool operator==(const Hunk&) const = default;
};

// Line diff (Myers, O((N+M)D) time, linear space) of two texts split on '\n'.
// `context` unchanged lines around each change; hunks whose changes are at
// most 2*context lines apart merge. A missing final newline is represented
// with kNoNewlineMarker, so "a" and "a\n" differ. '\r' stays part of lines.
std::vector<Hunk> DiffLines(std::string_view old_text, std::string_view new_text, int context);

// Applies hunks (in order, non-overlapping) to old_text; exact inverse of
// DiffLines. kInvalidArgument if a hunk does not match old_text exactly, its
// counts or starts disagree with its lines, or the result would be malformed.
Result<std::string> ApplyHunks(std::string_view old_text, const std::vector<Hunk>& hunks);

enum class NoteKind { kEdit, kFull, kAdd, kRemove, kRename };

struct ChangeNote {
  NoteKind kind = NoteKind::kEdit;
  std::string path;
  std::string new_path;     // kRename
  std::vector<Hunk> hunks;  // kEdit
  std::string content;      // kFull / kAdd: the file's whole new content

  bool operator==(const ChangeNote&) const = default;
};

// Chooses how to describe old -> new: kEdit with hunks, or kFull when the diff
// is not worth it: when the changed lines (added + removed) exceed a third of
// the new file's line count (min 1), or when the rendered edit would be longer
// than the rendered full content. Identical texts give kEdit with no hunks.
ChangeNote MakeChange(const std::string& path, std::string_view old_text, std::string_view new_text, int context = 1);

// Number of lines as the format counts them: "" = 0, "a" = 1, "a\n" = 1, "a\nb" = 2.
int64_t CountLines(std::string_view text);

// A file block of the stable part:
//   <file path="P" lines="N">\n  N content lines  [kNoNewlineMarker\n]  </file>\n
// Content lines are shown through EscapeContentLine (so are full/add bodies and
// hunk lines in RenderNote); ReconstructFiles undoes it.
// `path` must pass ValidatePath (the caller's contract; it is not re-checked).
std::string RenderFile(const std::string& path, std::string_view content);
// A change note (see docs/context-assembly.md for each kind's syntax).
std::string RenderNote(const ChangeNote& note);
// A conversation message the client sent again edited (edit-aware re-sent content), as a note on
// message `index` (1-based): `<message-change index="N" kind="edit">` with hunks, or kind="full"
// with the whole new text, bodies as in a change note. ReconstructFiles reads past it: it is about
// a message, not a file.
std::string RenderMessageChange(int64_t index, std::string_view old_text, std::string_view new_text, int context = 1);

// Paths allowed in the format: valid UTF-8 in Unicode NFC, relative,
// '/'-separated, no "." or ".." components (and no empty ones), no leading
// '/', no backslash, no control characters or '"' / '<' / '>', 1..1024 bytes.
// kInvalidArgument otherwise.
Status ValidatePath(std::string_view path);

// A path as a client spells it -> the path the workspace uses: refused with
// kInvalidArgument unless it is valid UTF-8 (the message names the byte
// offset), normalized to NFC (utf8proc), and then it must pass ValidatePath.
// So the NFC and NFD spellings of "café.c" name the same file.
Result<std::string> NormalizePath(std::string_view path);

// Content lines -- a line of a <file> block or a full/add note's body, and the
// text after the tag of a hunk line -- are escaped so that the model never sees
// the format's own markup in them (the parser does not need it: it reads
// extents from counts). A line (without its '\n') that, after any leading
// backslashes, starts with `<file `, `</file>`, `<change ` or `</change>`, or
// that is one or more backslashes followed by ` No newline at end of file`
// (the kNoNewlineMarker family), gets one more leading '\'; other lines are
// unchanged. Line counts are unchanged.
std::string EscapeContentLine(std::string_view line);
// Inverse of EscapeContentLine. nullopt for a line it never produces: such a
// marker with too few backslashes (an unescaped `</file>`, or the bare
// kNoNewlineMarker), which a rendered block never carries as content.
std::optional<std::string_view> UnescapeContentLine(std::string_view line);

// Makes free text (conversation) safe to place between blocks: a line that
// starts with `<file ` or `<change ` would be read as a block, so it (and, to
// keep the mapping reversible, a line that is such a line already prefixed by
// backslashes) gets one more leading '\'. Other text is unchanged.
std::string EscapeFreeText(std::string_view text);
// Inverse of EscapeFreeText.
std::string UnescapeFreeText(std::string_view text);

// Reconstruction: parses an assembled context (file blocks and change notes in
// order, any other text between them) and returns each file's current content.
// Only a line that starts with `<file ` or `<change ` begins a block (and then
// it must be a well-formed one). File blocks define (or redefine) files; notes
// apply in order: edit applies hunks, full replaces, add creates, remove
// deletes, rename moves. kInvalidArgument naming the byte offset on a malformed
// block or a note that does not fit the files (edit/full/remove/rename of a
// missing file, add or rename onto an existing one, hunks that do not apply).
Result<std::map<std::string, std::string>> ReconstructFiles(std::string_view assembled);

}  // namespace modeld::workspace
