// The context manifest: what a session's context holds, as ordered segments
// with content digests. Warm KV reuse is keyed on it.
//
// Each segment is tokenized on its own, so an edit in one segment never
// changes another segment's tokens. Special tokens (BOS, chat-template
// markers) are never added implicitly: a segment whose text contains them
// sets parse_special so they are read as special tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modeld/error.h"

namespace modeld {

enum class SegmentKind { kSystem, kTools, kRepoMap, kFile, kConversation, kUser, kChangeNote, kTemplate, kOther };

std::string_view SegmentKindName(SegmentKind kind);  // "system", "tools", "repo_map", ...
std::optional<SegmentKind> SegmentKindFromName(std::string_view name);

struct ManifestSegment {
  std::string id;  // caller's label, e.g. "file:src/main.cc"; not part of the digest
  SegmentKind kind = SegmentKind::kOther;
  std::string content;
  bool parse_special = false;       // read special-token text (e.g. "<|im_start|>") as special tokens
  std::string digest;               // SegmentDigest(content, parse_special): what the tokens depend on
  std::optional<int32_t> n_tokens;  // filled by the backend once tokenized

  static ManifestSegment Make(std::string id, SegmentKind kind, std::string content, bool parse_special = false);
};

// Hex SHA-256 of everything a segment's tokens depend on.
std::string SegmentDigest(std::string_view content, bool parse_special);

class ContextManifest {
 public:
  ContextManifest() = default;
  explicit ContextManifest(std::vector<ManifestSegment> segments);

  ManifestSegment& Add(std::string id, SegmentKind kind, std::string content, bool parse_special = false);

  const std::vector<ManifestSegment>& segments() const { return segments_; }
  std::vector<ManifestSegment>& mutable_segments() { return segments_; }
  size_t size() const { return segments_.size(); }
  bool empty() const { return segments_.empty(); }

  // Hex SHA-256 over the ordered segment digests. Two manifests with the same
  // digest tokenize to the same token sequence on the same model.
  std::string Digest() const;

  // Every segment digest matches its content; ids are unique.
  Status Validate() const;

 private:
  std::vector<ManifestSegment> segments_;
};

// Counts tokens with a session's tokenizer, so a runtime can fit a budget.
using TokenizeFunc = std::function<Result<std::vector<int32_t>>(std::string_view text, bool parse_special)>;

}  // namespace modeld
