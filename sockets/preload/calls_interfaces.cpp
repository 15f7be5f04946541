// The stack's address among the program's interfaces (interfaces.hpp): getifaddrs, and the
// netlink dump of IPv4 addresses that programs ask the kernel for themselves (dnsmasq, which then
// serves a TCP client only when the connection's local address is one of its interfaces').
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

#include "components/wire/address.hpp"
#include "sockets/preload/calls.hpp"
#include "sockets/preload/interfaces.hpp"
#include "sockets/preload/real_calls.hpp"

namespace flotilla::preload {

std::optional<StackInterface> stack_interface() {
  static const std::optional<StackInterface> named = []() -> std::optional<StackInterface> {
    const int index = Runtime::interface_index();
    const char* text = std::getenv(kInterfaceAddressVariable);
    if (index == 0 || text == nullptr) return std::nullopt;
    const auto cidr = wire::parse_cidr(text);
    if (!cidr || cidr->address == 0) return std::nullopt;
    return StackInterface{index, cidr->address, cidr->prefix_length};
  }();
  return named;
}

bool kernel_host_address(std::uint32_t address) {
  const auto stack = stack_interface();
  if (!stack || address == 0 || address == stack->address) return false;
  static const std::vector<std::uint32_t> addresses = [] {
    std::vector<std::uint32_t> found;
    ifaddrs* list = nullptr;
    if (REAL(getifaddrs)(&list) != 0) return found;
    for (const ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
      if (in != nullptr && in->sin_family == AF_INET) found.push_back(ntohl(in->sin_addr.s_addr));
    }
    REAL(freeifaddrs)(list);
    return found;
  }();
  return std::find(addresses.begin(), addresses.end(), address) != addresses.end();
}

namespace {

// Descriptors below this are watched; a NETLINK_ROUTE socket above it gets the kernel's answers
// as they are.
constexpr int kWatchedDescriptors = 4096;
constexpr std::size_t kWords = kWatchedDescriptors / 64;
std::array<std::atomic<std::uint64_t>, kWords> g_route_sockets{};  // NETLINK_ROUTE sockets
std::array<std::atomic<std::uint64_t>, kWords> g_dumping{};         // ...whose address dump runs
std::array<std::atomic<std::uint32_t>, kWatchedDescriptors> g_dump_sequence{};

bool watched(int fd) { return fd >= 0 && fd < kWatchedDescriptors; }
std::uint64_t bit_of(int fd) { return std::uint64_t{1} << (fd % 64); }
bool test(const std::array<std::atomic<std::uint64_t>, kWords>& bits, int fd) {
  return watched(fd) && (bits[static_cast<std::size_t>(fd / 64)].load(std::memory_order_acquire) & bit_of(fd)) != 0;
}
void assign(std::array<std::atomic<std::uint64_t>, kWords>& bits, int fd, bool on) {
  if (!watched(fd)) return;
  auto& word = bits[static_cast<std::size_t>(fd / 64)];
  if (on) {
    word.fetch_or(bit_of(fd), std::memory_order_acq_rel);
  } else {
    word.fetch_and(~bit_of(fd), std::memory_order_acq_rel);
  }
}

// The RTM_NEWADDR the kernel would send for the stack's address.
struct AddressMessage {
  nlmsghdr header;
  ifaddrmsg address;
  rtattr address_attribute;
  in_addr address_value;
  rtattr local_attribute;
  in_addr local_value;
  rtattr broadcast_attribute;
  in_addr broadcast_value;
  rtattr label_attribute;
  char label[IF_NAMESIZE];
};
static_assert(sizeof(AddressMessage) == NLMSG_ALIGN(sizeof(AddressMessage)));

bool address_message(const StackInterface& stack, const nlmsghdr& done, AddressMessage& out) {
  out = AddressMessage{};
  if (::if_indextoname(static_cast<unsigned>(stack.index), out.label) == nullptr) return false;
  out.header.nlmsg_len = sizeof(AddressMessage);
  out.header.nlmsg_type = RTM_NEWADDR;
  out.header.nlmsg_flags = NLM_F_MULTI;
  out.header.nlmsg_seq = done.nlmsg_seq;
  out.header.nlmsg_pid = done.nlmsg_pid;
  out.address.ifa_family = AF_INET;
  out.address.ifa_prefixlen = stack.prefix_length;
  out.address.ifa_flags = IFA_F_PERMANENT;
  out.address.ifa_scope = RT_SCOPE_UNIVERSE;
  out.address.ifa_index = static_cast<std::uint32_t>(stack.index);
  const wire::Ipv4Cidr cidr{stack.address, stack.prefix_length};
  const auto attribute = [](rtattr& header, unsigned short type, std::size_t bytes) {
    header.rta_len = static_cast<unsigned short>(RTA_LENGTH(bytes));
    header.rta_type = type;
  };
  attribute(out.address_attribute, IFA_ADDRESS, sizeof(in_addr));
  out.address_value.s_addr = htonl(stack.address);
  attribute(out.local_attribute, IFA_LOCAL, sizeof(in_addr));
  out.local_value.s_addr = htonl(stack.address);
  attribute(out.broadcast_attribute, IFA_BROADCAST, sizeof(in_addr));
  out.broadcast_value.s_addr = htonl(cidr.broadcast());
  attribute(out.label_attribute, IFA_LABEL, sizeof(out.label));
  return true;
}

// Where the message ending dump `sequence` starts in `bytes` (NLMSG_DONE, or an error that ends it).
std::optional<std::size_t> end_of_dump(const std::byte* bytes, std::size_t length, std::uint32_t sequence) {
  std::size_t offset = 0;
  while (length - offset >= sizeof(nlmsghdr)) {
    nlmsghdr header;
    std::memcpy(&header, bytes + offset, sizeof(header));
    if (header.nlmsg_len < sizeof(nlmsghdr) || header.nlmsg_len > length - offset) return std::nullopt;
    if (header.nlmsg_seq == sequence && (header.nlmsg_type == NLMSG_DONE || header.nlmsg_type == NLMSG_ERROR)) {
      return offset;
    }
    offset += NLMSG_ALIGN(header.nlmsg_len);
  }
  return std::nullopt;
}

// Copies `bytes` into the caller's buffers; how many fitted.
std::size_t scatter(const msghdr& message, const std::byte* bytes, std::size_t length) {
  std::size_t copied = 0;
  for (std::size_t i = 0; i < message.msg_iovlen && copied < length; ++i) {
    const iovec& vector = message.msg_iov[i];
    const std::size_t size = std::min(vector.iov_len, length - copied);
    if (size > 0) std::memcpy(vector.iov_base, bytes + copied, size);
    copied += size;
  }
  return copied;
}

}  // namespace

void watch_netlink(int fd, int domain, int protocol) {
  // A number reused after a close the library did not see is watched afresh.
  assign(g_dumping, fd, false);
  assign(g_route_sockets, fd, domain == AF_NETLINK && protocol == NETLINK_ROUTE && stack_interface());
}

void forget_netlink(int fd) {
  if (!is_watched_netlink(fd)) return;  // every close of a kernel descriptor comes here
  assign(g_route_sockets, fd, false);
  assign(g_dumping, fd, false);
}

bool is_watched_netlink(int fd) { return test(g_route_sockets, fd); }

void note_netlink_request(int fd, const void* bytes, std::size_t length) {
  if (!is_watched_netlink(fd) || bytes == nullptr) return;
  const auto* at = static_cast<const std::byte*>(bytes);
  std::size_t offset = 0;
  while (length - offset >= NLMSG_LENGTH(1)) {
    nlmsghdr header;
    std::memcpy(&header, at + offset, sizeof(header));
    if (header.nlmsg_len < NLMSG_LENGTH(1) || header.nlmsg_len > length - offset) return;
    // rtgenmsg and ifaddrmsg both begin with the family.
    const auto family = static_cast<unsigned char>(at[offset + NLMSG_HDRLEN]);
    if (header.nlmsg_type == RTM_GETADDR && (header.nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP &&
        (family == AF_UNSPEC || family == AF_INET)) {
      g_dump_sequence[static_cast<std::size_t>(fd)].store(header.nlmsg_seq, std::memory_order_relaxed);
      assign(g_dumping, fd, true);
      return;
    }
    offset += NLMSG_ALIGN(header.nlmsg_len);
  }
}

ssize_t receive_netlink(int fd, msghdr* message, int flags) {
  const auto stack = stack_interface();
  if (message == nullptr || !test(g_dumping, fd) || !stack) return REAL(recvmsg)(fd, message, flags);
  // The datagram's whole length, then the datagram itself, with room for the address.
  char first = 0;
  iovec probe_vector{&first, 1};
  msghdr probe{};
  probe.msg_iov = &probe_vector;
  probe.msg_iovlen = 1;
  const ssize_t whole = REAL(recvmsg)(fd, &probe, (flags & MSG_DONTWAIT) | MSG_PEEK | MSG_TRUNC);
  if (whole < 0) return whole;
  std::vector<std::byte> datagram(static_cast<std::size_t>(whole) + sizeof(AddressMessage));
  iovec vector{datagram.data(), static_cast<std::size_t>(whole)};
  msghdr kernel = *message;
  kernel.msg_iov = &vector;
  kernel.msg_iovlen = 1;
  const ssize_t got = REAL(recvmsg)(fd, &kernel, flags & ~MSG_TRUNC);
  if (got < 0) return got;
  auto length = static_cast<std::size_t>(got);
  const std::uint32_t sequence = g_dump_sequence[static_cast<std::size_t>(fd)].load(std::memory_order_relaxed);
  if (const auto end = end_of_dump(datagram.data(), length, sequence)) {
    nlmsghdr done;
    std::memcpy(&done, datagram.data() + *end, sizeof(done));
    AddressMessage added;
    if (done.nlmsg_type == NLMSG_DONE && address_message(*stack, done, added)) {
      std::memmove(datagram.data() + *end + sizeof(added), datagram.data() + *end, length - *end);
      std::memcpy(datagram.data() + *end, &added, sizeof(added));
      length += sizeof(added);
    }
    if ((flags & MSG_PEEK) == 0) assign(g_dumping, fd, false);
  }
  message->msg_namelen = kernel.msg_namelen;
  message->msg_controllen = kernel.msg_controllen;
  message->msg_flags = kernel.msg_flags & ~MSG_TRUNC;
  const std::size_t copied = scatter(*message, datagram.data(), length);
  if (copied < length) message->msg_flags |= MSG_TRUNC;
  return static_cast<ssize_t>((flags & MSG_TRUNC) != 0 ? length : copied);
}

int kernel_interface_ioctl(int fd, unsigned long request, void* argument) {
  if (!is_socket(fd)) return REAL(ioctl)(fd, request, argument);
  const int kernel = REAL(socket)(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (kernel < 0) return -1;
  const int answered = REAL(ioctl)(kernel, request, argument);
  const int error = errno;
  REAL(close)(kernel);
  errno = error;
  return answered;
}

std::optional<int> interface_ioctl(int fd, unsigned long request, void* argument) {
  if (request != SIOCGIFCONF && request != SIOCGIFADDR && request != SIOCGIFNETMASK && request != SIOCGIFBRDADDR) {
    return std::nullopt;
  }
  const auto stack = stack_interface();
  char name[IF_NAMESIZE] = {};
  if (!stack || argument == nullptr || ::if_indextoname(static_cast<unsigned>(stack->index), name) == nullptr) {
    return std::nullopt;
  }
  const wire::Ipv4Cidr cidr{stack->address, stack->prefix_length};
  // An ifreq's address has room for a sockaddr_in.
  const auto ipv4_into = [](sockaddr& out, std::uint32_t address) {
    socklen_t room = sizeof(sockaddr_in);
    copy_address_out(&out, &room, AF_INET, address, 0);
  };
  if (request != SIOCGIFCONF) {
    auto* asked = static_cast<ifreq*>(argument);
    if (std::strncmp(asked->ifr_name, name, IF_NAMESIZE) != 0) return std::nullopt;
    const std::uint32_t value = request == SIOCGIFADDR      ? stack->address
                                : request == SIOCGIFNETMASK ? cidr.mask()
                                                            : cidr.broadcast();
    ipv4_into(asked->ifr_addr, value);
    return 0;
  }
  // The kernel's list of interfaces with IPv4 addresses, then the stack's (or the room it needs).
  auto* list = static_cast<ifconf*>(argument);
  const int room = list->ifc_len;
  if (kernel_interface_ioctl(fd, request, argument) != 0) return -1;
  if (list->ifc_buf == nullptr) {
    list->ifc_len += static_cast<int>(sizeof(ifreq));
    return 0;
  }
  const auto entries = static_cast<std::size_t>(list->ifc_len) / sizeof(ifreq);
  for (std::size_t i = 0; i < entries; ++i) {
    if (std::strncmp(list->ifc_req[i].ifr_name, name, IF_NAMESIZE) == 0) return 0;  // the kernel named it
  }
  if (room - list->ifc_len < static_cast<int>(sizeof(ifreq))) return 0;
  ifreq& added = list->ifc_req[entries];
  added = ifreq{};
  std::memcpy(added.ifr_name, name, sizeof(name));
  ipv4_into(added.ifr_addr, stack->address);
  list->ifc_len += static_cast<int>(sizeof(ifreq));
  return 0;
}

}  // namespace flotilla::preload

using namespace flotilla::preload;

namespace {

// The entry getifaddrs adds for the stack's address: one allocation, which freeifaddrs knows by
// its name pointing into it and its mark.
struct AddedAddress {
  static constexpr std::uint64_t kMark = 0x666c6f7469666164ull;  // "flotifad"
  ifaddrs entry;
  sockaddr_in address;
  sockaddr_in netmask;
  sockaddr_in broadcast;
  char name[IF_NAMESIZE];
  std::uint64_t mark;
};

AddedAddress* added_of(ifaddrs* entry) {
  auto* added = reinterpret_cast<AddedAddress*>(entry);
  if (entry->ifa_name != added->name || added->mark != AddedAddress::kMark) return nullptr;
  return added;
}

}  // namespace

FLOTILLA_EXPORT int getifaddrs(ifaddrs** list) {
  const int result = REAL(getifaddrs)(list);
  const auto stack = stack_interface();
  if (result != 0 || list == nullptr || !stack) return result;
  char name[IF_NAMESIZE] = {};
  if (::if_indextoname(static_cast<unsigned>(stack->index), name) == nullptr) return result;
  unsigned flags = IFF_UP | IFF_BROADCAST | IFF_RUNNING | IFF_MULTICAST;
  ifaddrs** tail = list;
  for (ifaddrs* entry = *list; entry != nullptr; entry = entry->ifa_next) {
    if (entry->ifa_name != nullptr && std::strcmp(entry->ifa_name, name) == 0) {
      flags = entry->ifa_flags;
      const auto* address = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
      if (address != nullptr && address->sin_family == AF_INET && ntohl(address->sin_addr.s_addr) == stack->address) {
        return result;  // the kernel has it already
      }
    }
    tail = &entry->ifa_next;
  }
  auto* added = new (std::nothrow) AddedAddress{};
  if (added == nullptr) return result;
  const flotilla::wire::Ipv4Cidr cidr{stack->address, stack->prefix_length};
  std::memcpy(added->name, name, sizeof(name));
  for (const auto& [out, address] : {std::pair{&added->address, stack->address}, std::pair{&added->netmask, cidr.mask()},
                                     std::pair{&added->broadcast, cidr.broadcast()}}) {
    socklen_t room = sizeof(sockaddr_in);
    copy_address_out(reinterpret_cast<sockaddr*>(out), &room, AF_INET, address, 0);
  }
  added->mark = AddedAddress::kMark;
  added->entry.ifa_name = added->name;
  added->entry.ifa_flags = flags;
  added->entry.ifa_addr = reinterpret_cast<sockaddr*>(&added->address);
  added->entry.ifa_netmask = reinterpret_cast<sockaddr*>(&added->netmask);
  added->entry.ifa_broadaddr = reinterpret_cast<sockaddr*>(&added->broadcast);
  *tail = &added->entry;
  return result;
}

FLOTILLA_EXPORT void freeifaddrs(ifaddrs* list) {
  // The added entry is the last: cut it off, then the C library frees its own.
  for (ifaddrs** at = &list; *at != nullptr; at = &(*at)->ifa_next) {
    if (AddedAddress* added = added_of(*at)) {
      *at = nullptr;
      delete added;
      break;
    }
  }
  if (list != nullptr) REAL(freeifaddrs)(list);
}
