// The llama.cpp adapter's ChatFormat: llama.cpp's common library renders the model's Jinja chat
// template, builds the tool-call or JSON-schema grammar and parses answers, as llama-server does.
#pragma once

#include <llama.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "llama/llama_model.h"
#include "modeld/chat.h"

// From llama.cpp's common library, kept out of this header's users.
struct common_params_sampling;

namespace modeld::llama {

// The grammar part of a decode: llama-server's sampling fields for it, resolved on the vocab.
class LlamaConstraint final : public DecodeConstraint {
 public:
  struct Trigger {
    int type = 0;  // common_grammar_trigger_type
    std::string value;
    llama_token token = LLAMA_TOKEN_NULL;
  };
  int grammar_type = 0;  // common_grammar_type
  std::string grammar;   // GBNF
  bool lazy = false;
  std::vector<Trigger> triggers;
  std::set<llama_token> preserved_tokens;
  std::string generation_prompt;
  std::string model_digest;  // the vocab it was resolved on

  // Fills the grammar fields of llama.cpp's sampling parameters.
  void ApplyTo(common_params_sampling& p) const;
};

// Opens the chat format of a model: its template, or `override_template` when not empty.
Result<std::shared_ptr<const ChatFormat>> OpenLlamaChatFormat(const ModelInfo& info,
                                                              const std::string& override_template);

}  // namespace modeld::llama
