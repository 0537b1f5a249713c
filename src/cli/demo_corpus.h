// Real source files embedded at build time for `modeld demo`.
#pragma once

#include <string_view>
#include <vector>

namespace modeld::cli {

struct DemoFile {
  std::string_view path;
  std::string_view content;
};

const std::vector<DemoFile>& DemoCorpus();

}  // namespace modeld::cli
