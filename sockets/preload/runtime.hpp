// The process-wide state of libflotilla-preload.so: which descriptors are Flotilla sockets, the
// leased application seat (ComponentHost + TcpSockets), the one lock that guards them, and the
// one way to sleep (in the kernel, on the program's own descriptors plus the library's eventfds:
// one thread, the leader, on the seat's wake eventfd, each other on its own; see Sleeper).
//
// Descriptor numbers: every Flotilla socket holds a real kernel descriptor (an eventfd), so the
// kernel never hands its number to anything else; dup/dup2/fcntl(F_DUPFD) duplicate that
// eventfd too and share the socket, as Linux shares an open file description. The kind of each
// number sits in a fixed array of atomic bytes: read()/write() on a kernel descriptor check one
// byte and take no lock.
//
// Threads: one mutex guards everything below (ComponentLoop and TcpSockets are single-threaded);
// it is never held while sleeping in the kernel. fork: pthread_atfork takes the lock around the
// fork. The rings are shared memory with one producer, so one process at a time uses a lease: the
// child parks the parent's, and closes inherited sockets without touching it. A listener it
// inherited and uses it joins: it leases a seat of its own and joins the listener's group on every
// replica, proving what it inherited with the parent's pages (join_inherited). A connection it
// inherited and uses it claims: the parent pinned its connections in the moment before the fork
// (prepare_fork), so the parent's close leaves them open, and the child takes one over into a seat
// of its own (claim_inherited). The pins last while any process holds the fork's token (a socket
// whose other end the supervisor watches). Any other inherited socket it uses adopts the parent's
// lease, only when the parent is gone or idle since the fork (a daemon, see adopt_parked); a
// socket the child opens otherwise leases a seat of its own. exec: the sockets a new image keeps
// are written down for it with the same proofs (hand_over), and it joins or claims them
// (take_handoff, take_handed).
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstddef>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "dataplane/clock.hpp"
#include "dataplane/counters.hpp"
#include "dataplane/cpu.hpp"
#include "dataplane/component_host.hpp"
#include "sockets/preload/kept_options.hpp"
#include "sockets/tcp_sockets.hpp"
#include "sockets/udp_sockets.hpp"

namespace flotilla::preload {

// file: a descriptor of the file fleet (files.hpp), also a real kernel descriptor (a memfd).
enum class FdKind : std::uint8_t { kernel = 0, tcp = 1, epoll = 2, file = 3 };

// Datagrams a UDP socket received and the program has not read yet: a fixed ring, allocated with
// the socket (UdpSockets hands each datagram over during the loop only, so it is copied here).
struct DatagramQueue {
  static constexpr std::size_t kDatagrams = 64;
  static constexpr std::size_t kBytes = 1472;  // UdpSockets::max_payload at most
  struct Entry {
    std::uint32_t address;  // host order
    std::uint32_t destination;  // host order: the address it was sent to
    std::uint16_t port;
    std::uint16_t length;
    std::byte bytes[kBytes];
  };
  std::vector<Entry> entries = std::vector<Entry>(kDatagrams);
  std::uint64_t head = 0;  // next to read
  std::uint64_t tail = 0;  // next to fill; tail - head waiting
  std::uint64_t dropped = 0;

