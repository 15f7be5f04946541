// A plain program (libc calls only, nothing of Flotilla's) that the preload tests run under
// libflotilla-preload.so. Each scenario exercises one group of interposed calls against a peer
// the test provides, and prints "ok <scenario>" or "FAIL <scenario>: <what> (<errno>)"; the exit
// status is 0 only when everything passed.
//
//   preload_probe client ADDRESS ECHO_PORT CLOSED_PORT [DONE_FILE]   every client-side scenario;
//                                 with DONE_FILE: then creates it and waits for SIGINT
//   preload_probe server PORT                            accept one connection, echo it, then a
//                                                        second through epoll (edge-triggered)
//   preload_probe fork-holders-server PORT               accept one connection; a fork child echoes
//                                 the first KiB and exits, the parent echoes the second, says "bye"
//   preload_probe prefork PORT                           postfix's and gunicorn's shape: the parent
//                                 polls the listener and never accepts; two forked workers take
//                                 turns (a POSIX lock) waiting in poll and accept, and serve one
//                                 client at a time: "ping" is answered "pong", "hold" with "held",
//                                 then "done" once the client sends "done". On SIGINT: "ok prefork"
//   preload_probe down                                   socket() with no stack behind it
//   preload_probe kernel                                 kernel descriptors only, passed through
//   preload_probe daemon|daemon-wait ADDRESS ECHO_PORT RESULT_FILE   daemon(3), or fork with the
//                                 parent waiting for the child, with a connected socket
//   preload_probe outlive ADDRESS ECHO_PORT               blocks in read until the stack goes down
//   preload_probe limits PORT READY_FILE                 listens until a replica has no socket left
//                                 (EMFILE), then creates READY_FILE and holds its seat until SIGINT
//   preload_probe seatless                               socket() while every seat is leased (ENFILE)
//   preload_probe stack-down accept|epoll PORT STATE_FILE   a server waiting in accept (or in
//                                 epoll_wait on its listener) while the stack goes down; on SIGUSR1
//                                 (the stack is back) it listens on PORT+1 and echoes one connection.
//                                 STATE_FILE says "listening PID", then "back"
//   preload_probe threaded-echo epoll|blocking PORT      memcached's shape: the main thread in
//                                 epoll_wait on the listener, a worker thread in epoll_wait on the
//                                 one accepted connection (or in blocking reads), which it echoes
//                                 until EOF
//   preload_probe wake-one epoll|blocking PORT WORKERS   WORKERS threads, each asleep on one
//                                 accepted connection (in an epoll set of its own, or in blocking
//                                 reads) which it echoes until EOF, the main thread in epoll_wait
//                                 on the listener; each worker then prints "worker served=N woken=M"
//                                 (requests echoed, voluntary context switches of its thread)
//   preload_probe shared-set PORT CONNECTIONS            a thread pool sharing one epoll set: three
//                                 threads wait in it, each connection an EPOLLONESHOT interest that
//                                 the thread that got it echoes and arms again; "ok shared-set"
//                                 once every connection ended
//   preload_probe fds CLOSED OPEN interface|none         (the exec scenario's new program)
//   preload_probe on-stack IP PORT                       (the exec scenario's new program, its environment cleared)
//   preload_probe closefrom-exec FD                      (the closefrom scenario's new program)
//   preload_probe handed EVENTFD RECORD                  (what a hand-over record of exec gave)
//   preload_probe shells                                 system(), popen() and pclose(): what each
//                                 returns, with which errno and signals, and which library gave them
//   preload_probe received CHANNEL                       (one message with SCM_RIGHTS on CHANNEL,
//                                 into room for one descriptor: what the library made of it)
#include <arpa/inet.h>
#include <algorithm>
#include <array>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <initializer_list>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace {

int g_failures = 0;

bool check(bool condition, const char* scenario, const char* what) {
  if (!condition) {
    std::printf("FAIL %s: %s (%s)\n", scenario, what, std::strerror(errno));
    std::fflush(stdout);
    ++g_failures;
  }
  return condition;
}

void passed(const char* scenario) {
  std::printf("ok %s\n", scenario);
  std::fflush(stdout);
}

// Whether fork child `child` exited with status 0 (reaps it).
bool exited_cleanly(pid_t child) {
  int status = 0;
  return child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// In a fork child: a call stuck for good (a read nobody answers) ends the child, not the run.
void end_if_stuck(unsigned seconds) {
  signal(SIGALRM, SIG_DFL);
  alarm(seconds);
}

sockaddr_in address_of(const char* ip, int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, ip, &address.sin_addr);
  return address;
}

int connect_blocking(const char* ip, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const sockaddr_in address = address_of(ip, port);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    const int error = errno;
    close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

std::vector<char> pattern(std::size_t size, unsigned seed) {
  std::vector<char> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>((i * 131 + seed) & 0xff);
  return bytes;
}

bool read_exactly(int fd, char* out, std::size_t size) {
  std::size_t got = 0;
  while (got < size) {
    const ssize_t n = read(fd, out + got, size - got);
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

// Writes `bytes` and reads the echo back at once (blocking calls), in pieces that fit the rings.
bool echo_round_trip(int fd, const std::vector<char>& bytes) {
  std::vector<char> back(bytes.size());
  constexpr std::size_t kPiece = 64 * 1024;
  for (std::size_t at = 0; at < bytes.size(); at += kPiece) {
    const std::size_t size = std::min(kPiece, bytes.size() - at);
    if (write(fd, bytes.data() + at, size) != static_cast<ssize_t>(size)) return false;
    if (!read_exactly(fd, back.data() + at, size)) return false;
  }
  return back == bytes;
}

void scenario_blocking(const char* ip, int port) {
  const char* name = "blocking-echo";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return;
  sockaddr_in peer{};
  socklen_t length = sizeof(peer);
  bool good = check(getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) == 0, name, "getpeername") &&
              check(ntohs(peer.sin_port) == port, name, "getpeername port");
  sockaddr_in local{};
  length = sizeof(local);
  good = good && check(getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0, name, "getsockname") &&
         check(local.sin_port != 0, name, "getsockname port");
  int type = 0;
  length = sizeof(type);
  good = good && check(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0 && type == SOCK_STREAM, name, "SO_TYPE");
  const int one = 1;
  good = good && check(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0, name, "TCP_NODELAY");
  good = good && check(setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) == -1 && errno == ENOPROTOOPT, name,
                       "unsupported option must fail with ENOPROTOOPT");
  // A hint Linux takes is kept and read back (sockets/preload/kept_options.hpp).
  const int tos = 0x10;
  int kept = 0;
  length = sizeof(kept);
  good = good && check(setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof(tos)) == 0 &&
                           getsockopt(fd, IPPROTO_IP, IP_TOS, &kept, &length) == 0 && kept == tos,
                       name, "IP_TOS kept");
  good = good && check(echo_round_trip(fd, pattern(300 * 1024, 7)), name, "echo of 300 KiB");
  // readv/writev and recv/send.
  char a[3] = {'a', 'b', 'c'}, b[4] = {'d', 'e', 'f', 'g'};
  iovec out[2] = {{a, 3}, {b, 4}};
  good = good && check(writev(fd, out, 2) == 7, name, "writev");
  char c[2], d[5];
  iovec in[2] = {{c, 2}, {d, 5}};
  good = good && check(recv(fd, c, 2, MSG_WAITALL) == 2 && c[0] == 'a' && c[1] == 'b', name, "recv MSG_WAITALL");
  in[0] = {c, 1};
  good = good && check(readv(fd, in, 2) >= 1 && c[0] == 'c', name, "readv");
  tcp_info info{};
  length = sizeof(info);
  good = good && check(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) == 0 && info.tcpi_state == TCP_ESTABLISHED,
                       name, "TCP_INFO state");
  good = good && check(shutdown(fd, SHUT_WR) == 0, name, "shutdown");
  char rest[16];
  ssize_t n = 0;
  while ((n = read(fd, rest, sizeof(rest))) > 0) {
  }
  good = good && check(n == 0, name, "EOF after shutdown");
  good = good && check(close(fd) == 0, name, "close");
  if (good) passed(name);
}

void scenario_refused(const char* ip, int closed_port) {
  const char* name = "nonblocking-refused";
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (!check(fd >= 0, name, "socket")) return;
  const sockaddr_in address = address_of(ip, closed_port);
  bool good = check(connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == -1 &&
                        errno == EINPROGRESS,
                    name, "connect must say EINPROGRESS");
  pollfd entry{fd, POLLOUT, 0};
  good = good && check(poll(&entry, 1, 5000) == 1, name, "poll for the outcome");
  int error = 0;
  socklen_t length = sizeof(error);
  good = good && check(getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0, name, "SO_ERROR");
  errno = error;
  good = good && check(error == ECONNREFUSED, name, "SO_ERROR must be ECONNREFUSED");
  close(fd);
  // Blocking connect to the same port fails with the errno itself.
  const int blocking = connect_blocking(ip, closed_port);
  good = good && check(blocking == -1 && errno == ECONNREFUSED, name, "blocking connect must fail with ECONNREFUSED");
  if (good) passed(name);
}

// poll, select and epoll over a pipe (kernel) and a Flotilla socket.
void scenario_mixed(const char* ip, int port) {
  const char* name = "mixed-readiness";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return;
  int pipe_fds[2];
  if (!check(pipe(pipe_fds) == 0, name, "pipe")) return;
  bool good = true;
  // Nothing readable yet: poll times out.
  pollfd set[2] = {{pipe_fds[0], POLLIN, 0}, {fd, POLLIN, 0}};
  good = good && check(poll(set, 2, 50) == 0, name, "poll must time out on an idle set");
  // The kernel side ready, the socket not.
  good = good && check(write(pipe_fds[1], "x", 1) == 1, name, "pipe write");
  good = good && check(poll(set, 2, 1000) == 1 && set[0].revents == POLLIN && set[1].revents == 0, name,
                       "poll must see the pipe only");
  char byte;
  good = good && check(read(pipe_fds[0], &byte, 1) == 1, name, "pipe read");
  // The socket ready (its echo), the pipe not: blocking poll wakes on the stack.
  good = good && check(write(fd, "hello", 5) == 5, name, "socket write");
  good = good && check(poll(set, 2, 5000) == 1 && set[1].revents == POLLIN && set[0].revents == 0, name,
                       "poll must wake on the socket");
  int pending = 0;
  good = good && check(ioctl(fd, FIONREAD, &pending) == 0 && pending == 5, name, "FIONREAD");
  // select sees the same.
  fd_set readable;
  FD_ZERO(&readable);
  FD_SET(pipe_fds[0], &readable);
  FD_SET(fd, &readable);
  timeval limit{1, 0};
  good = good && check(select(std::max(fd, pipe_fds[0]) + 1, &readable, nullptr, nullptr, &limit) == 1 &&
                           FD_ISSET(fd, &readable) && !FD_ISSET(pipe_fds[0], &readable),
                       name, "select");
  char echo[5];
  good = good && check(read_exactly(fd, echo, 5) && std::memcmp(echo, "hello", 5) == 0, name, "echo");

  // epoll, level-triggered, both kinds in one set.
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{EPOLLIN, {.u64 = 1}};
  good = good && check(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) == 0, name, "epoll_ctl socket");
  event = {EPOLLIN, {.u64 = 2}};
  good = good && check(epoll_ctl(epfd, EPOLL_CTL_ADD, pipe_fds[0], &event) == 0, name, "epoll_ctl pipe");
  good = good && check(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) == -1 && errno == EEXIST, name, "EEXIST");
  epoll_event got[4];
  good = good && check(epoll_wait(epfd, got, 4, 50) == 0, name, "epoll_wait must time out");
  good = good && check(write(pipe_fds[1], "y", 1) == 1, name, "pipe write");
  good = good && check(epoll_wait(epfd, got, 4, 1000) == 1 && got[0].data.u64 == 2, name, "epoll: the pipe");
  good = good && check(read(pipe_fds[0], &byte, 1) == 1, name, "pipe read");
  good = good && check(write(fd, "abc", 3) == 3, name, "socket write");
  good = good && check(epoll_wait(epfd, got, 4, 5000) == 1 && got[0].data.u64 == 1 && (got[0].events & EPOLLIN),
                       name, "epoll: the socket");
  // Level-triggered: still readable until read.
  good = good && check(epoll_wait(epfd, got, 4, 0) == 1, name, "level-triggered repeats");
  // Edge-triggered: reported once, again only after EAGAIN and new bytes.
  event = {EPOLLIN | EPOLLET, {.u64 = 1}};
  good = good && check(epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event) == 0, name, "EPOLL_CTL_MOD");
  good = good && check(epoll_wait(epfd, got, 4, 1000) == 1, name, "edge-triggered first report");
  good = good && check(epoll_wait(epfd, got, 4, 50) == 0, name, "edge-triggered: no second report");
  char three[8];
  good = good && check(read_exactly(fd, three, 3), name, "read");
  good = good && check(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0, name, "O_NONBLOCK");
  good = good && check(read(fd, three, 1) == -1 && errno == EAGAIN, name, "EAGAIN on an empty socket");
  good = good && check(write(fd, "z", 1) == 1, name, "socket write");
  good = good && check(epoll_wait(epfd, got, 4, 5000) == 1, name, "edge-triggered: new bytes report again");
  good = good && check(read(fd, three, 1) == 1, name, "read");
  // One-shot: disabled after one report until MOD.
  event = {EPOLLIN | EPOLLONESHOT, {.u64 = 1}};
  good = good && check(epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event) == 0, name, "MOD oneshot");
  good = good && check(write(fd, "q", 1) == 1, name, "socket write");
  good = good && check(epoll_wait(epfd, got, 4, 5000) == 1, name, "oneshot report");
  good = good && check(epoll_wait(epfd, got, 4, 50) == 0, name, "oneshot disabled");
  good = good && check(epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &event) == 0, name, "oneshot re-armed");
  good = good && check(epoll_wait(epfd, got, 4, 1000) == 1, name, "oneshot reports again");
  good = good && check(epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr) == 0, name, "EPOLL_CTL_DEL");
  good = good && check(epoll_wait(epfd, got, 4, 50) == 0, name, "deleted interest is silent");
  // RDHUP: the echo server closes after we shut down writing.
  event = {EPOLLIN | EPOLLRDHUP, {.u64 = 1}};
  good = good && check(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) == 0, name, "ADD rdhup");
  good = good && check(shutdown(fd, SHUT_WR) == 0, name, "shutdown");
  bool hung_up = false;
  for (int i = 0; i < 50 && !hung_up; ++i) {
    const int n = epoll_wait(epfd, got, 4, 200);
    if (n == 1 && (got[0].events & EPOLLRDHUP)) hung_up = true;
    while (read(fd, three, sizeof(three)) > 0) {
    }
  }
  good = good && check(hung_up, name, "EPOLLRDHUP after the peer closed");
  close(epfd);
  close(fd);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  if (good) passed(name);
}

