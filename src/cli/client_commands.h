// CLI subcommands that talk to a running daemon (`modeld serve`) through modeld::client.
#pragma once

#include <string_view>

namespace modeld::cli {

// Runs `modeld <cmd> ...` for cmd in {sessions, run, report, close, health, ask, ws}; argv[2..] are the
// command's arguments. Returns the exit status, or -1 when cmd is not one of these.
int RunClientCommand(std::string_view cmd, int argc, char** argv);

// The usage lines of these commands, for the CLI's help text.
std::string_view ClientCommandsUsage();

}  // namespace modeld::cli