  bool empty() const { return head == tail; }
  const Entry& front() const { return entries[head % kDatagrams]; }
  void pop() { ++head; }
  // Copies a datagram in; false (counted) when the queue is full, as a full socket buffer drops.
  bool push(std::uint32_t address, std::uint16_t port, std::uint32_t destination, std::span<const std::byte> payload);
};

// What a socket handed over by exec needs to become this image's (Runtime::take_handed): the
// proof the replicas check, written by the image before (exec.cpp). Neither: a fresh socket.
struct Handed {
  std::optional<sockets::ListenerShare> listener;
  std::optional<sockets::ConnectionShare> connection;
  std::uint64_t fork = 0;  // a connection: the fork serial that pinned it
  bool datagram = false;  // a UDP socket open at the sender: opened again on its bound port
};

// One Flotilla socket: what Linux keeps in an open file description (shared by dups).
struct Socket {
  enum class State : std::uint8_t { fresh, connecting, connected, listening, released };
  enum class Protocol : std::uint8_t { tcp, udp };
  Protocol protocol = Protocol::tcp;
  // AF_INET6: a dual-stack socket (IPV6_V6ONLY off), whose IPv4 peers the calls name by
  // IPv4-mapped addresses (::ffff:a.b.c.d); one bound or connected to an IPv6 address is the kernel's.
  int family = AF_INET;
  State state = State::fresh;  // UDP: fresh, then connected once it has a default peer
  int id = -1;                // TcpSockets id once connecting or listening; UdpSockets id once opened
  std::uint64_t epoch = 0;    // Runtime::epoch at creation: another value means inherited over fork
  std::uint64_t lease = 0;    // Runtime::lease at creation: another value means its stack went down since
  bool down_reported = false;  // a listener whose stack went down: accept said ENETDOWN once
  int fd_refs = 0;            // descriptors naming it; the last close releases it
  std::shared_ptr<const Handed> handed;  // handed over by exec and not taken yet (owns())
  bool nonblocking = false;   // O_NONBLOCK, per open file description like Linux
  bool bound = false;
  std::uint32_t bound_address = 0;  // host order
  std::uint16_t bound_port = 0;
  bool port_picked_at_bind = false;  // bind to port 0: listen may pick another if that one is taken
  // Bound, then passed to another process (SCM_RIGHTS) before listening: every process that
  // listens on it shares the port (a listener group), as processes sharing one socket on Linux do.
  bool port_shared = false;
  bool read_shut = false;
  bool write_shut = false;
  bool error_reported = false;  // SO_ERROR (or a failed connect) said it already
  // A connect that failed before exec or SCM_RIGHTS handed the socket over, not reported yet:
  // poll says POLLERR and SO_ERROR says it, once. The next connect fails as Linux's does (with
  // that error, or ECONNABORTED once it was said), and the one after that connects.
  int handed_error = 0;
  bool handed_failed = false;
  std::uint64_t stalls = 0;     // EAGAINs: an edge-triggered epoll reports the next readiness again
  // Options (kept so getsockopt answers what setsockopt said, and sent once a connection exists).
  bool reuse_address = false;
  bool reuse_port = false;
  bool keepalive = false;
  bool no_delay = false;
  bool cork = false;
  std::uint32_t keep_idle_s = 7200;
  std::uint32_t keep_interval_s = 75;
  std::uint32_t keep_count = 9;
  linger linger_option{};
  int receive_buffer = 1 << 20;
  int send_buffer = 1 << 20;
  int receive_timeout_ms = -1;  // -1: none
  int send_timeout_ms = -1;
  int user_mss = 0;            // TCP_MAXSEG as set (0: none); what getsockopt says until connected
  bool tcp_newreno = false;    // TCP_CONGESTION "reno" (else "cubic"), chosen before the connection opens
  bool packet_info = false;    // IP_PKTINFO: receives say each datagram's destination (UDP)
  bool packet_info6 = false;   // IPV6_RECVPKTINFO (AF_INET6): the same, as an IPv4-mapped address
  KeptValues kept = initial_kept_values();
  // UDP.
  std::shared_ptr<DatagramQueue> datagrams;  // shared_ptr: accept() copies a (TCP) listener
  bool udp_answered = false;  // the UDP server answered the open (bound_port, or udp_error)
  int udp_error = 0;
  std::uint32_t peer_address = 0;  // connect(): the default destination and the only source
  std::uint16_t peer_port = 0;

  bool udp() const { return protocol == Protocol::udp; }
};

// The Flotilla descriptors one epoll instance watches (kernel ones live in the kernel's set).
struct EpollSet {
  struct Interest {
    int fd;
    std::shared_ptr<Socket> socket;
    std::uint32_t events;
    epoll_data_t data;
    bool disabled = false;         // EPOLLONESHOT fired; EPOLL_CTL_MOD enables it again
    std::uint32_t last_ready = 0;  // edge-triggered: what the last look saw
    std::uint64_t last_stalls = 0;
    std::uint64_t last_received = 0;
  };
  EpollSet() = default;
  EpollSet(const EpollSet&) = delete;
  EpollSet& operator=(const EpollSet&) = delete;
  ~EpollSet();