void scenario_dup_fork(const char* ip, int port) {
  const char* name = "dup-fork";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return;
  const int copy = dup(fd);
  bool good = check(copy >= 0 && copy != fd, name, "dup");
  good = good && check(close(fd) == 0, name, "close the original");
  good = good && check(echo_round_trip(copy, pattern(1000, 3)), name, "I/O through the dup");
  const int target = 100;
  good = good && check(dup2(copy, target) == target, name, "dup2");
  good = good && check(fcntl(target, F_GETFD) == 0, name, "dup2 clears FD_CLOEXEC");
  const int third = fcntl(copy, F_DUPFD_CLOEXEC, 200);
  good = good && check(third >= 200 && (fcntl(third, F_GETFD) & FD_CLOEXEC), name, "F_DUPFD_CLOEXEC");
  close(third);
  close(copy);
  // A child closes its inherited copy and exits; the parent's socket lives on.
  const pid_t child = fork();
  if (child == 0) _exit(close(target) == 0 ? 0 : 1);
  good = good && check(exited_cleanly(child), name,
                       "child closes its copy");
  good = good && check(echo_round_trip(target, pattern(2000, 5)), name, "parent I/O after the child closed");
  // A child that opens a socket of its own (its own lease).
  const pid_t second = fork();
  if (second == 0) {
    const int own = connect_blocking(ip, port);
    const bool fine = own >= 0 && echo_round_trip(own, pattern(500, 9));
    _exit(fine ? 0 : 1);
  }
  good = good && check(exited_cleanly(second), name,
                       "child opens and uses its own socket");
  good = good && check(echo_round_trip(target, pattern(100, 1)), name, "parent I/O after the second child");
  close(target);
  if (good) passed(name);
}

void on_alarm(int) {}

void scenario_eintr(const char* ip, int port) {
  const char* name = "eintr";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return;
  struct sigaction action{};
  action.sa_handler = on_alarm;  // no SA_RESTART
  sigaction(SIGALRM, &action, nullptr);
  alarm(1);
  char byte;
  const ssize_t got = read(fd, &byte, 1);
  bool good = check(got == -1 && errno == EINTR, name, "blocking read must end with EINTR");
  alarm(1);
  pollfd entry{fd, POLLIN, 0};
  good = good && check(poll(&entry, 1, 10000) == -1 && errno == EINTR, name, "blocking poll must end with EINTR");
  alarm(1);
  const int epfd = epoll_create1(0);
  epoll_event event{EPOLLIN, {.u64 = 0}};
  epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
  good = good && check(epoll_wait(epfd, &event, 1, 10000) == -1 && errno == EINTR, name,
                       "blocking epoll_wait must end with EINTR");
  close(epfd);
  // With SA_RESTART the read goes on after the handler, and gets the byte written later; a crash
  // handler without it (redis installs one for SIGSEGV) does not change that.
  struct sigaction crash{};
  crash.sa_handler = on_alarm;
  sigaction(SIGSEGV, &crash, nullptr);
  action.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &action, nullptr);
  alarm(1);
  std::thread later([fd] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    (void)!write(fd, "r", 1);
  });
  good = good && check(read(fd, &byte, 1) == 1 && byte == 'r', name, "SA_RESTART: the read must go on");
  later.join();
  // SO_RCVTIMEO: a blocking read gives up with EAGAIN.
  timeval limit{0, 100'000};
  good = good && check(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit)) == 0, name, "SO_RCVTIMEO");
  good = good && check(read(fd, &byte, 1) == -1 && errno == EAGAIN, name, "SO_RCVTIMEO must give EAGAIN");
  close(fd);
  if (good) passed(name);
}

void scenario_sendfile(const char* ip, int port) {
  const char* name = "sendfile";
  char path[] = "/tmp/flotilla-probe-XXXXXX";
  const int file = mkstemp(path);
  if (!check(file >= 0, name, "mkstemp")) return;
  unlink(path);
  const std::vector<char> bytes = pattern(200 * 1024, 11);
  bool good = check(write(file, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()), name, "file write");
  const int fd = connect_blocking(ip, port);
  good = good && check(fd >= 0, name, "connect");
  // In pieces the echo can return at once, with an offset pointer and without one.
  std::vector<char> back(bytes.size());
  off_t offset = 0;
  constexpr std::size_t kPiece = 50 * 1024;
  for (std::size_t at = 0; good && at < bytes.size(); at += 2 * kPiece) {
    good = check(sendfile(fd, file, &offset, kPiece) == static_cast<ssize_t>(kPiece), name, "sendfile with offset") &&
           check(read_exactly(fd, back.data() + at, kPiece), name, "echo");
    lseek(file, offset, SEEK_SET);
    good = good && check(sendfile(fd, file, nullptr, kPiece) == static_cast<ssize_t>(kPiece), name, "sendfile") &&
           check(lseek(file, 0, SEEK_CUR) == offset + static_cast<off_t>(kPiece), name, "file position moved") &&
           check(read_exactly(fd, back.data() + at + kPiece, kPiece), name, "echo");
    offset += kPiece;
  }
  good = good && check(back == bytes, name, "bytes match");
  close(fd);
  close(file);
  if (good) passed(name);
}

// UDP against a kernel echo on the same port number.
void scenario_udp(const char* ip, int port) {
  const char* name = "udp";
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (!check(fd >= 0, name, "socket")) return;
  const sockaddr_in peer = address_of(ip, port);
  bool good = check(sendto(fd, "ping", 4, 0, reinterpret_cast<const sockaddr*>(&peer), sizeof(peer)) == 4, name, "sendto");
  pollfd entry{fd, POLLIN, 0};
  good = good && check(poll(&entry, 1, 5000) == 1 && entry.revents == POLLIN, name, "poll for the echo");
  char buffer[2048];
  sockaddr_in from{};
  socklen_t length = sizeof(from);
  good = good && check(recvfrom(fd, buffer, sizeof(buffer), 0, reinterpret_cast<sockaddr*>(&from), &length) == 4 &&
                           std::memcmp(buffer, "ping", 4) == 0 && from.sin_port == peer.sin_port &&
                           from.sin_addr.s_addr == peer.sin_addr.s_addr,
                       name, "recvfrom: the echo and its source");
  sockaddr_in local{};
  length = sizeof(local);
  good = good && check(getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0 && local.sin_port != 0, name,
                       "getsockname: the port the stack bound");
  int type = 0;
  length = sizeof(type);
  good = good && check(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0 && type == SOCK_DGRAM, name, "SO_TYPE");
  const int one = 1;
  good = good && check(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1 && errno == ENOPROTOOPT, name,
                       "TCP option on UDP: ENOPROTOOPT");
  // connect: send/recv with the default peer; a short buffer truncates (MSG_TRUNC).
  good = good && check(connect(fd, reinterpret_cast<const sockaddr*>(&peer), sizeof(peer)) == 0, name, "connect");
  const std::vector<char> big = pattern(1400, 4);
  good = good && check(send(fd, big.data(), big.size(), 0) == 1400, name, "send");
  char small[100];
  iovec vector{small, sizeof(small)};
  msghdr message{};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  good = good && check(recvmsg(fd, &message, 0) == 100 && (message.msg_flags & MSG_TRUNC) &&
                           std::memcmp(small, big.data(), 100) == 0,
                       name, "recvmsg truncates with MSG_TRUNC");
  good = good && check(recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT) == -1 && errno == EAGAIN, name, "EAGAIN when empty");
  close(fd);
  // bind() to a port of our choice.
  const int bound = socket(AF_INET, SOCK_DGRAM, 0);
  const sockaddr_in any = address_of("0.0.0.0", 9100);
  good = good && check(bind(bound, reinterpret_cast<const sockaddr*>(&any), sizeof(any)) == 0, name, "bind");
  length = sizeof(local);
  good = good && check(getsockname(bound, reinterpret_cast<sockaddr*>(&local), &length) == 0 && ntohs(local.sin_port) == 9100,
                       name, "getsockname after bind");
  good = good && check(sendto(bound, "abc", 3, 0, reinterpret_cast<const sockaddr*>(&peer), sizeof(peer)) == 3, name, "sendto");
  good = good && check(recv(bound, buffer, sizeof(buffer), 0) == 3, name, "blocking recv");
  close(bound);
  if (good) passed(name);
}

// UDP batches and control messages against the kernel echo: sendmmsg then recvmmsg
// (MSG_WAITFORONE), IP_PKTINFO on a receive (and MSG_CTRUNC without room for it), a send carrying
// IP_PKTINFO, and a control message Linux does not take on a send (EINVAL).
void scenario_udp_batch(const char* ip, int port) {
  const char* name = "udp-batch";
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (!check(fd >= 0, name, "socket")) return;
  const sockaddr_in peer = address_of(ip, port);
  bool good = check(connect(fd, reinterpret_cast<const sockaddr*>(&peer), sizeof(peer)) == 0, name, "connect");
  const char* words[] = {"one", "three", "seven"};
  std::array<iovec, 3> out_vectors{};
  std::array<mmsghdr, 3> out{};
  for (std::size_t i = 0; i < 3; ++i) {
    out_vectors[i] = iovec{const_cast<char*>(words[i]), std::strlen(words[i])};
    out[i].msg_hdr.msg_iov = &out_vectors[i];
    out[i].msg_hdr.msg_iovlen = 1;
  }
  good = good && check(sendmmsg(fd, out.data(), 3, 0) == 3 && out[2].msg_len == 5, name, "sendmmsg sends three");
  std::array<std::array<char, 64>, 3> buffers{};
  std::array<iovec, 3> in_vectors{};
  std::array<mmsghdr, 3> in{};
  for (std::size_t i = 0; i < 3; ++i) {
    in_vectors[i] = iovec{buffers[i].data(), buffers[i].size()};
    in[i].msg_hdr.msg_iov = &in_vectors[i];
    in[i].msg_hdr.msg_iovlen = 1;
  }
  int received = 0;
  while (good && received < 3) {
    const int got = recvmmsg(fd, in.data() + received, static_cast<unsigned>(3 - received), MSG_WAITFORONE, nullptr);
    good = check(got >= 1, name, "recvmmsg returns at least one");
    received += std::max(got, 0);
  }
  for (std::size_t i = 0; good && i < 3; ++i) {
    good = check(in[i].msg_len == std::strlen(words[i]) && std::memcmp(buffers[i].data(), words[i], in[i].msg_len) == 0,
                 name, "recvmmsg: the datagrams in order");
  }
  // The same through the kernel's calls by number (libuv's way).
  good = good && check(syscall(SYS_sendmmsg, fd, out.data(), 3, 0) == 3, name, "syscall(SYS_sendmmsg) sends three");
  received = 0;
  while (good && received < 3) {
    const long got = syscall(SYS_recvmmsg, fd, in.data() + received, 3 - received, MSG_WAITFORONE, nullptr);
    good = check(got >= 1, name, "syscall(SYS_recvmmsg) returns at least one");
    received += static_cast<int>(std::max(got, 0L));
  }
  for (std::size_t i = 0; good && i < 3; ++i) {
    good = check(in[i].msg_len == std::strlen(words[i]) && std::memcmp(buffers[i].data(), words[i], in[i].msg_len) == 0,
                 name, "syscall(SYS_recvmmsg): the datagrams in order");
  }
  const int one = 1;
  good = good && check(setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) == 0, name, "IP_PKTINFO");
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in_pktinfo))];
  const auto receive_with = [&](std::size_t room, msghdr& message) {
    static char data[64];
    static iovec vector;
    vector = iovec{data, sizeof(data)};
    message = msghdr{};
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = room;
    pollfd entry{fd, POLLIN, 0};
    return send(fd, "info", 4, 0) == 4 && poll(&entry, 1, 5000) == 1 && recvmsg(fd, &message, 0) == 4;
  };
  msghdr message{};
  good = good && check(receive_with(sizeof(control), message), name, "recvmsg with room for IP_PKTINFO");
  const cmsghdr* header = good ? CMSG_FIRSTHDR(&message) : nullptr;
  good = good && check(header != nullptr && header->cmsg_level == IPPROTO_IP && header->cmsg_type == IP_PKTINFO &&
                           header->cmsg_len == CMSG_LEN(sizeof(in_pktinfo)) && (message.msg_flags & MSG_CTRUNC) == 0,
                       name, "IP_PKTINFO control message");
  in_pktinfo info{};
  if (good) std::memcpy(&info, CMSG_DATA(header), sizeof(info));
  good = good && check(info.ipi_addr.s_addr != 0 && info.ipi_spec_dst.s_addr == info.ipi_addr.s_addr, name,
                       "IP_PKTINFO names the destination");
  good = good && check(receive_with(sizeof(cmsghdr) - 1, message) && (message.msg_flags & MSG_CTRUNC) != 0 &&
                           message.msg_controllen == 0,
                       name, "too little room: MSG_CTRUNC");
  // A reply from the address the datagram came to, as dnsmasq sends it.
  iovec reply{const_cast<char*>("back"), 4};
  msghdr send_message{};
  send_message.msg_iov = &reply;
  send_message.msg_iovlen = 1;
  send_message.msg_control = control;
  send_message.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo));
  cmsghdr* out_header = CMSG_FIRSTHDR(&send_message);
  out_header->cmsg_level = IPPROTO_IP;
  out_header->cmsg_type = IP_PKTINFO;
  out_header->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
  in_pktinfo source{};
  source.ipi_spec_dst = info.ipi_addr;
  std::memcpy(CMSG_DATA(out_header), &source, sizeof(source));
  good = good && check(sendmsg(fd, &send_message, 0) == 4, name, "sendmsg with IP_PKTINFO");
  out_header->cmsg_level = SOL_SOCKET;
  out_header->cmsg_type = SCM_RIGHTS;
  out_header->cmsg_len = CMSG_LEN(sizeof(int));
  send_message.msg_controllen = CMSG_SPACE(sizeof(int));
  good = good && check(sendmsg(fd, &send_message, 0) == -1 && errno == EINVAL, name, "sendmsg with SCM_RIGHTS: EINVAL");
  close(fd);
  if (good) passed(name);
}

