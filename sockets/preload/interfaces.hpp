// The interface the stack drives, as a program under `flotilla run` sees it: `flotilla run` names
// its kernel index and the stack's address there, and the library shows that address among the
// program's interfaces (getifaddrs, a netlink dump of addresses) and as the interface a TCP
// connection arrived on (IP_PKTOPTIONS). On Linux a server that checks where a client came in
// (dnsmasq) or listens on each address it has (named) finds its own addresses there.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace flotilla::preload {

inline constexpr const char* kInterfaceIndexVariable = "FLOTILLA_INTERFACE_INDEX";
inline constexpr const char* kInterfaceAddressVariable = "FLOTILLA_INTERFACE_ADDRESS";  // "10.77.0.2/24"

struct StackInterface {
  int index = 0;                // the kernel's index of the interface
  std::uint32_t address = 0;    // host order
  std::uint8_t prefix_length = 0;
};
// What `flotilla run` said (read once); nothing when it named no interface or no valid address.
std::optional<StackInterface> stack_interface();

// Whether `address` is one of the kernel's own addresses other than the stack's (this host's eth0,
// say): a connection to it is the kernel's, as on Linux. Read once; false with no stack interface.
bool kernel_host_address(std::uint32_t address);

// Netlink: a NETLINK_ROUTE socket's requests and replies (calls_interfaces.cpp). `watch_netlink`
// notes a new kernel socket; a request that dumps IPv4 addresses marks the socket so that the
// dump's end brings the stack's address first.
void watch_netlink(int fd, int domain, int protocol);
void forget_netlink(int fd);
bool is_watched_netlink(int fd);
void note_netlink_request(int fd, const void* bytes, std::size_t length);
// recvmsg on a watched socket: the kernel's reply, with the stack's address before the dump's end.
ssize_t receive_netlink(int fd, struct msghdr* message, int flags);

// The interface ioctls a program asks on any socket (SIOCGIFCONF, SIOCGIFADDR, SIOCGIFNETMASK,
// SIOCGIFBRDADDR): the stack's address on its interface; nothing for every other request or name
// (the kernel answers those).
std::optional<int> interface_ioctl(int fd, unsigned long request, void* argument);
// An interface ioctl as the kernel answers it: on `fd`, or, for a Flotilla socket (an eventfd to
// the kernel), on a kernel socket of its own.
int kernel_interface_ioctl(int fd, unsigned long request, void* argument);

}  // namespace flotilla::preload