  std::vector<Interest> interests;
  // The set's own eventfd (Runtime::Sleeper::nudge): a leader writes it when the set's sockets
  // become ready, and the kernel wakes one thread waiting in the set. Made with the first interest.
  int nudge = -1;
  bool marks_added = false;  // the nudge eventfd and lease descriptor are in the kernel's set
  std::uint64_t marks_lease = 0;  // the lease whose descriptor that is
  std::uint32_t calls = 0;  // to look at the kernel's set now and then while ours are ready
  std::size_t next = 0;     // where the next look starts (fairness when few events fit)
};

// Counts nobody reads: where a counter points that the code making PreloadCounters by position
// leaves out.
inline NamedCounter g_uncounted{};

// Named counters (the slot's, shown by `flotilla top`).
struct PreloadCounters {
  NamedCounter* readiness_checks = nullptr;
  NamedCounter* readiness_no_syscall = nullptr;
  NamedCounter* io_calls = nullptr;
  NamedCounter* io_no_syscall = nullptr;
  NamedCounter* waits_in_kernel = nullptr;
  NamedCounter* wake_ups = nullptr;
  NamedCounter* errors = nullptr;
  NamedCounter* nudges = &g_uncounted;  // a leader woke one other sleeper (Runtime::Sleeper)
};

inline constexpr int kMaxFds = 1 << 20;
extern std::atomic<FdKind> g_fd_kind[kMaxFds];

inline FdKind fd_kind(int fd) {
  return fd >= 0 && fd < kMaxFds ? g_fd_kind[fd].load(std::memory_order_relaxed) : FdKind::kernel;
}
inline bool is_socket(int fd) { return fd_kind(fd) == FdKind::tcp; }

// The library's own descriptors (its lease's, the fork tokens), marked so that a program closing
// descriptors it never opened (closefrom, close_range, a loop over /proc/self/fd: sshd closes all
// above 5 as it starts) finds them closed, as it would without the library, instead of ending the
// lease. A mark may outlive its descriptor: the close that meets one asks
// Runtime::library_descriptor, which clears it when the library no longer holds that number.
extern std::atomic<bool> g_library_fd[kMaxFds];
// The descriptor limit the program last set through setrlimit (RLIM_INFINITY: never set).
extern std::atomic<rlim_t> g_descriptor_limit_set;
inline bool marked_library(int fd) {
  return fd >= 0 && fd < kMaxFds && g_library_fd[fd].load(std::memory_order_relaxed);
}

// Recursive: a signal handler that longjmps out of a call (iperf3 does, on SIGINT) leaves the lock
// taken, and the same thread then calls in again; a plain mutex would deadlock it.
using LibraryMutex = std::recursive_mutex;
using Lock = std::unique_lock<LibraryMutex>;

// A lease that failed is asked for again at most once a second; until then the calls that need it
// fail at once with the errno of that failure. The sockets' seat and the file fleet's each keep one.
class LeaseRetry {
 public:
  explicit LeaseRetry(int error) : error_(error) {}
  // Whether to ask now (the next try is then a second away); false sets errno.
  bool due();
  // The failure calls report until the next try, a second from now (an ask may take a while:
  // lease_when_a_seat_frees).
  void failed(int error) {
    error_ = error;
    next_ns_ = monotonic_ns() + kEveryNs;
  }
  // The next call may ask at once (a lease made, or a fork child's first use).
  void allow_now() { next_ns_ = 0; }
  int error() const { return error_; }

 private:
  static constexpr std::uint64_t kEveryNs = 1'000'000'000;
  std::uint64_t next_ns_ = 0;
  int error_;
};

// Milliseconds left until `deadline_ns` (monotonic; 0 = none -> -1).
int remaining_ms(std::uint64_t deadline_ns);
std::uint64_t deadline_after(int timeout_ms);

class Runtime {
 public:
  static Runtime& get();

  LibraryMutex& mutex() { return mutex_; }

  // Leases a slot on first use, and again once the stack is back after it went down (at most once
  // a second). false (errno set, one line on stderr the first time) when the stack is not running.
  // Under the lock.
  // `adopt_parent` false: never the parked lease of a parent (a seat of this process's own).
  bool ensure_stack(bool adopt_parent = true);
  bool stack_down() const { return down_.load(std::memory_order_relaxed); }
  // Which lease this is (a new one after the stack came back); 0 before the first.
  std::uint64_t lease() const { return lease_; }
  // Whether `socket`'s stack went away: the lease ended, or the socket was made on an earlier one.
  // Its id then names nothing: its calls fail with ENETDOWN.
  bool gone(const Socket& socket) const { return stack_down() || socket.lease != lease_; }
  sockets::TcpSockets& tcp() { return *tcp_; }
  // nullptr when the slot has no channel to the UDP server.
  sockets::UdpSockets* udp() { return udp_.get(); }
  // Asks the UDP server for a socket bound to `port` (shared with others that set SO_REUSEPORT
  // when this one did) and waits for its answer (asleep, or, without `lock`, the lock held while
  // the answer comes: a socket taken over as the image loads). 0, or -1 with errno.
  int open_datagram(Lock* lock, Socket& socket, std::uint16_t port);
  // Tells the UDP server the opened socket's peer (peer_address:peer_port; none when the port is
  // 0), waiting while its channel is full (asleep, or without `lock` in short naps). 0, or -1
  // with errno.
  int send_peer(Lock* lock, Socket& socket);
  // One pause of a wait for the UDP server (open_datagram, send_peer): asleep until `done` or
  // `timeout_ms` with `lock`, else a nap of a millisecond with the lock held. 0, or -1 with errno.
  template <class Done>
  int pause_for_udp(Lock* lock, Done&& done, int timeout_ms) {
    if (lock != nullptr) return sleep(*lock, done, nullptr, 0, timeout_ms) < 0 ? -1 : 0;
    constexpr useconds_t kNapUs = 1000;
    ::usleep(kNapUs);
    return 0;
  }
  // Arrivals so far (bytes for TCP, datagrams for UDP): an edge-triggered epoll reports new ones.
  std::uint64_t arrivals(Socket& socket);
  PreloadCounters& counters() { return counters_; }
  std::uint64_t epoch() const { return epoch_; }
  // Whether `socket` is this process's to use: made here (and not taken over by a child since), a
  // listener inherited over fork once this process joined its group (join_inherited), or inherited
  // from a parent that is gone or has not used the lease since the fork (then the lease is adopted,
  // and the parent backs off). Under the lock.
  bool owns(Socket& socket);
  // The program accepts on `socket` (a listener it owns): the replicas may place new connections
  // with this process from now on. A poll does not count: a server's master may poll a listener
  // its children accept on (postfix), and the group's readiness wakes them all.
  void accepting(Socket& socket) {
    if (socket.state == Socket::State::listening && !socket.udp() && socket.id >= 0 && !gone(socket)) {
      tcp_->activate(socket.id);
    }
  }
  // The listeners a thread is about to sleep on until they are readable, marked waiting to accept
  // (TcpSockets::waiting_to_accept) while it exists. Made and destroyed under the lock.
  class AcceptWaits {
   public:
    explicit AcceptWaits(Runtime& runtime) : runtime_(runtime) {}
    AcceptWaits(const AcceptWaits&) = delete;
    AcceptWaits& operator=(const AcceptWaits&) = delete;
    // Marks `socket` when it is a listener of ours and `events` include readability.
    void add(const Socket& socket, std::uint32_t events) {
      if (socket.state != Socket::State::listening || socket.udp() || socket.id < 0 || runtime_.tcp_ == nullptr ||
          (events & (POLLIN | POLLRDNORM)) == 0) {
        return;
      }
      runtime_.tcp_->waiting_to_accept(socket.id, true);
      listeners_.push_back(socket.id);
    }
    ~AcceptWaits() {
      if (runtime_.tcp_ == nullptr) return;  // the stack went away during the sleep
      for (const int id : listeners_) runtime_.tcp_->waiting_to_accept(id, false);
    }

