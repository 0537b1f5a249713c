// A directory of snapshot files, one per workspace ("ws-<id>.snap"), written crash-safely and kept
// within a byte budget by dropping the least recently used. docs/snapshot.md.
//
// The store assumes it is the directory's only writer (one daemon per directory): it keeps an index
// of the files (sizes, use order), built at Open from the directory and kept by its own calls.
// Thread-safe; the bytes are opaque to it except for Info and List, which decode the head.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/fd.h"
#include "modeld/error.h"
#include "modeld/mutex.h"
#include "snapshot/snapshot_file.h"

namespace modeld::snapshot {

struct StoreOptions {
  std::string dir;
  int64_t budget_bytes = 0;  // 0 = unlimited
};

class SnapshotStore {
 public:
  // Creates dir (mode 0700, parents too) and removes the temporary files earlier runs left.
  static Result<std::unique_ptr<SnapshotStore>> Open(StoreOptions opt);

  // Replaces the workspace's snapshot with `bytes`, crash-safely: a temporary file in the directory,
  // fsync, rename over the final name, fsync of the directory. On failure (kIoError; ENOSPC reads
  // "No space left on device") the temporary file is removed and the previous snapshot stays whole.
  // Then prunes to the budget (never the one just written). kInvalidArgument for a bad id.
  Status Write(const std::string& workspace, std::string_view bytes);
  // The same, the file's bytes given in parts (written in order).
  Status Write(const std::string& workspace, std::span<const std::string_view> parts);
  // The whole file (kNotFound when none); marks it used for the LRU order (and its mtime, so the
  // order survives a restart). kCorruptSnapshot for a file past kMaxFileBytes (nothing allocated).
  Result<std::string> Read(const std::string& workspace);
  // The same in its parts (Decode(EncodedFile&&) takes them): the state is read into out->state,
  // whose buffer is reused when large enough (a restore reads into the last one's), at the front,
  // where the session wants it. The sizes are checked against the header before anything is
  // allocated (kTruncated, kCorruptSnapshot); on an error the parts' contents are unspecified.
  Status ReadParts(const std::string& workspace, EncodedFile* out);
  // DecodeInfo of the file's head (reads only that).
  Result<SnapshotInfo> Info(const std::string& workspace);
  // Every snapshot whose head decodes, by workspace id; the others are skipped, one stderr line each.
  std::vector<SnapshotInfo> List();
  Status Remove(const std::string& workspace);  // kNotFound when none
  bool Contains(const std::string& workspace);
  int64_t TotalBytes();  // of the snapshot files (not of temporary files)

  const std::string& dir() const { return opt_.dir; }
  // The file's path in the directory: dir + "/ws-" + workspace + ".snap".
  std::string PathOf(const std::string& workspace) const;

 private:
  explicit SnapshotStore(StoreOptions opt) : opt_(std::move(opt)) {}
  struct Entry {
    int64_t bytes = 0;
    uint64_t used = 0;  // LRU tick: larger is more recent
  };
  Status SyncDir() const;
  // Opens the workspace's file for reading and marks it used: kNotFound, or kCorruptSnapshot when
  // it is not a regular file or is larger than any snapshot may be.
  Result<format::Fd> OpenToRead(const std::string& workspace, uint64_t* size);
  void PruneLocked(const std::string& keep) REQUIRES(mu_);

  const StoreOptions opt_;
  Mutex mu_;
  std::map<std::string, Entry> index_ GUARDED_BY(mu_);  // by workspace id
  uint64_t tick_ GUARDED_BY(mu_) = 0;
  uint64_t tmp_counter_ GUARDED_BY(mu_) = 0;
};

}  // namespace modeld::snapshot
