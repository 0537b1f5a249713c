#include "modeld/workspace.h"

#include <algorithm>
#include <iterator>
#include <tuple>
#include <utility>

#include "workspace/text_format.h"

namespace modeld {

using workspace::ChangeNote;
using workspace::NoteKind;

std::string_view AssemblyModeName(AssemblyMode m) { return m == AssemblyMode::kEditAware ? "edit_aware" : "in_place"; }

Workspace::Workspace(Session* session, WorkspaceOptions opt) : opt_(opt), session_(session) {
  // The template decides the manifest's markers, so they are known before any manifest is built.
  if (opt_.markers) {
    markers_ = *opt_.markers;
    markers_special_ = true;
  } else if (auto t = session_->Tokenize("<|im_start|>", true); t && t->size() == 1) {
    const auto role = [](const std::string& r) { return RoleMarkers{"<|im_start|>" + r + "\n", "<|im_end|>\n"}; };
    markers_ = ChatMarkers{"", role("system"), role("user"), role("assistant"), false};
    markers_special_ = true;
  } else {
    const auto role = [](const std::string& r) { return RoleMarkers{"### " + r + "\n", "\n"}; };
    markers_ = ChatMarkers{"", role("system"), role("user"), role("assistant"), false};
  }
  if (auto rep = session_->Report()) n_ctx_ = rep->n_ctx;
}

WorkspaceState Workspace::Export() const {
  MutexLock lock(&mu_);
  WorkspaceState st;
  st.mode = opt_.mode;
  st.prefilled = prefilled_;
  st.asked = asked_;
  st.system = system_;
  st.tools = tools_;
  st.repo_map = repo_map_;
  st.base = base_;
  st.files = files_;
  st.log = log_;
  st.compactions = compactions_;
  st.compactions_in_place = compactions_in_place_;
  st.generation = generation_;
  st.rewrites = rewrites_;
  st.prefilled_log_size = static_cast<int64_t>(prefilled_log_size_);
  st.prefilled_rewrites = prefilled_rewrites_;
  st.context_tokens = context_tokens_;
  st.log_tokens = log_tokens_;
  st.note_tokens = note_tokens_;
  return st;
}

Result<std::unique_ptr<Workspace>> Workspace::Restore(Session* session, WorkspaceOptions opt, WorkspaceState st) {
  auto ws = std::make_unique<Workspace>(session, std::move(opt));
  // The limits of the options in force now, as a put would meet them.
  for (const auto& [what, text] : {std::pair<std::string, const std::string*>{"system", &st.system},
                                   {"tools", &st.tools},
                                   {"repo map", &st.repo_map}}) {
    if (auto ok = ws->CheckText(what, *text); !ok) return Fail(ok.error());
  }
  for (const auto& [path, content] : st.files) {
    if (auto ok = ws->CheckText("file '" + path + "'", content); !ok) return Fail(ok.error());
  }
  for (const auto& e : st.log) {
    if (e.kind == LogEntry::kTurn && e.role != "user" && e.role != "assistant") {
      return Fail(ErrorCode::kInvalidArgument, "a turn of role '" + e.role + "'");
    }
  }
  if (st.prefilled_log_size < 0 || st.prefilled_log_size > static_cast<int64_t>(st.log.size())) {
    return Fail(ErrorCode::kInvalidArgument, "prefilled_log_size past the log");
  }
  MutexLock lock(&ws->mu_);
  ws->prefilled_ = st.prefilled;
  ws->asked_ = st.asked;
  ws->system_ = std::move(st.system);
  ws->tools_ = std::move(st.tools);
  ws->repo_map_ = std::move(st.repo_map);
  ws->base_ = std::move(st.base);
  ws->files_ = std::move(st.files);
  ws->log_ = std::move(st.log);
  if (auto ok = ws->CheckRoom(0); !ok) return Fail(ok.error());
  ws->compactions_ = st.compactions;
  ws->compactions_in_place_ = st.compactions_in_place;
  ws->generation_ = st.generation;
  ws->rewrites_ = st.rewrites;
  ws->prefilled_log_size_ = static_cast<size_t>(st.prefilled_log_size);
  ws->prefilled_rewrites_ = st.prefilled_rewrites;
  ws->context_tokens_ = st.context_tokens;
  ws->log_tokens_ = st.log_tokens;
  ws->note_tokens_ = st.note_tokens;
  return ws;
}

Status Workspace::CheckText(const std::string& what, const std::string& text) const {
  if (static_cast<int64_t>(text.size()) > opt_.max_file_bytes) {
    return Fail(ErrorCode::kInvalidArgument, what + " is " + std::to_string(text.size()) +
                                                 " bytes, over the limit of " + std::to_string(opt_.max_file_bytes));
  }
  if (text.find('\0') != std::string::npos) {
    return Fail(ErrorCode::kInvalidArgument, what + " contains NUL bytes: binary content is not accepted");
  }
  return {};
}

Status Workspace::CheckRoom(int64_t adding) const {
  int64_t held = 0;
  for (const auto& [_, content] : files_) held += static_cast<int64_t>(content.size());
  for (const auto& e : log_) held += static_cast<int64_t>(e.text.size() + (e.sent ? e.sent->size() : 0));
  if (held + adding > opt_.max_workspace_bytes) {
    return Fail(ErrorCode::kInvalidArgument,
                "the workspace holds " + std::to_string(held) + " bytes of files and log; " + std::to_string(adding) +
                    " more would pass its limit of " + std::to_string(opt_.max_workspace_bytes) +
                    ": remove files or compact it");
  }
  return {};
}

void Workspace::Rewrote() {
  ++rewrites_;
  if (yielding_) yielding_->request_stop();
}

Status Workspace::SetSystem(std::string text) {
  if (auto ok = CheckText("system text", text); !ok) return ok;
  MutexLock lock(&mu_);
  if (system_ != text) Rewrote();
  system_ = std::move(text);
  return {};
}

Status Workspace::SetTools(std::string text) {
  if (auto ok = CheckText("tools text", text); !ok) return ok;
  MutexLock lock(&mu_);
  if (tools_ != text) Rewrote();
  tools_ = std::move(text);
  return {};
}

Status Workspace::SetRepoMap(std::string text) {
  if (auto ok = CheckText("repo map", text); !ok) return ok;
  MutexLock lock(&mu_);
  if (repo_map_ != text) Rewrote();
  repo_map_ = std::move(text);
  return {};
}

// Every path entering the workspace is normalized (NFC) and validated first, so the NFC and NFD
// spellings of a name are one file.
Result<PutResult> Workspace::PutFile(const std::string& raw_path, std::string content) {
  auto norm = workspace::NormalizePath(raw_path);
  if (!norm) return Fail(norm.error());
  const std::string& path = *norm;
  if (auto ok = CheckText("file '" + path + "'", content); !ok) return Fail(ok.error());
  MutexLock lock(&mu_);
  if (auto ok = CheckRoom(static_cast<int64_t>(content.size())); !ok) return Fail(ok.error());
  PutResult r;
  auto it = files_.find(path);
  if (it != files_.end() && it->second == content) {
    r.change = "unchanged";
    return r;
  }
  const bool in_base = std::any_of(base_.begin(), base_.end(), [&](const auto& f) { return f.first == path; });
  // In place: always. Edit-aware: a new file joins the stable part until the
  // first ask (appending a block there costs only its own tokens), and an
  // existing file is rewritten there only while nothing has been prefilled.
  const bool in_stable =
      opt_.mode == AssemblyMode::kInPlace || !prefilled_ || (it == files_.end() && !in_base && !asked_);
  if (in_stable) {
    Rewrote();  // edits the stable part in place (or inserts into it)
    if (in_base) {
      for (auto& f : base_) {
        if (f.first == path) f.second = content;
      }
    } else {
      base_.emplace_back(path, content);
    }
    r.change = it == files_.end() ? "add" : "edit";
    r.note_bytes = static_cast<int64_t>(workspace::RenderFile(path, content).size());
  } else {
    ChangeNote note;
    if (it == files_.end()) {
      note.kind = NoteKind::kAdd;
      note.path = path;
      note.content = content;
    } else {
      note = workspace::MakeChange(path, it->second, content, opt_.diff_context);
    }
    std::string text = workspace::RenderNote(note);
    r.change = note.kind == NoteKind::kAdd ? "add" : note.kind == NoteKind::kEdit ? "edit" : "full";
    r.note_bytes = static_cast<int64_t>(text.size());
    log_.push_back({Entry::kNote, "", std::move(text)});
  }
  files_[path] = std::move(content);
  return r;
}

Status Workspace::RemoveFile(const std::string& raw_path) {
  auto norm = workspace::NormalizePath(raw_path);
  if (!norm) return Fail(norm.error());
  const std::string& path = *norm;
  MutexLock lock(&mu_);
  if (!files_.contains(path)) return Fail(ErrorCode::kNotFound, "no file '" + path + "' in the workspace");
  if (!prefilled_ || opt_.mode == AssemblyMode::kInPlace) {
    Rewrote();
    std::erase_if(base_, [&](const auto& f) { return f.first == path; });
  } else {
    ChangeNote note;
    note.kind = NoteKind::kRemove;
    note.path = path;
    log_.push_back({Entry::kNote, "", workspace::RenderNote(note)});
  }
  files_.erase(path);
  return {};
}

Status Workspace::RenameFile(const std::string& raw_from, const std::string& raw_to) {
  auto norm_from = workspace::NormalizePath(raw_from);
  if (!norm_from) return Fail(norm_from.error());
  auto norm_to = workspace::NormalizePath(raw_to);
  if (!norm_to) return Fail(norm_to.error());
  const std::string &from = *norm_from, &to = *norm_to;
  MutexLock lock(&mu_);
  auto it = files_.find(from);
  if (it == files_.end()) return Fail(ErrorCode::kNotFound, "no file '" + from + "' in the workspace");
  if (files_.contains(to)) return Fail(ErrorCode::kInvalidArgument, "'" + to + "' already exists in the workspace");
  if (!prefilled_ || opt_.mode == AssemblyMode::kInPlace) {
    Rewrote();
    for (auto& f : base_) {
      if (f.first == from) f.first = to;
    }
  } else {
    ChangeNote note;
    note.kind = NoteKind::kRename;
    note.path = from;
    note.new_path = to;
    log_.push_back({Entry::kNote, "", workspace::RenderNote(note)});
  }
  files_[to] = std::move(it->second);
  files_.erase(from);
  return {};
}

Status Workspace::AddTurn(const std::string& role, std::string text) {
  if (role != "user" && role != "assistant") {
    return Fail(ErrorCode::kInvalidArgument, "a turn's role is 'user' or 'assistant', not '" + role + "'");
  }
  if (auto ok = CheckText("turn", text); !ok) return ok;
  MutexLock lock(&mu_);
  if (auto ok = CheckRoom(static_cast<int64_t>(text.size())); !ok) return ok;
  log_.push_back({Entry::kTurn, role, std::move(text)});
  return {};
}

Result<Workspace::ConversationChange> Workspace::SetConversation(
    const std::vector<std::pair<std::string, std::string>>& turns, bool edit_aware) {
  for (const auto& [role, text] : turns) {
    if (role != "user" && role != "assistant") {
      return Fail(ErrorCode::kInvalidArgument, "a turn's role is 'user' or 'assistant', not '" + role + "'");
    }
    if (auto ok = CheckText("turn", text); !ok) return Fail(ok.error());
  }
  MutexLock lock(&mu_);
  ConversationChange c;
  std::vector<size_t> at;  // the log index of each turn
  for (size_t i = 0; i < log_.size(); ++i) {
    if (log_[i].kind == Entry::kTurn) at.push_back(i);
  }
  // (Takes the entry: a lambda reading log_ itself would not be seen to hold mu_.)
  const auto current = [](const Entry& e) -> const std::string& { return e.sent ? *e.sent : e.text; };
  // The turns that match (edit-aware: in role), then where the log's turns are cut.
  size_t next = 0;
  std::vector<size_t> edits;
  for (; next < at.size() && next < turns.size(); ++next) {
    const Entry& e = log_[at[next]];
    if (e.role != turns[next].first) break;
    if (current(log_[at[next]]) == turns[next].second) continue;
    if (!edit_aware) break;
    edits.push_back(next);
  }
  const size_t cut = next < at.size() ? at[next] : log_.size();
  c.kept = static_cast<int64_t>(next);
  c.edited = static_cast<int64_t>(edits.size());
  c.replaced = static_cast<int64_t>(at.size() - next);
  c.appended = static_cast<int64_t>(turns.size() - next);

  std::vector<std::string> notes;
  int64_t added = 0;
  for (size_t k : edits) {
    notes.push_back(workspace::RenderMessageChange(static_cast<int64_t>(k) + 1, current(log_[at[k]]), turns[k].second,
                                                   opt_.diff_context));
    added += static_cast<int64_t>(notes.back().size() + turns[k].second.size());
  }
  for (size_t i = cut; i < log_.size(); ++i) {
    if (log_[i].kind == Entry::kTurn) added -= static_cast<int64_t>(log_[i].text.size());
  }
  for (size_t i = next; i < turns.size(); ++i) added += static_cast<int64_t>(turns[i].second.size());
  if (auto ok = CheckRoom(added); !ok) return Fail(ok.error());

  if (c.replaced > 0) {
    // The notes after the cut stay, in order, ahead of the new turns: the files read the same.
    std::vector<Entry> rest(log_.begin() + static_cast<long>(cut), log_.end());
    log_.resize(cut);
    std::copy_if(rest.begin(), rest.end(), std::back_inserter(log_),
                 [](const Entry& e) { return e.kind == Entry::kNote; });
    Rewrote();
  }
  for (size_t n = 0; n < edits.size(); ++n) {
    log_[at[edits[n]]].sent = turns[edits[n]].second;
    log_.push_back({Entry::kNote, "", std::move(notes[n])});
  }
  for (size_t i = next; i < turns.size(); ++i) log_.push_back({Entry::kTurn, turns[i].first, turns[i].second});
  return c;
}

// Appends role markers (special tokens, their own segments) around `text`.
void Workspace::Append(std::vector<ManifestSegment>* out, const std::string& id, SegmentKind kind,
                       const std::string& role, const std::string& text) const {
  const RoleMarkers& m = role == "assistant" ? markers_.assistant : markers_.user;
  out->push_back(ManifestSegment::Make(id + ":open", SegmentKind::kTemplate, m.open, markers_special_));
  out->push_back(ManifestSegment::Make(id, kind, text));
  out->push_back(ManifestSegment::Make(id + ":close", SegmentKind::kTemplate, m.close, markers_special_));
}

ContextManifest Workspace::ManifestOf(const Files& base, const std::vector<Entry>& log) const {
  std::vector<ManifestSegment> segs;
  // Free text is escaped and ends its line, so a file block after it always
  // starts a line and reconstruction stays exact (docs/context-assembly.md).
  auto free_text = [](const std::string& t) {
    std::string e = workspace::EscapeFreeText(t);
    if (!e.empty() && e.back() != '\n') e += '\n';
    return e;
  };
  // The stable part is one system message; its pieces are separate segments
  // so an edit to one never re-tokenizes another.
  segs.push_back(ManifestSegment::Make("system:open", SegmentKind::kTemplate, markers_.start + markers_.system.open,
                                       markers_special_));
  if (!system_.empty()) segs.push_back(ManifestSegment::Make("system", SegmentKind::kSystem, free_text(system_)));
  if (!tools_.empty()) segs.push_back(ManifestSegment::Make("tools", SegmentKind::kTools, free_text(tools_)));
  if (!repo_map_.empty())
    segs.push_back(ManifestSegment::Make("repo-map", SegmentKind::kRepoMap, free_text(repo_map_)));
  for (const auto& [path, content] : base) {
    segs.push_back(ManifestSegment::Make("file:" + path, SegmentKind::kFile, workspace::RenderFile(path, content)));
  }
  segs.push_back(
      ManifestSegment::Make("system:close", SegmentKind::kTemplate, markers_.system.close, markers_special_));
  for (size_t i = 0; i < log.size(); ++i) {
    const Entry& e = log[i];
    const std::string id = "log:" + std::to_string(i);
    if (e.kind == Entry::kNote) {
      Append(&segs, id, SegmentKind::kChangeNote, "user", e.text);
    } else {
      Append(&segs, id, SegmentKind::kConversation, e.role, workspace::EscapeFreeText(e.text));
    }
  }
  return ContextManifest(std::move(segs));
}

ContextManifest Workspace::Manifest() const {
  MutexLock lock(&mu_);
  return ManifestOf(base_, log_);
}

std::map<std::string, std::string> Workspace::files() const {
  MutexLock lock(&mu_);
  return files_;
}

std::vector<std::pair<std::string, int64_t>> Workspace::FileSizes() const {
  MutexLock lock(&mu_);
  std::vector<std::pair<std::string, int64_t>> out;
  out.reserve(files_.size());
  for (const auto& [path, content] : files_) out.emplace_back(path, static_cast<int64_t>(content.size()));
  return out;
}

bool Workspace::Stale() const {
  MutexLock lock(&mu_);
  return prefilled_rewrites_ != rewrites_ || prefilled_log_size_ != log_.size();
}

std::string Workspace::AssembledText() const {
  const ContextManifest m = Manifest();  // (locks)  // named: a range-for over a temporary's member dangles
  std::string out;
  for (const auto& s : m.segments()) out += s.content;
  return out;
}

std::vector<ManifestSegment> Workspace::QuestionSegments(const std::string& question) const {
  size_t at;
  {
    MutexLock lock(&mu_);
    at = log_.size();
  }
  return QuestionSegmentsAt(question, at);
}

std::vector<ManifestSegment> Workspace::QuestionSegmentsAt(const std::string& question, size_t at) const {
  std::vector<ManifestSegment> segs;
  Append(&segs, "log:" + std::to_string(at), SegmentKind::kUser, "user", workspace::EscapeFreeText(question));
  // Exactly the segments the answer's turn will have in the next prefix, so they are reused.
  std::vector<ManifestSegment> answer;
  Append(&answer, "log:" + std::to_string(at + 1), SegmentKind::kConversation, "assistant", "");
  segs.push_back(std::move(answer.front()));
  return segs;
}

bool Workspace::NeedsCompaction(int64_t extra_tokens) const {
  if (opt_.mode != AssemblyMode::kEditAware || n_ctx_ <= 0) return false;
  const bool has_notes = std::any_of(log_.begin(), log_.end(), [](const Entry& e) { return e.kind == Entry::kNote; });
  if (!has_notes) return false;
  const auto share = [&](double s) { return static_cast<int64_t>(s * static_cast<double>(n_ctx_)); };
  const int64_t room = share(opt_.compact_room_share);
  // Short of room, but only when folding the notes would give it back (not when the
  // conversation itself fills the context: compacting then would only repeat every turn).
  const bool short_of_room = n_ctx_ - context_tokens_ < room && n_ctx_ - (context_tokens_ - note_tokens_) >= room;
  return note_tokens_ > share(opt_.compact_notes_share) || short_of_room || context_tokens_ + extra_tokens > n_ctx_;
}

bool Workspace::CompactionDue() const {
  MutexLock lock(&mu_);
  return NeedsCompaction(0);
}

Result<PrefixStatus> Workspace::PrefillView(const ContextManifest& m, size_t log_size, int64_t rewrites,
                                            const ProgressFunc& progress, bool yield) {
  // The daemon's stop, and for a yielding prefill a change that makes its work obsolete.
  std::stop_source stop;
  std::stop_callback on_cancel(opt_.cancel, [&stop] { stop.request_stop(); });
  if (yield) {
    MutexLock lock(&mu_);
    // Rewritten since `m` was made: obsolete before it starts.
    if (rewrites != rewrites_) return Fail(ErrorCode::kCancelled, "ensure_prefix cancelled: the workspace changed");
    yielding_ = &stop;
  }
  auto st = session_->EnsurePrefix({m, progress, 0, stop.get_token()});
  MutexLock lock(&mu_);
  if (yield) yielding_ = nullptr;
  if (!st) return st;
  prefilled_log_size_ = log_size;
  prefilled_rewrites_ = rewrites;
  context_tokens_ = st->tokens_resident;
  // The log starts after the stable part's segments.
  int64_t stable = 0;
  for (size_t i = 0; i < m.segments().size(); ++i) {
    stable += st->segment_tokens[i];
    if (m.segments()[i].id == "system:close") break;
  }
  log_tokens_ = st->tokens_resident - stable;
  note_tokens_ = 0;
  for (size_t i = 0; i < m.segments().size(); ++i) {
    if (m.segments()[i].kind == SegmentKind::kChangeNote) note_tokens_ += st->segment_tokens[i];
  }
  return st;
}

Result<PrefixStatus> Workspace::PrefillManifest(const ProgressFunc& progress, bool yield) {
  ContextManifest m;
  size_t log_size;
  int64_t rewrites;
  {
    MutexLock lock(&mu_);
    m = ManifestOf(base_, log_);
    log_size = log_.size();
    rewrites = rewrites_;  // with the manifest: a rewrite after it leaves the prefill stale
  }
  return PrefillView(m, log_size, rewrites, progress, yield);
}

Result<PrefixStatus> Workspace::EnsureCurrent(const PrefillHooks& hooks) {
  bool compact;
  {
    MutexLock lock(&mu_);
    prefilled_ = true;
    compact = !opt_.compact_in_background && NeedsCompaction(0);
  }
  if (compact) return Compact(hooks.progress);
  auto st = PrefillManifest(hooks.progress, hooks.yield_to_changes);
  if (!st && st.error().Is(ErrorCode::kContextOverflow) && opt_.mode == AssemblyMode::kEditAware) {
    // Folding the notes in may make it fit; if not, the caller gets the overflow with its counts.
    return CompactForOverflow(hooks);
  }
  return st;
}

Result<PrefixStatus> Workspace::CompactForOverflow(const PrefillHooks& hooks) {
  if (hooks.finish_compaction) {
    auto st = hooks.finish_compaction(hooks.progress);
    // Adopted, or failed for a reason compacting here would not fix (e.g. the daemon is stopping).
    // An overflow after adoption (the entries carried over do not fit) may still fit once they are
    // folded in too.
    if (st || !(st.error().Is(ErrorCode::kNotFound) || st.error().Is(ErrorCode::kContextOverflow))) return st;
  }
  return Compact(hooks.progress);
}

Result<PrefixStatus> Workspace::Prefill(const PrefillHooks& hooks) { return EnsureCurrent(hooks); }

std::pair<Workspace::Files, std::vector<LogEntry>> Workspace::CompactState(int64_t keep_turns) const {
  // Unchanged files first, then the changed ones: a compaction re-prefills from the first file
  // that differs, and the files being worked on are the ones likely to change again, so at the next
  // compaction the KV of everything before them is kept.
  Files base;
  for (bool changed : {false, true}) {
    for (const auto& [path, content] : base_) {
      auto it = files_.find(path);
      if (it != files_.end() && (it->second != content) == changed) base.emplace_back(path, it->second);
    }
  }
  for (const auto& [path, content] : files_) {
    if (std::none_of(base.begin(), base.end(), [&](const auto& f) { return f.first == path; })) {
      base.emplace_back(path, content);
    }
  }
  std::vector<Entry> log;
  for (const Entry& e : log_) {
    if (e.kind != Entry::kTurn) continue;
    log.push_back({Entry::kTurn, e.role, e.sent ? *e.sent : e.text, std::nullopt});  // message notes folded in
  }
  if (keep_turns >= 0 && static_cast<int64_t>(log.size()) > keep_turns) {
    auto first = log.end() - keep_turns;
    while (first != log.end() && first->role == "assistant") ++first;  // no answer without its question
    log.erase(log.begin(), first);
  }
  return {std::move(base), std::move(log)};
}

CompactionPlan Workspace::PlanLocked(int64_t keep_turns) const {
  CompactionPlan plan;
  std::tie(plan.base, plan.log) = CompactState(keep_turns);
  plan.generation = generation_;
  plan.rewrites = rewrites_;
  plan.log_size = log_.size();
  plan.manifest = ManifestOf(plan.base, plan.log);
  return plan;
}

CompactionPlan Workspace::PlanCompaction() const {
  MutexLock lock(&mu_);
  return PlanLocked(-1);
}

bool Workspace::PlanIsCurrent(const CompactionPlan& plan) const {
  return plan.generation == generation_ && plan.rewrites == rewrites_ && plan.log_size <= log_.size();
}

void Workspace::Install(const CompactionPlan& plan) {
  std::vector<Entry> log = plan.log;
  // Messages the client edited since the plan (edit-aware): the plan holds the text as it was
  // then, the notes carried over below tell the change, and the entry keeps what was sent since.
  // plan.log holds the last of the turns before plan.log_size (keep_turns drops the first).
  std::vector<const Entry*> turns;
  for (size_t i = 0; i < plan.log_size; ++i) {
    if (log_[i].kind == Entry::kTurn) turns.push_back(&log_[i]);
  }
  const size_t skip = turns.size() > log.size() ? turns.size() - log.size() : 0;
  for (size_t j = 0; j < log.size() && skip + j < turns.size(); ++j) {
    const Entry& now = *turns[skip + j];
    const std::string& sent = now.sent ? *now.sent : now.text;
    if (sent != log[j].text) log[j].sent = sent;
  }
  log.insert(log.end(), log_.begin() + static_cast<long>(plan.log_size), log_.end());
  base_ = plan.base;
  log_ = std::move(log);
  ++compactions_;
  ++generation_;
}

// Changes during the prefill go on: appends are carried over; a change that is not an append
// (the stable part, or in place) makes the plan stale, and it is made again from the new state
// (the KV before the change is kept).
Result<PrefixStatus> Workspace::Compact(const ProgressFunc& progress, int64_t keep_turns) {
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    CompactionPlan plan;
    {
      MutexLock lock(&mu_);
      prefilled_ = true;
      plan = PlanLocked(keep_turns);
    }
    // Prefilled before it is installed: on failure nothing changes.
    auto st = PrefillView(plan.manifest, plan.log.size(), plan.rewrites, progress, false);
    if (!st) return keep_turns < 0 ? Fail(OverflowHint(st.error())) : st;
    MutexLock lock(&mu_);
    if (PlanIsCurrent(plan)) {
      Install(plan);
      ++compactions_in_place_;
      return st;
    }
    if (attempt == kAttempts) {
      return Fail(ErrorCode::kBusy, "the workspace kept changing while it was compacted; retry");
    }
  }
}

