// The process-wide state of the preload library: the lease, the descriptor table, readiness, and
// sleeping in the kernel (see runtime.hpp).
#include "sockets/preload/runtime.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "dataplane/clock.hpp"
#include "dataplane/control_address.hpp"
#include "dataplane/fd_passing.hpp"
#include "sockets/preload/interfaces.hpp"
#include "sockets/preload/real_calls.hpp"

namespace flotilla::preload {

std::atomic<FdKind> g_fd_kind[kMaxFds];
std::atomic<bool> g_library_fd[kMaxFds];
std::atomic<rlim_t> g_descriptor_limit_set{RLIM_INFINITY};

namespace {

// The grant `flotilla run` handed this process tree (kGrantVariable), when the number it names is
// still a unix seqpacket socket: a program may have reused the number, or inherited the variable
// from elsewhere. -1 without one.
int inherited_grant() {
  const char* named = std::getenv(kGrantVariable);
  if (named == nullptr || *named == '\0') return -1;
  char* end = nullptr;
  const long fd = std::strtol(named, &end, 10);
  if (*end != '\0' || fd < 0 || fd >= kMaxFds) return -1;
  int type = 0;
  int domain = 0;
  socklen_t length = sizeof(type);
  if (REAL(getsockopt)(static_cast<int>(fd), SOL_SOCKET, SO_TYPE, &type, &length) != 0 || type != SOCK_SEQPACKET) return -1;
  length = sizeof(domain);
  if (REAL(getsockopt)(static_cast<int>(fd), SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0 || domain != AF_UNIX) return -1;
  return static_cast<int>(fd);
}

// Out of the program's reach from the start: daemons close every descriptor they did not open
// before they first touch a socket.
__attribute__((constructor)) void mark_inherited_grant() {
  if (const int grant = inherited_grant(); grant >= 0) g_library_fd[grant].store(true, std::memory_order_relaxed);
}

}  // namespace

std::string control_socket_path() {
  static const std::string first = [] {
    const char* path = std::getenv("FLOTILLA_SOCKET");
    return path != nullptr && *path != '\0' ? std::string(path) : default_socket_path();
  }();
  return first;
}

bool LeaseRetry::due() {
  const std::uint64_t now = monotonic_ns();
  if (now < next_ns_) {
    errno = error_;
    return false;
  }
  next_ns_ = now + kEveryNs;
  return true;
}

LowDescriptorsHeld::LowDescriptorsHeld() {
  for (;;) {
    const int fd = REAL(open)("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    if (fd >= kLibraryDescriptorsFrom) {
      REAL(close)(fd);
      return;
    }
    held_.push_back(fd);
  }
}

LowDescriptorsHeld::~LowDescriptorsHeld() {
  for (const int fd : held_) REAL(close)(fd);
}

Runtime& Runtime::get() {
  // Never destroyed: other libraries' destructors and atexit handlers may still close sockets.
  static Runtime* const runtime = [] {
    auto* made = new Runtime();
    ::pthread_atfork([] { Runtime::get().before_fork(); }, [] { Runtime::get().after_fork_parent(); },
                     [] { Runtime::get().after_fork_child(); });
    made->grant_ = inherited_grant();
    made->mark_library_descriptors();
    made->counters_ = PreloadCounters{&made->unregistered_, &made->unregistered_, &made->unregistered_,
                                      &made->unregistered_, &made->unregistered_, &made->unregistered_,
                                      &made->unregistered_};
    return made;
  }();
  return *runtime;
}

bool Runtime::ensure_stack(bool adopt_parent) {
  // A new socket in a fork child: the parent's lease only once the parent is gone.
  if (host_ == nullptr && adopt_parent) (void)adopt_parked(false);
  if (host_ != nullptr && !down_ && !lease_ended()) return true;
  if (host_ != nullptr && !complained_) {
    // The lease ended under us: the sockets made on it are gone; new ones work once it is back.
    complained_ = true;
    std::fprintf(stderr, "flotilla: the stack went down; its sockets fail with ENETDOWN, and new ones work once "
                         "it is back\n");
  }
  if (!lease_retry_.due()) return false;
  lease_retry_.failed(ENETDOWN);
  const std::string path = control_socket_path();
  auto leased = lease_when_a_seat_frees([&] {
    const LowDescriptorsHeld held;
    // A fork child asks through the lease it inherited: it may be another user by now (nginx's
    // workers), or in another root directory, where the control socket is out of its reach.
    if (parked_.host != nullptr && parked_.host->lease_fd() >= 0) {
      auto through = ComponentHost::lease_through(parked_.host->lease_fd());
      if (through || through.error().code != Errc::closed) return through;
    }
    if (grant_ >= 0) {
      auto granted = ComponentHost::lease_through(grant_);
      if (granted || granted.error().code != Errc::closed) return granted;
    }
    return ComponentHost::lease(path);
  });
  std::string why;
  if (leased) {
    std::vector<std::string> channels;
    std::string udp_channel;
    for (std::size_t i = 0; i < (*leased)->channel_count(); ++i) {
      const std::string_view name = (*leased)->channel_name(i);
      if (name.starts_with("tcp")) channels.emplace_back(name);
      if (name.starts_with("udp")) udp_channel = name;
    }
    auto attached = sockets::TcpSockets::attach(**leased, channels);
    if (attached) {
      retire_lease();
      lease_ = ++leases_made_;
      lease_retry_.allow_now();
      host_ = std::move(leased.value());
      tcp_ = std::move(attached.value());
      mark_library_descriptors();
      attach_datagrams(udp_channel);
      register_counters();
      down_ = false;
      owner_ = ::getpid();
      if (ownership_ == nullptr) {
        void* page = ::mmap(nullptr, sizeof(Ownership), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (page != MAP_FAILED) ownership_ = new (page) Ownership{};
      }
      if (ownership_ != nullptr) ownership_->owner.store(owner_);
      // Every connection on one replica (`flotilla demo` crashes the other under the stream).
      if (const char* pinned = std::getenv("FLOTILLA_TCP_REPLICA"); pinned != nullptr && *pinned != '\0') {
        char* end = nullptr;
        const unsigned long replica = std::strtoul(pinned, &end, 10);
        if (*end != '\0' || !tcp_->pin_replica(replica)) {
          std::fprintf(stderr, "flotilla: FLOTILLA_TCP_REPLICA=%s names no TCP replica (0..%zu); connections are spread\n",
                       pinned, tcp_->replica_count() - 1);
        }
      }
      if (const char* spin = std::getenv("FLOTILLA_SPIN_US"); spin != nullptr) {
        spin_ns_ = std::strtoull(spin, nullptr, 10) * 1000;
      }
      return true;
    }
    why = std::string("cannot attach to the TCP replicas: ") + (attached.error().context ? attached.error().context : "");
  } else {
    const Error& error = leased.error();
    if (error.code == Errc::exhausted) {
      // The seats are a system-wide table, as Linux's open files are: ENFILE.
      if (!complained_) {
        complained_ = true;
        std::fprintf(stderr, "flotilla: every application seat is leased (limits.app_seats; 'flotilla up --set "
                             "limits.app_seats=N' gives more); AF_INET sockets fail with ENFILE\n");
      }
      lease_retry_.failed(ENFILE);
      errno = ENFILE;
      return false;
    }
    why = error.context ? error.context : "lease refused";
    if (error.code == Errc::closed) {
      why = "the stack is not running (no supervisor at " + path + ")";
    } else if (error.code == Errc::system) {
      why = "cannot reach the supervisor at " + path + " (" + std::strerror(error.sys_errno) +
            (error.sys_errno == EACCES ? ": it serves root and its own user" : "") + ")";
    }
  }
  if (!complained_) {
    complained_ = true;
    std::fprintf(stderr, "flotilla: %s; AF_INET sockets fail with ENETDOWN\n", why.c_str());
  }
  errno = ENETDOWN;
  return false;
}

// Whether the supervisor hung up the lease (one poll without waiting): a program that never sleeps
// in the library learns it here, when it makes a socket.
bool Runtime::lease_ended() {
  pollfd lease{lease_fd(), POLLIN, 0};
  if (REAL(poll)(&lease, 1, 0) <= 0) return false;
  mark_down();
  return true;
}

void Runtime::mark_down() {
  down_.store(true, std::memory_order_relaxed);
  for (std::size_t epfd = 0; epfd < epolls_.size(); ++epfd) {
    if (epolls_[epfd] != nullptr) drop_marks(static_cast<int>(epfd), *epolls_[epfd]);
  }
}

void Runtime::drop_marks(int epfd, EpollSet& set) {
  if (!set.marks_added) return;
  epoll_event unused{};
  (void)REAL(epoll_ctl)(epfd, EPOLL_CTL_DEL, set.nudge, &unused);
  (void)REAL(epoll_ctl)(epfd, EPOLL_CTL_DEL, lease_fd(), &unused);
  set.marks_added = false;
}

// Before a new lease replaces one that ended: the sockets made on the old one keep their state
// for the program's calls (ENETDOWN), but their ids, which named its sockets, name nothing now.
void Runtime::retire_lease() {
  if (host_ == nullptr) return;
  for (const auto& socket : sockets_) {
    if (socket != nullptr && socket->lease == lease_) socket->id = -1;
  }
  for (const auto& set : epolls_) {
    if (set == nullptr) continue;
    for (EpollSet::Interest& interest : set->interests) {
      if (interest.socket->lease == lease_) interest.socket->id = -1;
    }
  }
  datagram_sockets_.clear();
  udp_.reset();
  tcp_.reset();
  host_.reset();
  down_ = false;
}

void Runtime::register_counters() {
  NamedCounterTable& named = host_->named_counters();
  counters_ = PreloadCounters{&named.counter("readiness_checks"), &named.counter("readiness_no_syscall"),
                              &named.counter("io_calls"),         &named.counter("io_no_syscall"),
                              &named.counter("waits_in_kernel"),  &named.counter("wake_ups"),
                              &named.counter("errors"),           &named.counter("nudges")};
}

void Runtime::attach_datagrams(const std::string& channel) {
  if (channel.empty()) return;
  auto attached = sockets::UdpSockets::attach(*host_, channel);
  if (!attached) return;  // UDP sockets then fail with EPROTONOSUPPORT
  udp_ = std::move(attached.value());
  udp_->on_datagram([this](const sockets::Datagram& datagram) {
    if (datagram.socket >= datagram_sockets_.size() || datagram_sockets_[datagram.socket] == nullptr) return;
    Socket& socket = *datagram_sockets_[datagram.socket];
    // A connected socket takes datagrams from its peer only, as on Linux.
    if (socket.peer_port != 0 &&
        (datagram.remote_address != socket.peer_address || datagram.remote_port != socket.peer_port)) {
      return;
    }
    (void)socket.datagrams->push(datagram.remote_address, datagram.remote_port, datagram.local_address, datagram.payload);
  });
  udp_->on_status([this](std::uint32_t id, int error, std::uint16_t port) {
    if (id >= datagram_sockets_.size() || datagram_sockets_[id] == nullptr) return;
    Socket& socket = *datagram_sockets_[id];
    socket.udp_answered = true;
    socket.udp_error = error > 0 && error < 4096 ? error : (error == 0 ? 0 : EPROTO);
    if (error == 0) socket.bound_port = port;
  });
}

int Runtime::interface_index() {
  static const int index = [] {
    const char* text = std::getenv(kInterfaceIndexVariable);
    if (text == nullptr) return 0;
    char* end = nullptr;
    const long number = std::strtol(text, &end, 10);
    return end != text && *end == '\0' && number > 0 && number <= INT32_MAX ? static_cast<int>(number) : 0;
  }();
  return index;
}

bool DatagramQueue::push(std::uint32_t address, std::uint16_t port, std::uint32_t destination,
                         std::span<const std::byte> payload) {
  if (tail - head >= kDatagrams || payload.size() > kBytes) {
    ++dropped;
    return false;
  }
  Entry& entry = entries[tail % kDatagrams];
  entry.address = address;
  entry.destination = destination;
  entry.port = port;
  entry.length = static_cast<std::uint16_t>(payload.size());
  std::memcpy(entry.bytes, payload.data(), payload.size());
  ++tail;
  return true;
}

int Runtime::open_datagram(Lock* lock, Socket& socket, std::uint16_t port) {
  if (udp_ == nullptr) return fail_with(EPROTONOSUPPORT);
  if (socket.id >= 0) return fail_with(EINVAL);
  auto opened = udp_->open(port, {.reuse_port = socket.reuse_port, .reuse_address = socket.reuse_address});
  if (!opened) return fail_with(opened.error().code == Errc::exhausted ? ENOBUFS : EIO);
  socket.id = static_cast<int>(opened.value());
  if (datagram_sockets_.size() <= opened.value()) datagram_sockets_.resize(opened.value() + 1);
  datagram_sockets_[opened.value()] = &socket;
  constexpr int kAnswerMs = 2000;
  const std::uint64_t deadline = deadline_after(kAnswerMs);
  auto answered = [&] { return socket.udp_answered; };
  for (;;) {
    pump();
    if (answered()) break;
    const int left = remaining_ms(deadline);
    if (left == 0) {
      // No answer: the socket forgets the id, and the UDP server closes it if it opens it late.
      datagram_sockets_[opened.value()] = nullptr;
      (void)udp_->close(opened.value());
      socket.id = -1;
      return fail_with(ETIMEDOUT);
    }
    if (pause_for_udp(lock, answered, left) < 0) return -1;
  }
  if (socket.udp_error != 0) {
    datagram_sockets_[opened.value()] = nullptr;
    socket.id = -1;
    socket.udp_answered = false;
    return fail_with(socket.udp_error);
  }
  socket.bound = true;
  return 0;
}

int Runtime::send_peer(Lock* lock, Socket& socket) {
  if (udp_ == nullptr || socket.id < 0) return fail_with(EINVAL);
  constexpr int kRoomMs = 2000;
  const std::uint64_t deadline = deadline_after(kRoomMs);
  for (;;) {
    auto sent = udp_->connect(static_cast<std::uint32_t>(socket.id), socket.peer_address, socket.peer_port);
    if (sent) return 0;
    if (sent.error().code != Errc::exhausted) return fail_with(EINVAL);
    pump();
    const int left = remaining_ms(deadline);
    if (left == 0) return fail_with(ENOBUFS);
    constexpr int kRetryMs = 1;
    if (pause_for_udp(lock, [] { return false; }, std::min(left, kRetryMs)) < 0) return -1;
  }
}

std::uint64_t Runtime::arrivals(Socket& socket) {
  if (socket.udp()) return socket.datagrams != nullptr ? socket.datagrams->tail : 0;
  const bool live = socket.id >= 0 && owns(socket) && !gone(socket) && socket.state == Socket::State::connected;
  return live ? tcp_->info(socket.id).bytes_received : 0;
}

bool Runtime::restart_after_signal() {
  bool any = false;
  for (int signal = 1; signal < NSIG; ++signal) {
    // A fault signal comes to the thread that faults, never to one asleep in a call: the flags of
    // a crash handler (redis's, the sanitizers' runtime's) say nothing about restarting.
    const bool fault = signal == SIGSEGV || signal == SIGBUS || signal == SIGFPE || signal == SIGILL || signal == SIGSYS;
    if (fault) continue;
    struct sigaction action {};
    if (::sigaction(signal, nullptr, &action) != 0) continue;
    const bool handled = (action.sa_flags & SA_SIGINFO) != 0 ||
                         (action.sa_handler != SIG_DFL && action.sa_handler != SIG_IGN);
    if (!handled) continue;
    any = true;
    if ((action.sa_flags & SA_RESTART) == 0) return false;
  }
  return any;
}

void Runtime::pump() {
  if (host_ != nullptr && still_owner()) (void)host_->loop().poll_once();
}

std::shared_ptr<Socket> Runtime::socket_at(int fd) {
  if (fd < 0 || static_cast<std::size_t>(fd) >= sockets_.size()) return nullptr;
  return sockets_[static_cast<std::size_t>(fd)];
}

std::shared_ptr<EpollSet> Runtime::epoll_at(int fd) {
  if (fd < 0 || static_cast<std::size_t>(fd) >= epolls_.size()) return nullptr;
  return epolls_[static_cast<std::size_t>(fd)];
}

std::shared_ptr<EpollSet> Runtime::make_epoll(int fd, std::shared_ptr<EpollSet> shared) {
  if (fd < 0 || fd >= kMaxFds) return nullptr;
  if (static_cast<std::size_t>(fd) >= epolls_.size()) epolls_.resize(static_cast<std::size_t>(fd) + 1);
  auto& slot = epolls_[static_cast<std::size_t>(fd)];
  if (shared != nullptr) slot = std::move(shared);
  if (slot == nullptr) slot = std::make_shared<EpollSet>();
  g_fd_kind[fd].store(FdKind::epoll, std::memory_order_relaxed);
  return slot;
}

void Runtime::install(int fd, std::shared_ptr<Socket> socket) {
  if (static_cast<std::size_t>(fd) >= sockets_.size()) sockets_.resize(static_cast<std::size_t>(fd) + 1);
  ++socket->fd_refs;
  sockets_[static_cast<std::size_t>(fd)] = std::move(socket);
  g_fd_kind[fd].store(FdKind::tcp, std::memory_order_relaxed);
}

// Calls `visit` with each descriptor the library holds: its seats' (the lease and the one parked
// at a fork), the grant and the fork tokens.
template <class Visit>
void Runtime::for_each_own_descriptor(Visit visit) const {
  for (const ComponentHost* seat : {host_.get(), parked_.host.get()}) {
    if (seat != nullptr) seat->for_each_descriptor(visit);
  }
  visit(grant_);
  visit(fork_token_);
  visit(inherited_token_);
  for (const int token : handed_tokens_) visit(token);
}

void Runtime::mark_library_descriptors() {
  for_each_own_descriptor([](int fd) {
    if (fd >= 0 && fd < kMaxFds) g_library_fd[fd].store(true, std::memory_order_relaxed);
  });
}

std::vector<int> Runtime::library_descriptors() const {
  std::vector<int> held;
  for_each_own_descriptor([&](int fd) {
    if (fd >= 0) held.push_back(fd);
  });
  std::sort(held.begin(), held.end());
  held.erase(std::unique(held.begin(), held.end()), held.end());
  return held;
}

bool Runtime::vacate(int fd) {
  if (!library_descriptor(fd)) return true;
  const int flags = REAL(fcntl)(fd, F_GETFD);
  const int copy = REAL(fcntl)(fd, (flags & FD_CLOEXEC) != 0 ? F_DUPFD_CLOEXEC : F_DUPFD, kLibraryDescriptorsFrom);
  if (copy < 0) return false;
  bool moved = false;
  for (ComponentHost* seat : {host_.get(), parked_.host.get()}) moved = moved || (seat != nullptr && seat->renumber(fd, copy));
  for (int* own : {&grant_, &fork_token_, &inherited_token_}) {
    if (!moved && *own == fd) *own = copy, moved = true;
  }
  for (int& token : handed_tokens_) {
    if (!moved && token == fd) token = copy, moved = true;
  }
  if (!moved) {
    REAL(close)(copy);
    return false;
  }
  if (copy < kMaxFds) g_library_fd[copy].store(true, std::memory_order_relaxed);
  (void)library_descriptor(fd);  // unmarks it
  return true;
}

bool Runtime::library_descriptor(int fd) {
  bool held = false;
  for_each_own_descriptor([&](int own) { held = held || own == fd; });
  if (!held && fd >= 0 && fd < kMaxFds) g_library_fd[fd].store(false, std::memory_order_relaxed);
  return held;
}

void Runtime::forget(int fd) {
  if (fd < 0 || fd >= kMaxFds) return;
  g_fd_kind[fd].store(FdKind::kernel, std::memory_order_relaxed);
  if (static_cast<std::size_t>(fd) < epolls_.size()) epolls_[static_cast<std::size_t>(fd)].reset();
  if (static_cast<std::size_t>(fd) >= sockets_.size()) return;
  std::shared_ptr<Socket> socket = std::move(sockets_[static_cast<std::size_t>(fd)]);
  if (socket != nullptr && --socket->fd_refs == 0) release(*socket);
}

void Runtime::release(Socket& socket) {
  if (socket.handed != nullptr) {
    const bool connection = socket.handed->connection.has_value();
    socket.handed.reset();
    if (connection) handed_connection_settled();
  }
  const bool ours = holds(socket) && tcp_ != nullptr && socket.id >= 0 && socket.lease == lease_;
  if (ours && socket.udp()) {
    (void)udp_->close(static_cast<std::uint32_t>(socket.id));
    datagram_sockets_[static_cast<std::size_t>(socket.id)] = nullptr;
  } else if (ours && socket.state != Socket::State::released) {
    const bool abortive = socket.linger_option.l_onoff != 0 && socket.linger_option.l_linger == 0;
    (void)(abortive ? tcp_->abort(socket.id) : tcp_->close(socket.id));
  }
  socket.state = Socket::State::released;
  socket.id = -1;
}

int Runtime::socket_error(Socket& socket) {
  if (!owns(socket)) return EBADF;  // inherited over fork: the parent's, not ours
  if (gone(socket)) return ENETDOWN;
  if (socket.udp()) return socket.udp_error;
  return socket.id >= 0 && tcp_ != nullptr ? past_limit(tcp_->error(socket.id)) : 0;
}

int Runtime::past_limit(int error) {
  if (error == EMFILE && !said_sockets_limit_) {
    said_sockets_limit_ = true;
    std::fprintf(stderr, "flotilla: a TCP replica has no socket left for this program (limits.tcp_sockets_per_seat; "
                         "'flotilla up --set limits.tcp_sockets_per_seat=N' gives more); new TCP sockets fail with "
                         "EMFILE\n");
  }
  return error;
}

// Linux's socket poll reports POLLRDNORM with POLLIN and POLLWRNORM with POLLOUT (and a datagram
// socket POLLWRBAND too); a program may wait for those bits alone (varnish's connect polls for
// POLLWRNORM).
std::uint32_t Runtime::ready_events(Socket& socket) {
  std::uint32_t events = transport_events(socket);
  if ((events & POLLIN) != 0) events |= POLLRDNORM;
  if ((events & POLLOUT) != 0) events |= POLLWRNORM | (socket.udp() ? POLLWRBAND : 0);
  return events;
}

std::uint32_t Runtime::transport_events(Socket& socket) {
  constexpr std::uint32_t kBroken = POLLIN | POLLOUT | POLLERR | POLLHUP | POLLRDHUP;
  if (!owns(socket)) return kBroken;
  // A stack that went down: a listener and a UDP socket get nothing more (they stop being ready,
  // so that no server spins on them); a connection is over.
  if (gone(socket)) return socket.state == Socket::State::listening || socket.udp() ? 0 : POLLERR | POLLHUP;
  if (socket.udp()) {
    if (socket.state == Socket::State::released) return POLLNVAL;
    const bool waiting = socket.datagrams != nullptr && !socket.datagrams->empty();
    return POLLOUT | (waiting ? POLLIN : 0) | (socket.udp_error != 0 ? POLLERR : 0);
  }
  switch (socket.state) {
    case Socket::State::fresh:
      // What Linux says of a TCP socket never connected (or whose connect failed).
      return POLLOUT | POLLHUP | (socket.handed_error != 0 ? POLLERR : 0);
    case Socket::State::released:
      return POLLNVAL;
    case Socket::State::listening:
      if (tcp_->error(socket.id) != 0) return POLLERR;
      return tcp_->acceptable(socket.id) ? POLLIN : 0;
    case Socket::State::connecting:
    case Socket::State::connected:
      break;
  }
  std::uint32_t events = 0;
  const int id = socket.id;
  if (tcp_->error(id) != 0) return kBroken;
  if (tcp_->readable(id) || socket.read_shut) events |= POLLIN;
  if (tcp_->writable(id)) events |= POLLOUT;
  if (tcp_->eof(id) || socket.read_shut) events |= POLLRDHUP | POLLIN;
  if ((events & POLLRDHUP) != 0 && socket.write_shut) events |= POLLHUP;
  return events;
}

bool Runtime::can_lead() {
  // A child took the lease over, or the stack is gone: nothing comes to wait for.
  return host_ != nullptr && !stack_down() && still_owner();
}

Runtime::StackMarks Runtime::lie_down(Sleeper& me) {
  if (sleepers_ == 0) {
    // Also what a fork child finds: its parent's sleepers are threads it does not have.
    asleep_.clear();
    leader_ = nullptr;
  }
  if (std::find(asleep_.begin(), asleep_.end(), &me) == asleep_.end()) {
    asleep_.push_back(&me);
    sleepers_ = static_cast<int>(asleep_.size());
    if (ownership_ != nullptr && still_owner()) ownership_->sleepers.store(sleepers_);
  }
  me.nudged = false;
  StackMarks marks;
  marks.nudge = me.nudge;
  // A lease that ended is hung up (always ready): no sleep watches it then.
  if (host_ == nullptr || stack_down()) return marks;
  marks.lease = lease_fd();
  if (leader_ == nullptr && can_lead()) {
    leader_ = &me;
    me.led_lease = lease_;
    host_->arm_wake();
  }
  if (leader_ == &me) marks.wake = wake_fd();
  return marks;
}

void Runtime::nudge(Sleeper& sleeper) {
  // Threads asleep in one epoll set share its eventfd, and the kernel wakes one of them per write:
  // one write at a time, so that each write has a sleeper to account for it.
  for (const Sleeper* other : asleep_) {
    if (other->nudged && other->nudge == sleeper.nudge) return;
  }
  sleeper.nudged = true;
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = REAL(write)(sleeper.nudge, &one, sizeof(one));
  counters_.nudges->add();
}

void Runtime::relay(Sleeper& me) {
  if (leader_ != &me) return;
  for (Sleeper* sleeper : asleep_) {
    if (sleeper == &me || sleeper->nudged || sleeper->nudge < 0) continue;
    if (sleeper->peek(sleeper->watched)) nudge(*sleeper);
  }
}

void Runtime::woke(Sleeper& me, const WakeReason& reason) {
  if (reason.woken) counters_.wake_ups->add();
  if (leader_ == &me) {
    leader_ = nullptr;
    // The doorbell's flag down and the eventfd drained, unless a new lease replaced that doorbell.
    if (host_ != nullptr && me.led_lease == lease_ && still_owner()) host_->disarm_wake();
  }
  if (reason.nudged && !me.nudged) forget_nudge(me.nudge, &me);
  me.nudged = false;
  if (reason.lease_gone) mark_down();
}

void Runtime::get_up(Sleeper& me) {
  if (leader_ == &me) {
    leader_ = nullptr;
    if (host_ != nullptr && me.led_lease == lease_ && still_owner()) host_->disarm_wake();
  }
  std::erase(asleep_, &me);
  sleepers_ = static_cast<int>(asleep_.size());
  if (ownership_ != nullptr && still_owner()) ownership_->sleepers.store(sleepers_);
  appoint_leader();
}

void Runtime::forget_nudge(int fd, const Sleeper* taker) {
  // The kernel woke another waiter of the set than the one the write was for (or a look that was
  // not a sleep took it): that one is not woken by it.
  for (Sleeper* sleeper : asleep_) {
    if (sleeper != taker && sleeper->nudge == fd && sleeper->nudged) {
      sleeper->nudged = false;
      return;
    }
  }
}

void Runtime::nudge_taken(int fd) {
  if (sleepers_ == 0) return;  // (a fork child's asleep_ names its parent's threads)
  forget_nudge(fd, nullptr);
  appoint_leader();
}

void Runtime::wake_one_in_set(int fd) {
  if (fd < 0 || sleepers_ == 0) return;
  for (Sleeper* sleeper : asleep_) {
    if (sleeper->nudge == fd) {
      nudge(*sleeper);  // none when one of them is nudged already
      return;
    }
  }
}

void Runtime::appoint_leader() {
  if (leader_ != nullptr || asleep_.empty() || !can_lead()) return;
  // A sleeper already nudged wakes anyway, and leads if it sleeps again; else the latest one.
  for (const Sleeper* sleeper : asleep_) {
    if (sleeper->nudged) return;
  }
  for (auto sleeper = asleep_.rbegin(); sleeper != asleep_.rend(); ++sleeper) {
    if ((*sleeper)->nudge >= 0) {
      nudge(**sleeper);
      return;
    }
  }
}

EpollSet::~EpollSet() {
  if (nudge >= 0) REAL(close)(nudge);
}

int Runtime::make_nudge_fd() {
  // Above the low numbers programs name themselves (see LowDescriptorsHeld).
  constexpr int kAbove = 64;
  const int made = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (made < 0 || made >= kAbove) return made;
  const int moved = REAL(fcntl)(made, F_DUPFD_CLOEXEC, kAbove);
  REAL(close)(made);
  return moved;
}

namespace {

// A thread's eventfd for the nudges of its poll-style sleeps (Runtime::thread_nudge_fd).
struct ThreadNudge {
  int fd = -1;
  pid_t process = 0;
  ~ThreadNudge() {
    if (fd >= 0 && process == ::getpid()) REAL(close)(fd);
  }
};
thread_local ThreadNudge t_nudge;

}  // namespace

Runtime::Sleeper& Runtime::this_thread_sleeper() {
  thread_local Sleeper sleeper;
  return sleeper;
}

void Runtime::settle_before_sandbox() {
  for (std::size_t fd = 0; fd < sockets_.size(); ++fd) {
    const std::shared_ptr<Socket> socket = sockets_[fd];
    if (socket != nullptr && (socket->handed != nullptr || socket->epoch != epoch_)) (void)owns(*socket);
  }
  (void)thread_nudge_fd();
}

int Runtime::thread_nudge_fd() {
  // One made before a fork is shared with the parent (a read would take the parent's nudge): a
  // child makes its own.
  if (t_nudge.fd >= 0 && t_nudge.process == owner_) return t_nudge.fd;
  t_nudge.fd = make_nudge_fd();
  t_nudge.process = owner_;
  return t_nudge.fd;
}

namespace {

// ppoll over more descriptors than RLIMIT_NOFILE allows fails with EINVAL: a process that lowered
// it (sshd's sandboxed child keeps 1) is polled in turns of as many as it may, and sleeps on the
// stack's wake-up (the second last entry) in slices of at most 10 ms in between. Returns what
// ppoll would have, or -1 with errno when the limit is not the reason.
int poll_in_turns(std::vector<pollfd>& all, int timeout_ms, const sigset_t* mask) {
  // As the program set it through us (a sandbox may forbid asking the kernel), else the kernel's.
  rlimit limit{g_descriptor_limit_set.load(std::memory_order_relaxed), 0};
  if ((limit.rlim_cur == RLIM_INFINITY && ::getrlimit(RLIMIT_NOFILE, &limit) != 0) || limit.rlim_cur >= all.size()) {
    errno = EINVAL;
    return -1;
  }
  const std::size_t room = limit.rlim_cur;
  constexpr std::uint64_t kSliceNs = 10'000'000;
  const std::uint64_t until = timeout_ms < 0 ? 0 : monotonic_ns() + static_cast<std::uint64_t>(timeout_ms) * 1'000'000;
  for (;;) {
    int ready = 0;
    const timespec now_only{};
    for (std::size_t at = 0; room > 0 && at < all.size(); at += room) {
      const int found = REAL(ppoll)(&all[at], std::min(room, all.size() - at), &now_only, mask);
      if (found < 0) return -1;
      ready += found;
    }
    const std::uint64_t now = monotonic_ns();
    if (ready > 0 || (until != 0 && now >= until) || timeout_ms == 0) return ready;
    const std::uint64_t slice = until == 0 ? kSliceNs : std::min(kSliceNs, until - now);
    const timespec wait{0, static_cast<long>(slice)};
    pollfd& wake = all[all.size() - 2];
    if (REAL(ppoll)(room > 0 ? &wake : nullptr, room > 0 ? 1 : 0, &wait, mask) < 0) return -1;
    if (room == 0) {
      // No descriptor may be polled (vsftpd's pre-login child keeps none): each slice is taken
      // for a wake-up, so the caller looks at the rings.
      wake.revents = POLLIN;
      return 0;
    }
  }
}

}  // namespace

int Runtime::sleep_in_kernel(pollfd* kernel, std::size_t kernel_count, int timeout_ms, const sigset_t* mask,
                             const StackMarks& marks, WakeReason& reason) {
  thread_local std::vector<pollfd> all;
  all.assign(kernel, kernel + kernel_count);
  all.push_back(pollfd{marks.nudge, POLLIN, 0});
  all.push_back(pollfd{marks.wake, POLLIN, 0});
  all.push_back(pollfd{marks.lease, POLLIN, 0});
  timespec limit{};
  timespec* limit_pointer = nullptr;
  if (timeout_ms >= 0) {
    limit = timespec{timeout_ms / 1000, static_cast<long>(timeout_ms % 1000) * 1'000'000};
    limit_pointer = &limit;
  }
  int ready = REAL(ppoll)(all.data(), all.size(), limit_pointer, mask);
  if (ready < 0 && errno == EINVAL) ready = poll_in_turns(all, timeout_ms, mask);
  if (ready < 0) return -1;
  int theirs = 0;
  for (std::size_t i = 0; i < kernel_count; ++i) {
    kernel[i].revents = all[i].revents;
    if (all[i].revents != 0) ++theirs;
  }
  const pollfd& nudge = all[kernel_count];
  if ((nudge.revents & POLLNVAL) != 0) {
    t_nudge.fd = -1;  // the program closed it: a new one next time
  } else if (nudge.revents != 0) {
    std::uint64_t count = 0;
    [[maybe_unused]] const ssize_t drained = REAL(read)(nudge.fd, &count, sizeof(count));
    reason.nudged = true;
  }
  reason.woken = all[kernel_count + 1].revents != 0;
  reason.lease_gone = all[kernel_count + 2].revents != 0;
  return theirs;
}

void Runtime::after_fork_child() {
  // The lock was taken by the parent's thread (before_fork); a recursive mutex knows its owner's
  // thread id, which the child's thread does not have: a fresh one replaces it, first, as what
  // follows may take it (a seat parked before, dropped now, closes its descriptors here).
  new (&mutex_) LibraryMutex();
  // The parent's rings have one producer, the parent: the child parks the lease without touching
  // it and marks every socket it inherited as not its own, until the parent is gone (owns()).
  if (host_ != nullptr) {
    parked_ = Parked{std::move(host_), std::move(tcp_),  std::move(udp_),
                     std::move(datagram_sockets_), epoch_, lease_, owner_, ownership_,
                     ownership_ != nullptr ? ownership_->uses.load() : 0, fork_serial_};
    // The parent's own proofs went with the seat it parked before (claimed before the fork).
    if (inherited_token_ >= 0) REAL(close)(inherited_token_);
    inherited_token_ = fork_token_;
  }
  // The fork's token stays open (close-on-exec) while this process lives: it holds the pins (an
  // exec hands it on with the connections it pins).
  fork_token_ = -1;
  fork_serial_ = 0;
  ownership_ = nullptr;
  forked_ = false;
  owner_ = ::getpid();
  datagram_sockets_.clear();
  counters_ = PreloadCounters{&unregistered_, &unregistered_, &unregistered_, &unregistered_,
                              &unregistered_, &unregistered_, &unregistered_};
  ++epoch_;
  sleepers_ = 0;
  down_ = false;
}

namespace {

// Whether process `pid` is gone (or a zombie): then nobody else uses the state it owned.
bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  FILE* stat = std::fopen(path, "re");
  // No /proc here (a chroot, as vsftpd's session makes): it lives, as kill said.
  if (stat == nullptr) return false;
  char state = 0;
  const int read = std::fscanf(stat, "%*d (%*[^)]) %c", &state);
  std::fclose(stat);
  return read == 1 && (state == 'Z' || state == 'X');
}

}  // namespace

bool Runtime::owns(Socket& socket) {
  if (socket.handed != nullptr) return take_handed(socket);
  if (socket.epoch == epoch_) return still_owner();
  if (socket.epoch != parked_.epoch) return false;
  // A listener is shared, not taken over: the parent (an nginx master, a daemon's first process)
  // keeps its member of the group, and every process that uses the listener adds one.
  if (socket.state == Socket::State::listening && !socket.udp()) return join_inherited(socket);
  // A connection the parent pinned at the fork is taken over, whatever the parent does next.
  if (parked_.fork != 0 && !socket.udp() && socket.state == Socket::State::connected && socket.id >= 0 &&
      parked_.tcp != nullptr) {
    if (const auto share = parked_.tcp->share_connection(socket.id)) return claim_inherited(socket, *share);
  }
  return adopt_parked(true);
}

bool Runtime::claim_inherited(Socket& socket, const sockets::ConnectionShare& share) {
  if (!lease_own_seat()) return false;
  auto claimed = tcp_->claim(share, parked_.fork);
  if (!claimed) {
    if (!said_claim_refused_) {
      said_claim_refused_ = true;
      std::fprintf(stderr, "flotilla: cannot take over a connection inherited over fork (%s); its calls fail with "
                           "EBADF\n", claimed.error().context ? claimed.error().context : "refused");
    }
    return false;
  }
  socket.id = claimed.value();
  socket.epoch = epoch_;
  socket.lease = lease_;
  return true;
}

void Runtime::claim_before_fork() {
  if (down_) return;
  for (const auto& socket : sockets_) {
    if (socket == nullptr || socket->udp()) continue;
    if (socket->handed != nullptr) {
      if (socket->handed->connection) (void)take_handed(*socket);
      continue;
    }
    if (socket->state != Socket::State::connected || socket->id < 0) continue;
    if (socket->epoch != epoch_) {
      if (parked_.fork == 0 || parked_.tcp == nullptr || socket->epoch != parked_.epoch) continue;
      const auto share = parked_.tcp->share_connection(socket->id);
      if (!share || !claim_inherited(*socket, *share)) continue;
    }
    // The pin this fork makes covers only what the replicas answered for: a claim made earlier
    // (vsftpd's session process uses the connection before it forks) may still wait for its answer.
    if (socket->lease == lease_ && tcp_ != nullptr && !tcp_->share_connection(socket->id) &&
        tcp_->error(socket->id) == 0 && still_owner()) {
      (void)await_opened(socket->id, false);
    }
  }
}

void Runtime::prepare_fork() {
  fork_serial_ = 0;
  if (host_ == nullptr || tcp_ == nullptr || down_ || !still_owner() || !tcp_->holds_connections()) return;
  // The token first: a hold the supervisor has no token for would pin until the seat's end.
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0) return;
  // Above the low numbers programs name themselves (LowDescriptorsHeld).
  const int child_end = ::fcntl(ends[1], F_DUPFD_CLOEXEC, 64);
  REAL(close)(ends[1]);
  std::uint64_t fork = 0;
  while (fork == 0) {
    if (::getrandom(&fork, sizeof(fork), 0) != sizeof(fork)) fork = monotonic_ns() ^ (std::uint64_t(owner_) << 40);
  }
  char request[64];
  const int length = std::snprintf(request, sizeof(request), "fork-hold %llu", static_cast<unsigned long long>(fork));
  const int passed[1] = {ends[0]};
  const bool handed = child_end >= 0 &&
      send_fds(lease_fd(), std::as_bytes(std::span(request, static_cast<std::size_t>(length))), passed).ok();
  REAL(close)(ends[0]);
  if (!handed) {
    if (child_end >= 0) REAL(close)(child_end);
    return;
  }
  if (!tcp_->hold_for_fork(fork)) {
    REAL(close)(child_end);  // nothing pinned: the supervisor's word that it ended changes nothing
    return;
  }
  fork_token_ = child_end;
  fork_serial_ = fork;
  mark_library_descriptors();
}

void Runtime::end_fork_in_parent() {
  if (fork_token_ >= 0) REAL(close)(fork_token_);
  fork_token_ = -1;
  fork_serial_ = 0;
}

bool Runtime::join_inherited(Socket& socket) {
  if (parked_.tcp == nullptr || socket.id < 0) return false;
  const auto share = parked_.tcp->share(socket.id);
  if (!share || !lease_own_seat()) return false;
  auto joined = tcp_->join(*share);
  if (!joined) return false;
  socket.id = joined.value();
  socket.epoch = epoch_;
  socket.lease = lease_;
  return true;
}

bool Runtime::lease_own_seat() {
  if (host_ != nullptr) return ensure_stack(false);
  // Every seat leased: one may come free in a moment (an nginx reload starts its new workers before
  // the old ones leave). The wait holds the lock: a process joins before it serves anything.
  constexpr std::uint64_t kSeatWaitNs = 5'000'000'000;
  constexpr useconds_t kSeatLookUs = 20'000;
  const std::uint64_t until = monotonic_ns() + kSeatWaitNs;
  for (;;) {
    lease_retry_.allow_now();
    if (ensure_stack(false)) return true;
    if (errno != ENFILE || monotonic_ns() >= until) return false;
    ::usleep(kSeatLookUs);
  }
}

// A daemon's pattern: the parent opened the sockets and forked; its child carries on with them
// while the parent exits (at once, or after waiting for the child). The child adopts the parked
// lease (unless it leased its own) when the parent is gone, or, when it uses an inherited socket
// (`from_living_parent`), when the parent has not used the lease since the fork: the owner bumps `uses` before it looks at `owner`, the child changes `owner` before it
// looks at `uses` again, so one of them sees the other and a parent still at work keeps it.
bool Runtime::adopt_parked(bool from_living_parent) {
  if (parked_.host == nullptr || host_ != nullptr) return false;
  Ownership* shared = parked_.ownership;
  if (!process_gone(parked_.owner)) {
    if (!from_living_parent || shared == nullptr || shared->uses.load() != parked_.uses_at_fork || shared->sleepers.load() != 0) return false;
    pid_t expected = parked_.owner;
    if (!shared->owner.compare_exchange_strong(expected, owner_)) return false;
    if (shared->uses.load() != parked_.uses_at_fork) {
      shared->owner.store(parked_.owner);
      return false;
    }
  } else if (shared != nullptr) {
    // One child only: pre-forked siblings whose parent is gone must not both take it.
    pid_t expected = parked_.owner;
    if (!shared->owner.compare_exchange_strong(expected, owner_)) return false;
  }
  ownership_ = shared;
  forked_ = true;  // the parent may still be there: it must keep seeing our uses
  host_ = std::move(parked_.host);
  tcp_ = std::move(parked_.tcp);
  udp_ = std::move(parked_.udp);
  datagram_sockets_ = std::move(parked_.datagram_sockets);
  epoch_ = parked_.epoch;
  lease_ = parked_.lease;
  parked_ = Parked{};
  register_counters();
  mark_library_descriptors();
  return true;
}

std::uint64_t deadline_after(int timeout_ms) {
  return timeout_ms < 0 ? 0 : monotonic_ns() + static_cast<std::uint64_t>(timeout_ms) * 1'000'000;
}

int remaining_ms(std::uint64_t deadline_ns) {
  if (deadline_ns == 0) return -1;
  const std::uint64_t now = monotonic_ns();
  if (now >= deadline_ns) return 0;
  return static_cast<int>((deadline_ns - now + 999'999) / 1'000'000);
}

}  // namespace flotilla::preload
