// Edit-aware context assembly: a workspace of files and conversation above a
// Session. Clients speak in a coding tool's terms (put a file, add a turn,
// ask); the workspace assembles the manifest so an edit never rewrites an
// earlier segment: a changed file is appended as a change note (diff hunks
// with line numbers) after the conversation, so the resident KV stays valid
// and an edit costs about its own tokens. docs/context-assembly.md has the
// format and the rules.
//
// Backend-neutral (it talks to Session only). Changes (Set*, PutFile, RemoveFile, RenameFile,
// AddTurn) and reads may come from any thread, also while a prefill runs: they never wait on
// computation. The calls that compute (Prefill, Ask, Compact, AdoptCompaction, SetConversation)
// are serialized by the owner (the daemon's per-workspace lease).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "modeld/chat.h"
#include "modeld/error.h"
#include "modeld/manifest.h"
#include "modeld/mutex.h"
#include "modeld/session.h"

namespace modeld {

enum class AssemblyMode {
  kEditAware,  // stable files + append-only log of turns and change notes
  kInPlace,    // files rewritten where they stand (plain prefix reuse), for comparison
};
std::string_view AssemblyModeName(AssemblyMode m);  // "edit_aware", "in_place"

struct WorkspaceOptions {
  AssemblyMode mode = AssemblyMode::kEditAware;
  int diff_context = 1;  // unchanged lines around each hunk
  // Compact when the change notes pass this share of n_ctx (or a prefill would overflow). On
  // notes, not the whole log: compaction keeps the conversation, so a budget that counted it
  // would, once the conversation alone passed it, compact on every edit.
  double compact_notes_share = 0.25;
  // ... or when the free room left in n_ctx falls below this share: compacting then, in the
  // background, spares the call that would overflow from compacting in place.
  // 0.2: a compaction re-prefills the files (about a minute for 5k tokens on 2 cores), and this
  // much room leaves it ~10 turns to finish in the background before the room runs out.
  double compact_room_share = 0.2;
  // Leave share-based compaction to the owner (PlanCompaction / AdoptCompaction
  // on a second session, as the daemon does); overflow still compacts in place.
  bool compact_in_background = false;
  int64_t max_file_bytes = 1 << 20;
  // What one workspace may hold in all: its files' current content and its log (notes, turns).
  // A put or a turn past it is refused (compacting drops the notes); see docs/RELIABILITY.md.
  int64_t max_workspace_bytes = 64 << 20;
  // A requested stop ends the workspace's prefills between batches (kCancelled): the daemon's
  // shutdown.
  std::stop_token cancel;
  // The model's chat template as markers (DeriveChatMarkers): the prompt reads as the template
  // renders it. Unset: ChatML when the vocabulary has its tokens, else plain "### role" lines.
  std::optional<ChatMarkers> markers;
};

struct PutResult {
  std::string change;      // "add", "edit", "full", "unchanged"
  int64_t note_bytes = 0;  // bytes appended to the context
};

struct AskResult {
  PrefixStatus prefix;
  SuffixStatus suffix;
  DecodeResult decode;
  bool compacted = false;  // the context was compacted before this ask
};

// One entry of the append-only log.
struct LogEntry {
  enum Kind { kTurn, kNote } kind = kTurn;
  std::string role;  // kTurn: "user" or "assistant"
  std::string text;  // kTurn: the text as the model read it here; kNote: the rendered change note
  // kTurn, edit-aware conversations: the message as the client last sent it, when that differs
  // from `text` (a note later in the log tells the model the change).
  std::optional<std::string> sent = std::nullopt;
};

// A compaction prepared from a snapshot of the workspace, to be prefilled in a
// second session while the first keeps serving, then adopted.
struct CompactionPlan {
  ContextManifest manifest;  // prefill this in the new session
  int64_t generation = 0;    // the stable part it was made from; a plan made before another compaction is stale
  int64_t rewrites = 0;      // ... and the changes that were not appends: a plan made before one is stale too
  size_t log_size = 0;       // log entries folded in; later ones are carried over on adoption
  std::vector<std::pair<std::string, std::string>> base;
  std::vector<LogEntry> log;
};

// A workspace's whole state (Workspace::Export; the constructor that takes one restores it): what
// it holds and what its session was last prefilled with, so a workspace restored over a session
// restored from the same snapshot is whole and reuses all of that session's KV.
struct WorkspaceState {
  AssemblyMode mode = AssemblyMode::kEditAware;  // the options' when it was exported
  bool prefilled = false;
  bool asked = false;
  std::string system, tools, repo_map;
  std::vector<std::pair<std::string, std::string>> base;  // the stable part's files, in order
  std::map<std::string, std::string> files;               // current content
  std::vector<LogEntry> log;
  int64_t compactions = 0;
  int64_t compactions_in_place = 0;
  int64_t generation = 0;
  int64_t rewrites = 0;
  int64_t prefilled_log_size = 0;
  int64_t prefilled_rewrites = -1;
  int64_t context_tokens = 0;
  int64_t log_tokens = 0;
  int64_t note_tokens = 0;
};

// What an owner lends the calls that prefill the context (Prefill, Ask).
struct PrefillHooks {
  // Progress of the context's prefill, and of a compaction the call waits for (stage "compaction").
  ProgressFunc progress;
  // Called when the context would overflow, before the workspace compacts in place: an owner
  // that compacts in the background (compact_in_background) finishes a compaction already under
  // way and adopts it (AdoptCompaction, then owns the swap of sessions), so the work done so far
  // is not redone. kNotFound (none under way, or it could not be adopted) and
  // kContextOverflow (what came after the plan does not fit next to it): the workspace then
  // compacts in place. Any other error is the call's.
  std::function<Result<PrefixStatus>(const ProgressFunc& progress)> finish_compaction;
  // An eager prefill: a change that makes what it prefills obsolete (anything but an append to the
  // log: an edit in place, a new stable part) stops it between batches (kCancelled), keeping the
  // KV computed so far, so the next one starts from the newest content.
  bool yield_to_changes = false;
};

struct WorkspaceStats {
  AssemblyMode mode = AssemblyMode::kEditAware;
  int64_t files = 0;
  int64_t log_entries = 0;
  int64_t notes = 0;
  int64_t compactions = 0;
  int64_t compactions_in_place = 0;  // of those, run by a call on its own session (it waited for all of it)
  int64_t context_tokens = 0;        // of the last assembled prefix that was prefilled
  int64_t log_tokens = 0;            // the log's part of it
  int64_t note_tokens = 0;           // the change notes' part of the log
};

class Workspace {
 public:
  // `session` must outlive the workspace. Reads the session's tokenizer once
  // to pick the chat markers (ChatML when the vocabulary has them).
  Workspace(Session* session, WorkspaceOptions opt = {});
  // A workspace restored from `state` (Export) over `session`, which should hold what the state
  // was last prefilled with (a session restored from the same snapshot); anything else is only
  // re-prefilled. kInvalidArgument for a state that breaks the workspace's limits or invariants.
  static Result<std::unique_ptr<Workspace>> Restore(Session* session, WorkspaceOptions opt, WorkspaceState state);
  // A copy of the whole state (for a snapshot). Never waits on computation.
  WorkspaceState Export() const;

