// Flotilla sockets across exec (see runtime.hpp, Runtime::hand_over) and in messages
// (SCM_RIGHTS, Runtime::hand_over_rights): the record the sender writes, and how the new image,
// or the receiver, takes what it names.
//
// The record is text, one line each:
//   flotilla-exec 1
//   token FD                       a fork token pinning connections below (kept open until taken)
//   lease FD                       the old image's lease, holding its listeners' members
//   socket N FD... KIND FIELDS...  one socket and the N descriptors naming it
// KIND: 0 fresh (FIELDS: the options only; among them the transport: 1 for UDP, plus 2 for an
// AF_INET6 socket), 1 listener (then its ListenerShare), 2 connection
// (then its fork serial and ConnectionShare), 3 datagram (a UDP socket open at the UDP server:
// then whether the sender is gone, an exec in place, so the port is taken at load), 4 lost (a
// connection the sender could not settle: its calls fail with EBADF). The options are every
// value getsockopt reads back (append_options), the kept table's last (a count, then each value
// as a 32-bit pattern). A message's record starts `flotilla-rights 2 P`
// and names positions in the message's descriptors instead: the program's P first, then the
// tokens, then the record itself; it has no lease line. Either comes from another process
// (possibly not ours): every number is range-checked, and a descriptor is taken only when it is
// still an eventfd nothing else claimed.
#include "sockets/preload/runtime.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>

#include "dataplane/clock.hpp"
#include "sockets/preload/real_calls.hpp"

namespace flotilla::preload {

namespace {

constexpr std::string_view kHeader = "flotilla-exec 2";
constexpr const char* kRecordName = "flotilla-exec";
constexpr std::string_view kRecordTarget = "/memfd:flotilla-exec ";  // what /proc/self/fd shows
// A message's record: the header then how many of the passed descriptors are the program's.
constexpr std::string_view kRightsHeader = "flotilla-rights 2";
constexpr const char* kRightsRecordName = "flotilla-rights";
constexpr std::string_view kRightsRecordTarget = "/memfd:flotilla-rights ";
constexpr std::size_t kMaxRightsPerMessage = 253;  // SCM_MAX_FD
constexpr std::size_t kMaxRecordBytes = 8u << 20;
constexpr std::uint64_t kMaxCount = 1u << 16;
constexpr int kMaxErrno = 4095;
enum class HandedKind : std::uint8_t { fresh = 0, listener = 1, connection = 2, datagram = 3, lost = 4 };

void append(std::string& line, std::uint64_t value) {
  line += ' ';
  line += std::to_string(value);
}

// The options and local state of a socket, in the record's order; `error` the one SO_ERROR has
// still to say.
void append_options(std::string& line, const Socket& socket, int error = 0) {
  for (const std::uint64_t value :
       {std::uint64_t{socket.nonblocking}, std::uint64_t{socket.bound}, std::uint64_t{socket.bound_address},
        std::uint64_t{socket.bound_port}, std::uint64_t{socket.port_picked_at_bind}, std::uint64_t{socket.read_shut},
        std::uint64_t{socket.write_shut}, std::uint64_t{socket.reuse_address}, std::uint64_t{socket.reuse_port},
        std::uint64_t{socket.keepalive}, std::uint64_t{socket.no_delay}, std::uint64_t{socket.cork},
        std::uint64_t{socket.keep_idle_s}, std::uint64_t{socket.keep_interval_s}, std::uint64_t{socket.keep_count},
        std::uint64_t(socket.linger_option.l_onoff != 0), static_cast<std::uint64_t>(std::max(socket.linger_option.l_linger, 0)),
        static_cast<std::uint64_t>(std::max(socket.receive_buffer, 0)), static_cast<std::uint64_t>(std::max(socket.send_buffer, 0)),
        static_cast<std::uint64_t>(std::int64_t{socket.receive_timeout_ms} + 1),
        static_cast<std::uint64_t>(std::int64_t{socket.send_timeout_ms} + 1),
        std::uint64_t{socket.udp()} | (socket.family == AF_INET6 ? 2u : 0u), static_cast<std::uint64_t>(socket.user_mss), std::uint64_t{socket.tcp_newreno},
        std::uint64_t{socket.packet_info} | (socket.packet_info6 ? 2u : 0u), std::uint64_t{socket.peer_address}, std::uint64_t{socket.peer_port},
        static_cast<std::uint64_t>(std::max(error != 0 ? error : socket.handed_error, 0)), std::uint64_t{socket.kept.size()}}) {
    append(line, value);
  }
  for (const int value : socket.kept) append(line, static_cast<std::uint32_t>(value));
}

void append_listener(std::string& line, const sockets::ListenerShare& share) {
  for (const std::uint64_t value : {std::uint64_t{share.address}, std::uint64_t{share.port},
                                    std::uint64_t{share.backlog}, std::uint64_t{share.open_options},
                                    std::uint64_t{share.members.size()}}) {
    append(line, value);
  }
  for (const auto& [page, generation] : share.members) {
    append(line, page);
    append(line, generation);
  }
}

void append_connection(std::string& line, std::uint64_t fork, const sockets::ConnectionShare& share) {
  const sockets::TcpEndpoints& ends = share.endpoints;
  for (const std::uint64_t value :
       {fork, std::uint64_t{share.replica}, std::uint64_t{share.page}, std::uint64_t{share.generation},
        std::uint64_t{ends.local_address}, std::uint64_t{ends.local_port}, std::uint64_t{ends.remote_address},
        std::uint64_t{ends.remote_port}, std::uint64_t{share.open_options}, std::uint64_t{share.write_shut},
        std::uint64_t{share.options.size()}}) {
    append(line, value);
  }
  for (const auto& [option, value] : share.options) {
    append(line, static_cast<std::uint64_t>(option));
    append(line, value);
  }
}

// The numbers of one line of the record, read one at a time with their bounds.
class Fields {
 public:
  explicit Fields(std::string_view line) : rest_(line) {}
  template <class T>
  bool next(T& out, std::uint64_t max = std::numeric_limits<T>::max()) {
    while (!rest_.empty() && rest_.front() == ' ') rest_.remove_prefix(1);
    std::uint64_t value = 0;
    std::size_t digits = 0;
    while (digits < rest_.size() && rest_[digits] >= '0' && rest_[digits] <= '9') {
      const auto digit = static_cast<std::uint64_t>(rest_[digits] - '0');
      if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return false;
      value = value * 10 + digit;
      ++digits;
    }
    if (digits == 0 || digits > 20 || value > max) return false;
    if (digits < rest_.size() && rest_[digits] != ' ') return false;
    rest_.remove_prefix(digits);
    out = static_cast<T>(value);
    return true;
  }
  bool flag(bool& out) {
    std::uint8_t value = 0;
    if (!next(value, 1)) return false;
    out = value != 0;
    return true;
  }
  bool done() const { return rest_.find_first_not_of(' ') == std::string_view::npos; }