// Several threads, each with its own connection, all blocking in the library at once (sleeping
// on the same wake eventfd), plus one blocked in poll on a pipe until the others are done.
void scenario_threads(const char* ip, int port) {
  const char* name = "threads";
  constexpr int kThreads = 4;
  std::atomic<int> good_threads{0};
  int pipe_fds[2];
  if (!check(pipe(pipe_fds) == 0, name, "pipe")) return;
  std::thread waiter([&] {
    pollfd entry{pipe_fds[0], POLLIN, 0};
    if (poll(&entry, 1, 30000) == 1) good_threads.fetch_add(100);
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const int fd = connect_blocking(ip, port);
      if (fd < 0) return;
      bool fine = true;
      for (int round = 0; round < 20 && fine; ++round) fine = echo_round_trip(fd, pattern(20000 + 1000 * t, round));
      close(fd);
      if (fine) good_threads.fetch_add(1);
    });
  }
  for (auto& thread : threads) thread.join();
  (void)!write(pipe_fds[1], "x", 1);
  waiter.join();
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  if (check(good_threads.load() == kThreads + 100, name, "every thread's echo and the waiter")) passed(name);
}

// How many descriptors this process has open.
std::size_t open_descriptors() {
  std::size_t count = 0;
  DIR* directory = opendir("/proc/self/fd");
  if (directory == nullptr) return 0;
  while (const dirent* entry = readdir(directory)) count += entry->d_name[0] != '.';
  closedir(directory);
  return count - 1;  // the directory's own
}

// exec: a socket made with SOCK_CLOEXEC is gone in the new program, one without it is not; an
// exec that fails changes nothing.
void scenario_exec(const char* ip, int port, const char* self) {
  const char* name = "exec";
  const int closing = connect_blocking(ip, port);  // SOCK_CLOEXEC
  const int staying = socket(AF_INET, SOCK_STREAM, 0);
  if (!check(closing >= 0 && staying >= 0, name, "sockets")) return;
  const pid_t child = fork();
  if (child == 0) {
    const std::string gone = std::to_string(closing), kept = std::to_string(staying);
    const char* interface = std::getenv("FLOTILLA_INTERFACE_INDEX") != nullptr ? "interface" : "none";
    // An environment cleared as nginx clears it: the library passes on what the new image needs.
    char* const environment[] = {const_cast<char*>("TZ=UTC"), nullptr};
    execle(self, self, "fds", gone.c_str(), kept.c_str(), interface, static_cast<char*>(nullptr), environment);
    _exit(127);
  }
  bool good = check(exited_cleanly(child), name,
                    "after exec: the CLOEXEC socket is closed, the other open, the stack's interface named");
  // No socket to hand over (closed first), and an environment cleared as postfix clears it (it
  // keeps a list of its own): the new image still runs on the stack.
  const pid_t scrubbed = fork();
  if (scrubbed == 0) {
    closefrom(3);
    const std::string port_text = std::to_string(port);
    char* const environment[] = {const_cast<char*>("TZ=UTC"), nullptr};
    execle(self, self, "on-stack", ip, port_text.c_str(), static_cast<char*>(nullptr), environment);
    _exit(127);
  }
  good = check(exited_cleanly(scrubbed), name,
               "after an exec with no socket and a cleared environment: the library loaded, a connection echoes") &&
         good;
  // The parent's sockets are untouched.
  const bool still = check(echo_round_trip(closing, pattern(1000, 2)), name, "parent I/O after the child's exec");
  // An exec that fails leaves the caller as it was: its flags, its descriptors, its connection.
  bool unchanged = check(ioctl(closing, FIONCLEX) == 0 && fcntl(closing, F_GETFD) == 0, name, "FIONCLEX");
  const std::size_t descriptors = open_descriptors();
  unchanged = unchanged && check(execl("/nonexistent/preload-probe", "preload-probe", static_cast<char*>(nullptr)) == -1 &&
                                     errno == ENOENT, name, "exec of nothing fails with ENOENT");
  unchanged = unchanged && check(fcntl(closing, F_GETFD) == 0 && open_descriptors() == descriptors, name,
                                 "the same descriptors and flags after the failed exec");
  unchanged = unchanged && check(echo_round_trip(closing, pattern(1000, 3)), name, "I/O after the failed exec");
  unchanged = unchanged && check(ioctl(closing, FIOCLEX) == 0 && fcntl(closing, F_GETFD) == FD_CLOEXEC, name, "FIOCLEX");
  close(closing);
  close(staying);
  if (good && still && unchanged) passed(name);
}

// A program closing every descriptor it did not open (closefrom, close_range, a loop of closes:
// daemons as they start; sshd re-executes itself per connection and then closes all above 5)
// leaves the library's own alone: the connection, and one inherited over fork and exec, work on.
void scenario_closefrom(const char* ip, int port, const char* self) {
  const char* name = "closefrom";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return;
  closefrom(fd + 1);
  bool good = check(echo_round_trip(fd, pattern(1000, 4)), name, "I/O after closefrom");
  good = good && check(close_range(fd + 1, ~0u, 0) == 0, name, "close_range");
  for (int other = fd + 1; other < 1024; ++other) (void)close(other);
  good = good && check(echo_round_trip(fd, pattern(1000, 6)), name, "I/O after closing every number");
  // Inherited over fork and exec, the parent's copy closed at once (sshd's connection).
  const int inherited = connect_blocking(ip, port);
  good = good && check(inherited >= 0 && fcntl(inherited, F_SETFD, 0) == 0, name, "a connection to hand on");
  const pid_t child = fork();
  if (child == 0) {
    const std::string number = std::to_string(inherited);
    execl(self, self, "closefrom-exec", number.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(inherited);
  good = good && check(exited_cleanly(child), name,
                       "the exec'd child closes all but its connection and echoes through it");
  close(fd);
  if (good) passed(name);
}

// stdio on a socket: streams from fdopen, and stdout once the socket is put at 1 with dup2 (the C
// library writes those with its internal write, past the interposed one).
// The program's own addresses include the stack's, on the interface the stack drives (as a
// program in a network namespace of its own finds them): getifaddrs, the netlink dump programs ask
// the kernel for themselves (dnsmasq: peeking at each reply's size first), and a connection's
// IP_PKTOPTIONS naming its local address.
bool netlink_dump_lists(int index, in_addr expected) {
  const int route = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (route < 0) return false;
  struct {
    nlmsghdr header;
    ifaddrmsg body;
  } request{};
  request.header.nlmsg_len = sizeof(request);
  request.header.nlmsg_type = RTM_GETADDR;
  request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.header.nlmsg_seq = 42;
  request.body.ifa_family = AF_INET;
  bool listed = false;
  bool done = send(route, &request, sizeof(request), 0) != static_cast<ssize_t>(sizeof(request));
  std::vector<char> buffer(16);
  while (!done) {
    iovec vector{buffer.data(), buffer.size()};
    msghdr message{};
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    const ssize_t size = recvmsg(route, &message, MSG_PEEK | MSG_TRUNC);
    if (size <= 0) break;
    buffer.resize(static_cast<std::size_t>(size));
    ssize_t left = recv(route, buffer.data(), buffer.size(), 0);
    if (left != size) break;
    for (auto* header = reinterpret_cast<nlmsghdr*>(buffer.data()); NLMSG_OK(header, left); header = NLMSG_NEXT(header, left)) {
      if (header->nlmsg_type == NLMSG_DONE || header->nlmsg_type == NLMSG_ERROR) done = true;
      if (header->nlmsg_type != RTM_NEWADDR) continue;
      const auto* address = static_cast<const ifaddrmsg*>(NLMSG_DATA(header));
      int attributes_left = static_cast<int>(IFA_PAYLOAD(header));
      for (auto* attribute = IFA_RTA(address); RTA_OK(attribute, attributes_left); attribute = RTA_NEXT(attribute, attributes_left)) {
        if (attribute->rta_type == IFA_LOCAL && static_cast<int>(address->ifa_index) == index &&
            std::memcmp(RTA_DATA(attribute), &expected, sizeof(expected)) == 0) {
          listed = true;
        }
      }
    }
  }
  close(route);
  return done && listed;
}

void scenario_interfaces(const char* ip, int port) {
  const char* name = "interfaces";
  const char* index_text = std::getenv("FLOTILLA_INTERFACE_INDEX");
  const char* address_text = std::getenv("FLOTILLA_INTERFACE_ADDRESS");
  if (!check(index_text != nullptr && address_text != nullptr, name, "flotilla run names the stack's interface")) return;
  const int index = std::atoi(index_text);
  const std::string address(address_text, std::strcspn(address_text, "/"));
  in_addr expected{};
  if (!check(inet_pton(AF_INET, address.c_str(), &expected) == 1, name, "the stack's address")) return;
  ifaddrs* list = nullptr;
  bool good = check(getifaddrs(&list) == 0, name, "getifaddrs");
  bool listed = false;
  for (const ifaddrs* entry = list; good && entry != nullptr; entry = entry->ifa_next) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
    listed = listed || (in != nullptr && in->sin_family == AF_INET && in->sin_addr.s_addr == expected.s_addr &&
                        static_cast<int>(if_nametoindex(entry->ifa_name)) == index);
  }
  if (list != nullptr) freeifaddrs(list);
  good = good && check(listed, name, "getifaddrs lists the stack's address on its interface");
  good = good && check(netlink_dump_lists(index, expected), name, "a netlink dump of addresses lists it");
  // The interface ioctls, asked on a socket (a Flotilla UDP one: the kernel's answer, and the stack's).
  const int asker = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq request{};
  const bool named = asker >= 0 && if_indextoname(static_cast<unsigned>(index), request.ifr_name) != nullptr;
  sockaddr_in answer{};
  if (named && ioctl(asker, SIOCGIFADDR, &request) == 0) std::memcpy(&answer, &request.ifr_addr, sizeof(answer));
  good = good && check(answer.sin_addr.s_addr == expected.s_addr, name, "SIOCGIFADDR names the stack's address");
  std::vector<ifreq> entries(64);
  ifconf configured{};
  configured.ifc_len = static_cast<int>(entries.size() * sizeof(ifreq));
  configured.ifc_req = entries.data();
  bool found = false;
  if (asker >= 0 && ioctl(asker, SIOCGIFCONF, &configured) == 0) {
    for (std::size_t i = 0; i < static_cast<std::size_t>(configured.ifc_len) / sizeof(ifreq); ++i) {
      std::memcpy(&answer, &entries[i].ifr_addr, sizeof(answer));
      found = found || answer.sin_addr.s_addr == expected.s_addr;
    }
  }
  good = good && check(found, name, "SIOCGIFCONF lists it");
  if (asker >= 0) close(asker);
  // Another address of this host is the kernel's: a listener bound there is a kernel one.
  in_addr host{};
  if (getifaddrs(&list) == 0) {
    for (const ifaddrs* entry = list; entry != nullptr && host.s_addr == 0; entry = entry->ifa_next) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
      if (in != nullptr && in->sin_family == AF_INET && in->sin_addr.s_addr != expected.s_addr &&
          (ntohl(in->sin_addr.s_addr) >> 24) != 127) {
        host = in->sin_addr;
      }
    }
    freeifaddrs(list);
  }
  if (host.s_addr != 0) {
    const int kernel_listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr = host;
    good = good && check(bind(kernel_listener, reinterpret_cast<sockaddr*>(&at), sizeof(at)) == 0 &&
                             listen(kernel_listener, 4) == 0,
                         name, "a listener on another address of the host (the kernel's)");
    // A connection to that address is the kernel's too, as on Linux (not sent out the stack).
    socklen_t at_length = sizeof(at);
    const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    good = good && check(getsockname(kernel_listener, reinterpret_cast<sockaddr*>(&at), &at_length) == 0 &&
                             (connect(client, reinterpret_cast<sockaddr*>(&at), sizeof(at)) == 0 || errno == EINPROGRESS),
                         name, "connect to another address of the host");
    pollfd done{client, POLLOUT, 0};
    int error = -1;
    socklen_t error_length = sizeof(error);
    good = good && check(poll(&done, 1, 3000) == 1 &&
                             getsockopt(client, SOL_SOCKET, SO_ERROR, &error, &error_length) == 0 && error == 0,
                         name, "the connection to another address of the host is made");
    const int served = good ? accept(kernel_listener, nullptr, nullptr) : -1;
    good = good && check(served >= 0, name, "the kernel's listener accepts it");
    for (const int fd : {served, client, kernel_listener}) {
      if (fd >= 0) close(fd);
    }
  }
  const int fd = connect_blocking(ip, port);
  good = good && check(fd >= 0, name, "connect");
  const int on = 1;
  good = good && check(setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof(on)) == 0, name, "IP_PKTINFO");
  alignas(cmsghdr) char control[64] = {};
  socklen_t length = sizeof(control);
  good = good && check(getsockopt(fd, IPPROTO_IP, IP_PKTOPTIONS, control, &length) == 0, name, "IP_PKTOPTIONS");
  msghdr options{};
  options.msg_control = control;
  options.msg_controllen = length;
  const cmsghdr* header = good ? CMSG_FIRSTHDR(&options) : nullptr;
  in_pktinfo info{};
  if (header != nullptr && header->cmsg_type == IP_PKTINFO) std::memcpy(&info, CMSG_DATA(header), sizeof(info));
  good = good && check(info.ipi_addr.s_addr == expected.s_addr, name, "IP_PKTOPTIONS names the connection's local address");
  if (fd >= 0) close(fd);
  if (good) passed(name);
}

