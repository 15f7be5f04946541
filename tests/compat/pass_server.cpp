// flotilla-pass-server: a prefork server that passes connections (for the compat suite). It starts
// WORKERS worker processes, each with one end of a unix socket pair, then listens on
// 0.0.0.0:PORT; it accepts each connection, passes it to the next worker with SCM_RIGHTS and
// closes its own copy at once. A worker receives one descriptor at a time into a control buffer
// sized for exactly one (as such servers do), echoes the connection until the peer closes, and
// prints "worker N served" for each. With --pass-listener the server passes its listener instead
// (keeping its own copy, as a server handing its listeners to its successor does) and each worker
// accepts on it. With --chroot DIR each worker first changes its root to DIR (an empty folder: no
// /proc there, as in vsftpd's session child). Once it listens the server prints "serving".
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

int fail(const char* what) {
  std::fprintf(stderr, "flotilla-pass-server: %s: %s\n", what, std::strerror(errno));
  return 1;
}

// Echoes what `fd` receives until the peer closes.
bool echo(int fd) {
  char chunk[16384];
  for (;;) {
    const ssize_t got = ::read(fd, chunk, sizeof(chunk));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return fail("read") == 0;
    if (got == 0) return true;
    for (ssize_t sent = 0; sent < got;) {
      const ssize_t wrote = ::write(fd, chunk + sent, static_cast<std::size_t>(got - sent));
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote < 0) return fail("write") == 0;
      sent += wrote;
    }
  }
}

// The descriptor a message on `channel` passes (-1 at the channel's end or on a fault).
int receive_descriptor(int channel) {
  char byte = 0;
  iovec vector{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr message{};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t got = 0;
  while ((got = ::recvmsg(channel, &message, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
  }
  if (got <= 0) return -1;
  if ((message.msg_flags & MSG_CTRUNC) != 0) {
    std::fprintf(stderr, "flotilla-pass-server: the passed descriptors were truncated\n");
  }
  const cmsghdr* header = CMSG_FIRSTHDR(&message);
  if (header == nullptr || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS ||
      header->cmsg_len != CMSG_LEN(sizeof(int))) {
    std::fprintf(stderr, "flotilla-pass-server: a message without exactly one descriptor\n");
    return -1;
  }
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(header), sizeof(fd));
  return fd;
}

bool pass_descriptor(int channel, int fd) {
  char byte = 'c';
  iovec vector{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &fd, sizeof(fd));
  ssize_t sent = 0;
  while ((sent = ::sendmsg(channel, &message, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  return sent == 1;
}

int serve_passed(int worker, int channel, bool listener_passed) {
  const int listener = listener_passed ? receive_descriptor(channel) : -1;
  if (listener_passed && listener < 0) return 1;
  for (;;) {
    const int fd = listener_passed ? ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC) : receive_descriptor(channel);
    if (fd < 0 && listener_passed && errno == EINTR) continue;
    if (fd < 0 && listener_passed) return fail("accept");
    if (fd < 0) return 0;
    const bool echoed = echo(fd);
    if (::close(fd) != 0) (void)fail("close");
    if (echoed) std::printf("worker %d served\n", worker);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool pass_listener = false;
  const char* new_root = nullptr;
  bool understood = argc >= 3 && std::atoi(argv[1]) > 0;
  for (int at = 3; understood && at < argc; ++at) {
    if (std::strcmp(argv[at], "--pass-listener") == 0) {
      pass_listener = true;
    } else if (std::strcmp(argv[at], "--chroot") == 0 && at + 1 < argc) {
      new_root = argv[++at];
    } else {
      understood = false;
    }
  }
  if (!understood) {
    std::fprintf(stderr, "usage: flotilla-pass-server PORT WORKERS [--pass-listener] [--chroot DIR]\n"
                         "Accepts on 0.0.0.0:PORT and passes each connection to one of WORKERS worker processes\n"
                         "over a unix socket (SCM_RIGHTS); the workers echo. --pass-listener: passes the listener\n"
                         "to every worker instead, and the workers accept on it. --chroot: the workers change\n"
                         "their root to DIR first.\n");
    return 2;
  }
  const int workers = std::atoi(argv[2]);
  if (workers < 1 || workers > 64) {
    std::fprintf(stderr, "flotilla-pass-server: WORKERS must be 1 to 64\n");
    return 2;
  }
  std::vector<int> channels;
  for (int worker = 0; worker < workers; ++worker) {
    int ends[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) return fail("socketpair");
    const pid_t child = ::fork();
    if (child < 0) return fail("fork");
    if (child == 0) {
      ::close(ends[0]);
      for (const int other : channels) ::close(other);
      if (new_root != nullptr && (::chroot(new_root) != 0 || ::chdir("/") != 0)) return fail("chroot");
      return serve_passed(worker, ends[1], pass_listener);
    }
    ::close(ends[1]);
    channels.push_back(ends[0]);
  }
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return fail("socket");
  const int one = 1;
  (void)::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(std::atoi(argv[1])));
  if (::bind(listener, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) return fail("bind");
  if (::listen(listener, 64) != 0) return fail("listen");
  if (pass_listener) {
    for (const int channel : channels) {
      if (!pass_descriptor(channel, listener)) return fail("sendmsg");
    }
  }
  std::printf("serving\n");
  std::fflush(stdout);
  while (pass_listener) ::pause();
  for (std::size_t next = 0;; next = (next + 1) % channels.size()) {
    const int connection = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0 && errno == EINTR) continue;
    if (connection < 0) return fail("accept");
    if (!pass_descriptor(channels[next], connection)) (void)fail("sendmsg");
    if (::close(connection) != 0) (void)fail("close");
  }
}