Result<ContextManifest> Workspace::AdoptionManifestLocked(const CompactionPlan& plan, size_t* log_size) const {
  if (!PlanIsCurrent(plan)) return Fail(ErrorCode::kCancelled, "compaction plan is stale: the workspace changed since");
  std::vector<Entry> log = plan.log;
  log.insert(log.end(), log_.begin() + static_cast<long>(plan.log_size), log_.end());
  *log_size = log.size();
  return ManifestOf(plan.base, log);
}

Result<ContextManifest> Workspace::AdoptionManifest(const CompactionPlan& plan) const {
  MutexLock lock(&mu_);
  size_t log_size;
  return AdoptionManifestLocked(plan, &log_size);
}

Result<PrefixStatus> Workspace::AdoptCompaction(const CompactionPlan& plan, Session* fresh) {
  ContextManifest m;
  size_t log_size;
  {
    MutexLock lock(&mu_);
    auto made = AdoptionManifestLocked(plan, &log_size);
    if (!made) return Fail(made.error());
    m = std::move(*made);
  }
  // The fresh session holds the plan's manifest; this prefills only what came after it.
  Session* saved_session = std::exchange(session_, fresh);
  auto st = PrefillView(m, log_size, plan.rewrites, {}, false);
  MutexLock lock(&mu_);
  if (st && !PlanIsCurrent(plan)) {
    st = Fail(ErrorCode::kCancelled, "compaction plan is stale: the workspace changed since");
  }
  if (!st) {
    session_ = saved_session;
    prefilled_rewrites_ = -1;  // the accounting described the fresh session
    return st;
  }
  Install(plan);
  return st;
}

