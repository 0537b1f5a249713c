// SHA-256 (OpenSSL's libcrypto) for model and manifest digests.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace modeld {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  // Lowercase hex of the digest; the object is finished afterwards.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Hex(std::string_view data);

}  // namespace modeld