 private:
  std::string_view rest_;
};

bool read_options(Fields& fields, Socket& socket) {
  constexpr std::uint64_t kMaxInt = std::numeric_limits<int>::max();
  bool linger_on = false;
  std::uint64_t linger_s = 0;
  std::uint64_t receive_timeout = 0;
  std::uint64_t send_timeout = 0;
  if (!(fields.flag(socket.nonblocking) && fields.flag(socket.bound) && fields.next(socket.bound_address) &&
        fields.next(socket.bound_port) && fields.flag(socket.port_picked_at_bind) && fields.flag(socket.read_shut) &&
        fields.flag(socket.write_shut) && fields.flag(socket.reuse_address) && fields.flag(socket.reuse_port) &&
        fields.flag(socket.keepalive) && fields.flag(socket.no_delay) && fields.flag(socket.cork) &&
        fields.next(socket.keep_idle_s) && fields.next(socket.keep_interval_s) && fields.next(socket.keep_count) &&
        fields.flag(linger_on) && fields.next(linger_s, kMaxInt) && fields.next(socket.receive_buffer, kMaxInt) &&
        fields.next(socket.send_buffer, kMaxInt) && fields.next(receive_timeout, kMaxInt + 1) &&
        fields.next(send_timeout, kMaxInt + 1))) {
    return false;
  }
  socket.linger_option = linger{linger_on ? 1 : 0, static_cast<int>(linger_s)};
  socket.receive_timeout_ms = static_cast<int>(static_cast<std::int64_t>(receive_timeout) - 1);
  socket.send_timeout_ms = static_cast<int>(static_cast<std::int64_t>(send_timeout) - 1);
  std::uint8_t transport = 0;
  std::uint8_t packet_info = 0;  // bit 0 IP_PKTINFO, bit 1 IPV6_RECVPKTINFO
  std::size_t kept = 0;
  if (!(fields.next(transport, 3) && fields.next(socket.user_mss, kMaximumMss) && fields.flag(socket.tcp_newreno) &&
        fields.next(packet_info, 3) && fields.next(socket.peer_address) && fields.next(socket.peer_port) &&
        fields.next(socket.handed_error, kMaxErrno) && fields.next(kept, socket.kept.size()))) {
    return false;
  }
  if (socket.user_mss != 0 && socket.user_mss < kMinimumMss) return false;
  socket.handed_failed = socket.handed_error != 0;
  const bool udp = (transport & 1) != 0;
  socket.family = (transport & 2) != 0 ? AF_INET6 : AF_INET;
  if ((packet_info & 2) != 0 && socket.family != AF_INET6) return false;
  socket.packet_info = (packet_info & 1) != 0;
  socket.packet_info6 = (packet_info & 2) != 0;
  if (udp) {
    socket.protocol = Socket::Protocol::udp;
    socket.datagrams = std::make_shared<DatagramQueue>();
  }
  // A record of a library with fewer kept options leaves the rest at their initial values; each
  // value must be one setsockopt could have left (what Linux keeps for it).
  for (std::size_t i = 0; i < kept; ++i) {
    std::uint32_t pattern = 0;
    if (!fields.next(pattern)) return false;
    const int value = static_cast<int>(pattern);
    const KeptOption& option = kKeptOptions[i];
    int error = 0;
    const bool settable = option.rule != KeptRule::read_only && option.rule != KeptRule::not_supported;
    if (settable ? kept_value(option, value, error) != value || error != 0 : value != option.initial) return false;
    socket.kept[i] = value;
  }
  return true;
}

bool read_listener(Fields& fields, sockets::ListenerShare& share) {
  std::uint64_t members = 0;
  if (!(fields.next(share.address) && fields.next(share.port) && fields.next(share.backlog) &&
        fields.next(share.open_options) && fields.next(members, kMaxCount))) {
    return false;
  }
  for (std::uint64_t i = 0; i < members; ++i) {
    std::uint32_t page = 0;
    std::uint32_t generation = 0;
    if (!fields.next(page) || !fields.next(generation)) return false;
    share.members.emplace_back(page, generation);
  }
  return share.port != 0;
}

bool read_connection(Fields& fields, std::uint64_t& fork, sockets::ConnectionShare& share) {
  sockets::TcpEndpoints& ends = share.endpoints;
  std::uint64_t options = 0;
  if (!(fields.next(fork) && fields.next(share.replica) && fields.next(share.page) && fields.next(share.generation) &&
        fields.next(ends.local_address) && fields.next(ends.local_port) && fields.next(ends.remote_address) &&
        fields.next(ends.remote_port) && fields.next(share.open_options) && fields.flag(share.write_shut) &&
        fields.next(options, kMaxCount))) {
    return false;
  }
  for (std::uint64_t i = 0; i < options; ++i) {
    std::uint16_t option = 0;
    std::uint32_t value = 0;
    if (!fields.next(option, static_cast<std::uint16_t>(stack::TcpOption::cork)) || option == 0 ||
        !fields.next(value)) {
      return false;
    }
    share.options.emplace_back(static_cast<stack::TcpOption>(option), value);
  }
  return fork != 0 && share.generation != 0;
}

// What descriptor `fd` is, as /proc/self/fd says ("" when it is not open).
std::string descriptor_target(int fd) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  char target[128];
  const ssize_t length = ::readlink(path, target, sizeof(target));
  return length > 0 ? std::string(target, static_cast<std::size_t>(length)) : std::string();
}

// Whether /proc is out of sight (a chroot without it: vsftpd's session).
bool proc_unseen() { return ::access("/proc/self/fd", F_OK) != 0; }

// Whether `fd` is an anonymous inode, as an eventfd is, told by its inode where no /proc is to be
// seen (a chroot): every eventfd shares one with the other anonymous kinds.
bool is_anonymous_inode(int fd) {
  const int probe = ::eventfd(0, EFD_CLOEXEC);
  if (probe < 0) return false;
  struct stat theirs {};
  struct stat ours {};
  const bool same = ::fstat(fd, &theirs) == 0 && ::fstat(probe, &ours) == 0 && theirs.st_dev == ours.st_dev &&
                    theirs.st_ino == ours.st_ino;
  REAL(close)(probe);
  return same;
}

// Whether `fd` is still what the image before left there: an eventfd the library knows nothing of.
bool is_untaken_eventfd(int fd) {
  if (fd < 0 || fd >= kMaxFds || fd_kind(fd) != FdKind::kernel) return false;
  const std::string seen = descriptor_target(fd);
  if (!seen.empty()) return seen == "anon_inode:[eventfd]";
  return proc_unseen() && is_anonymous_inode(fd);
}

bool is_socket_descriptor(int fd) {
  struct stat status {};
  return fd >= 0 && ::fstat(fd, &status) == 0 && S_ISSOCK(status.st_mode);
}

// Clears FD_CLOEXEC on `fd` for the new image, noting it in `cleared` (once) to set it back.
bool keep_across_exec(int fd, std::vector<int>& cleared) {
  const int flags = REAL(fcntl)(fd, F_GETFD);
  if (flags < 0) return false;
  if ((flags & FD_CLOEXEC) == 0) return true;
  if (REAL(fcntl)(fd, F_SETFD, flags & ~FD_CLOEXEC) != 0) return false;
  cleared.push_back(fd);
  return true;
}

// `record` in a new memfd named `name`, at 64 or above (the low numbers are the program's, see
// LowDescriptorsHeld), without FD_CLOEXEC when an exec must keep it; -1 with errno.
int write_record_file(const char* name, const std::string& record, bool for_exec) {
  const int made = ::memfd_create(name, 0);
  int moved = made >= 0 ? REAL(fcntl)(made, for_exec ? F_DUPFD : F_DUPFD_CLOEXEC, 64) : -1;
  const int error = errno;
  if (made >= 0) REAL(close)(made);
  std::size_t written = 0;
  while (moved >= 0 && written < record.size()) {
    const ssize_t wrote = REAL(write)(moved, record.data() + written, record.size() - written);
    if (wrote <= 0 && errno == EINTR) continue;
    if (wrote <= 0) {
      const int failed = wrote == 0 ? EIO : errno;
      REAL(close)(moved);
      errno = failed;
      return -1;
    }
    written += static_cast<std::size_t>(wrote);
  }
  if (moved < 0) errno = error;
  return moved;
}

// The record in `fd` when it is a memfd of ours whose /proc/self/fd target starts with `target`
// or, where no /proc is to be seen (a chroot: vsftpd's session), a memfd whose text starts with
// `header` (a descriptor that is something else is left alone: false).
bool read_record_file(int fd, std::string_view target, std::string_view header, std::string& record) {
  struct stat status {};
  if (fd < 0 || ::fstat(fd, &status) != 0 || !S_ISREG(status.st_mode) || status.st_size < 0 ||
      static_cast<std::uint64_t>(status.st_size) > kMaxRecordBytes) {
    return false;
  }
  const std::string seen = descriptor_target(fd);
  const bool named = !seen.empty() && seen.rfind(target, 0) == 0;
  const bool unseen = seen.empty() && proc_unseen() && REAL(fcntl)(fd, F_GET_SEALS) >= 0;
  if (!named && !unseen) return false;
  record.resize(static_cast<std::size_t>(status.st_size));
  std::size_t read_bytes = 0;
  while (read_bytes < record.size()) {
    const ssize_t got = ::pread(fd, record.data() + read_bytes, record.size() - read_bytes,
                                static_cast<off_t>(read_bytes));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    read_bytes += static_cast<std::size_t>(got);
  }
  record.resize(read_bytes);
  return named || std::string_view(record).starts_with(header);
}

}  // namespace