  // The stable part. Changing it after the first prefill re-prefills everything after it.
  Status SetSystem(std::string text);
  Status SetTools(std::string text);
  Status SetRepoMap(std::string text);

  // A file's whole new content; the workspace computes the change. Paths are normalized to
  // Unicode NFC first (NFC and NFD spellings name one file); invalid UTF-8 is kInvalidArgument.
  Result<PutResult> PutFile(const std::string& path, std::string content);
  Status RemoveFile(const std::string& path);
  Status RenameFile(const std::string& from, const std::string& to);
  // A conversation turn; role "user" or "assistant".
  Status AddTurn(const std::string& role, std::string text);
  // For a client that sends its whole conversation each time (an OpenAI chat): makes the log's
  // turns equal `turns` (role "user" or "assistant"). Turns that extend the log are appended;
  // from the first turn that differs, the log's turns are replaced and the change notes among
  // them kept, in order, after the kept turns, so no file is re-prefilled. `edit_aware`: a turn
  // whose text changed (same role, same place: a tool that re-sends a file inside its message)
  // keeps its resident version, and a note with the change (RenderMessageChange) is appended
  // instead; only a changed role, or fewer turns, replaces. Serialized with the computing calls
  // (the owner holds the workspace for the question that follows).
  struct ConversationChange {
    int64_t kept = 0;      // turns of the log that matched
    int64_t edited = 0;    // of those, changed and told by a note (edit_aware)
    int64_t replaced = 0;  // turns of the log dropped (the client rewrote its history)
    int64_t appended = 0;
  };
  Result<ConversationChange> SetConversation(const std::vector<std::pair<std::string, std::string>>& turns,
                                             bool edit_aware = false);

