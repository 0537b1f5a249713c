#include "modeld/manifest.h"

#include <array>
#include <unordered_set>

#include "core/sha256.h"

namespace modeld {
namespace {

struct KindEntry {
  SegmentKind kind;
  std::string_view name;
};

constexpr std::array kKinds = {
    KindEntry{SegmentKind::kSystem, "system"},
    KindEntry{SegmentKind::kTools, "tools"},
    KindEntry{SegmentKind::kRepoMap, "repo_map"},
    KindEntry{SegmentKind::kFile, "file"},
    KindEntry{SegmentKind::kConversation, "conversation"},
    KindEntry{SegmentKind::kUser, "user"},
    KindEntry{SegmentKind::kChangeNote, "change_note"},
    KindEntry{SegmentKind::kTemplate, "template"},
    KindEntry{SegmentKind::kOther, "other"},
};

}  // namespace

std::string_view SegmentKindName(SegmentKind kind) {
  for (const auto& e : kKinds) {
    if (e.kind == kind) return e.name;
  }
  return "other";
}

std::optional<SegmentKind> SegmentKindFromName(std::string_view name) {
  for (const auto& e : kKinds) {
    if (e.name == name) return e.kind;
  }
  return std::nullopt;
}

std::string SegmentDigest(std::string_view content, bool parse_special) {
  Sha256 h;
  const char flag = parse_special ? 'S' : 'T';  // the same text read with specials tokenizes differently
  h.Update(&flag, 1);
  h.Update(content);
  return h.HexDigest();
}

ManifestSegment ManifestSegment::Make(std::string id, SegmentKind kind, std::string content, bool parse_special) {
  ManifestSegment s;
  s.id = std::move(id);
  s.kind = kind;
  s.digest = SegmentDigest(content, parse_special);
  s.content = std::move(content);
  s.parse_special = parse_special;
  return s;
}

ContextManifest::ContextManifest(std::vector<ManifestSegment> segments) : segments_(std::move(segments)) {}

ManifestSegment& ContextManifest::Add(std::string id, SegmentKind kind, std::string content, bool parse_special) {
  segments_.push_back(ManifestSegment::Make(std::move(id), kind, std::move(content), parse_special));
  return segments_.back();
}

std::string ContextManifest::Digest() const {
  Sha256 h;
  for (const auto& s : segments_) h.Update(s.digest);
  return h.HexDigest();
}

Status ContextManifest::Validate() const {
  std::unordered_set<std::string_view> ids;
  for (size_t i = 0; i < segments_.size(); ++i) {
    const auto& s = segments_[i];
    if (s.digest != SegmentDigest(s.content, s.parse_special)) {
      return Fail(Error::ManifestMismatch("segment " + std::to_string(i) + " ('" + s.id +
                                          "'): digest does not match its content"));
    }
    if (!s.id.empty() && !ids.insert(s.id).second) {
      return Fail(ErrorCode::kInvalidArgument, "duplicate segment id '" + s.id + "'");
    }
  }
  return {};
}

}  // namespace modeld