// A first accept that comes before any poll, non-blocking, gets the connection already there (a
// replica holds a listener's connections until its process shows it accepts; Linux has them in the
// accept queue): a program connects to its own listener, then accepts.
void scenario_accept_first(const char* ip, int port) {
  const char* name = "accept-first";
  const int outward = connect_blocking(ip, port);  // the stack's address is this one's local one
  sockaddr_in local{};
  socklen_t length = sizeof(local);
  bool good = check(outward >= 0 && getsockname(outward, reinterpret_cast<sockaddr*>(&local), &length) == 0, name,
                    "the stack's address");
  if (outward >= 0) close(outward);
  local.sin_port = 0;
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  good = good && check(bind(listener, reinterpret_cast<sockaddr*>(&local), sizeof(local)) == 0 && listen(listener, 8) == 0,
                       name, "listen");
  length = sizeof(local);
  good = good && check(getsockname(listener, reinterpret_cast<sockaddr*>(&local), &length) == 0, name, "its port");
  const int client = good ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
  good = good && check(connect(client, reinterpret_cast<sockaddr*>(&local), sizeof(local)) == 0, name,
                       "connect to its own listener");
  const int accepted = good ? accept4(listener, nullptr, nullptr, SOCK_CLOEXEC) : -1;
  good = good && check(accepted >= 0, name, "a non-blocking accept before any poll gets the connection");
  good = good && check(write(client, "a", 1) == 1, name, "write");
  char byte = 0;
  good = good && check(read(accepted, &byte, 1) == 1 && byte == 'a', name, "the accepted end reads it");
  // The same by number, as programs that make the kernel's calls themselves do.
  good = good && check(syscall(SYS_write, client, "b", 1) == 1, name, "syscall(SYS_write)");
  good = good && check(syscall(SYS_recvfrom, accepted, &byte, 1, 0, nullptr, nullptr) == 1 && byte == 'b', name,
                       "syscall(SYS_recvfrom) reads it");
  for (const int fd : {accepted, client, listener}) {
    if (fd >= 0) close(fd);
  }
  if (good) passed(name);
}

// epoll_ctl of a socket with data waiting wakes a thread asleep in the set, as on Linux: a
// connection added after its first bytes came, and an EPOLLONESHOT interest armed again (a
// thread pool sharing one set). No later event would tell the sleeper.
void scenario_epoll_ctl_wakes(const char* ip, int port) {
  const char* name = "epoll-ctl-wakes";
  const int idle = connect_blocking(ip, port);  // keeps the set the library's while nothing is ready
  const int busy = connect_blocking(ip, port);
  const int set = epoll_create1(EPOLL_CLOEXEC);
  epoll_event idle_interest{EPOLLIN, {.fd = idle}};
  bool good = check(idle >= 0 && busy >= 0 && set >= 0 && epoll_ctl(set, EPOLL_CTL_ADD, idle, &idle_interest) == 0,
                    name, "a set with an idle connection");
  // The echo of one byte is waiting on `busy` (seen by poll), then `busy` enters the set (or is
  // armed again) while another thread sleeps in it: that thread gets it.
  const auto echo_waits = [&] {
    pollfd interest{busy, POLLIN, 0};
    return write(busy, "x", 1) == 1 && poll(&interest, 1, 5000) == 1;
  };
  const auto sleeper_gets_busy = [&](int operation, std::uint32_t events) {
    std::atomic<int> got{-1};
    std::thread sleeper([&] {
      epoll_event ready{};
      got = epoll_wait(set, &ready, 1, -1) == 1 ? ready.data.fd : -2;
    });
    usleep(100 * 1000);  // asleep by now
    epoll_event interest{events, {.fd = busy}};
    const bool changed = epoll_ctl(set, operation, busy, &interest) == 0;
    // A sleeper nobody woke would sleep for good: after 3 s the idle connection's echo ends it.
    for (int waited_ms = 0; got == -1 && waited_ms < 3000; waited_ms += 10) usleep(10 * 1000);
    if (got == -1) (void)!write(idle, "y", 1);
    sleeper.join();
    char byte = 0;
    return changed && got == busy && read(busy, &byte, 1) == 1;
  };
  good = good && check(echo_waits(), name, "the first echo");
  good = good && check(sleeper_gets_busy(EPOLL_CTL_ADD, EPOLLIN | EPOLLONESHOT), name,
                       "a sleeper wakes for a connection added with data waiting");
  good = good && check(echo_waits(), name, "the second echo");
  good = good && check(sleeper_gets_busy(EPOLL_CTL_MOD, EPOLLIN | EPOLLONESHOT), name,
                       "a sleeper wakes for an EPOLLONESHOT interest armed again with data waiting");
  for (const int fd : {set, busy, idle}) {
    if (fd >= 0) close(fd);
  }
  if (good) passed(name);
}

// Whether `fd` is a socket of the kernel's (a Flotilla socket is an eventfd to the kernel).
bool kernel_socket(int fd) {
  char target[64] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  return readlink(link.c_str(), target, sizeof(target) - 1) > 0 && std::strncmp(target, "socket:", 7) == 0;
}

// ip:port as an IPv4-mapped AF_INET6 address.
sockaddr_in6 mapped_address_of(const char* ip, int port) {
  sockaddr_in6 address{};
  address.sin6_family = AF_INET6;
  address.sin6_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET6, ("::ffff:" + std::string(ip)).c_str(), &address.sin6_addr);
  return address;
}

// An AF_INET6 TCP socket is dual-stack, as on Linux (Java's and Python's servers make theirs so):
// it reaches the stack's IPv4 peers, named by IPv4-mapped addresses; one told IPV6_V6ONLY, or
// bound or connected to an IPv6 address, is the kernel's.
void scenario_dual_stack(const char* ip, int port) {
  const char* name = "dual-stack";
  const int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int domain = 0;
  int v6only = -1;
  socklen_t size = sizeof(int);
  bool good = check(fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &size) == 0 && domain == AF_INET6, name,
                    "SO_DOMAIN is AF_INET6");
  size = sizeof(int);
  good = good && check(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &size) == 0 && v6only == 0, name,
                       "IPV6_V6ONLY is off");
  const sockaddr_in6 peer = mapped_address_of(ip, port);
  good = good && check(connect(fd, reinterpret_cast<const sockaddr*>(&peer), sizeof(peer)) == 0 && !kernel_socket(fd),
                       name, "connect to an IPv4-mapped peer on the stack");
  good = good && check(echo_round_trip(fd, pattern(3000, 11)), name, "the echo");
  sockaddr_in6 named{};
  socklen_t length = sizeof(named);
  good = good && check(getpeername(fd, reinterpret_cast<sockaddr*>(&named), &length) == 0 && length == sizeof(named) &&
                           named.sin6_family == AF_INET6 && std::memcmp(&named.sin6_addr, &peer.sin6_addr, 16) == 0 &&
                           named.sin6_port == peer.sin6_port,
                       name, "getpeername names the mapped peer");
  length = sizeof(named);
  good = good && check(getsockname(fd, reinterpret_cast<sockaddr*>(&named), &length) == 0 && named.sin6_family == AF_INET6 &&
                           IN6_IS_ADDR_V4MAPPED(&named.sin6_addr) && named.sin6_port != 0,
                       name, "getsockname names the stack's mapped address");
  // A listener on :: takes an IPv4 connection from the stack and names its peer mapped.
  const int listener = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 any{};
  any.sin6_family = AF_INET6;
  good = good && check(listener >= 0 && bind(listener, reinterpret_cast<const sockaddr*>(&any), sizeof(any)) == 0 &&
                           listen(listener, 4) == 0 && !kernel_socket(listener),
                       name, "a listener on [::]:0 on the stack");
  sockaddr_in6 bound{};
  length = sizeof(bound);
  good = good && check(getsockname(listener, reinterpret_cast<sockaddr*>(&bound), &length) == 0 &&
                           bound.sin6_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&bound.sin6_addr) && bound.sin6_port != 0,
                       name, "the listener is named [::]:PORT");
  char local[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &named.sin6_addr.s6_addr[12], local, sizeof(local));
  const int client = connect_blocking(local, ntohs(bound.sin6_port));
  sockaddr_in6 accepted_peer{};
  length = sizeof(accepted_peer);
  const int accepted = good && client >= 0 ? accept(listener, reinterpret_cast<sockaddr*>(&accepted_peer), &length) : -1;
  good = good && check(accepted >= 0 && length == sizeof(accepted_peer) && accepted_peer.sin6_family == AF_INET6 &&
                           IN6_IS_ADDR_V4MAPPED(&accepted_peer.sin6_addr),
                       name, "accept names an IPv4 client by its mapped address");
  good = good && check(write(client, "d", 1) == 1, name, "the client writes");
  char byte = 0;
  good = good && check(read(accepted, &byte, 1) == 1 && byte == 'd', name, "the accepted connection reads it");
  // IPv6 only, or an IPv6 address: the kernel's.
  const int only = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int on = 1;
  good = good && check(only >= 0 && setsockopt(only, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) == 0 && kernel_socket(only),
                       name, "IPV6_V6ONLY makes it the kernel's");
  const int loopback6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 local6{};
  local6.sin6_family = AF_INET6;
  local6.sin6_addr = in6addr_loopback;
  good = good && check(loopback6 >= 0 && bind(loopback6, reinterpret_cast<const sockaddr*>(&local6), sizeof(local6)) == 0 &&
                           kernel_socket(loopback6),
                       name, "a bind to ::1 is the kernel's");
  // A datagram socket too: the echo comes from the mapped peer, connected or not. Java sets
  // IPV6_MULTICAST_HOPS on each (an AF_INET socket does not know it).
  const int datagram = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const int hops = 1;
  const int ipv4 = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  good = good && check(setsockopt(datagram, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof(hops)) == 0 &&
                           setsockopt(ipv4, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof(hops)) == -1 && errno == ENOPROTOOPT,
                       name, "IPV6_MULTICAST_HOPS: kept on AF_INET6, ENOPROTOOPT on AF_INET");
  if (ipv4 >= 0) close(ipv4);
  good = good && check(datagram >= 0 && sendto(datagram, "six", 3, 0, reinterpret_cast<const sockaddr*>(&peer), sizeof(peer)) == 3 &&
                           !kernel_socket(datagram),
                       name, "sendto an IPv4-mapped peer from an AF_INET6 datagram socket");
  char echo[16] = {};
  sockaddr_in6 source{};
  length = sizeof(source);
  pollfd echoed{datagram, POLLIN, 0};
  good = good && check(poll(&echoed, 1, 5000) == 1 &&
                           recvfrom(datagram, echo, sizeof(echo), 0, reinterpret_cast<sockaddr*>(&source), &length) == 3 &&
                           std::memcmp(echo, "six", 3) == 0 && length == sizeof(source) && source.sin6_family == AF_INET6 &&
                           std::memcmp(&source.sin6_addr, &peer.sin6_addr, 16) == 0 && source.sin6_port == peer.sin6_port,
                       name, "recvfrom names the echo's source mapped");
  good = good && check(connect(datagram, reinterpret_cast<const sockaddr*>(&peer), sizeof(peer)) == 0 && send(datagram, "x", 1, 0) == 1 &&
                           poll(&echoed, 1, 5000) == 1 && recv(datagram, echo, sizeof(echo), 0) == 1,
                       name, "a connected datagram socket's echo");
  // IPV6_RECVPKTINFO: each datagram says where it went, as the mapped IPv4 address (dnsmasq and
  // unbound answer from the address a query came to).
  int asked = 1;
  socklen_t asked_length = sizeof(asked);
  good = good && check(setsockopt(datagram, IPPROTO_IPV6, IPV6_RECVPKTINFO, &asked, sizeof(asked)) == 0 &&
                           getsockopt(datagram, IPPROTO_IPV6, IPV6_RECVPKTINFO, &asked, &asked_length) == 0 && asked == 1,
                       name, "IPV6_RECVPKTINFO set and read back");
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in6_pktinfo))] = {};
  iovec piece{echo, sizeof(echo)};
  msghdr message{};
  message.msg_iov = &piece;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  good = good && check(send(datagram, "y", 1, 0) == 1 && poll(&echoed, 1, 5000) == 1 && recvmsg(datagram, &message, 0) == 1,
                       name, "recvmsg of an echo");
  const cmsghdr* header = good ? CMSG_FIRSTHDR(&message) : nullptr;
  in6_pktinfo where{};
  if (header != nullptr && header->cmsg_level == IPPROTO_IPV6 && header->cmsg_type == IPV6_PKTINFO &&
      header->cmsg_len == CMSG_LEN(sizeof(where))) {
    std::memcpy(&where, CMSG_DATA(header), sizeof(where));
  }
  good = good && check(IN6_IS_ADDR_V4MAPPED(&where.ipi6_addr) && where.ipi6_addr.s6_addr32[3] != 0 &&
                           (message.msg_flags & MSG_CTRUNC) == 0,
                       name, "IPV6_PKTINFO names the mapped destination");
  // No room for it: MSG_CTRUNC, as Linux says.
  message.msg_control = control;
  message.msg_controllen = sizeof(cmsghdr);
  good = good && check(send(datagram, "z", 1, 0) == 1 && poll(&echoed, 1, 5000) == 1 && recvmsg(datagram, &message, 0) == 1 &&
                           (message.msg_flags & MSG_CTRUNC) != 0,
                       name, "MSG_CTRUNC when the control buffer is too small");
  length = sizeof(named);
  good = good && check(getpeername(datagram, reinterpret_cast<sockaddr*>(&named), &length) == 0 && named.sin6_family == AF_INET6 &&
                           std::memcmp(&named.sin6_addr, &peer.sin6_addr, 16) == 0,
                       name, "getpeername of the datagram socket");
  for (const int open_fd : {datagram, loopback6, only, accepted, client, listener, fd}) {
    if (open_fd >= 0) close(open_fd);
  }
  if (good) passed(name);
}