std::string Runtime::describe_sockets(const NamedSockets& named, bool in_place, ExecHandoff& handoff,
                                      std::vector<int>& tokens, bool& own_listener) {
  const bool ours_live = host_ != nullptr && tcp_ != nullptr && !stack_down() && still_owner();
  auto ours = [&](const Socket& socket) {
    return ours_live && socket.handed == nullptr && socket.epoch == epoch_ && !gone(socket) && socket.id >= 0;
  };
  auto parked = [&](const Socket& socket) {
    return parked_.tcp != nullptr && socket.handed == nullptr && socket.epoch == parked_.epoch &&
           socket.epoch != epoch_ && socket.id >= 0;
  };
  // A connection still connecting goes on once it settles (the replicas move only an open one):
  // a bounded wait, as a SYN answered at all is answered within it.
  constexpr std::uint64_t kSettleNs = 3'000'000'000;
  constexpr useconds_t kLookUs = 1000;
  const std::uint64_t settle_until = monotonic_ns() + kSettleNs;
  for (const auto& [socket, names] : named) {
    if (socket->udp() || socket->state != Socket::State::connecting || !ours(*socket)) continue;
    for (;;) {
      pump();
      if (tcp_->connected(socket->id)) socket->state = Socket::State::connected;
      if (socket->state == Socket::State::connected || tcp_->error(socket->id) != 0) break;
      if (monotonic_ns() >= settle_until) break;
      ::usleep(kLookUs);
    }
  }
  // This process's connections are pinned as for a fork, with a token the receiver holds.
  const bool own_connections = std::any_of(named.begin(), named.end(), [&](const auto& entry) {
    return !entry.first->udp() && entry.first->state == Socket::State::connected && ours(*entry.first);
  });
  if (own_connections) {
    prepare_fork();
    handoff.pinned = fork_serial_ != 0;
  }
  std::string sockets_text;
  own_listener = false;
  for (const auto& [socket, names] : named) {
    std::string line = "socket";
    append(line, names.size());
    for (const int name : names) append(line, static_cast<std::uint64_t>(name));
    if (socket->udp()) {
      // Open at the UDP server (here, inherited, or handed over and not taken yet): the receiver
      // opens it again on its port once this process's copy is gone.
      const bool opened = (socket->handed != nullptr && socket->handed->datagram) ||
                          (socket->handed == nullptr && (ours(*socket) || parked(*socket)));
      if (opened) {
        // Taken at load only when its port frees with this image (an inherited one is the parent's).
        append(line, static_cast<std::uint64_t>(HandedKind::datagram));
        append_options(line, *socket);
        append(line, std::uint64_t{in_place && ours(*socket)});
      } else if (socket->id < 0 && socket->handed == nullptr && socket->state != Socket::State::released) {
        append(line, static_cast<std::uint64_t>(HandedKind::fresh));
        append_options(line, *socket);
      } else {
        continue;
      }
      sockets_text += line;
      sockets_text += '\n';
      continue;
    }
    std::optional<sockets::ListenerShare> listener;
    std::optional<sockets::ConnectionShare> connection;
    std::uint64_t fork = 0;
    const bool listening = socket->state == Socket::State::listening;
    const bool connected = socket->state == Socket::State::connected;
    if (socket->handed != nullptr) {
      listener = socket->handed->listener;
      connection = socket->handed->connection;
      fork = socket->handed->fork;
      if (connection) tokens.insert(tokens.end(), handed_tokens_.begin(), handed_tokens_.end());
    } else if (socket->state == Socket::State::fresh) {
      // Nothing at the stack yet: the options travel alone.
    } else if (ours(*socket) && listening) {
      listener = tcp_->share(socket->id);
      own_listener = own_listener || listener.has_value();
    } else if (ours(*socket) && connected && handoff.pinned) {
      connection = tcp_->share_connection(socket->id);
      fork = fork_serial_;
      tokens.push_back(fork_token_);
    } else if (parked(*socket) && listening) {
      // The parent (an nginx master upgrading its binary) keeps its members while it lives.
      listener = parked_.tcp->share(socket->id);
    } else if (parked(*socket) && connected && parked_.fork != 0 && inherited_token_ >= 0) {
      connection = parked_.tcp->share_connection(socket->id);
      fork = parked_.fork;
      tokens.push_back(inherited_token_);
    }
    if (listening && listener) {
      append(line, static_cast<std::uint64_t>(HandedKind::listener));
      append_options(line, *socket);
      append_listener(line, *listener);
    } else if (connected && connection) {
      append(line, static_cast<std::uint64_t>(HandedKind::connection));
      append_options(line, *socket);
      append_connection(line, fork, *connection);
    } else if (socket->state == Socket::State::fresh ||
               (socket->state == Socket::State::connecting && ours(*socket) && tcp_->error(socket->id) != 0)) {
      // A connect that failed leaves a socket that may connect again, as on Linux, its error to say.
      const bool failed = socket->state == Socket::State::connecting && !socket->error_reported;
      append(line, static_cast<std::uint64_t>(HandedKind::fresh));
      append_options(line, *socket, failed ? tcp_->error(socket->id) : 0);
    } else if (socket->state == Socket::State::connecting) {
      append(line, static_cast<std::uint64_t>(HandedKind::lost));
      append_options(line, *socket);
      std::fprintf(stderr, "flotilla: a connection still connecting after %llu s cannot be handed over; the receiver's "
                           "calls on it fail with EBADF\n", static_cast<unsigned long long>(kSettleNs / 1'000'000'000));
    } else {
      continue;  // released, or not provable: the receiver finds a bare eventfd
    }
    sockets_text += line;
    sockets_text += '\n';
  }
  std::sort(tokens.begin(), tokens.end());
  tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
  tokens.erase(std::remove(tokens.begin(), tokens.end(), -1), tokens.end());
  return sockets_text;
}

bool Runtime::hand_over(ExecHandoff& handoff, bool in_place) {
  // A vfork child (a shell's way to run a command) runs in its parent's memory, on its parent's
  // lease, the parent's thread stopped: it pins and describes as the parent would, and the parent
  // goes on with its sockets, so the exec is not in place for them.
  if (in_vfork_child()) in_place = false;
  // The lease ends with this image: the datagrams it sent must leave the channel first, as a
  // kernel's send was done when it returned (a bounded wait).
  if (in_place && udp_ != nullptr && !stack_down() && still_owner()) {
    constexpr std::uint64_t kSentNs = 1'000'000'000;
    constexpr useconds_t kLookUs = 500;
    const std::uint64_t until = monotonic_ns() + kSentNs;
    while (!udp_->all_taken() && monotonic_ns() < until) ::usleep(kLookUs);
  }
  // The sockets the new image keeps, each with its descriptors.
  NamedSockets kept;
  for (std::size_t fd = 0; fd < sockets_.size(); ++fd) {
    Socket* socket = sockets_[fd].get();
    if (socket == nullptr || fd_kind(static_cast<int>(fd)) != FdKind::tcp) continue;
    const int flags = REAL(fcntl)(static_cast<int>(fd), F_GETFD);
    if (flags < 0 || (flags & FD_CLOEXEC) != 0) continue;
    auto entry = std::find_if(kept.begin(), kept.end(), [&](const auto& e) { return e.first == socket; });
    if (entry == kept.end()) entry = kept.insert(kept.end(), {socket, {}});
    entry->second.push_back(static_cast<int>(fd));
  }
  if (kept.empty()) return false;
  std::vector<int> tokens;
  bool own_listener = false;
  const std::string sockets_text = describe_sockets(kept, in_place, handoff, tokens, own_listener);
  std::string record(kHeader);
  record += '\n';
  for (const int token : tokens) {
    if (!keep_across_exec(token, handoff.uncloexec)) continue;
    record += "token";
    append(record, static_cast<std::uint64_t>(token));
    record += '\n';
  }
  // In place, this process's listeners' members must outlive the old image: its lease stays open.
  if (in_place && own_listener && keep_across_exec(lease_fd(), handoff.uncloexec)) {
    record += "lease";
    append(record, static_cast<std::uint64_t>(lease_fd()));
    record += '\n';
  }
  record += sockets_text;
  if (sockets_text.empty()) {
    end_handoff(handoff);
    return false;
  }
  handoff.record = write_record_file(kRecordName, record, true);
  if (handoff.record < 0) {
    std::fprintf(stderr, "flotilla: cannot write the record of the sockets an exec hands over (%s); the new program "
                         "gets bare descriptors\n", std::strerror(errno));
    end_handoff(handoff);
    return false;
  }
  // A vfork child made the fork's token in its own descriptor table, which the new image keeps:
  // the parent's memory forgets it (the parent goes on as after a spawn whose child holds it).
  if (in_vfork_child() && handoff.pinned) {
    handoff.token = fork_token_;
    fork_token_ = -1;
    fork_serial_ = 0;
    handoff.pinned = false;
  }
  return true;
}

bool Runtime::hand_over_rights(std::span<const int> rights, ExecHandoff& handoff, std::vector<int>& extra) {
  NamedSockets passed;
  for (std::size_t position = 0; position < rights.size(); ++position) {
    const int fd = rights[position];
    if (fd_kind(fd) != FdKind::tcp) continue;
    const std::shared_ptr<Socket> socket = socket_at(fd);
    if (socket == nullptr) continue;
    auto entry = std::find_if(passed.begin(), passed.end(), [&](const auto& e) { return e.first == socket.get(); });
    if (entry == passed.end()) entry = passed.insert(passed.end(), {socket.get(), {}});
    entry->second.push_back(static_cast<int>(position));
    // Every process listening on a bound socket passed around shares its port, as processes sharing
    // one socket share its accept queue on Linux.
    if (socket->state == Socket::State::fresh && socket->bound) socket->port_shared = true;
  }
  if (passed.empty()) return false;
  std::vector<int> tokens;
  bool own_listener = false;
  const std::string sockets_text = describe_sockets(passed, false, handoff, tokens, own_listener);
  if (sockets_text.empty() || tokens.size() + 1 > kMaxRightsExtra ||
      rights.size() + tokens.size() + 1 > kMaxRightsPerMessage) {
    end_handoff(handoff);
    return false;
  }
  // The receiver finds the tokens after the program's descriptors, then the record, last.
  std::string record(kRightsHeader);
  append(record, rights.size());
  record += '\n';
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    record += "token";
    append(record, rights.size() + i);
    record += '\n';
  }
  record += sockets_text;
  handoff.record = write_record_file(kRightsRecordName, record, false);
  if (handoff.record < 0) {
    std::fprintf(stderr, "flotilla: cannot write the record of the sockets a message passes (%s); the receiver gets "
                         "bare descriptors\n", std::strerror(errno));
    end_handoff(handoff);
    return false;
  }
  extra = tokens;
  extra.push_back(handoff.record);
  // The message carries the pins: this copy is the caller's to close (end_handoff), so it may send
  // without the lock while this process forks or passes other sockets.
  if (handoff.pinned) {
    handoff.token = fork_token_;
    fork_token_ = -1;
    fork_serial_ = 0;
    handoff.pinned = false;
  }
  return true;
}

void Runtime::end_handoff(ExecHandoff& handoff) {
  if (handoff.record >= 0) REAL(close)(handoff.record);
  if (handoff.token >= 0) REAL(close)(handoff.token);
  for (const int fd : handoff.uncloexec) {
    const int flags = REAL(fcntl)(fd, F_GETFD);
    if (flags >= 0) (void)REAL(fcntl)(fd, F_SETFD, flags | FD_CLOEXEC);
  }
  // This process's copy of the token goes: the pins last while the spawned child (or the receiver
  // of a message) holds its copy, or end as those of a child that exited at once.
  if (handoff.pinned) end_fork_in_parent();
  handoff = ExecHandoff{};
}

void Runtime::take_handoff() {
  const char* named = std::getenv("FLOTILLA_INHERIT");
  if (named == nullptr) return;
  const std::string number(named);
  ::unsetenv("FLOTILLA_INHERIT");
  int record_fd = -1;
  {
    Fields fields(number);
    if (!fields.next(record_fd, kMaxFds - 1) || !fields.done()) return;
  }
  // Only a memfd of ours: a number the program kept in its environment by chance is left alone.
  std::string record;
  if (!read_record_file(record_fd, kRecordTarget, kHeader, record)) return;
  REAL(close)(record_fd);
  Lock lock(mutex_);
  (void)take_record(record, {});
}

std::size_t Runtime::take_rights(std::span<const int> received, bool peek) {
  if (received.empty()) return 0;
  const int record_fd = received.back();
  std::string record;
  if (!read_record_file(record_fd, kRightsRecordTarget, kRightsHeader, record)) return received.size();
  REAL(close)(record_fd);
  const std::span<const int> rest = received.first(received.size() - 1);
  std::size_t kept = rest.size();
  if (!peek) {
    Lock lock(mutex_);
    return take_record(record, rest);
  }
  // The receive that follows takes them: these copies of the tokens go, the program's stay bare.
  Fields fields(std::string_view(record).substr(std::min(record.size(), kRightsHeader.size())));
  std::size_t count = 0;
  if (std::string_view(record).starts_with(kRightsHeader) && fields.next(count, rest.size())) kept = count;
  for (std::size_t i = kept; i < rest.size(); ++i) REAL(close)(rest[i]);
  return kept;
}

std::size_t Runtime::take_record(std::string_view record, std::span<const int> received) {
  // Exec: the record names descriptors. A message: positions in `received`, the program's first
  // (`program` of them), then the tokens.
  const bool message = !received.empty();
  std::size_t program = received.size();
  std::vector<int> leases;
  std::vector<int> tokens;
  std::vector<std::shared_ptr<Socket>> taken_at_load;  // listeners, and UDP sockets whose sender is gone
  std::vector<std::shared_ptr<Socket>> passed_bound;
  std::string_view rest(record);
  bool first = true;
  bool malformed = false;
  while (!rest.empty() && !malformed) {
    const std::size_t end = rest.find('\n');
    const std::string_view line = rest.substr(0, end);
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
    if (first) {
      first = false;
      if (message) {
        Fields fields(line.substr(std::min(line.size(), kRightsHeader.size())));
        malformed = !line.starts_with(kRightsHeader) || !fields.next(program, received.size()) || !fields.done();
        if (malformed) program = received.size();
      } else {
        malformed = line != kHeader;
      }
      continue;
    }
    const std::size_t space = line.find(' ');
    const std::string_view word = line.substr(0, space);
    Fields fields(space == std::string_view::npos ? std::string_view{} : line.substr(space));
    // What a number in the record names: a descriptor, or (a message) one of `received`.
    auto named_fd = [&](std::size_t number, bool token) -> int {
      if (!message) return static_cast<int>(number);
      const bool fits = token ? number >= program && number < received.size() : number < program;
      return fits ? received[number] : -1;
    };
    if (word == "token" || (word == "lease" && !message)) {
      std::size_t number = 0;
      malformed = !fields.next(number, kMaxFds - 1) || !fields.done();
      const int fd = malformed ? -1 : named_fd(number, true);
      malformed = malformed || fd < 0;
      if (malformed || !is_socket_descriptor(fd) || std::find(tokens.begin(), tokens.end(), fd) != tokens.end()) {
        continue;
      }
      const int flags = REAL(fcntl)(fd, F_GETFD);
      (void)REAL(fcntl)(fd, F_SETFD, flags | FD_CLOEXEC);
      (word == "token" ? tokens : leases).push_back(fd);
      continue;
    }
    if (word != "socket") {
      malformed = true;
      continue;
    }
    std::uint64_t count = 0;
    std::vector<int> fds;
    malformed = !fields.next(count, kMaxCount) || count == 0;
    for (std::uint64_t i = 0; i < count && !malformed; ++i) {
      std::size_t number = 0;
      malformed = !fields.next(number, kMaxFds - 1);
      const int fd = malformed ? -1 : named_fd(number, false);
      malformed = malformed || fd < 0;
      if (!malformed && is_untaken_eventfd(fd) && std::find(fds.begin(), fds.end(), fd) == fds.end()) fds.push_back(fd);
    }
    std::uint8_t kind = 0;
    auto socket = std::make_shared<Socket>();
    auto handed = std::make_shared<Handed>();
    bool at_load = false;
    malformed = malformed || !fields.next(kind, static_cast<std::uint8_t>(HandedKind::lost)) ||
                !read_options(fields, *socket);
    // Each kind is of one protocol, and a UDP socket has a peer only once open.
    const bool udp_kind = kind == static_cast<std::uint8_t>(HandedKind::datagram);
    malformed = malformed || (kind != static_cast<std::uint8_t>(HandedKind::fresh) && udp_kind != socket->udp()) ||
                (socket->udp() && !udp_kind && socket->peer_port != 0) ||
                (socket->handed_error != 0 && (socket->udp() || kind != static_cast<std::uint8_t>(HandedKind::fresh)));
    if (!malformed && kind == static_cast<std::uint8_t>(HandedKind::listener)) {
      handed->listener.emplace();
      malformed = !read_listener(fields, *handed->listener);
      socket->state = Socket::State::listening;
    } else if (!malformed && kind == static_cast<std::uint8_t>(HandedKind::connection)) {
      handed->connection.emplace();
      malformed = !read_connection(fields, handed->fork, *handed->connection);
      socket->state = Socket::State::connected;
    } else if (!malformed && udp_kind) {
      handed->datagram = true;
      malformed = !fields.flag(at_load) || !socket->bound || socket->bound_port == 0;
      socket->state = socket->peer_port != 0 ? Socket::State::connected : Socket::State::fresh;
    } else if (!malformed && kind == static_cast<std::uint8_t>(HandedKind::lost)) {
      socket->state = Socket::State::released;
    }
    malformed = malformed || !fields.done();
    if (malformed || fds.empty()) continue;
    socket->epoch = 0;  // no epoch of this image's: owns() takes it first
    socket->port_shared = message && !socket->udp() && socket->state == Socket::State::fresh && socket->bound;
    if (handed->connection) ++handed_connections_;
    if (handed->listener || at_load) taken_at_load.push_back(socket);
    // A lost socket is nobody's (owns() is false: its calls fail with EBADF).
    if (socket->state != Socket::State::released) socket->handed = std::move(handed);
    for (const int fd : fds) install(fd, socket);
  }
  if (malformed) {
    std::fprintf(stderr, "flotilla: the record of the sockets handed over by %s is malformed; the sockets it names "
                         "after the fault are bare descriptors\n", message ? "a message (SCM_RIGHTS)" : "exec");
  }
  // A message's tokens the record did not name go with it.
  for (std::size_t i = program; message && i < received.size(); ++i) {
    if (std::find(tokens.begin(), tokens.end(), received[i]) == tokens.end()) REAL(close)(received[i]);
  }
  handed_tokens_.insert(handed_tokens_.end(), tokens.begin(), tokens.end());
  mark_library_descriptors();
  // Listeners are joined at once, while their proof holds: the old image's lease (then let go),
  // the parent that forked this image (an nginx master upgrading its binary, which quits once
  // the new master runs; the new master's own workers and reloads then join through its members),
  // or the sender of the message, which keeps its own.
  for (const auto& socket : taken_at_load) {
    if (socket->handed != nullptr && !socket->udp()) (void)take_handed(*socket);
  }
  for (const int fd : leases) REAL(close)(fd);
  // A UDP socket of an image exec'd in place opens on its port at once (free once the old image's
  // lease ended), so that few datagrams find it closed.
  for (const auto& socket : taken_at_load) {
    if (socket->handed != nullptr && socket->udp()) (void)take_handed(*socket);
  }
  if (handed_connections_ == 0) handed_connection_settled();
  return program;
}

bool Runtime::take_handed(Socket& socket) {
  const std::shared_ptr<const Handed> handed = std::move(socket.handed);
  bool taken = false;
  if (lease_own_seat()) {
    if (handed->listener) {
      const auto joined = tcp_->join(*handed->listener);
      if (joined) socket.id = joined.value();
      taken = joined && await_opened(socket.id, true);
    } else if (handed->connection) {
      const auto claimed = tcp_->claim(*handed->connection, handed->fork);
      if (claimed) socket.id = claimed.value();
      taken = claimed && await_opened(socket.id, false);
    } else if (handed->datagram) {
      taken = reopen_datagram(socket);
    } else {
      taken = true;
    }
  }
  if (handed->connection) handed_connection_settled();
  socket.epoch = epoch_;
  socket.lease = lease_;
  if (!taken) {
    if (!said_claim_refused_) {
      said_claim_refused_ = true;
      std::fprintf(stderr, "flotilla: cannot take over a socket handed over by exec or SCM_RIGHTS (a UDP socket: its "
                           "port stays the sender's while the sender keeps its copy); its calls fail with EBADF\n");
    }
    if (socket.id >= 0 && tcp_ != nullptr && !socket.udp()) (void)tcp_->close(socket.id);
    socket.id = -1;
    socket.state = Socket::State::released;
    return false;
  }
  return still_owner();
}

bool Runtime::reopen_datagram(Socket& socket) {
  // The port is the sender's until its copy closes: the old image's lease ends a moment after the
  // exec, a process passing the socket closes its copy after the send.
  constexpr std::uint64_t kPortWaitNs = 2'000'000'000;
  constexpr useconds_t kLookUs = 5000;
  const std::uint64_t until = monotonic_ns() + kPortWaitNs;
  for (;;) {
    socket.id = -1;
    socket.udp_answered = false;
    socket.udp_error = 0;
    if (open_datagram(nullptr, socket, socket.bound_port) == 0) return socket.peer_port == 0 || send_peer(nullptr, socket) == 0;
    socket.udp_error = 0;
    if (errno != EADDRINUSE || monotonic_ns() >= until) return false;
    ::usleep(kLookUs);
  }
}

bool Runtime::await_opened(int id, bool listener) {
  constexpr std::uint64_t kAnswerNs = 2'000'000'000;
  constexpr useconds_t kLookUs = 1000;
  const std::uint64_t until = monotonic_ns() + kAnswerNs;
  for (;;) {
    pump();
    if (tcp_->error(id) != 0) return false;
    if (listener ? tcp_->share(id).has_value() : tcp_->share_connection(id).has_value()) return true;
    if (monotonic_ns() >= until) return false;
    ::usleep(kLookUs);
  }
}

void Runtime::handed_connection_settled() {
  if (handed_connections_ > 0) --handed_connections_;
  if (handed_connections_ != 0) return;
  for (const int token : handed_tokens_) REAL(close)(token);
  handed_tokens_.clear();
}

}  // namespace flotilla::preload
