// What `flotilla run` can tell of a program before it starts it: the preload library reaches only
// the socket calls a program makes through the C library it loads. A static image, a Go program
// (its runtime makes system calls itself) and a 32-bit image (it cannot load the 64-bit library)
// would run on the kernel's sockets without a word; `flotilla run` says so instead.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace flotilla::cli {

// The file execvp would run for `command`: itself when it names a path, else the first
// executable file of that name on PATH.
std::optional<std::filesystem::path> find_command(const std::string& command);

// Why the program in `image` would make its socket calls past the preload library, or "" when
// they go through it (a dynamic 64-bit ELF image, a script, or a file that cannot be read: exec
// will say what is wrong with it).
std::string library_bypass(const std::filesystem::path& image);

}  // namespace flotilla::cli
