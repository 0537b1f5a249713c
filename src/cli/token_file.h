// The bearer-token file of the TCP listener, read the same way by `modeld serve` and by the
// client commands (docs/RELIABILITY.md).
#pragma once

#include <string>

#include "modeld/error.h"

namespace modeld::cli {

// The token is the file's first line, without its line ending ("\n" or "\r\n") and trailing
// blanks. Refused (kInvalidArgument, saying how to fix it): a file that group or others may
// read or write (the token is a secret: chmod 600), a token shorter than kMinTokenBytes, one
// with blanks or control characters inside, a file over 4 KiB. kIoError when unreadable.
Result<std::string> ReadTokenFile(const std::string& path);

}  // namespace modeld::cli
