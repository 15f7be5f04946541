// flotilla-exec-server: the classic accept-fork-exec server (inetd's way), for the compat suite.
// It listens on 0.0.0.0:PORT; for each connection it forks, and the child puts the connection on
// its standard input and output and execs cat, which echoes it. With --reexec the server first
// execs itself, passing the listener on by number (--listener=FD), as a daemon re-executing
// itself after an upgrade does. With --spawn each connection goes to a handler started by
// posix_spawn instead (the server itself, --echo-fd=FD, echoing the connection it inherited under
// the same number). With --shell the child execs `sh -c 'exec cat'`: the connection passes
// through two execs. Once it serves it prints "serving" and the listener's number.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

extern char** environ;

namespace {

int fail(const char* what) {
  std::fprintf(stderr, "flotilla-exec-server: %s: %s\n", what, std::strerror(errno));
  return 1;
}

int listen_on(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);  // no SOCK_CLOEXEC: --reexec hands it on
  if (fd < 0) return -1;
  const int one = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 || ::listen(fd, 64) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Echoes what `fd` receives until the peer closes, then closes it.
int echo(int fd) {
  char chunk[16384];
  for (;;) {
    const ssize_t got = ::read(fd, chunk, sizeof(chunk));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return fail("read");
    if (got == 0) break;
    for (ssize_t sent = 0; sent < got;) {
      const ssize_t wrote = ::write(fd, chunk + sent, static_cast<std::size_t>(got - sent));
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote < 0) return fail("write");
      sent += wrote;
    }
  }
  return ::close(fd) == 0 ? 0 : fail("close");
}

// The handler of `connection`: this program again, started by posix_spawn without the listener.
void spawn_handler(const char* self, const char* port, int listener, int connection) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addclose(&actions, listener);
  std::string passed = "--echo-fd=" + std::to_string(connection);
  char* argv[] = {const_cast<char*>(self), const_cast<char*>(port), passed.data(), nullptr};
  pid_t child = 0;
  const int error = ::posix_spawn(&child, "/proc/self/exe", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    errno = error;
    (void)fail("posix_spawn");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: flotilla-exec-server PORT [--reexec | --listener=FD | --spawn | --shell | --echo-fd=FD]\n"
                         "An accept-fork-exec echo server: each connection is served by cat on its stdin and stdout.\n");
    return 2;
  }
  const std::string option = argc == 3 ? argv[2] : "";
  int listener = -1;
  if (option.rfind("--echo-fd=", 0) == 0) return echo(std::atoi(option.c_str() + std::strlen("--echo-fd=")));
  if (option.rfind("--listener=", 0) == 0) {
    listener = std::atoi(option.c_str() + std::strlen("--listener="));
    // The first use of the inherited listener, before saying it serves.
    pollfd look{listener, POLLIN, 0};
    if (::poll(&look, 1, 0) < 0 || (look.revents & POLLNVAL) != 0) return fail("the inherited listener");
  } else {
    listener = listen_on(std::atoi(argv[1]));
    if (listener < 0) return fail("listen");
    if (option == "--reexec") {
      const std::string passed = "--listener=" + std::to_string(listener);
      ::execl("/proc/self/exe", argv[0], argv[1], passed.c_str(), static_cast<char*>(nullptr));
      return fail("exec itself");
    }
    if (!option.empty() && option != "--spawn" && option != "--shell") return fail("unknown option");
  }
  std::printf("serving %d\n", listener);
  std::fflush(stdout);
  ::signal(SIGCHLD, SIG_IGN);  // the children are reaped by the kernel
  for (;;) {
    const int connection = ::accept(listener, nullptr, nullptr);
    if (connection < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return fail("accept");
    }
    if (option == "--spawn") {
      spawn_handler(argv[0], argv[1], listener, connection);
      ::close(connection);
      continue;
    }
    const pid_t child = ::fork();
    if (child == 0) {
      ::close(listener);
      if (::dup2(connection, 0) < 0 || ::dup2(connection, 1) < 0) ::_exit(fail("dup2"));
      ::close(connection);
      if (option == "--shell") ::execl("/bin/sh", "sh", "-c", "exec cat", static_cast<char*>(nullptr));
      ::execl("/bin/cat", "cat", static_cast<char*>(nullptr));
      ::_exit(fail("exec cat"));
    }
    if (child < 0) (void)fail("fork");
    ::close(connection);
  }
}