   private:
    Runtime& runtime_;
    std::vector<int> listeners_;
  };
  // The same without adopting: for closing an inherited socket, which must leave the parent's alone.
  bool holds(Socket& socket) { return socket.epoch == epoch_ && still_owner(); }
  // Handles the stack's pending messages (no system call when none). Under the lock.
  void pump();

  // The descriptor table (under the lock).
  std::shared_ptr<Socket> socket_at(int fd);
  std::shared_ptr<EpollSet> epoll_at(int fd);
  // The set behind epoll descriptor `fd`: `shared` (a dup of another), or a new one.
  std::shared_ptr<EpollSet> make_epoll(int fd, std::shared_ptr<EpollSet> shared = nullptr);
  void install(int fd, std::shared_ptr<Socket> socket);
  // Forgets `fd` (a socket: releases it with its last descriptor; an epoll set: drops it).
  void forget(int fd);
  // Closes the Flotilla side of a socket whose last descriptor went.
  void release(Socket& socket);
  // Before the program confines itself with seccomp (sshd's pre-authentication child): takes over
  // every socket it inherited and makes this thread's nudge now, as both need system calls a
  // sandbox forbids (a lease's socket, eventfd). Under the lock.
  void settle_before_sandbox();
  // Marks every descriptor the library holds now (g_library_fd): after it made or took one.
  void mark_library_descriptors();
  // Whether the library holds `fd` now; a mark it does not hold is cleared. Under the lock.
  bool library_descriptor(int fd);
  // The descriptors the library holds now, in ascending order. Under the lock.
  std::vector<int> library_descriptors() const;

  // Readiness of a socket as poll bits (POLLIN/POLLRDNORM, POLLOUT/POLLWRNORM, POLLERR/POLLHUP/
  // POLLRDHUP), as Linux reports them. Under the lock.
  std::uint32_t ready_events(Socket& socket);
  // The socket's errno (0 when none), the stack being gone included.
  int socket_error(Socket& socket);
  // The kernel's index of the interface the stack drives (FLOTILLA_INTERFACE_INDEX, which
  // `flotilla run` sets), 0 when unknown: what IP_PKTINFO reports a datagram came in on.
  static int interface_index();
  // `error` as a call's errno; when it says a limit of the stack's configuration was reached
  // (EMFILE: a replica has no socket page left for this program), one line on stderr the first time.
  int past_limit(int error);

  // Why a kernel wait returned, as far as the library's descriptors say; noted under the lock.
  struct WakeReason {
    bool woken = false;       // the seat's wake eventfd fired (this thread leads)
    bool nudged = false;      // this sleeper's own eventfd fired (a leader's relay or hand-over)
    bool lease_gone = false;  // the supervisor closed the lease
  };
  // What a sleeper's kernel wait watches besides the program's descriptors (-1: nothing).
  struct StackMarks {
    int wake = -1;   // the seat's wake eventfd: only while this thread leads
    int nudge = -1;  // the sleeper's own eventfd
    int lease = -1;
  };