// The NORM and BAND bits Linux's socket poll sets beside POLLIN and POLLOUT, asked for alone:
// varnish connects to its backend as here (FIONBIO, then a poll for POLLWRNORM) and took a
// connection that never reported them for a timeout.
void scenario_norm_bits(const char* ip, int port) {
  const char* name = "norm-bits";
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  bool good = check(fd >= 0 && ioctl(fd, FIONBIO, &one) == 0, name, "a socket made non-blocking with FIONBIO");
  const sockaddr_in address = address_of(ip, port);
  const int connected = good ? connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) : -1;
  good = good && check(connected == 0 || errno == EINPROGRESS, name, "connect");
  pollfd writable{fd, POLLWRNORM, 0};
  good = good && check(poll(&writable, 1, 5000) == 1 && writable.revents == POLLWRNORM, name,
                       "a poll for POLLWRNORM alone sees the connection made");
  int error = -1;
  socklen_t length = sizeof(error);
  good = good && check(getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0, name, "SO_ERROR");
  good = good && check(write(fd, "n", 1) == 1, name, "write");
  pollfd readable{fd, POLLRDNORM, 0};
  good = good && check(poll(&readable, 1, 5000) == 1 && readable.revents == POLLRDNORM, name,
                       "a poll for POLLRDNORM alone sees the echo");
  const int set = epoll_create1(EPOLL_CLOEXEC);
  epoll_event interest{EPOLLRDNORM | EPOLLWRNORM, {.fd = fd}};
  epoll_event got{};
  good = good && check(set >= 0 && epoll_ctl(set, EPOLL_CTL_ADD, fd, &interest) == 0 && epoll_wait(set, &got, 1, 1000) == 1 &&
                           got.events == (EPOLLRDNORM | EPOLLWRNORM),
                       name, "epoll reports EPOLLRDNORM and EPOLLWRNORM");
  char byte = 0;
  good = good && check(read(fd, &byte, 1) == 1 && byte == 'n', name, "read the echo");
  const int datagram = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  pollfd sendable{datagram, POLLWRNORM | POLLWRBAND, 0};
  good = good && check(datagram >= 0 && poll(&sendable, 1, 1000) == 1 && sendable.revents == (POLLWRNORM | POLLWRBAND),
                       name, "a UDP socket reports POLLWRNORM and POLLWRBAND");
  for (const int open_fd : {set, datagram, fd}) {
    if (open_fd >= 0) close(open_fd);
  }
  if (good) passed(name);
}

void scenario_stdio(const char* ip, int port) {
  const char* name = "stdio";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return;
  FILE* out = fdopen(dup(fd), "w");
  FILE* in = fdopen(fd, "r");
  bool good = check(out != nullptr && in != nullptr, name, "fdopen");
  char line[64] = {};
  good = good && check(std::fprintf(out, "hello %d\n", 42) > 0 && std::fflush(out) == 0, name, "fprintf and fflush");
  good = good && check(std::fgets(line, sizeof(line), in) != nullptr && std::strcmp(line, "hello 42\n") == 0, name,
                       "fgets reads the echo");
  const int saved = dup(1);
  std::fflush(stdout);
  good = good && check(dup2(fileno(in), 1) == 1, name, "dup2 onto stdout");
  const bool printed = std::printf("via stdout\n") > 0 && std::fflush(stdout) == 0;
  (void)dup2(saved, 1);
  close(saved);
  good = good && check(printed, name, "printf to a socket at 1");
  good = good && check(std::fgets(line, sizeof(line), in) != nullptr && std::strcmp(line, "via stdout\n") == 0, name,
                       "the echo of what stdout wrote");
  if (out != nullptr) std::fclose(out);
  if (in != nullptr) std::fclose(in);
  if (good) passed(name);
}

// Confines this process as sshd's pre-authentication sandbox does: one descriptor at most
// (RLIMIT_NOFILE 1: a poll of more fails with EINVAL), then prctl(PR_SET_NO_NEW_PRIVS) and a
// seccomp filter allowing the system calls sshd allows (others kill it with SIGSYS).
bool confine_like_sshd() {
  const rlimit one{1, 1};
  if (setrlimit(RLIMIT_NOFILE, &one) != 0) return false;
  const std::initializer_list<long> allowed = {
      SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_close, SYS_exit, SYS_exit_group, SYS_futex, SYS_poll,
      SYS_ppoll, SYS_select, SYS_pselect6, SYS_clock_gettime, SYS_clock_nanosleep, SYS_nanosleep,
      SYS_gettimeofday, SYS_getpid, SYS_gettid, SYS_getrandom, SYS_brk, SYS_mmap, SYS_munmap, SYS_mremap,
      SYS_madvise, SYS_mprotect, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_restart_syscall, SYS_shutdown};
  std::vector<sock_filter> program = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr))};
  for (const long number : allowed) {
    program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(number), 0, 1));
    program.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  }
  program.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
  const sock_fprog filter{static_cast<unsigned short>(program.size()), program.data()};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter) == 0;
}

// A fork child that confines itself with seccomp before it first uses the connection it inherited
// (sshd's pre-authentication child): it takes the connection over before the sandbox closes.
void scenario_sandbox(const char* ip, int port) {
  const char* name = "sandbox";
  const int fd = connect_blocking(ip, port);
  bool good = check(fd >= 0 && echo_round_trip(fd, pattern(500, 8)), name, "the parent's echo");
  const pid_t child = fork();
  if (child == 0) _exit(confine_like_sshd() && echo_round_trip(fd, pattern(3000, 9)) ? 0 : 1);
  int status = 0;
  good = good && check(waitpid(child, &status, 0) == child, name, "waitpid");
  good = good && check(!WIFSIGNALED(status), name, "the sandboxed child was not killed (SIGSYS: a forbidden call)");
  good = good && check(WIFEXITED(status) && WEXITSTATUS(status) == 0, name, "the sandboxed child echoes");
  close(fd);
  if (good) passed(name);
}

// sshd's shape: a connection shared over fork is every holder's to use, and lives until the last
// one lets go. A child uses it and exits, then the parent does; then both take turns while both live.
void scenario_fork_holders(const char* ip, int port) {
  const char* name = "fork-holders";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return;
  bool good = check(echo_round_trip(fd, pattern(700, 2)), name, "the parent's echo before the fork");
  pid_t child = fork();
  if (child == 0) {
    end_if_stuck(20);
    _exit(echo_round_trip(fd, pattern(5000, 4)) ? 0 : 1);
  }
  good = good && check(exited_cleanly(child), name,
                       "the child's echo");
  good = good && check(echo_round_trip(fd, pattern(3000, 6)), name, "the parent's echo after its child exited");
  int to_parent[2] = {-1, -1};
  int to_child[2] = {-1, -1};
  good = good && check(pipe(to_parent) == 0 && pipe(to_child) == 0, name, "pipes");
  child = good ? fork() : -1;
  if (child == 0) {
    end_if_stuck(20);
    char token = 0;
    const bool fine = echo_round_trip(fd, pattern(2000, 7)) && write(to_parent[1], "1", 1) == 1 &&
                      read(to_child[0], &token, 1) == 1 && echo_round_trip(fd, pattern(1500, 11));
    close(fd);
    _exit(fine ? 0 : 1);
  }
  char token = 0;
  good = good && check(read(to_parent[0], &token, 1) == 1, name, "the child's first turn");
  good = good && check(echo_round_trip(fd, pattern(2500, 13)), name, "the parent's turn while its child lives");
  good = good && check(write(to_child[1], "2", 1) == 1, name, "passing the turn back");
  good = good && check(exited_cleanly(child), name,
                       "the child's second turn");
  good = good && check(echo_round_trip(fd, pattern(100, 17)), name, "the parent's echo after its child closed");
  // The last holder's shutdown reaches the peer, which then closes: EOF here.
  char byte = 0;
  good = good && check(shutdown(fd, SHUT_WR) == 0, name, "shutdown");
  good = good && check(read(fd, &byte, 1) == 0, name, "EOF after the peer saw the shutdown");
  for (const int end : {to_parent[0], to_parent[1], to_child[0], to_child[1]}) {
    if (end >= 0) close(end);
  }
  close(fd);
  if (good) passed(name);
}

// A holder's poll: a child writes (so it carries the connection) and then idles, alive, while the
// echo comes back; the parent, polling its copy, wakes for it and reads it.
bool holder_poll_wakes(int fd, const char* name) {
  int idle[2] = {-1, -1};
  if (!check(pipe(idle) == 0, name, "pipe")) return false;
  const std::vector<char> bytes = pattern(300, 5);
  const pid_t child = fork();
  if (child == 0) {
    end_if_stuck(20);
    char token = 0;
    const bool fine = write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) &&
                      read(idle[0], &token, 1) == 1;
    _exit(fine ? 0 : 1);
  }
  pollfd interest{fd, POLLIN, 0};
  bool good = check(child > 0, name, "fork") &&
              check(poll(&interest, 1, 5000) == 1 && (interest.revents & POLLIN) != 0, name,
                    "a holder's poll wakes for bytes its idle child carries");
  std::vector<char> back(bytes.size());
  good = good && check(read_exactly(fd, back.data(), back.size()) && back == bytes, name, "the holder reads them");
  good = check(child > 0 && write(idle[1], "d", 1) == 1, name, "ending the idle child") && good;
  good = check(exited_cleanly(child), name, "the idle child") && good;
  close(idle[0]);
  close(idle[1]);
  return good;
}

