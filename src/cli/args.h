// The CLI's flag reader: --name value, --name (a flag), repeatable values.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace modeld::cli {

class Args {
 public:
  Args(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) args_.emplace_back(argv[i]);
  }
  bool Flag(std::string_view name) {
    auto it = std::find(args_.begin(), args_.end(), name);
    if (it == args_.end()) return false;
    args_.erase(it);
    return true;
  }
  std::optional<std::string> Value(std::string_view name) {
    auto it = std::find(args_.begin(), args_.end(), name);
    if (it == args_.end()) return std::nullopt;
    if (std::next(it) == args_.end()) {
      error_ = std::string(name) + " needs a value";
      args_.erase(it);
      return std::nullopt;
    }
    std::string v = *std::next(it);
    args_.erase(it, it + 2);
    return v;
  }
  // Every value of a repeatable flag, in order.
  std::vector<std::string> Values(std::string_view name) {
    std::vector<std::string> out;
    while (auto v = Value(name)) out.push_back(std::move(*v));
    return out;
  }
  long long Int(std::string_view name, long long def) {
    auto v = Value(name);
    if (!v) return def;
    char* end = nullptr;
    const long long x = std::strtoll(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0') error_ = std::string(name) + ": not an integer: " + *v;
    return x;
  }
  double Double(std::string_view name, double def) {
    auto v = Value(name);
    if (!v) return def;
    char* end = nullptr;
    const double x = std::strtod(v->c_str(), &end);
    if (v->empty() || *end != '\0') error_ = std::string(name) + ": not a number: " + *v;
    return x;
  }
  const std::vector<std::string>& rest() const { return args_; }
  const std::string& error() const { return error_; }

 private:
  std::vector<std::string> args_;
  std::string error_;
};

}  // namespace modeld::cli