  // A thread asleep in the library (sleep_with), listed while it sleeps. One event wakes one
  // thread: only one sleeper, the leader, sleeps on the seat's wake eventfd. When the stack rings
  // it, the leader pumps and writes the `nudge` eventfd of each other sleeper that `peek` finds
  // ready (an epoll set's own eventfd: the kernel then wakes one of its waiters, as Linux does;
  // a poll sleeper's thread eventfd), and a leader that returns to the program nudges another
  // sleeper to lead in its place.
  // One per thread: a signal handler that longjmps out of a sleep (iperf3 does) leaves it listed,
  // and the thread's next sleep takes it up again.
  struct Sleeper {
    int nudge = -1;
    bool (*peek)(const void*) = nullptr;  // called by the leader under the lock, on `watched`
    alignas(std::max_align_t) std::byte watched[48];  // a copy of the sleep's peek
    bool nudged = false;  // written since it lay down: it wakes without another write
    std::uint64_t led_lease = 0;  // while it leads: the lease whose doorbell it raised
  };

  // Sleeps in the kernel until what the caller waits for is ready (`ready`, under the lock: true
  // returns 1), `kernel_wait` reports the program's own descriptors (1), the lease ends (1), the
  // time is up (0) or a signal arrives (-1, errno EINTR). A wake-up by the library's eventfds
  // alone sleeps again. `peek` answers, without side effects the program sees, whether `ready`
  // would be true; the leader calls it from its thread while this one sleeps. `nudge` is the
  // eventfd that wakes this sleeper (`kernel_wait` watches it). `kernel_wait(marks, reason)` runs
  // without the lock, watches the marks, fills `reason` and returns the number of the program's
  // descriptors it reports (0 when none or timed out, -1 with errno). The lock is held on entry and
  // on return.
  template <class Ready, class Peek, class KernelWait>
  int sleep_with(Lock& lock, Ready&& ready, const Peek& peek, int nudge, KernelWait&& kernel_wait) {
    // FLOTILLA_SPIN_US: look again for that long before sleeping (CPU for fewer system calls).
    if (spin_ns_ != 0) {
      const std::uint64_t until = monotonic_ns() + spin_ns_;
      do {
        lock.unlock();  // other threads may get on meanwhile
        cpu_relax();
        lock.lock();
        pump();
        if (ready()) return 1;
      } while (monotonic_ns() < until);
    }
    static_assert(std::is_trivially_copyable_v<Peek> && sizeof(Peek) <= sizeof(Sleeper::watched));
    Sleeper& me = this_thread_sleeper();
    me.nudge = nudge;
    new (me.watched) Peek(peek);
    me.peek = [](const void* watched) { return (*static_cast<const Peek*>(watched))(); };
    // A thread cancelled in its kernel wait unwinds through here: it leaves the list.
    struct Cancelled {
      Runtime& runtime;
      Lock& lock;
      Sleeper& me;
      bool left = false;
      ~Cancelled() {
        if (left) return;
        if (!lock.owns_lock()) lock.lock();
        runtime.get_up(me);
      }
    } cancelled{*this, lock, me};
    for (;;) {
      const StackMarks marks = lie_down(me);
      pump();
      relay(me);
      if (ready()) {
        cancelled.left = true;
        get_up(me);
        return 1;
      }
      counters_.waits_in_kernel->add();
      WakeReason reason{};
      lock.unlock();
      const int theirs = kernel_wait(marks, reason);
      const int error = errno;
      lock.lock();
      woke(me, reason);
      if (theirs != 0 || reason.lease_gone || (!reason.woken && !reason.nudged)) {
        cancelled.left = true;
        get_up(me);
        errno = error;
        return theirs < 0 ? -1 : (theirs > 0 || reason.lease_gone ? 1 : 0);
      }
    }
  }

  // sleep_with for a poll-style wait on `kernel` (their revents filled) for at most `timeout_ms`
  // (-1: none), with the signal mask `mask` during the wait (nullptr: unchanged). 1: something
  // may be ready; 0: timed out; -1: errno (EINTR). `peek` as for sleep_with (`ready` by default).
  // `waited` (when given) says whether the kernel wait ended it, i.e. whether `kernel`'s revents
  // are fresh.
  template <class Ready>
  int sleep(Lock& lock, Ready&& ready, pollfd* kernel, std::size_t kernel_count, int timeout_ms,
            const sigset_t* mask = nullptr, bool* waited = nullptr) {
    return sleep(lock, ready, ready, kernel, kernel_count, timeout_ms, mask, waited);
  }
  template <class Ready, class Peek>
  int sleep(Lock& lock, Ready&& ready, const Peek& peek, pollfd* kernel, std::size_t kernel_count, int timeout_ms,
            const sigset_t* mask = nullptr, bool* waited = nullptr) {
    const std::uint64_t deadline = deadline_after(timeout_ms);
    bool ended_by_wait = false;
    auto ready_now = [&] {
      ended_by_wait = false;
      return ready();
    };
    const int outcome = sleep_with(lock, ready_now, peek, thread_nudge_fd(), [&](const StackMarks& marks, WakeReason& reason) {
      ended_by_wait = true;
      return sleep_in_kernel(kernel, kernel_count, remaining_ms(deadline), mask, marks, reason);
    });
    if (waited != nullptr) *waited = ended_by_wait && outcome >= 0;
    return outcome;
  }