// Holders at the same instant: a parent and its child write one connection at once, then read it
// at once. Every byte each wrote comes back once (the connection moves between them on every
// turn, and a move must not drop what a write or a read was doing), and every byte received is
// read by exactly one of them.
void scenario_fork_concurrent(const char* ip, int port) {
  const char* name = "fork-concurrent";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return;
  constexpr std::size_t kEach = 48 * 1024;  // each side's bytes a round: the echo's buffers hold both
  constexpr std::size_t kPiece = 512;
  constexpr int kRounds = 8;
  const auto write_letters = [&](char letter) {
    const std::string piece(kPiece, letter);
    for (std::size_t sent = 0; sent < kEach;) {
      const ssize_t n = write(fd, piece.data(), std::min(kPiece, kEach - sent));
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  };
  // Both readers count into one shared total: each reads until the two together have read what
  // was sent, or until 20 s passed (a byte lost leaves the total short), and says what it read and
  // the bytes' sum.
  auto* const read_total = static_cast<std::atomic<std::uint64_t>*>(
      mmap(nullptr, sizeof(std::atomic<std::uint64_t>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (!check(read_total != MAP_FAILED, name, "shared memory")) return;
  const auto read_share = [&]() {
    std::pair<std::uint64_t, std::uint64_t> seen{0, 0};
    char buffer[700];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (read_total->load() < 2 * kEach && std::chrono::steady_clock::now() < deadline) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n <= 0) {
        usleep(1000);
        continue;
      }
      read_total->fetch_add(static_cast<std::uint64_t>(n));
      seen.first += static_cast<std::uint64_t>(n);
      for (ssize_t i = 0; i < n; ++i) seen.second += static_cast<unsigned char>(buffer[i]);
    }
    return seen;
  };
  bool good = holder_poll_wakes(fd, name);
  for (int round = 0; round < kRounds && good; ++round) {
    int go[2] = {-1, -1};
    int report[2] = {-1, -1};
    good = check(pipe(go) == 0 && pipe(report) == 0, name, "pipes");
    const bool reads = round % 2 == 1;
    std::uint64_t sent_sum = 0;
    read_total->store(0);
    if (good && reads) {
      // Both read what one write of the parent brings back.
      const std::vector<char> bytes = pattern(2 * kEach, static_cast<unsigned>(round));
      for (const char byte : bytes) sent_sum += static_cast<unsigned char>(byte);
      good = check(write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()), name, "the write both read");
    }
    const pid_t child = good ? fork() : -1;
    if (child == 0) {
      end_if_stuck(20);
      char token = 0;
      bool fine = read(go[0], &token, 1) == 1;
      std::pair<std::uint64_t, std::uint64_t> seen{0, 0};
      if (reads) {
        seen = read_share();
      } else {
        fine = fine && write_letters('c');
      }
      fine = fine && write(report[1], &seen, sizeof(seen)) == static_cast<ssize_t>(sizeof(seen));
      _exit(fine ? 0 : 1);
    }
    good = good && check(child > 0 && write(go[1], "g", 1) == 1, name, "fork");
    // The child's ends are its own: a child that dies leaves the parent an EOF, not a wait.
    for (int* end : {&go[0], &report[1]}) {
      if (*end >= 0) close(*end);
      *end = -1;
    }
    std::pair<std::uint64_t, std::uint64_t> mine{0, 0};
    if (good && reads) {
      mine = read_share();
    } else if (good) {
      good = check(write_letters('p'), name, "the parent's writes beside its child's");
    }
    std::pair<std::uint64_t, std::uint64_t> theirs{0, 0};
    good = good && check(read(report[0], &theirs, sizeof(theirs)) == static_cast<ssize_t>(sizeof(theirs)), name,
                         "the child's report");
    good = good && check(exited_cleanly(child), name, "the child's turn");
    if (good && reads) {
      if (mine.first + theirs.first != 2 * kEach) {
        std::printf("fork-concurrent: round %d: the parent read %llu bytes and its child %llu of %zu\n", round,
                    static_cast<unsigned long long>(mine.first), static_cast<unsigned long long>(theirs.first), 2 * kEach);
      }
      good = check(mine.first + theirs.first == 2 * kEach, name, "every byte received was read once") &&
             check(mine.second + theirs.second == sent_sum, name, "the bytes read are the bytes sent");
      // Nothing beyond them: a byte read twice would have left one unread or come again.
      char extra = 0;
      good = good && check(recv(fd, &extra, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, name, "no byte after the ones sent");
    } else if (good) {
      // The parent alone now: the echo of both sides' writes, each byte once.
      std::vector<char> back(2 * kEach);
      good = check(read_exactly(fd, back.data(), back.size()), name, "the echo of both writers");
      const auto count = [&](char letter) { return static_cast<std::size_t>(std::count(back.begin(), back.end(), letter)); };
      good = good && check(count('p') == kEach && count('c') == kEach, name, "each writer's bytes came back once");
    }
    for (const int end : {go[0], go[1], report[0], report[1]}) {
      if (end >= 0) close(end);
    }
  }
  munmap(read_total, sizeof(std::atomic<std::uint64_t>));
  close(fd);
  if (good) passed(name);
}

// vsftpd's way of forking, a raw clone system call: the C library's fork handlers never run, yet the
// child must know it is not its parent. Its close of an inherited copy leaves the parent's
// connection open; its use of the connection takes it over until it exits.
void scenario_raw_clone(const char* ip, int port) {
  const char* name = "raw-clone";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return;
  bool good = check(echo_round_trip(fd, pattern(600, 3)), name, "the parent's echo before the clone");
  const auto cloned_child = [&](bool (*work)(int)) {
    const long child = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (child == 0) {
      end_if_stuck(20);
      _exit(work(fd) ? 0 : 1);
    }
    return exited_cleanly(static_cast<pid_t>(child));
  };
  good = good && check(cloned_child([](int own) { return close(own) == 0; }), name, "the child closes its copy");
  good = good && check(echo_round_trip(fd, pattern(2000, 5)), name, "the parent's echo after the child's close");
  good = good && check(cloned_child([](int own) { return echo_round_trip(own, pattern(1500, 7)); }), name,
                       "the child's echo");
  good = good && check(echo_round_trip(fd, pattern(900, 9)), name, "the parent's echo after the child's");
  close(fd);
  if (good) passed(name);
}

// vsftpd's session: the process holding the connection forks one that never touches it, and
// closes its copy; that one forks a child that uses the connection (with RLIMIT_NOFILE 0) and
// exits, then makes a socket of its own (a seat of its own) and clones another child that uses it.
// Each grandchild's claim needs a proof its sibling's claim did not use up; the middle process
// keeps the connection.
void scenario_grandchildren(const char* ip, int port) {
  const char* name = "grandchildren";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return;
  bool good = check(echo_round_trip(fd, pattern(800, 3)), name, "the echo before the fork");
  const pid_t middle = good ? fork() : -1;
  if (middle == 0) {
    end_if_stuck(30);
    const pid_t first = fork();
    if (first == 0) {
      // As vsftpd's pre-login child: no descriptor at all may be opened, nor polled.
      end_if_stuck(20);
      const rlimit none{0, 0};
      _exit(setrlimit(RLIMIT_NOFILE, &none) == 0 && echo_round_trip(fd, pattern(1200, 5)) ? 0 : 1);
    }
    bool fine = check(exited_cleanly(first), name, "the first grandchild's echo");
    const int own = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    fine = fine && check(own >= 0, name, "the middle process's own socket");
    const long second = fine ? syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) : -1;
    if (second == 0) _exit(echo_round_trip(fd, pattern(3000, 7)) ? 0 : 1);
    fine = fine && check(exited_cleanly(static_cast<pid_t>(second)), name, "the cloned grandchild's echo");
    fine = fine && check(echo_round_trip(fd, pattern(500, 9)), name, "the middle process's echo after both");
    if (own >= 0) close(own);
    _exit(fine ? 0 : 1);
  }
  close(fd);
  good = good && check(exited_cleanly(middle), name, "the middle process");
  if (good) passed(name);
}

// vsftpd limits its address space to 200 MB once it has a connection: what the program then maps
// of its own, and a fork child that takes the connection over (a seat of its own), must fit. The
// limit reads back as set. In a child of its own, so the limit stays there.
void scenario_address_limit(const char* ip, int port) {
  const char* name = "address-limit";
  const pid_t confined = fork();
  if (confined == 0) {
    end_if_stuck(30);
    const int fd = connect_blocking(ip, port);
    bool good = check(fd >= 0 && echo_round_trip(fd, pattern(500, 2)), name, "echo before the limit");
    constexpr rlim_t kLimit = 200u << 20;
    const rlimit wanted{kLimit, kLimit};
    good = good && check(setrlimit(RLIMIT_AS, &wanted) == 0, name, "setrlimit(RLIMIT_AS, 200 MB)");
    rlimit now{};
    good = good && check(getrlimit(RLIMIT_AS, &now) == 0 && now.rlim_cur == kLimit && now.rlim_max == kLimit, name,
                         "the limit reads back as set");
    void* own = mmap(nullptr, 32u << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    good = good && check(own != MAP_FAILED, name, "32 MB of the program's own under the limit");
    const pid_t child = good ? fork() : -1;
    if (child == 0) _exit(echo_round_trip(fd, pattern(2000, 4)) ? 0 : 1);
    good = good && check(exited_cleanly(child),
                         name, "a fork child's echo under the limit");
    good = good && check(echo_round_trip(fd, pattern(700, 6)), name, "the echo after the child's");
    _exit(good ? 0 : 1);
  }
  if (check(exited_cleanly(confined),
            name, "the confined process")) {
    passed(name);
  }
}

// redis-benchmark's shape: many connections in one level-triggered epoll set, all writable at
// once, the first readable too (the test's echo server serves one connection at a time). Every call reports each ready socket exactly once, and a small
// `room` takes turns, so no socket is starved (with 10 interests, one pass once skipped 4 of them).
void scenario_epoll_fairness(const char* ip, int port) {
  const char* name = "epoll-fairness";
  constexpr int kSockets = 10;
  int fds[kSockets];
  bool good = true;
  for (int& fd : fds) {
    fd = connect_blocking(ip, port);
    good = good && check(fd >= 0, name, "connect");
  }
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; good && i < kSockets; ++i) {
    epoll_event event{EPOLLOUT | EPOLLIN, {.u64 = static_cast<std::uint64_t>(i)}};
    good = check(epoll_ctl(epfd, EPOLL_CTL_ADD, fds[i], &event) == 0, name, "epoll_ctl");
  }
  good = good && check(write(fds[0], "x", 1) == 1, name, "write");
  epoll_event got[16];
  // The echo comes back: one call then sees all ten writable and the first readable, each once.
  bool whole = false;
  // Every socket is writable, so each call returns at once: a millisecond between looks, 5 s in all.
  for (int attempt = 0; good && attempt < 5000 && !whole; ++attempt) {
    if (attempt > 0) usleep(1000);
    const int n = epoll_wait(epfd, got, 16, 10);
    int counts[kSockets] = {};
    bool readable = false;
    for (int i = 0; i < n; ++i) {
      if (got[i].data.u64 < kSockets) ++counts[got[i].data.u64];
      if (got[i].data.u64 == 0 && (got[i].events & EPOLLIN) != 0) readable = true;
    }
    good = check(n <= kSockets, name, "a socket reported twice in one call");
    whole = n == kSockets && readable && std::all_of(counts, counts + kSockets, [](int c) { return c == 1; });
  }
  good = good && check(whole, name, "one call must report every ready socket once");
  // Four at a time: three calls cover all ten.
  bool seen[kSockets] = {};
  for (int call = 0; good && call < 3; ++call) {
    const int n = epoll_wait(epfd, got, 4, 0);
    for (int i = 0; i < n; ++i) {
      if (got[i].data.u64 < kSockets) seen[got[i].data.u64] = true;
    }
  }
  good = good && check(std::all_of(seen, seen + kSockets, [](bool s) { return s; }), name,
                       "three calls of four must take turns over all ten");
  char byte;
  good = good && check(read(fds[0], &byte, 1) == 1, name, "read the echo");
  close(epfd);
  for (const int fd : fds) {
    if (fd >= 0) close(fd);
  }
  if (good) passed(name);
}

int run_client(const char* ip, int port, int closed_port, const char* done_file, const char* self) {
  signal(SIGPIPE, SIG_IGN);
  scenario_blocking(ip, port);
  scenario_refused(ip, closed_port);
  scenario_mixed(ip, port);
  scenario_epoll_fairness(ip, port);
  scenario_dup_fork(ip, port);
  scenario_eintr(ip, port);
  scenario_sendfile(ip, port);
  scenario_udp(ip, port);
  scenario_udp_batch(ip, port);
  scenario_threads(ip, port);
  scenario_exec(ip, port, self);
  scenario_closefrom(ip, port, self);
  scenario_sandbox(ip, port);
  scenario_fork_holders(ip, port);
  scenario_fork_concurrent(ip, port);
  scenario_raw_clone(ip, port);
  scenario_grandchildren(ip, port);
  scenario_address_limit(ip, port);
  scenario_stdio(ip, port);
  scenario_interfaces(ip, port);
  scenario_accept_first(ip, port);
  scenario_epoll_ctl_wakes(ip, port);
  scenario_norm_bits(ip, port);
  scenario_dual_stack(ip, port);
  if (done_file != nullptr) {
    // The slot's counters are shown while it is leased: the test reads them, then stops us.
    const int marker = open(done_file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (marker >= 0) close(marker);
    signal(SIGINT, [](int) { _exit(g_failures == 0 ? 0 : 1); });
    for (;;) pause();
  }
  return g_failures == 0 ? 0 : 1;
}

// Serves one connection with blocking calls (echo until EOF), then one through edge-triggered
// epoll with a non-blocking listener (accept4) and connection.
// The server side of holders: accepts one connection, forks a child that echoes the client's first
// KiB and exits, then echoes the second KiB itself, writes "bye" and closes.
// A listener on any address, port `port`; -1 with errno when none.
int listen_any(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  const sockaddr_in address = address_of("0.0.0.0", port);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 || listen(fd, 8) != 0) {
    const int error = errno;
    close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

// One client of a prefork worker: a line, answered as the prefork mode says.
void serve_prefork_client(int connection) {
  char line[16] = {};
  const auto read_line = [&] {
    std::size_t filled = 0;
    while (filled + 1 < sizeof(line)) {
      const ssize_t got = read(connection, line + filled, 1);
      if (got <= 0) return false;
      if (line[filled] == '\n') break;
      ++filled;
    }
    line[filled] = '\0';
    return true;
  };
  if (!read_line()) return;
  if (std::strcmp(line, "ping") == 0) {
    (void)!write(connection, "pong\n", 5);
  } else if (std::strcmp(line, "hold") == 0 && write(connection, "held\n", 5) == 5 && read_line() &&
             std::strcmp(line, "done") == 0) {
    (void)!write(connection, "done\n", 5);
  }
}

std::atomic<bool> prefork_stop{false};

int run_prefork(int port) {
  const char* name = "prefork";
  const int listener = listen_any(port);
  if (!check(listener >= 0 && fcntl(listener, F_SETFL, O_NONBLOCK) == 0, name, "listen")) return 1;
  FILE* lock_file = std::tmpfile();
  if (!check(lock_file != nullptr, name, "tmpfile")) return 1;
  const int lock = fileno(lock_file);
  struct sigaction stop {};
  stop.sa_handler = [](int) { prefork_stop = true; };
  sigaction(SIGINT, &stop, nullptr);
  pid_t workers[2] = {-1, -1};
  for (pid_t& worker : workers) {
    worker = fork();
    if (worker != 0) continue;
    signal(SIGINT, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (;;) {
      flock turn{};
      turn.l_type = F_WRLCK;
      turn.l_whence = SEEK_SET;
      if (fcntl(lock, F_SETLKW, &turn) != 0) continue;
      pollfd entry{listener, POLLIN, 0};
      const int ready = poll(&entry, 1, -1);
      const int connection = ready == 1 ? accept(listener, nullptr, nullptr) : -1;
      turn.l_type = F_UNLCK;
      (void)fcntl(lock, F_SETLK, &turn);
      if (connection < 0) continue;
      serve_prefork_client(connection);
      close(connection);
    }
  }
  if (!check(workers[0] > 0 && workers[1] > 0, name, "fork")) return 1;
  // As postfix's master does while no worker is free: it looks, and leaves the accept to them.
  while (!prefork_stop) {
    pollfd entry{listener, POLLIN, 0};
    (void)poll(&entry, 1, 100);
  }
  for (const pid_t worker : workers) kill(worker, SIGKILL);
  for (const pid_t worker : workers) waitpid(worker, nullptr, 0);
  passed(name);
  return 0;
}

int run_fork_holders_server(int port) {
  const char* name = "fork-holders-server";
  const int listener = listen_any(port);
  if (!check(listener >= 0, name, "listen")) return 1;
  const int connection = accept(listener, nullptr, nullptr);
  if (!check(connection >= 0, name, "accept")) return 1;
  const auto echo_kib = [connection] {
    char buffer[1024];
    return read_exactly(connection, buffer, sizeof(buffer)) && write(connection, buffer, sizeof(buffer)) == 1024;
  };
  const pid_t child = fork();
  if (child == 0) {
    end_if_stuck(20);
    _exit(echo_kib() ? 0 : 1);
  }
  bool good = check(exited_cleanly(child), name,
                    "the child's echo");
  good = good && check(echo_kib(), name, "the parent's echo after its child exited");
  good = good && check(write(connection, "bye", 3) == 3, name, "bye");
  close(connection);
  close(listener);
  if (good) passed(name);
  return good ? 0 : 1;
}

int run_server(int port) {
  const char* name = "server";
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (!check(listener >= 0, name, "socket")) return 1;
  const int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // On the listener only, as memcached does: accepted connections inherit it (the test checks
  // that the replica never held an echo back for Nagle).
  if (!check(setsockopt(listener, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0, name, "TCP_NODELAY")) return 1;
  const sockaddr_in any = address_of("0.0.0.0", port);
  if (!check(bind(listener, reinterpret_cast<const sockaddr*>(&any), sizeof(any)) == 0, name, "bind")) return 1;
  if (!check(listen(listener, 16) == 0, name, "listen")) return 1;
  std::printf("listening\n");
  std::fflush(stdout);
  sockaddr_in peer{};
  socklen_t length = sizeof(peer);
  const int connection = accept(listener, reinterpret_cast<sockaddr*>(&peer), &length);
  if (!check(connection >= 0 && peer.sin_family == AF_INET, name, "accept")) return 1;
  char buffer[4096];
  for (ssize_t n; (n = read(connection, buffer, sizeof(buffer))) > 0;) {
    if (!check(write(connection, buffer, static_cast<std::size_t>(n)) == n, name, "echo write")) return 1;
  }
  close(connection);
  passed("server-blocking");

  fcntl(listener, F_SETFL, O_NONBLOCK);
  const int epfd = epoll_create1(0);
  epoll_event event{EPOLLIN | EPOLLET, {.fd = listener}};
  epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &event);
  bool done = false;
  while (!done) {
    epoll_event got[8];
    const int n = epoll_wait(epfd, got, 8, 10000);
    if (!check(n > 0, name, "epoll_wait")) return 1;
    for (int i = 0; i < n; ++i) {
      if (got[i].data.fd == listener) {
        for (int accepted; (accepted = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK)) >= 0;) {
          epoll_event connection_event{EPOLLIN | EPOLLET | EPOLLRDHUP, {.fd = accepted}};
          epoll_ctl(epfd, EPOLL_CTL_ADD, accepted, &connection_event);
        }
        if (!check(errno == EAGAIN, name, "accept4 until EAGAIN")) return 1;
        continue;
      }
      const int fd = got[i].data.fd;
      for (;;) {
        const ssize_t r = read(fd, buffer, sizeof(buffer));
        if (r > 0) {
          // The client reads as it writes: the echo fits.
          if (!check(send(fd, buffer, static_cast<std::size_t>(r), MSG_NOSIGNAL) == r, name, "echo send")) return 1;
          continue;
        }
        if (r == 0) {
          close(fd);
          done = true;
        } else if (!check(errno == EAGAIN, name, "read until EAGAIN")) {
          return 1;
        }
        break;
      }
    }
  }
  close(epfd);
  close(listener);
  passed("server-epoll");
  return g_failures == 0 ? 0 : 1;
}

// daemon(3) after connecting: the parent exits at once and the child carries on with the socket
// (it adopts the lease once the parent is gone). The child writes its verdict to `result_file`.
// With `parent_waits`, lighttpd's way instead: the parent waits (on a pipe) until the child is
// ready, then exits; the child takes the lease over while the parent is still there, idle.
int run_daemon(const char* ip, int port, const char* result_file, bool parent_waits) {
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, "daemon", "connect")) return 1;
  int ready[2];
  if (pipe(ready) != 0) return 1;
  if (parent_waits) {
    const pid_t child = fork();
    if (child < 0) return 1;
    if (child > 0) {
      char byte;
      const bool told = read(ready[0], &byte, 1) == 1;
      _exit(told ? 0 : 1);
    }
  } else if (daemon(1, 1) != 0) {
    return 1;
  }
  const bool echoed = echo_round_trip(fd, pattern(50000, 6));
  (void)!write(ready[1], "r", 1);
  const int result = open(result_file, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
  const char* verdict = echoed ? "ok daemon\n" : "FAIL daemon: echo through the inherited socket\n";
  (void)!write(result, verdict, std::strlen(verdict));
  close(result);
  close(fd);
  return echoed ? 0 : 1;
}

// Kernel descriptors only (no AF_INET socket, so no lease): every interposed call must behave as
// without the library.
int run_kernel() {
  const char* name = "kernel";
  int pipe_fds[2];
  bool good = check(pipe2(pipe_fds, O_CLOEXEC) == 0, name, "pipe2");
  good = good && check(write(pipe_fds[1], "abc", 3) == 3, name, "pipe write");
  int pending = 0;
  good = good && check(ioctl(pipe_fds[0], FIONREAD, &pending) == 0 && pending == 3, name, "FIONREAD on a pipe");
  pollfd entry{pipe_fds[0], POLLIN, 0};
  good = good && check(poll(&entry, 1, 1000) == 1 && entry.revents == POLLIN, name, "poll");
  fd_set readable;
  FD_ZERO(&readable);
  FD_SET(pipe_fds[0], &readable);
  timeval limit{1, 0};
  good = good && check(select(pipe_fds[0] + 1, &readable, nullptr, nullptr, &limit) == 1, name, "select");
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{EPOLLIN, {.u64 = 7}};
  good = good && check(epoll_ctl(epfd, EPOLL_CTL_ADD, pipe_fds[0], &event) == 0, name, "epoll_ctl");
  epoll_event got{};
  good = good && check(epoll_wait(epfd, &got, 1, 1000) == 1 && got.data.u64 == 7, name, "epoll_wait");
  const int copy = dup(pipe_fds[0]);
  good = good && check(copy >= 0 && dup2(copy, 150) == 150 && close(copy) == 0, name, "dup, dup2, close");
  char buffer[8];
  good = good && check(read(150, buffer, sizeof(buffer)) == 3 && std::memcmp(buffer, "abc", 3) == 0, name, "read");
  good = good && check(fcntl(150, F_SETFL, O_NONBLOCK) == 0 && (fcntl(150, F_GETFL) & O_NONBLOCK), name, "fcntl");
  good = good && check(read(150, buffer, sizeof(buffer)) == -1 && errno == EAGAIN, name, "EAGAIN on a pipe");
  int pair[2];
  good = good && check(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0, name, "socketpair");
  iovec vector{const_cast<char*>("hello"), 5};
  msghdr message{};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  good = good && check(sendmsg(pair[0], &message, 0) == 5, name, "sendmsg");
  good = good && check(recv(pair[1], buffer, sizeof(buffer), MSG_PEEK) == 5 && recv(pair[1], buffer, 5, 0) == 5, name,
                       "recv with MSG_PEEK");
  const int one = 1;
  good = good && check(setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)) == 0, name, "setsockopt");
  close(epfd);
  close(150);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  close(pair[0]);
  close(pair[1]);
  if (good) passed(name);
  return g_failures == 0 ? 0 : 1;
}

