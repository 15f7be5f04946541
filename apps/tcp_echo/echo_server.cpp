#include "apps/tcp_echo/echo_server.hpp"

#include <algorithm>

namespace flotilla::apps {

EchoServer::EchoServer(sockets::TcpSockets& sockets, std::uint16_t port, std::uint16_t backlog)
    : sockets_(sockets), port_(port), backlog_(backlog) {}

Status EchoServer::start() {
  auto listening = sockets_.listen(0, port_, backlog_);
  if (!listening) return listening.error();
  listener_ = listening.value();
  return {};
}

int EchoServer::listen_error() const { return listener_ >= 0 ? sockets_.error(listener_) : 0; }

bool EchoServer::listening() const { return listener_ >= 0 && sockets_.listening(listener_); }

bool EchoServer::serve(Connection& connection, bool& progress) {
  // A bounded number of rounds per pump, so one busy connection cannot starve the others.
  for (int round = 0; round < kRoundsPerPump; ++round) {
    if (connection.pending_begin < connection.pending_end) {
      const auto pending = std::span<const std::byte>(connection.buffer)
                               .subspan(connection.pending_begin, connection.pending_end - connection.pending_begin);
      auto sent = sockets_.send(connection.socket, pending);
      if (!sent) {
        if (sent.error().code == Errc::would_block) return true;
        return drop(connection, progress);  // the connection failed
      }
      connection.pending_begin += sent.value();
      echoed_ += sent.value();
      progress |= sent.value() > 0;
      if (connection.pending_begin < connection.pending_end) return true;  // the send ring is full
    }
    // Everything was sent back: the replica sends it, then its FIN.
    if (connection.peer_closed) return drop(connection, progress);
    auto received = sockets_.recv(connection.socket, connection.buffer);
    if (!received) {
      if (received.error().code == Errc::would_block) return true;
      return drop(connection, progress);  // the connection failed
    }
    progress = true;
    connection.pending_begin = 0;
    connection.pending_end = received.value();
    if (received.value() == 0) connection.peer_closed = true;
  }
  return true;
}

bool EchoServer::drop(Connection& connection, bool& progress) {
  (void)sockets_.close(connection.socket);
  progress = true;
  return false;
}

bool EchoServer::pump() {
  if (listener_ < 0) return false;
  bool progress = false;
  while (true) {
    auto accepted = sockets_.accept(listener_);
    if (!accepted) break;
    Connection& connection = connections_.emplace_back();
    connection.socket = accepted.value();
    connection.buffer.resize(kBuffer);
    ++accepted_;
    progress = true;
  }
  std::erase_if(connections_, [&](Connection& connection) { return !serve(connection, progress); });
  return progress;
}

}  // namespace flotilla::apps