  // The kernel wait of a poll-style sleep: `kernel` (revents filled) and the marks, for at most
  // `timeout_ms`. The number of `kernel` entries with events, or -1 (errno).
  int sleep_in_kernel(pollfd* kernel, std::size_t kernel_count, int timeout_ms, const sigset_t* mask,
                      const StackMarks& marks, WakeReason& reason);
  // A nudge of an epoll set (its eventfd `fd`) taken by a look that was not a sleep (a zero-timeout
  // epoll_wait): the sleeper it was for stays asleep, and it may have been asked to lead, so
  // another one is. Under the lock.
  void nudge_taken(int fd);
  // An interest of an epoll set (its eventfd `fd`) became ready by epoll_ctl (an ADD or MOD of a
  // socket with data waiting: a thread pool rearming EPOLLONESHOT, a connection added after its
  // first bytes came): as Linux's epoll_ctl does, one thread asleep in the set wakes. Under the lock.
  void wake_one_in_set(int fd);
  // A new eventfd for an epoll set's nudges (-1 when none can be made).
  static int make_nudge_fd();

  int wake_fd() const { return host_ ? host_->wake_fd() : -1; }
  int lease_fd() const { return host_ ? host_->lease_fd() : -1; }
  // The stack's lease ended (the supervisor is gone): every socket fails with ENETDOWN, and the
  // lease descriptor (hung up, so always ready) leaves every kernel epoll set and every sleep.
  // Under the lock.
  void mark_down();
  // Takes the wake and lease descriptors out of the kernel's epoll set `epfd`.
  void drop_marks(int epfd, EpollSet& set);

  // After a blocking call's wait was interrupted by a signal: whether Linux would restart the call
  // (every handled signal has SA_RESTART).
  static bool restart_after_signal();

  // pthread_atfork hooks.
  void before_fork() {
    mutex_.lock();
    claim_before_fork();
    prepare_fork();
  }
  void after_fork_parent() {
    forked_ = forked_ || host_ != nullptr;
    end_fork_in_parent();
    mutex_.unlock();
  }
  void after_fork_child();

  // exec (exec.cpp). The Flotilla sockets an exec'd image keeps (no FD_CLOEXEC) are handed over
  // in a record it reads at load (a memfd named by FLOTILLA_INHERIT).
  struct ExecHandoff {
    int record = -1;            // the record's memfd (no FD_CLOEXEC)
    std::vector<int> uncloexec;  // descriptors whose FD_CLOEXEC was cleared for the new image
    bool pinned = false;        // this exec pinned the seat's connections (fork_token_ holds them)
    int token = -1;             // a message's: the token of the fork that pinned them (this copy)
  };
  // Before an exec (`in_place`) or a spawn: writes the record of the sockets the new image keeps,
  // pins this process's connections among them, and keeps what their proofs need open across the
  // exec (the fork tokens, and, in place, this process's lease when it hands over listeners of its
  // own: their members must outlive the old image). false when there is nothing to hand over.
  // Under the lock.
  bool hand_over(ExecHandoff& handoff, bool in_place);
  // A vfork child (or a raw clone, or a fork the C library did not announce) runs here: its
  // memory may be its parent's (hand_over leaves it as a spawn would, and the exec wrappers give
  // the lock back before the exec).
  bool in_vfork_child() const { return ::getpid() != owner_; }
  // The address space the library's seats take in this process (the lease and one parked at a
  // fork). Under the lock.
  std::size_t mapped_bytes() const {
    return (host_ != nullptr ? host_->mapped_bytes() : 0) + (parked_.host != nullptr ? parked_.host->mapped_bytes() : 0);
  }
  // Before the program puts a descriptor of its own at number `fd` (dup2, dup3): when the library
  // holds that number, moves its descriptor to another and lets go of `fd` unclosed (the dup
  // replaces it at once). False when no number is left for the move. Under the lock.
  bool vacate(int fd);
  // The grant `flotilla run` handed the process tree (kGrantVariable); -1 without one.
  int grant() const { return grant_; }
  // After an exec that failed, or a spawn (whose child has its copies): this process's state as
  // before hand_over; pins the exec made go as those of a child that exited. Under the lock.
  void end_handoff(ExecHandoff& handoff);
  // At load: installs the sockets the image before handed over (FLOTILLA_INHERIT): listeners are
  // joined at once, connections claimed at their first use (take_handed).
  void take_handoff();

