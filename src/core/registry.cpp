#include "modeld/registry.h"

#include <map>
#include <mutex>

namespace modeld {
namespace {

// The documented registry: backends by kind.
struct Registry {
  std::mutex mu;
  std::map<std::string, std::shared_ptr<Backend>, std::less<>> backends;
};

Registry& GetRegistry() {
  static Registry r;  // function-local: safe to use from other static initializers
  return r;
}

}  // namespace

void RegisterBackend(std::shared_ptr<Backend> backend) {
  auto& r = GetRegistry();
  std::lock_guard lock(r.mu);
  std::string kind(backend->kind());
  r.backends[kind] = std::move(backend);
}

std::shared_ptr<Backend> FindBackend(std::string_view kind) {
  auto& r = GetRegistry();
  std::lock_guard lock(r.mu);
  auto it = r.backends.find(kind);
  return it == r.backends.end() ? nullptr : it->second;
}

std::vector<std::string> BackendKinds() {
  auto& r = GetRegistry();
  std::lock_guard lock(r.mu);
  std::vector<std::string> kinds;
  for (const auto& [k, _] : r.backends) kinds.push_back(k);
  return kinds;
}

bool SessionAvailable() { return !BackendKinds().empty(); }

bool EmbedAvailable() {
  auto& r = GetRegistry();
  std::lock_guard lock(r.mu);
  for (const auto& [_, b] : r.backends) {
    if (b->CanEmbed()) return true;
  }
  return false;
}

}  // namespace modeld
