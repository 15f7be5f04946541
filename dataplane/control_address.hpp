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

}  // namespace flotilla