  // SCM_RIGHTS (sendmsg on a kernel unix socket). The most descriptors a message carries besides
  // the program's: the fork tokens its connections' proofs need, then the record, last.
  static constexpr std::size_t kMaxRightsExtra = 8;
  // Before sending `rights` (the message's descriptors, in order): when some are Flotilla
  // sockets, writes the record that names them by position and pins this process's connections
  // among them, as hand_over does; `extra` is what to pass after `rights`. The caller sends, then
  // calls end_handoff (its token copy closes; the one in flight holds the pins). Under the lock.
  bool hand_over_rights(std::span<const int> rights, ExecHandoff& handoff, std::vector<int>& extra);
  // After receiving `received` (every descriptor of a message, in order): when the last is a
  // record of hand_over_rights, takes it and the tokens it names off and installs the sockets it
  // names (listeners joined now, connections claimed at first use); with `peek`, only closes
  // those copies. Returns how many descriptors, from the first, are the program's (all of them
  // when there is no record). Takes the lock.
  std::size_t take_rights(std::span<const int> received, bool peek);

 private:
  Runtime() = default;
  // The leader/followers bookkeeping of sleep_with, under the lock.
  StackMarks lie_down(Sleeper& me);
  void relay(Sleeper& me);
  void woke(Sleeper& me, const WakeReason& reason);
  void get_up(Sleeper& me);
  void nudge(Sleeper& sleeper);
  void forget_nudge(int fd, const Sleeper* taker);
  // No leader while others sleep (it returned to the program): one of them is nudged to lead.
  void appoint_leader();
  bool can_lead();
  void attach_datagrams(const std::string& channel);
  // ready_events without the NORM and BAND bits.
  std::uint32_t transport_events(Socket& socket);
  // Calls `visit` with each descriptor the library holds (runtime.cpp).
  template <class Visit>
  void for_each_own_descriptor(Visit visit) const;
  // Sockets and the numbers a record names each by (descriptors, or positions in a message).
  using NamedSockets = std::vector<std::pair<Socket*, std::vector<int>>>;
  // The record's lines for `named`; pins this process's connections among them (handoff.pinned)
  // and adds the tokens their proofs need to `tokens`. `own_listener`: a listener of this
  // process's own is among them (its members live while the lease does).
  // `in_place`: an exec, after which this image is gone (its UDP ports are taken at load).
  std::string describe_sockets(const NamedSockets& named, bool in_place, ExecHandoff& handoff,
                               std::vector<int>& tokens, bool& own_listener);
  // Installs the sockets `record` names (an exec's: `received` empty; else a message's, whose
  // descriptors those are, the record itself left out). Returns how many of `received` are the
  // program's; the tokens after them are kept or closed. Under the lock.
  std::size_t take_record(std::string_view record, std::span<const int> received);
  bool adopt_parked(bool from_living_parent);
  // Before a fork: the fork's token goes to the supervisor, then every replica pins the
  // connections of this process's seat with the fork's serial.
  void prepare_fork();
  // Before a fork: the connections this process inherited (over fork or handed over) and never
  // used are claimed, so the child's proof is this process's own pin. A claim uses up the pin it
  // proves with: a second child claiming with the grandparent's proof (vsftpd's post-login child,
  // after its pre-login sibling claimed) would find none.
  void claim_before_fork();
  // The parent's copy of the fork's token: the child's now.
  void end_fork_in_parent();
  // A connection inherited from the parent whose lease is parked and which pinned it at the fork:
  // this process leases a seat of its own and takes the connection over; the socket is then ours.
  bool claim_inherited(Socket& socket, const sockets::ConnectionShare& share);
  // A listener inherited from the parent whose lease is parked: this process leases a seat of its
  // own and joins the listener's group there; the socket is then ours.
  bool join_inherited(Socket& socket);
  // ensure_stack without the parent's lease, waiting a while for a seat when every one is leased.
  bool lease_own_seat();
  // A socket handed over by exec: this process leases a seat and joins (a listener) or claims (a
  // connection) it with the proof in socket.handed; the socket is then ours.
  bool take_handed(Socket& socket);
  // Waits (a bounded while, the lock held) for the replicas' answer to the join or claim that made
  // `id`: whether it is open.
  bool await_opened(int id, bool listener);
  // A UDP socket handed over: opens it on its port (bound_port), waiting a bounded while for the
  // sender's copy to close. Under the lock.
  bool reopen_datagram(Socket& socket);
  // One handed-over connection taken or closed: with the last, the tokens that pinned them close.
  void handed_connection_settled();
  void register_counters();
  bool lease_ended();
  void retire_lease();
  static Sleeper& this_thread_sleeper();
  // The calling thread's eventfd for nudges of its poll-style sleeps (-1 when none can be made).
  int thread_nudge_fd();

