// `modeld demo`: a scripted coding loop on a live session, in-process.
#pragma once

#include <string>

namespace modeld::cli {

struct DemoOptions {
  std::string model_path;  // "" = the built-in default model
  int turns = 3;
  int decode_tokens = 16;
  int n_ctx = 8192;
  int threads = 0;
  bool via_daemon = false;  // spawn `modeld serve` and run the loop through the wire protocol
};

int RunDemo(const DemoOptions& opt);

}  // namespace modeld::cli
