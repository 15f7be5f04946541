// The logic of flotilla-tcp-echo, apart from its process so tests can drive it over fake replicas:
// a TCP echo server on the native socket API that serves many connections at once. It reads from a
// connection only while what it read before has been sent back, so a client that does not read
// its echoes slows down only itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dataplane/result.hpp"
#include "sockets/tcp_sockets.hpp"

namespace flotilla::apps {

class EchoServer {
 public:
  EchoServer(sockets::TcpSockets& sockets, std::uint16_t port, std::uint16_t backlog);
  Status start();
  // Accepts waiting connections and echoes what arrived. True when it did anything.
  bool pump();
  // 0, or the errno with which a replica refused the listener.
  int listen_error() const;
  bool listening() const;

  std::size_t connections() const { return connections_.size(); }
  std::uint64_t accepted() const { return accepted_; }
  std::uint64_t echoed_bytes() const { return echoed_; }

 private:
  static constexpr std::size_t kBuffer = 16 * 1024;
  static constexpr int kRoundsPerPump = 16;
  struct Connection {
    int socket = -1;
    std::vector<std::byte> buffer;
    std::size_t pending_begin = 0;  // [begin, end) read and not yet sent back
    std::size_t pending_end = 0;
    bool peer_closed = false;
  };
  // Echoes what it can; false when the connection is over (and closed).
  bool serve(Connection& connection, bool& progress);
  // Closes the connection; returns false, for serve to pass on.
  bool drop(Connection& connection, bool& progress);

  sockets::TcpSockets& sockets_;
  std::uint16_t port_;
  std::uint16_t backlog_;
  int listener_ = -1;
  std::vector<Connection> connections_;
  std::uint64_t accepted_ = 0;
  std::uint64_t echoed_ = 0;
};

}  // namespace flotilla::apps
