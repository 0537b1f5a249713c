#include "cli/token_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "daemon/server.h"

namespace modeld::cli {

Result<std::string> ReadTokenFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Fail(ErrorCode::kIoError, "cannot read the token file " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return Fail(ErrorCode::kInvalidArgument, "the token file " + path + " is not a file");
  if ((st.st_mode & 077) != 0) {
    return Fail(ErrorCode::kInvalidArgument, "the token file " + path +
                                                 " may be read or written by group or others; the token is a "
                                                 "secret: chmod 600 " +
                                                 path);
  }
  constexpr size_t kMaxFileBytes = 4096;
  if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes) {
    return Fail(ErrorCode::kInvalidArgument, "the token file " + path + " is over 4 KiB: is it the right file?");
  }
  std::ifstream f(path, std::ios::binary);
  std::string token;
  if (!f || !std::getline(f, token)) {
    return Fail(ErrorCode::kIoError, "cannot read a token from the first line of " + path);
  }
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) token.pop_back();
  for (unsigned char c : token) {
    if (c <= ' ' || c == 0x7f) {
      return Fail(ErrorCode::kInvalidArgument, "the token in " + path + " has blanks or control characters in it");
    }
  }
  if (token.size() < daemon::kMinTokenBytes) {
    return Fail(ErrorCode::kInvalidArgument, "the token in " + path + " is " + std::to_string(token.size()) +
                                                 " bytes; at least " + std::to_string(daemon::kMinTokenBytes) +
                                                 " are required (e.g. openssl rand -hex 24 > " + path + ")");
  }
  return token;
}

}  // namespace modeld::cli
