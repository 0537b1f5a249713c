// Where modeld keeps its files, and the built-in default model.
#pragma once

#include <string>

#include "modeld/error.h"

namespace modeld::cli {

// $MODELD_HOME, else $XDG_CACHE_HOME/modeld, else ~/.cache/modeld.
std::string HomeDir();
// The tokenizer vocabularies of the pinned llama.cpp tree ($MODELD_VOCAB_DIR overrides).
std::string VocabDir();
// Path of the built-in default model, generating it (once) if missing.
Result<std::string> EnsureDefaultModel(bool verbose);
// A whole text file of at most `max_bytes` (checked before it is read).
Result<std::string> ReadSmallFile(const std::string& path, int64_t max_bytes);

}  // namespace modeld::cli