// Blocks in read() on a connection until the stack goes away under it.
int run_outlive(const char* ip, int port) {
  const char* name = "outlive";
  const int fd = connect_blocking(ip, port);
  if (!check(fd >= 0, name, "connect")) return 1;
  std::printf("connected\n");
  std::fflush(stdout);
  char byte;
  const bool failed = check(read(fd, &byte, 1) == -1 && errno == ENETDOWN, name, "read must fail with ENETDOWN");
  const bool refused = check(socket(AF_INET, SOCK_STREAM, 0) == -1 && errno == ENETDOWN, name,
                             "a new socket must fail with ENETDOWN");
  if (failed && refused) passed(name);
  return g_failures == 0 ? 0 : 1;
}

int run_down() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const bool refused = check(fd == -1 && errno == ENETDOWN, "down", "socket() must fail with ENETDOWN");
  const int again = socket(AF_INET, SOCK_STREAM, 0);  // no second message on stderr
  const bool refused_again = check(again == -1 && errno == ENETDOWN, "down", "second socket()");
  const int local = socket(AF_UNIX, SOCK_STREAM, 0);  // other families are the kernel's
  const bool unix_works = check(local >= 0, "down", "AF_UNIX socket");
  if (refused && refused_again && unix_works) passed("down");
  return g_failures == 0 ? 0 : 1;
}

void write_state(const char* file, const std::string& state) {
  FILE* out = std::fopen(file, "w");
  if (out == nullptr) return;
  std::fputs(state.c_str(), out);
  std::fclose(out);
}

volatile sig_atomic_t g_back = 0;


// Run with [limits] tcp_sockets_per_seat = 2: two listeners take every page of both replicas.
int run_limits(int port, const char* ready_file) {
  const char* name = "limits";
  bool good = check(listen_any(port) >= 0, name, "first listener");
  good = good && check(listen_any(port + 1) >= 0, name, "second listener");
  good = good && check(listen_any(port + 2) == -1 && errno == EMFILE, name, "third listener must fail with EMFILE");
  good = good && check(listen_any(port + 3) == -1 && errno == EMFILE, name, "fourth listener must fail with EMFILE");
  if (good) passed(name);
  write_state(ready_file, "ready");
  pause();
  return g_failures == 0 ? 0 : 1;
}

int run_seatless() {
  const char* name = "seatless";
  const bool refused = check(socket(AF_INET, SOCK_STREAM, 0) == -1 && errno == ENFILE, name,
                             "socket() must fail with ENFILE");
  const bool refused_again = check(socket(AF_INET, SOCK_DGRAM, 0) == -1 && errno == ENFILE, name, "second socket()");
  if (refused && refused_again) passed(name);
  return g_failures == 0 ? 0 : 1;
}