Status Workspace::CheckAsk(const std::string& question, const DecodeConfig& cfg) const {
  if (auto ok = CheckText("question", question); !ok) return ok;
  {
    MutexLock lock(&mu_);
    if (auto ok = CheckRoom(static_cast<int64_t>(question.size())); !ok) return ok;
  }
  // No compaction makes room for an answer as long as the whole context.
  if (n_ctx_ > 0 && cfg.max_tokens >= n_ctx_) return Fail(Error::ContextOverflow("decode", 0, cfg.max_tokens, n_ctx_));
  return {};
}

Result<AskResult> Workspace::Ask(const std::string& question, const DecodeConfig& cfg, const ChunkCallback& on_chunk,
                                 const PrefillHooks& hooks) {
  if (auto ok = CheckAsk(question, cfg); !ok) return Fail(ok.error());
  AskResult r;
  const auto compactions = [this] {
    MutexLock lock(&mu_);
    return compactions_;
  };
  // Where the question goes in the log: right after what was prefilled. Changes that arrive
  // while it is answered come after its turns, as the model saw none of them.
  const auto prefilled_at = [this] {
    MutexLock lock(&mu_);
    return prefilled_log_size_;
  };
  const int64_t before = compactions();
  auto ps = EnsureCurrent(hooks);
  if (!ps) return Fail(OverflowHint(ps.error()));
  size_t at = prefilled_at();
  SuffixInput suffix{ps->manifest_digest, QuestionSegmentsAt(question, at), {}, opt_.cancel};
  auto ss = session_->PrefillSuffix(suffix);
  Result<DecodeResult> dr = Fail(ErrorCode::kInternal, "not decoded");
  if (ss) dr = session_->Decode(cfg, on_chunk);
  // The question or the answer's room (max_tokens) overflows: folding the notes in may make room.
  const auto overflowed = [](const auto& x) { return !x && x.error().Is(ErrorCode::kContextOverflow); };
  bool retry;
  {
    MutexLock lock(&mu_);
    retry = (overflowed(ss) || (ss && overflowed(dr))) && NeedsCompaction(1 << 30);
  }
  if (retry) {
    ps = CompactForOverflow(hooks);
    if (!ps) return Fail(OverflowHint(ps.error()));
    at = prefilled_at();
    suffix.prefix_digest = ps->manifest_digest;
    suffix.segments = QuestionSegmentsAt(question, at);
    ss = session_->PrefillSuffix(suffix);
    if (ss) dr = session_->Decode(cfg, on_chunk);
  }
  if (!ss) return Fail(OverflowHint(ss.error()));
  if (!dr) return Fail(OverflowHint(dr.error()));
  r.prefix = *ps;
  r.suffix = *ss;
  r.decode = *dr;
  MutexLock lock(&mu_);
  r.compacted = compactions_ != before;
  asked_ = true;
  // A cancelled ask leaves no trace in the log: a client that retries the
  // question must not find it (and a partial answer) twice.
  if (dr->finish != FinishReason::kCancelled) {
    const auto pos = log_.begin() + static_cast<long>(std::min(at, log_.size()));
    log_.insert(pos, {{Entry::kTurn, "user", question}, {Entry::kTurn, "assistant", dr->text}});
    if (at == prefilled_log_size_) prefilled_log_size_ += 2;  // the KV holds them: not a change to prefill
  }
  return r;
}