  // Prefills the current context now (eager prefill), so an ask later only
  // has its question left to prefill.
  Result<PrefixStatus> Prefill(const PrefillHooks& hooks = {});
  // Prefills the context and the question, decodes, and records the question
  // and the answer as conversation turns.
  // What Ask checks before any work (the question's size, the room it needs, max_tokens against
  // n_ctx): an owner calls it to answer bad input before streaming.
  Status CheckAsk(const std::string& question, const DecodeConfig& cfg) const;
  Result<AskResult> Ask(const std::string& question, const DecodeConfig& cfg, const ChunkCallback& on_chunk,
                        const PrefillHooks& hooks = {});
  // Folds the change notes into the files (the files at their current
  // content, conversation kept) and prefills that. keep_turns >= 0 also drops
  // all but the last keep_turns conversation turns (a question and its answer
  // are two; a kept part never starts with an answer): the way on once the
  // conversation itself no longer fits, which compaction alone never changes.
  Result<PrefixStatus> Compact(const ProgressFunc& progress = {}, int64_t keep_turns = -1);
  // Background compaction: whether the log has passed its budget; a plan
  // from the current state; and adopting a plan whose manifest `fresh` (a new
  // session on the same model) already holds: entries added since the plan
  // are carried over, and the workspace moves to `fresh` (the caller then
  // owns the swap of sessions). A stale plan is kCancelled and changes nothing.
  bool CompactionDue() const;
  CompactionPlan PlanCompaction() const;
  // The manifest `plan` would be adopted with now: its files and log, then the entries added
  // since. An owner prefills it on the second session before it adopts, so the adoption (under
  // its lease) has only the newest entries left. kCancelled when the plan is stale.
  Result<ContextManifest> AdoptionManifest(const CompactionPlan& plan) const;
  Result<PrefixStatus> AdoptCompaction(const CompactionPlan& plan, Session* fresh);

  ContextManifest Manifest() const;  // the prefix as it would be prefilled now
  // The suffix an ask of `question` sends after Manifest().
  std::vector<ManifestSegment> QuestionSegments(const std::string& question) const;
  std::string AssembledText() const;                               // its text, segments concatenated
  std::map<std::string, std::string> files() const;                // current content, by path
  std::vector<std::pair<std::string, int64_t>> FileSizes() const;  // bytes, by path (no copy of the content)
  WorkspaceStats Stats() const;
  // Changed since the last prefill: an eager prefill has work to do.
  bool Stale() const;