  LibraryMutex mutex_;
  std::unique_ptr<ComponentHost> host_;
  std::unique_ptr<sockets::TcpSockets> tcp_;
  std::unique_ptr<sockets::UdpSockets> udp_;
  std::vector<Socket*> datagram_sockets_;  // by UdpSockets id: where its datagrams go
  PreloadCounters counters_;
  NamedCounter unregistered_{};  // where counts go before a lease exists
  std::atomic<bool> down_{false};  // set by a sleeper that saw the lease end, without the lock
  bool complained_ = false;
  bool said_sockets_limit_ = false;
  std::uint64_t lease_ = 0;
  std::uint64_t leases_made_ = 0;
  LeaseRetry lease_retry_{ENETDOWN};  // what socket() says while no seat is leased
  std::uint64_t spin_ns_ = 0;
  int sleepers_ = 0;  // asleep_.size(); 0 in a fork child, whose asleep_ names its parent's threads
  std::vector<Sleeper*> asleep_;
  Sleeper* leader_ = nullptr;
  std::uint64_t epoch_ = 1;
  pid_t owner_ = ::getpid();  // this process (getpid() is a system call: kept here)
  // Who may use the lease, shared with the children this process forks (a MAP_SHARED page): a
  // child that takes it over (adopt_parked) makes the parent back off. Null without a lease.
  struct Ownership {
    std::atomic<pid_t> owner;
    std::atomic<std::uint64_t> uses;  // bumped by the owner before each use
    std::atomic<int> sleepers;        // the owner's threads asleep in the library: it is at work
  };
  Ownership* ownership_ = nullptr;
  bool forked_ = false;  // this process forked while it held the lease
  // The owner's check before it uses the lease; false once a child took it over.
  bool still_owner() {
    if (ownership_ == nullptr || !forked_) return true;  // no child could have taken it
    ownership_->uses.fetch_add(1, std::memory_order_seq_cst);
    return ownership_->owner.load(std::memory_order_seq_cst) == owner_;
  }
  // What a fork child inherited: the parent's lease, not its to use while the parent lives.
  struct Parked {
    std::unique_ptr<ComponentHost> host;
    std::unique_ptr<sockets::TcpSockets> tcp;
    std::unique_ptr<sockets::UdpSockets> udp;
    std::vector<Socket*> datagram_sockets;
    std::uint64_t epoch = 0;
    std::uint64_t lease = 0;
    pid_t owner = -1;
    Ownership* ownership = nullptr;
    std::uint64_t uses_at_fork = 0;
    std::uint64_t fork = 0;  // the fork serial the parent pinned its connections with (0: none)
  };
  std::uint64_t fork_serial_ = 0;  // the fork under way pinned connections with this serial
  int fork_token_ = -1;            // between prepare_fork and the fork: the child's end of its token
  bool said_claim_refused_ = false;
  // A fork child: the token of the fork that pinned its parent's connections (-1: none).
  int inherited_token_ = -1;
  int grant_ = -1;  // the grant `flotilla run` handed the process tree (kGrantVariable), -1: none
  // Handed over by exec: the tokens pinning the connections not taken yet, and how many those are.
  std::vector<int> handed_tokens_;
  int handed_connections_ = 0;
  Parked parked_;
  std::vector<std::shared_ptr<Socket>> sockets_;   // by descriptor number
  std::vector<std::shared_ptr<EpollSet>> epolls_;  // by descriptor number
};

// The supervisor's control socket: FLOTILLA_SOCKET, else the default path, as found by the first
// call; a fork child keeps its parent's even when the program cleared its environment in between
// (nginx's workers keep only TZ).
std::string control_socket_path();


// Holds every free descriptor below kLibraryDescriptorsFrom (64) while it lives. A seat is leased under one, so that the
// seat's own descriptors land above the low numbers programs name themselves (a shell's
// `exec 3<file` is a dup2 onto 3, which would close the seat's descriptor there).
class LowDescriptorsHeld {
 public:
  LowDescriptorsHeld();
  ~LowDescriptorsHeld();
  LowDescriptorsHeld(const LowDescriptorsHeld&) = delete;
  LowDescriptorsHeld& operator=(const LowDescriptorsHeld&) = delete;

 private:
  std::vector<int> held_;
};

// Asks for a lease (`ask`, one try) until one is given, or it fails otherwise than "every seat is
// leased", or two seconds passed: a seat comes back when the program holding it exits, and a
// shell's commands, or the children of a forking server, lease one each, one just after the
// other's exit (the supervisor may not have seen that exit yet) or a few at once.
template <class Ask>
auto lease_when_a_seat_frees(Ask&& ask) -> decltype(ask()) {
  constexpr std::uint64_t kWaitNs = 2'000'000'000;
  const std::uint64_t until = monotonic_ns() + kWaitNs;
  auto leased = ask();
  for (useconds_t pause_us = 1000; !leased && leased.error().code == Errc::exhausted && monotonic_ns() < until;
       pause_us = std::min<useconds_t>(pause_us * 2, 50'000)) {
    ::usleep(pause_us);
    leased = ask();
  }
  return leased;
}

// Sets errno and returns -1, the shape of every failing call.
inline int fail_with(int error) {
  errno = error;
  return -1;
}

}  // namespace flotilla::preload
