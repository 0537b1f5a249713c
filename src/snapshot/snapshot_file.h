// The snapshot file: a session's state (SessionSnapshot), the config it was opened with and, for a
// workspace, the workspace's state, in one checksummed file. docs/snapshot.md has the layout and
// what a restore checks.
//
// Encode and Decode are pure functions of bytes (no disk): the store (snapshot_store.h) writes and
// reads the files, the writer (snapshot_writer.h) does it off the request path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "modeld/error.h"
#include "modeld/session.h"
#include "modeld/workspace.h"

namespace modeld::snapshot {

inline constexpr char kMagic[8] = {'M', 'O', 'D', 'E', 'L', 'D', 'S', 'N'};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kFixedHeaderBytes = 48;
inline constexpr size_t kTrailerBytes = 8;  // the whole file's checksum
// Limits, checked against the header before anything is allocated.
inline constexpr uint64_t kMaxMetaBytes = uint64_t{512} << 20;
inline constexpr uint64_t kMaxTokens = uint64_t{1} << 24;
inline constexpr uint64_t kMaxStateBytes = uint64_t{64} << 30;
// The largest file the limits allow (with room to spare): what a reader may allocate at most.
inline constexpr uint64_t kMaxFileBytes = kMaxStateBytes + (uint64_t{1} << 30);

struct SnapshotFile {
  std::string workspace;  // the workspace id (1-128 chars of A-Za-z0-9._-:@+)
  std::string model;      // the served model's name in the daemon
  int64_t saved_unix_ms = 0;
  SessionConfig config;  // the session config it was opened with
  SessionSnapshot session;
  std::optional<WorkspaceState> workspace_state;  // absent for a bare session
};

// What list/show need without reading the tokens and the state: everything but those two.
struct SnapshotInfo {
  std::string workspace, model;
  int64_t saved_unix_ms = 0;
  SnapshotIdentity identity;
  int64_t n_tokens = 0;
  int64_t state_bytes = 0;
  int64_t file_bytes = 0;
  std::string prefix_digest;
  int64_t files = 0;        // the workspace state's files; 0 for a bare session
  int64_t log_entries = 0;  // ... and its log entries
};

// A workspace id as the daemon accepts it: 1-128 chars of A-Za-z0-9 and ._-:@+
bool ValidWorkspaceId(std::string_view id);

// The whole file's bytes. kInvalidArgument for a file Decode would refuse: a bad workspace id,
// sizes past the limits, incoherent content (segments, log), strings that are not UTF-8.
Result<std::string> Encode(const SnapshotFile& f);
// The same file in three parts, the state in its own buffer (moved from `f`, not copied): the
// writer writes them in order, then can give the state's buffer back for reuse.
struct EncodedFile {
  std::string head;     // the fixed header, the meta and the tokens
  std::string state;    // the session's state
  std::string trailer;  // the whole file's checksum
  uint64_t size() const { return head.size() + state.size() + trailer.size(); }
};
Result<EncodedFile> EncodeParts(SnapshotFile&& f);

// Checks everything (sizes, both checksums, the meta's fields, coherence) before returning.
// kCorruptSnapshot for bad content, kUnsupportedVersion for another format version, kTruncated
// for bytes shorter than the header says.
Result<SnapshotFile> Decode(std::string_view bytes);
// The same, taking the bytes: their buffer becomes the state (no copy of it). On an error the
// bytes are left as they were.
Result<SnapshotFile> Decode(std::string&& bytes);

// The same from the file's parts (a store's ReadParts): the state's buffer is taken as it is, and on an
// error the parts are left as they were.
Result<SnapshotFile> Decode(EncodedFile&& parts);
// Where the state lies in the file, from its first kFixedHeaderBytes (checked as HeadBytes does);
// the trailer follows it.
struct StateRange {
  uint64_t at = 0;
  uint64_t len = 0;
};
Result<StateRange> StateRangeOf(std::string_view fixed_header);
// How many bytes of the file DecodeInfo needs (kFixedHeaderBytes + meta_len), from its first
// kFixedHeaderBytes: the header is checked (magic, version, flags, limits) first.
Result<size_t> HeadBytes(std::string_view fixed_header);

// From the first bytes only (at least HeadBytes(): fixed header + meta) and the file's size:
// verifies the header's own checksum (so the meta is trusted without reading the rest), the
// sizes against file_bytes and the meta's coherence. The whole-file checksum is not verified.
Result<SnapshotInfo> DecodeInfo(std::string_view head, int64_t file_bytes);

}  // namespace modeld::snapshot