Error Workspace::OverflowHint(Error e) const {
  // The conversation's tokens as of the last prefill; the hint only where they are a real part of
  // the context (an oversized file is not fixed by dropping turns).
  int64_t conversation;
  {
    MutexLock lock(&mu_);
    conversation = log_tokens_ - note_tokens_;
  }
  if (!e.Is(ErrorCode::kContextOverflow) || conversation * 4 < n_ctx_ ||
      e.message().find("keep_turns") != std::string::npos) {
    return e;
  }
  return e.WithMessage(e.message() + "; the conversation takes " + std::to_string(conversation) +
                       " tokens and compaction keeps it: to go on, compact keeping only its last turns "
                       "(keep_turns), or use a larger n_ctx");
}

WorkspaceStats Workspace::Stats() const {
  MutexLock lock(&mu_);
  WorkspaceStats s;
  s.mode = opt_.mode;
  s.files = static_cast<int64_t>(files_.size());
  s.log_entries = static_cast<int64_t>(log_.size());
  s.notes = std::count_if(log_.begin(), log_.end(), [](const Entry& e) { return e.kind == Entry::kNote; });
  s.compactions = compactions_;
  s.compactions_in_place = compactions_in_place_;
  s.context_tokens = context_tokens_;
  s.log_tokens = log_tokens_;
  s.note_tokens = note_tokens_;
  return s;
}

}  // namespace modeld