 private:
  using Entry = LogEntry;
  using Files = std::vector<std::pair<std::string, std::string>>;
  // The manifest of the current stable text with these files and log.
  ContextManifest ManifestOf(const Files& base, const std::vector<Entry>& log) const REQUIRES(mu_);
  // The question's segments (and the answer's opening) as log entry `at` would be.
  std::vector<ManifestSegment> QuestionSegmentsAt(const std::string& question, size_t at) const;
  // The compact state: files at their current content (stable order, then added files), turns only.
  std::pair<Files, std::vector<Entry>> CompactState(int64_t keep_turns = -1) const REQUIRES(mu_);
  CompactionPlan PlanLocked(int64_t keep_turns) const REQUIRES(mu_);
  bool PlanIsCurrent(const CompactionPlan& plan) const REQUIRES(mu_);
  Result<ContextManifest> AdoptionManifestLocked(const CompactionPlan& plan, size_t* log_size) const REQUIRES(mu_);
  // Installs a plan whose manifest was prefilled: its files and log, then the entries added since.
  void Install(const CompactionPlan& plan) REQUIRES(mu_);
  // Prefills `m` (the first `log_size` log entries, made when rewrites_ was `rewrites`) on
  // session_ and updates the token accounting.
  Result<PrefixStatus> PrefillView(const ContextManifest& m, size_t log_size, int64_t rewrites,
                                   const ProgressFunc& progress, bool yield) EXCLUDES(mu_);
  Result<PrefixStatus> PrefillManifest(const ProgressFunc& progress = {}, bool yield = false) EXCLUDES(mu_);
  // A change that is not an append: plans made before it are stale, a yielding prefill stops.
  void Rewrote() REQUIRES(mu_);
  Status CheckText(const std::string& what, const std::string& text) const;
  // kInvalidArgument when `adding` more bytes would take the workspace past max_workspace_bytes.
  Status CheckRoom(int64_t adding) const REQUIRES(mu_);
  void Append(std::vector<ManifestSegment>* out, const std::string& id, SegmentKind kind, const std::string& role,
              const std::string& text) const;
  Result<PrefixStatus> EnsureCurrent(const PrefillHooks& hooks) EXCLUDES(mu_);
  // The context overflows: finish the owner's compaction under way, else compact in place.
  Result<PrefixStatus> CompactForOverflow(const PrefillHooks& hooks) EXCLUDES(mu_);
  bool NeedsCompaction(int64_t extra_tokens) const REQUIRES(mu_);
  // An overflow where the conversation is a good part of the context: says how to go on.
  Error OverflowHint(Error e) const EXCLUDES(mu_);

  // Fixed at construction.
  WorkspaceOptions opt_;
  ChatMarkers markers_;           // from the options, or ChatML / plain lines
  bool markers_special_ = false;  // the markers hold special tokens as text
  int64_t n_ctx_ = 0;
  // Used only by the computing calls, which the owner serializes.
  Session* session_;

  mutable Mutex mu_;
  bool prefilled_ GUARDED_BY(mu_) = false;  // edits of prefilled files go to the log as notes
  bool asked_ GUARDED_BY(mu_) = false;      // after the first ask, new files go to the log too
  std::string system_ GUARDED_BY(mu_), tools_ GUARDED_BY(mu_), repo_map_ GUARDED_BY(mu_);
  Files base_ GUARDED_BY(mu_);                                // the stable part's files, in order
  std::map<std::string, std::string> files_ GUARDED_BY(mu_);  // current content
  std::vector<Entry> log_ GUARDED_BY(mu_);
  int64_t compactions_ GUARDED_BY(mu_) = 0;
  int64_t compactions_in_place_ GUARDED_BY(mu_) = 0;
  int64_t generation_ GUARDED_BY(mu_) = 0;  // bumped whenever the stable part's files are replaced
  int64_t rewrites_ GUARDED_BY(mu_) = 0;    // changes that were not appends (Rewrote)
  // As of the last prefill: the log entries it held and rewrites_ (Stale).
  size_t prefilled_log_size_ GUARDED_BY(mu_) = 0;
  int64_t prefilled_rewrites_ GUARDED_BY(mu_) = -1;
  std::stop_source* yielding_ GUARDED_BY(mu_) = nullptr;  // the running prefill that yields to changes
  int64_t context_tokens_ GUARDED_BY(mu_) = 0;
  int64_t log_tokens_ GUARDED_BY(mu_) = 0;
  int64_t note_tokens_ GUARDED_BY(mu_) = 0;
};

}  // namespace modeld
