// Where the supervisor's control socket is and how to reach it: shared by the supervisor's server
// (control_socket.cpp), its clients (the CLI) and leased components (ComponentHost::lease), which
// must not link the supervisor itself.
#pragma once

#include <sys/un.h>

#include <string>

#include "dataplane/result.hpp"
#include "dataplane/unique_fd.hpp"

namespace flotilla {

// $FLOTILLA_SOCKET, else /run/flotilla/control.sock for root, /tmp/flotilla-UID/control.sock
// for anyone else.
std::string default_socket_path();

Result<sockaddr_un> control_address(const std::string& path);

// The file fleet's descriptor table of the stack whose control socket is `socket_path`, beside
// it: the preload library makes it; the supervisor removes it with its socket.
inline std::string descriptor_table_path(const std::string& socket_path) { return socket_path + ".fds"; }

// A SOCK_SEQPACKET connection to the supervisor at `path` (close-on-exec). Errc::closed when no
// supervisor listens there.
Result<UniqueFd> connect_control(const std::string& path);

// `flotilla run` hands its program a connection to the supervisor, open across exec, and names its
// descriptor in this variable: the grant. The control socket is for root (or the supervisor's
// user) alone; through the grant the program and every process it starts lease seats whatever
// user they become (runuser, su, a server dropping root) and wherever they chroot.
inline constexpr const char* kGrantVariable = "FLOTILLA_GRANT_FD";
// The lowest number the library's descriptors and the grant take: below it are the numbers
// programs name themselves (a shell's `exec 3<file`, a daemon reopening 0, 1 and 2).
inline constexpr int kLibraryDescriptorsFrom = 64;

}  // namespace flotilla
