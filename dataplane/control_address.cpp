#include "dataplane/control_address.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace flotilla {

std::string default_socket_path() {
  if (const char* path = std::getenv("FLOTILLA_SOCKET"); path != nullptr && *path != '\0') return path;
  if (::getuid() == 0) return "/run/flotilla/control.sock";
  return "/tmp/flotilla-" + std::to_string(::getuid()) + "/control.sock";
}

Result<sockaddr_un> control_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return Error{Errc::invalid_argument, 0, "control socket path is empty or too long"};
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

Result<UniqueFd> connect_control(const std::string& path) {
  auto address = control_address(path);
  if (!address) return address.error();
  UniqueFd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!socket.valid()) return Error::from_errno("socket");
  if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&address.value()), sizeof(sockaddr_un)) != 0) {
    if (errno == ENOENT || errno == ECONNREFUSED) return Error{Errc::closed, errno, "connect"};
    return Error::from_errno("connect to the supervisor");
  }
  return socket;
}

}  // namespace flotilla