int run_stack_down(bool epoll, int port, const char* state_file) {
  const char* name = epoll ? "stack-down-epoll" : "stack-down-accept";
  struct sigaction action {};
  action.sa_handler = [](int) { g_back = 1; };
  sigaction(SIGUSR1, &action, nullptr);  // no SA_RESTART: the wait ends with EINTR
  const int listener = listen_any(port);
  if (!check(listener >= 0, name, "listen")) return 1;
  write_state(state_file, "listening " + std::to_string(getpid()));
  bool good = true;
  if (!epoll) {
    good = check(accept(listener, nullptr, nullptr) == -1 && errno == ENETDOWN, name, "accept must fail with ENETDOWN");
    // Again, as a server that retries would: now it waits (for nothing) instead of failing at once.
    good = good && check(accept(listener, nullptr, nullptr) == -1 && errno == EINTR && g_back == 1, name,
                         "the second accept must wait until the signal");
  } else {
    const int set = epoll_create1(0);
    epoll_event event{EPOLLIN, {.fd = listener}};
    good = check(epoll_ctl(set, EPOLL_CTL_ADD, listener, &event) == 0, name, "epoll_ctl");
    int wakes = 0;
    while (good && g_back == 0) {
      epoll_event ready[4];
      const int count = epoll_wait(set, ready, 4, -1);
      if (count < 0) {
        good = check(errno == EINTR, name, "epoll_wait");
        break;
      }
      // A listener whose stack went down is not ready: a wake-up is at most a stale one, and a
      // second would be the spin.
      good = check(++wakes <= 1, name, "epoll_wait keeps reporting the listener");
      if (accept4(listener, nullptr, nullptr, SOCK_NONBLOCK) >= 0) good = check(false, name, "accept on a stack that is down");
    }
    close(set);
  }
  close(listener);
  if (!good) return 1;
  // The stack is back: a new socket works on it (leased again).
  int fresh = -1;
  for (int attempt = 0; attempt < 50 && fresh < 0; ++attempt) {
    fresh = listen_any(port + 1);
    if (fresh < 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!check(fresh >= 0, name, "listen once the stack is back")) return 1;
  write_state(state_file, "back");
  const int connection = accept(fresh, nullptr, nullptr);
  if (!check(connection >= 0, name, "accept once the stack is back")) return 1;
  char buffer[4096];
  for (ssize_t got; (got = read(connection, buffer, sizeof(buffer))) > 0;) {
    if (!check(write(connection, buffer, static_cast<std::size_t>(got)) == got, name, "echo")) return 1;
  }
  close(connection);
  close(fresh);
  passed(name);
  return g_failures == 0 ? 0 : 1;
}

// A listener on `port` in an epoll set of its own (the main thread's). The set, or -1 (reported).
int listener_set(int port, const char* name, int& listener) {
  listener = listen_any(port);
  if (!check(listener >= 0, name, "listen")) return -1;
  const int set = epoll_create1(0);
  epoll_event interest{EPOLLIN, {.fd = listener}};
  if (!check(epoll_ctl(set, EPOLL_CTL_ADD, listener, &interest) == 0, name, "epoll_ctl")) return -1;
  return set;
}

// The next connection on a listener_set (non-blocking unless `blocking`); -1: none this time.
// Exits the process when the wait fails.
int next_connection(int set, int listener, bool blocking, const char* name) {
  epoll_event ready{};
  const int count = epoll_wait(set, &ready, 1, -1);
  if (count < 0 && errno == EINTR) return -1;
  if (!check(count >= 0, name, "epoll_wait on the listener")) _exit(1);
  return count == 1 ? accept4(listener, nullptr, nullptr, blocking ? 0 : SOCK_NONBLOCK) : -1;
}

// Echoes `connection` until EOF, waiting in an epoll set of its own (or in blocking reads), then
// closes it. The number of reads echoed; exits the process on a failure.
long echo_until_eof(int connection, bool blocking, const char* name) {
  const int set = epoll_create1(0);
  epoll_event event{EPOLLIN, {.fd = connection}};
  if (!check(epoll_ctl(set, EPOLL_CTL_ADD, connection, &event) == 0, name, "worker epoll_ctl")) _exit(1);
  char buffer[4096];
  long served = 0;
  for (;;) {
    epoll_event ready{};
    if (!blocking && epoll_wait(set, &ready, 1, -1) < 0 && errno != EINTR) _exit(1);
    const ssize_t got = read(connection, buffer, sizeof(buffer));
    if (got < 0 && errno == EAGAIN) continue;
    if (got <= 0) break;
    if (!check(write(connection, buffer, static_cast<std::size_t>(got)) == got, name, "echo")) _exit(1);
    ++served;
  }
  close(connection);
  close(set);
  return served;
}

int run_threaded_echo(bool blocking, int port) {
  const char* name = "threaded-echo";
  int listener = -1;
  const int main_set = listener_set(port, name, listener);
  if (main_set < 0) return 1;
  std::thread worker;
  for (;;) {
    const int connection = next_connection(main_set, listener, blocking, name);
    if (connection < 0 || worker.joinable()) continue;
    worker = std::thread([connection, name, blocking] {
      echo_until_eof(connection, blocking, name);
      passed(name);
      _exit(g_failures == 0 ? 0 : 1);  // the main thread stays in its epoll_wait
    });
  }
}

// The voluntary context switches of the calling thread so far: how often it slept and was woken.
long voluntary_switches() {
  FILE* status = std::fopen("/proc/thread-self/status", "re");
  if (status == nullptr) return -1;
  char line[256];
  long switches = -1;
  while (std::fgets(line, sizeof(line), status) != nullptr) {
    if (std::sscanf(line, "voluntary_ctxt_switches: %ld", &switches) == 1) break;
  }
  std::fclose(status);
  return switches;
}

int run_wake_one(bool blocking, int port, int workers) {
  const char* name = "wake-one";
  int listener = -1;
  const int main_set = listener_set(port, name, listener);
  if (main_set < 0) return 1;
  static std::atomic<int> finished{0};
  for (int started = 0;;) {
    const int connection = next_connection(main_set, listener, blocking, name);
    if (connection < 0 || started == workers) continue;
    ++started;
    std::thread([connection, name, blocking, workers] {
      const long switches_before = voluntary_switches();
      const long served = echo_until_eof(connection, blocking, name);
      std::printf("worker served=%ld woken=%ld\n", served, voluntary_switches() - switches_before);
      std::fflush(stdout);
      if (finished.fetch_add(1) + 1 == workers) {
        passed(name);
        _exit(g_failures == 0 ? 0 : 1);  // the main thread stays in its epoll_wait
      }
    }).detach();
  }
}

int run_shared_set(int port, int connections) {
  const char* name = "shared-set";
  int listener = -1;
  const int main_set = listener_set(port, name, listener);
  if (main_set < 0) return 1;
  const int shared = epoll_create1(0);
  static std::atomic<int> ended{0};
  constexpr int kThreads = 3;
  for (int i = 0; i < kThreads; ++i) {
    std::thread([shared, name, connections] {
      char buffer[4096];
      for (;;) {
        epoll_event ready{};
        const int count = epoll_wait(shared, &ready, 1, -1);
        if (count < 0 && errno == EINTR) continue;
        if (!check(count >= 0, name, "epoll_wait in the shared set")) _exit(1);
        if (count == 0) continue;
        const int connection = ready.data.fd;
        ssize_t got = 0;
        while ((got = read(connection, buffer, sizeof(buffer))) > 0) {
          if (!check(write(connection, buffer, static_cast<std::size_t>(got)) == got, name, "echo")) _exit(1);
        }
        if (got == 0 || errno != EAGAIN) {
          close(connection);
          if (ended.fetch_add(1) + 1 == connections) {
            passed(name);
            _exit(g_failures == 0 ? 0 : 1);
          }
          continue;
        }
        epoll_event again{EPOLLIN | EPOLLONESHOT, {.fd = connection}};
        if (!check(epoll_ctl(shared, EPOLL_CTL_MOD, connection, &again) == 0, name, "rearm")) _exit(1);
      }
    }).detach();
  }
  for (;;) {
    const int connection = next_connection(main_set, listener, false, name);
    if (connection < 0) continue;
    epoll_event interest{EPOLLIN | EPOLLONESHOT, {.fd = connection}};
    if (!check(epoll_ctl(shared, EPOLL_CTL_ADD, connection, &interest) == 0, name, "add to the shared set")) return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  // A call that hangs fails the run rather than the test waiting forever.
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(90));
    std::printf("FAIL watchdog: still running after 90 s\n");
    std::fflush(stdout);
    _exit(3);
  }).detach();
  if (mode == "client" && (argc == 5 || argc == 6)) {
    return run_client(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), argc == 6 ? argv[5] : nullptr, argv[0]);
  }
  if (mode == "server" && argc == 3) return run_server(std::atoi(argv[2]));
  if (mode == "fork-holders-server" && argc == 3) return run_fork_holders_server(std::atoi(argv[2]));
  if (mode == "prefork" && argc == 3) return run_prefork(std::atoi(argv[2]));
  if (mode == "down") return run_down();
  if (mode == "kernel") return run_kernel();
  if ((mode == "daemon" || mode == "daemon-wait") && argc == 5) {
    return run_daemon(argv[2], std::atoi(argv[3]), argv[4], mode == "daemon-wait");
  }
  if (mode == "outlive" && argc == 4) return run_outlive(argv[2], std::atoi(argv[3]));
  if (mode == "limits" && argc == 4) return run_limits(std::atoi(argv[2]), argv[3]);
  if (mode == "seatless") return run_seatless();
  if (mode == "threaded-echo" && argc == 4) return run_threaded_echo(std::string(argv[2]) == "blocking", std::atoi(argv[3]));
  if (mode == "wake-one" && argc == 5) {
    return run_wake_one(std::string(argv[2]) == "blocking", std::atoi(argv[3]), std::atoi(argv[4]));
  }
  if (mode == "shared-set" && argc == 4) return run_shared_set(std::atoi(argv[2]), std::atoi(argv[3]));
  if (mode == "stack-down" && argc == 5) return run_stack_down(std::string(argv[2]) == "epoll", std::atoi(argv[3]), argv[4]);
  if (mode == "closefrom-exec" && argc == 3) {
    // Run by the closefrom scenario: closes everything above its inherited connection, then uses it.
    const int inherited = std::atoi(argv[2]);
    closefrom(inherited + 1);
    return echo_round_trip(inherited, pattern(3000, 7)) && close(inherited) == 0 ? 0 : 1;
  }
  if (mode == "fds" && argc == 5) {
    // Run by the exec scenario: argv[2] must be closed, argv[3] open, and with argv[4]
    // "interface" the stack's interface still named.
    const bool gone = fcntl(std::atoi(argv[2]), F_GETFD) == -1 && errno == EBADF;
    const bool kept = fcntl(std::atoi(argv[3]), F_GETFD) >= 0;
    const bool named = std::string_view(argv[4]) != "interface" ||
                       (std::getenv("FLOTILLA_INTERFACE_INDEX") != nullptr && std::getenv("FLOTILLA_INTERFACE_ADDRESS") != nullptr);
    return gone && kept && named ? 0 : 1;
  }
  if (mode == "on-stack" && argc == 4) {
    // Run by the exec scenario: this image loaded the library (it connects only then: on the
    // kernel the stack's peer is not reachable), and a connection to argv[2]:argv[3] echoes.
    std::ifstream maps("/proc/self/maps");
    const std::string mapped((std::istreambuf_iterator<char>(maps)), std::istreambuf_iterator<char>());
    if (mapped.find("libflotilla-preload") == std::string::npos) return 1;
    const int fd = connect_blocking(argv[2], std::atoi(argv[3]));
    return fd >= 0 && echo_round_trip(fd, pattern(1000, 9)) ? 0 : 1;
  }
  if (mode == "received" && argc == 3) {
    // One message from the test, into a control buffer with room for one descriptor: how many
    // descriptors it names, whether it says it was truncated, whether the first is a Flotilla
    // socket, and how many more descriptors the receive left open than it named.
    const auto open_count = [] {
      int count = 0;
      DIR* folder = opendir("/proc/self/fd");
      while (folder != nullptr && readdir(folder) != nullptr) ++count;
      if (folder != nullptr) closedir(folder);
      return count;
    };
    const int before = open_count();
    char byte = 0;
    iovec vector{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr message{};
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    if (!check(recvmsg(std::atoi(argv[2]), &message, MSG_CMSG_CLOEXEC) == 1, "received", "recvmsg")) return 1;
    const cmsghdr* header = CMSG_FIRSTHDR(&message);
    const bool rights = header != nullptr && header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS;
    const std::size_t named = rights ? (header->cmsg_len - CMSG_LEN(0)) / sizeof(int) : 0;
    int first = -1;
    if (named > 0) std::memcpy(&first, CMSG_DATA(header), sizeof(first));
    sockaddr_in local{};
    socklen_t length = sizeof(local);
    const bool socket = first >= 0 && getsockname(first, reinterpret_cast<sockaddr*>(&local), &length) == 0;
    std::printf("received=%zu truncated=%d socket=%s extra=%d\n", named, (message.msg_flags & MSG_CTRUNC) != 0 ? 1 : 0,
                socket ? "flotilla" : "kernel", open_count() - before - static_cast<int>(named));
    return 0;
  }
  if (mode == "shells" && argc == 2) {
    // The C library's documented behaviour, which the preload library's own versions must have.
    Dl_info from{};
    const bool found = dladdr(reinterpret_cast<void*>(&system), &from) != 0 && from.dli_fname != nullptr;
    std::printf("system from %s\n", found && std::strstr(from.dli_fname, "flotilla-preload") != nullptr ? "flotilla" : "libc");
    std::printf("system(NULL)=%d\n", system(nullptr));
    std::printf("system(exit 3)=%d\n", system("exit 3"));
    // SIGINT and SIGQUIT are ignored in the caller while it waits (else the shell's kill ends it),
    // and at their default in the shell; SIGCHLD is blocked meanwhile, and all is put back after.
    std::printf("system(kill parent)=%d\n", system("kill -INT $PPID; kill -QUIT $PPID; exit 4"));
    const int killed = system("kill -INT $$");
    std::printf("system(kill itself) signalled=%d signal=%d\n", WIFSIGNALED(killed) ? 1 : 0, WTERMSIG(killed));
    std::printf("system(blocked) %s\n", system("grep -q '^SigBlk:.*0$' /proc/self/status || exit 9") == 0 ? "same mask" : "other mask");
    struct sigaction interrupt {};
    sigaction(SIGINT, nullptr, &interrupt);
    sigset_t mask;
    sigprocmask(SIG_SETMASK, nullptr, &mask);
    std::printf("after system: SIGINT %s, SIGCHLD %s\n", interrupt.sa_handler == SIG_DFL ? "default" : "changed",
                sigismember(&mask, SIGCHLD) ? "blocked" : "unblocked");
    FILE* reading = popen("echo from-the-shell", "r");
    char line[64] = {};
    const bool read_line = reading != nullptr && fgets(line, sizeof(line), reading) != nullptr;
    std::printf("popen r: %s", read_line ? line : "(nothing)\n");
    std::printf("pclose r=%d\n", reading != nullptr ? pclose(reading) : -2);
    FILE* writing = popen("read word; [ \"$word\" = seven ] && exit 7; exit 1", "we");
    const int flags = writing != nullptr ? fcntl(fileno(writing), F_GETFD) : -1;
    std::printf("popen we: cloexec=%d\n", flags >= 0 && (flags & FD_CLOEXEC) != 0 ? 1 : 0);
    if (writing != nullptr) fputs("seven\n", writing);
    std::printf("pclose w=%d\n", writing != nullptr ? pclose(writing) : -2);
    for (const char* refused : {"x", "rw"}) {
      errno = 0;
      const bool opened = popen("true", refused) != nullptr;
      std::printf("popen(%s)=%s errno=%s\n", refused, opened ? "stream" : "null", errno == EINVAL ? "EINVAL" : "other");
    }
    return 0;
  }
  if (mode == "handed" && argc == 4) {
    // Run with a hand-over record of exec made by the test: what the library made of it.
    sockaddr_in local{};
    socklen_t length = sizeof(local);
    const bool socket = getsockname(std::atoi(argv[2]), reinterpret_cast<sockaddr*>(&local), &length) == 0;
    const bool record_closed = fcntl(std::atoi(argv[3]), F_GETFD) == -1 && errno == EBADF;
    int type = 0;
    int tos = 0;
    socklen_t size = sizeof(int);
    (void)getsockopt(std::atoi(argv[2]), SOL_SOCKET, SO_TYPE, &type, &size);
    size = sizeof(int);
    (void)getsockopt(std::atoi(argv[2]), IPPROTO_IP, IP_TOS, &tos, &size);
    std::printf("inherit=%s record=%s socket=%s type=%d tos=%d\n", getenv("FLOTILLA_INHERIT") != nullptr ? "set" : "unset",
                record_closed ? "closed" : "open", socket ? "flotilla" : "kernel", type, tos);
    return 0;
  }
  std::fprintf(stderr, "usage: preload_probe client ADDRESS ECHO_PORT CLOSED_PORT [DONE_FILE] | server PORT | down | kernel | daemon ADDRESS PORT FILE | outlive ADDRESS PORT | limits PORT READY_FILE | seatless | wake-one epoll|blocking PORT WORKERS | shared-set PORT CONNECTIONS\n");
  return 2;
}
