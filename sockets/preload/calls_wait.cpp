// The interposed readiness calls: poll, ppoll, select, pselect and epoll. A set with Flotilla
// sockets is answered by loads when one of them is ready; only when nothing is does the caller
// sleep in the kernel, on its kernel descriptors plus its own eventfd, and while it leads the
// seat's wake eventfd (see Runtime::sleep_with).
#include <sys/epoll.h>
#include <sys/select.h>

#include <algorithm>
#include <vector>

#include "sockets/preload/calls.hpp"
#include "sockets/preload/real_calls.hpp"
#include "sockets/tcp_sockets.hpp"

namespace flotilla::preload {

namespace {

// epoll data values that mark our own descriptors in a program's kernel epoll set.
constexpr std::uint64_t kNudgeMark = 0xf107'111a'0000'0001ull;
constexpr std::uint64_t kLeaseMark = 0xf107'111a'0000'0002ull;
// While Flotilla sockets are ready, epoll_wait looks at the kernel's set only every this many calls.
constexpr std::uint32_t kKernelLookEvery = 8;

int timeout_of(const timespec* limit) {
  if (limit == nullptr) return -1;
  const long long ms = static_cast<long long>(limit->tv_sec) * 1000 + (limit->tv_nsec + 999'999) / 1'000'000;
  return static_cast<int>(std::clamp<long long>(ms, 0, INT32_MAX));
}

int timeout_of(const timeval* limit) {
  if (limit == nullptr) return -1;
  const long long ms = static_cast<long long>(limit->tv_sec) * 1000 + (limit->tv_usec + 999) / 1000;
  return static_cast<int>(std::clamp<long long>(ms, 0, INT32_MAX));
}

bool any_socket(const pollfd* fds, nfds_t count) {
  for (nfds_t i = 0; i < count; ++i) {
    if (is_socket(fds[i].fd)) return true;
  }
  return false;
}

// poll over a set with at least one Flotilla socket.
int poll_mixed(pollfd* fds, nfds_t count, int timeout_ms, const sigset_t* mask) {
  Runtime& runtime = Runtime::get();
  thread_local std::vector<pollfd> kernel;
  thread_local std::vector<nfds_t> kernel_at;
  kernel.clear();
  kernel_at.clear();
  for (nfds_t i = 0; i < count; ++i) {
    fds[i].revents = 0;
    if (!is_socket(fds[i].fd)) {
      kernel.push_back(fds[i]);
      kernel_at.push_back(i);
    }
  }
  Lock lock(runtime.mutex());
  runtime.counters().readiness_checks->add();
  auto look = [&] {
    int ready = 0;
    for (nfds_t i = 0; i < count; ++i) {
      if (!is_socket(fds[i].fd)) continue;
      const auto socket = runtime.socket_at(fds[i].fd);
      const std::uint32_t events = socket == nullptr ? POLLNVAL : runtime.ready_events(*socket);
      fds[i].revents = static_cast<short>(events & (static_cast<std::uint16_t>(fds[i].events) | POLLERR | POLLHUP | POLLNVAL));
      if (fds[i].revents != 0) ++ready;
    }
    return ready;
  };
  // The same without touching `fds`, for the leader's look from its thread.
  auto peek = [&runtime, fds, count] {
    for (nfds_t i = 0; i < count; ++i) {
      if (!is_socket(fds[i].fd)) continue;
      const auto socket = runtime.socket_at(fds[i].fd);
      if (socket == nullptr) return true;
      const std::uint32_t wanted = static_cast<std::uint16_t>(fds[i].events) | POLLERR | POLLHUP | POLLNVAL;
      if ((runtime.ready_events(*socket) & wanted) != 0) return true;
    }
    return false;
  };
  auto merge_kernel = [&] {
    int ready = 0;
    for (std::size_t j = 0; j < kernel.size(); ++j) {
      fds[kernel_at[j]].revents = kernel[j].revents;
      if (kernel[j].revents != 0) ++ready;
    }
    return ready;
  };
  // A zero-timeout look at the kernel's descriptors, without the lock.
  auto kernel_now = [&](int ours) {
    lock.unlock();
    const int got = REAL(poll)(kernel.data(), kernel.size(), 0);
    if (got < 0) return -1;
    return ours + merge_kernel();
  };
  runtime.pump();
  int ours = look();
  if (ours > 0 || timeout_ms == 0) {
    if (kernel.empty()) {
      runtime.counters().readiness_no_syscall->add();
      return ours;
    }
    return kernel_now(ours);
  }
  const std::uint64_t deadline = deadline_after(timeout_ms);
  for (;;) {
    for (pollfd& entry : kernel) entry.revents = 0;
    bool waited = false;
    int slept = 0;
    {
      Runtime::AcceptWaits waits(runtime);
      for (nfds_t i = 0; i < count; ++i) {
        if (const auto socket = is_socket(fds[i].fd) ? runtime.socket_at(fds[i].fd) : nullptr; socket != nullptr) {
          waits.add(*socket, static_cast<std::uint16_t>(fds[i].events));
        }
      }
      slept = runtime.sleep(lock, [&] { return look() > 0; }, peek, kernel.data(), kernel.size(),
                            remaining_ms(deadline), mask, &waited);
    }
    if (slept < 0) return -1;
    ours = look();
    if (!waited && !kernel.empty()) return kernel_now(ours);  // ready before sleeping: look at theirs now
    const int theirs = merge_kernel();
    if (ours + theirs > 0) return ours + theirs;
    if (remaining_ms(deadline) == 0) return 0;
  }
}

// select over a set with at least one Flotilla socket, through poll_mixed.
int select_mixed(int count, fd_set* readable, fd_set* writable, fd_set* exceptional, int timeout_ms,
                 const sigset_t* mask) {
  thread_local std::vector<pollfd> fds;
  fds.clear();
  for (int fd = 0; fd < count; ++fd) {
    short events = 0;
    if (readable != nullptr && FD_ISSET(fd, readable)) events |= POLLIN;
    if (writable != nullptr && FD_ISSET(fd, writable)) events |= POLLOUT;
    if (exceptional != nullptr && FD_ISSET(fd, exceptional)) events |= POLLPRI;
    if (events != 0) fds.push_back(pollfd{fd, events, 0});
  }
  const int ready = poll_mixed(fds.data(), fds.size(), timeout_ms, mask);
  if (ready < 0) return -1;
  for (const pollfd& entry : fds) {
    if ((entry.revents & POLLNVAL) != 0) return fail_with(EBADF);
  }
  if (readable != nullptr) FD_ZERO(readable);
  if (writable != nullptr) FD_ZERO(writable);
  if (exceptional != nullptr) FD_ZERO(exceptional);
  int bits = 0;
  for (const pollfd& entry : fds) {
    if ((entry.events & POLLIN) != 0 && (entry.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      FD_SET(entry.fd, readable);
      ++bits;
    }
    if ((entry.events & POLLOUT) != 0 && (entry.revents & (POLLOUT | POLLERR)) != 0) {
      FD_SET(entry.fd, writable);
      ++bits;
    }
    if ((entry.events & POLLPRI) != 0 && (entry.revents & POLLPRI) != 0) {
      FD_SET(entry.fd, exceptional);
      ++bits;
    }
  }
  return bits;
}

bool any_socket(int count, const fd_set* readable, const fd_set* writable, const fd_set* exceptional) {
  for (int fd = 0; fd < count && fd < FD_SETSIZE; ++fd) {
    if (!is_socket(fd)) continue;
    if ((readable != nullptr && FD_ISSET(fd, readable)) || (writable != nullptr && FD_ISSET(fd, writable)) ||
        (exceptional != nullptr && FD_ISSET(fd, exceptional))) {
      return true;
    }
  }
  return false;
}

// Takes our marks out of the kernel's set once it watches no Flotilla socket: the program's own
// epoll_wait then goes straight to the kernel, which must not hand it our marks.
void drop_marks_when_unused(int epfd, EpollSet& set) {
  if (set.interests.empty()) Runtime::get().drop_marks(epfd, set);
}

// What `interest` has to report now (0: nothing): its readiness, and when edge-triggered only once
// something is new since the last report. `note` makes this the last report (collect); a peek
// leaves it.
std::uint32_t reportable(Runtime& runtime, EpollSet::Interest& interest, bool note) {
  Socket& socket = *interest.socket;
  const std::uint32_t ready = runtime.ready_events(socket) & (interest.events | EPOLLERR | EPOLLHUP);
  if ((interest.events & EPOLLET) == 0) return ready;
  // An edge: readiness that was not there at the last look, readiness again after the program met
  // EAGAIN (it drained the socket), or new bytes while readable (Linux reports those too).
  const std::uint64_t received = runtime.arrivals(socket);
  std::uint32_t fresh = ready & ~interest.last_ready;
  if (socket.stalls != interest.last_stalls) fresh = ready;
  if ((ready & (EPOLLIN | EPOLLRDNORM)) != 0 && received != interest.last_received) fresh |= ready & (EPOLLIN | EPOLLRDNORM);
  if (note) {
    interest.last_ready = ready;
    interest.last_stalls = socket.stalls;
    interest.last_received = received;
  }
  return fresh == 0 ? 0 : ready;
}

// Linux forgets an interest when the last descriptor of its file closes.
bool forgotten(Runtime& runtime, const EpollSet::Interest& interest) {
  return interest.socket->state == Socket::State::released || runtime.socket_at(interest.fd) != interest.socket;
}

// Fills `out` with the ready Flotilla interests of `set` (at most `room`), under the lock.
int collect(int epfd, EpollSet& set, epoll_event* out, int room) {
  Runtime& runtime = Runtime::get();
  auto& interests = set.interests;
  const std::size_t erased =
      std::erase_if(interests, [&](const EpollSet::Interest& interest) { return forgotten(runtime, interest); });
  if (erased != 0) drop_marks_when_unused(epfd, set);
  int filled = 0;
  const std::size_t size = interests.size();
  // Start where the last call stopped, so a small `room` does not starve the later interests. The
  // start stays fixed during the pass: each interest is looked at once per call.
  const std::size_t start = size == 0 ? 0 : set.next % size;
  for (std::size_t k = 0; k < size && filled < room; ++k) {
    EpollSet::Interest& interest = interests[(start + k) % size];
    if (interest.disabled) continue;
    const std::uint32_t ready = reportable(runtime, interest, true);
    if (ready == 0) continue;
    out[filled].events = ready;
    out[filled].data = interest.data;
    ++filled;
    if ((interest.events & EPOLLONESHOT) != 0) interest.disabled = true;
    set.next = (start + k + 1) % size;
  }
  return filled;
}

// Whether collect would report something now, without noting it (the leader's look for a
// sleeper of the set). Under the lock.
bool any_reportable(EpollSet& set) {
  Runtime& runtime = Runtime::get();
  for (EpollSet::Interest& interest : set.interests) {
    if (interest.disabled || forgotten(runtime, interest)) continue;
    if (reportable(runtime, interest, false) != 0) return true;
  }
  return false;
}

// Drops our marks from what the kernel's epoll returned; notes why it woke.
int without_marks(epoll_event* events, int count, Runtime::WakeReason& reason) {
  int kept = 0;
  for (int i = 0; i < count; ++i) {
    if (events[i].data.u64 == kNudgeMark) {
      reason.nudged = true;
    } else if (events[i].data.u64 == kLeaseMark) {
      reason.lease_gone = true;
    } else {
      events[kept++] = events[i];
    }
  }
  return kept;
}

// The kernel wait of a sleeper in epoll set `epfd`, where the set's nudge eventfd and the lease
// descriptor are; while it leads, on the seat's wake eventfd beside the set. The program's events
// go to `events`; returns how many (-1: errno).
int wait_in_set(int epfd, epoll_event* events, int room, int timeout_ms, const sigset_t* mask,
                const Runtime::StackMarks& marks, Runtime::WakeReason& reason) {
  if (marks.wake >= 0) {
    pollfd set_entry{epfd, POLLIN, 0};
    Runtime::StackMarks beside{.wake = marks.wake};
    const int ready = Runtime::get().sleep_in_kernel(&set_entry, 1, timeout_ms, mask, beside, reason);
    if (ready <= 0) return ready;
    timeout_ms = 0;
    mask = nullptr;
  }
  const int got = REAL(epoll_pwait)(epfd, events, room, timeout_ms, mask);
  if (got < 0) return -1;
  return without_marks(events, got, reason);
}

int epoll_mixed(int epfd, epoll_event* events, int room, int timeout_ms, const sigset_t* mask);

// epoll_wait on a set without Flotilla sockets is the kernel's. A thread may wait there while
// another adds the first one (a thread pool started before its connections): epoll_control then
// nudges the set, and the waiter goes on in epoll_mixed. `got` is what the kernel's wait
// returned, `deadline` its end (0: none).
int after_plain_wait(int epfd, epoll_event* events, int room, int got, std::uint64_t deadline, const sigset_t* mask) {
  if (got <= 0 || fd_kind(epfd) != FdKind::epoll) return got;
  Runtime::WakeReason reason{};
  const int theirs = without_marks(events, got, reason);
  if (reason.nudged) {
    Runtime& runtime = Runtime::get();
    const Lock lock(runtime.mutex());
    if (const auto set = runtime.epoll_at(epfd); set != nullptr) runtime.nudge_taken(set->nudge);
  }
  if (theirs > 0 || got == theirs) return theirs;
  const int left = remaining_ms(deadline);
  return left == 0 ? 0 : epoll_mixed(epfd, events, room, left, mask);
}

int epoll_plain(int epfd, epoll_event* events, int room, int timeout_ms, const sigset_t* mask) {
  const std::uint64_t deadline = deadline_after(timeout_ms);
  const int got = REAL(epoll_pwait)(epfd, events, room, timeout_ms, mask);
  return after_plain_wait(epfd, events, room, got, deadline, mask);
}

int epoll_mixed(int epfd, epoll_event* events, int room, int timeout_ms, const sigset_t* mask) {
  Runtime& runtime = Runtime::get();
  Lock lock(runtime.mutex());
  const auto set = runtime.epoll_at(epfd);
  if (set == nullptr || set->interests.empty()) {
    lock.unlock();
    return epoll_plain(epfd, events, room, timeout_ms, mask);
  }
  runtime.counters().readiness_checks->add();
  runtime.pump();
  int filled = collect(epfd, *set, events, room);
  // Kernel events too, now and then, so that busy Flotilla sockets never starve them.
  if ((filled > 0 && filled < room && ++set->calls % kKernelLookEvery == 0) || (filled == 0 && timeout_ms == 0)) {
    lock.unlock();
    Runtime::WakeReason reason{};
    const int got = REAL(epoll_pwait)(epfd, events + filled, room - filled, 0, mask);
    if (got < 0) return filled > 0 ? filled : -1;
    const int theirs = without_marks(events + filled, got, reason);
    if (reason.nudged) {
      lock.lock();
      runtime.nudge_taken(set->nudge);
    }
    return filled + theirs;
  }
  if (filled > 0) {
    runtime.counters().readiness_no_syscall->add();
    return filled;
  }
  const std::uint64_t deadline = deadline_after(timeout_ms);
  EpollSet& watched = *set;
  for (;;) {
    int theirs = 0;
    bool ours = false;
    Runtime::AcceptWaits waits(runtime);
    for (const EpollSet::Interest& interest : watched.interests) {
      if (!interest.disabled) waits.add(*interest.socket, interest.events);
    }
    const int slept = runtime.sleep_with(
        lock, [&] { return ours = (filled = collect(epfd, watched, events, room)) > 0; },
        [watched = &watched] { return any_reportable(*watched); }, watched.nudge,
        [&](const Runtime::StackMarks& marks, Runtime::WakeReason& reason) {
          theirs = wait_in_set(epfd, events, room, remaining_ms(deadline), mask, marks, reason);
          return theirs;
        });
    if (slept < 0) return -1;
    if (ours) return filled;
    filled = theirs + collect(epfd, watched, events + theirs, room - theirs);
    if (filled > 0) return filled;
    if (remaining_ms(deadline) == 0) return 0;
  }
}

int epoll_control(int epfd, int operation, int fd, epoll_event* event) {
  Runtime& runtime = Runtime::get();
  Lock lock(runtime.mutex());
  const auto socket = runtime.socket_at(fd);
  if (socket == nullptr) return fail_with(EBADF);
  if (!Runtime::get().owns(*socket)) return fail_with(EBADF);
  if (epfd == fd) return fail_with(EINVAL);
  if (operation != EPOLL_CTL_DEL && event == nullptr) return fail_with(EFAULT);
  auto set = runtime.epoll_at(epfd);
  if (set == nullptr) {
    // Is it an epoll instance at all? An empty DEL on our own wake descriptor answers that.
    epoll_event probe{};
    if (REAL(epoll_ctl)(epfd, EPOLL_CTL_DEL, runtime.wake_fd(), &probe) != 0 && errno != ENOENT) return -1;
    set = runtime.make_epoll(epfd);
  }
  // The mark of a lease that ended left the kernel's set with its descriptor.
  if (set->marks_lease != runtime.lease()) set->marks_added = false;
  if (!set->marks_added && !runtime.stack_down()) {
    if (set->nudge < 0) set->nudge = Runtime::make_nudge_fd();
    if (set->nudge < 0) return -1;
    // Edge-triggered: each nudge wakes one thread waiting in the set, once.
    epoll_event nudge{EPOLLIN | EPOLLET, {.u64 = kNudgeMark}};
    epoll_event lease{EPOLLIN, {.u64 = kLeaseMark}};
    if (REAL(epoll_ctl)(epfd, EPOLL_CTL_ADD, set->nudge, &nudge) != 0 && errno != EEXIST) return -1;
    if (REAL(epoll_ctl)(epfd, EPOLL_CTL_ADD, runtime.lease_fd(), &lease) != 0 && errno != EEXIST) return -1;
    set->marks_added = true;
    set->marks_lease = runtime.lease();
    // A thread already waiting in the kernel's set (epoll_plain) comes to look at ours.
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = REAL(write)(set->nudge, &one, sizeof(one));
  }
  auto found = std::find_if(set->interests.begin(), set->interests.end(), [&](const EpollSet::Interest& interest) {
    return interest.fd == fd && interest.socket == socket;
  });
  // What the interest reports at once wakes a thread asleep in the set, as on Linux: the data came
  // while it was disarmed (EPOLLONESHOT) or not yet in the set, and no later event will tell.
  const auto wake_if_ready = [&] {
    if ((runtime.ready_events(*socket) & (event->events | EPOLLERR | EPOLLHUP)) != 0) runtime.wake_one_in_set(set->nudge);
  };
  switch (operation) {
    case EPOLL_CTL_ADD:
      if (found != set->interests.end()) return fail_with(EEXIST);
      set->interests.push_back(EpollSet::Interest{fd, socket, event->events, event->data});
      wake_if_ready();
      return 0;
    case EPOLL_CTL_MOD:
      if (found == set->interests.end()) return fail_with(ENOENT);
      found->events = event->events;
      found->data = event->data;
      found->disabled = false;
      found->last_ready = 0;
      wake_if_ready();
      return 0;
    case EPOLL_CTL_DEL:
      if (found == set->interests.end()) return fail_with(ENOENT);
      set->interests.erase(found);
      drop_marks_when_unused(epfd, *set);
      return 0;
    default:
      return fail_with(EINVAL);
  }
}

}  // namespace

}  // namespace flotilla::preload

using namespace flotilla::preload;

FLOTILLA_EXPORT int poll(pollfd* fds, nfds_t count, int timeout_ms) {
  if (!any_socket(fds, count)) return REAL(poll)(fds, count, timeout_ms);
  return poll_mixed(fds, count, timeout_ms, nullptr);
}

FLOTILLA_EXPORT int __poll_chk(pollfd* fds, nfds_t count, int timeout_ms, size_t fds_length) {
  if (fds_length / sizeof(pollfd) < count) ::abort();
  return poll(fds, count, timeout_ms);
}

FLOTILLA_EXPORT int ppoll(pollfd* fds, nfds_t count, const timespec* limit, const sigset_t* mask) {
  if (!any_socket(fds, count)) return REAL(ppoll)(fds, count, limit, mask);
  return poll_mixed(fds, count, timeout_of(limit), mask);
}

FLOTILLA_EXPORT int __ppoll_chk(pollfd* fds, nfds_t count, const timespec* limit, const sigset_t* mask,
                                size_t fds_length) {
  if (fds_length / sizeof(pollfd) < count) ::abort();
  return ppoll(fds, count, limit, mask);
}

FLOTILLA_EXPORT int select(int count, fd_set* readable, fd_set* writable, fd_set* exceptional, timeval* limit) {
  if (!any_socket(count, readable, writable, exceptional)) {
    return REAL(select)(count, readable, writable, exceptional, limit);
  }
  return select_mixed(count, readable, writable, exceptional, timeout_of(limit), nullptr);
}

FLOTILLA_EXPORT int pselect(int count, fd_set* readable, fd_set* writable, fd_set* exceptional,
                            const timespec* limit, const sigset_t* mask) {
  if (!any_socket(count, readable, writable, exceptional)) {
    return REAL(pselect)(count, readable, writable, exceptional, limit, mask);
  }
  return select_mixed(count, readable, writable, exceptional, timeout_of(limit), mask);
}

FLOTILLA_EXPORT int epoll_ctl(int epfd, int operation, int fd, epoll_event* event) {
  if (!is_socket(fd)) return REAL(epoll_ctl)(epfd, operation, fd, event);
  return epoll_control(epfd, operation, fd, event);
}

FLOTILLA_EXPORT int epoll_wait(int epfd, epoll_event* events, int room, int timeout_ms) {
  if (fd_kind(epfd) != FdKind::epoll) return epoll_plain(epfd, events, room, timeout_ms, nullptr);
  if (room <= 0 || events == nullptr) return fail_with(EINVAL);
  return epoll_mixed(epfd, events, room, timeout_ms, nullptr);
}

FLOTILLA_EXPORT int epoll_pwait(int epfd, epoll_event* events, int room, int timeout_ms, const sigset_t* mask) {
  if (fd_kind(epfd) != FdKind::epoll) return epoll_plain(epfd, events, room, timeout_ms, mask);
  if (room <= 0 || events == nullptr) return fail_with(EINVAL);
  return epoll_mixed(epfd, events, room, timeout_ms, mask);
}

FLOTILLA_EXPORT int epoll_pwait2(int epfd, epoll_event* events, int room, const timespec* limit, const sigset_t* mask) {
  if (fd_kind(epfd) != FdKind::epoll) {
    const std::uint64_t deadline = deadline_after(timeout_of(limit));
    return after_plain_wait(epfd, events, room, REAL(epoll_pwait2)(epfd, events, room, limit, mask), deadline, mask);
  }
  if (room <= 0 || events == nullptr) return fail_with(EINVAL);
  return epoll_mixed(epfd, events, room, timeout_of(limit), mask);
}
