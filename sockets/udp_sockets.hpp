// The native UDP socket API of libflotilla, for programs that run as Flotilla components with a
// channel to the UDP server. Everything is non-blocking and driven by the component loop: open()
// asks for a socket and the answer arrives through on_status; datagrams arrive through
// on_datagram. Readiness needs no system call: it is whether the channel from UDP holds messages.
//
// Payloads are copied once, between the caller's bytes and a pool buffer.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "components/messages/stack_messages.hpp"
#include "dataplane/result.hpp"
#include "recovery/component_host.hpp"

namespace flotilla::sockets {

struct Datagram {
  std::uint32_t socket;
  std::uint32_t remote_address;  // host order
  std::uint16_t remote_port;
  std::uint16_t local_port;
  std::span<const std::byte> payload;  // valid during the callback only
};

class UdpSockets {
 public:
  using DatagramHandler = std::function<void(const Datagram&)>;
  // `error` is 0 when the socket is bound to `local_port`, otherwise an errno value.
  using StatusHandler = std::function<void(std::uint32_t socket, int error, std::uint16_t local_port)>;

  // Largest payload one datagram may carry (what fits a pool buffer behind the headers).
  std::size_t max_payload() const;

  // `channel` leads to the UDP server. Registers itself as an input of the host's loop.
  static Result<std::unique_ptr<UdpSockets>> attach(recovery::ComponentHost& host, std::string_view channel);

  void on_datagram(DatagramHandler handler) { datagram_handler_ = std::move(handler); }
  void on_status(StatusHandler handler) { status_handler_ = std::move(handler); }

  // Asks for a socket bound to `local_port` (0: any). Returns the socket id; the outcome comes to
  // on_status.
  Result<std::uint32_t> open(std::uint16_t local_port);
  Status close(std::uint32_t socket);
  // Errc::exhausted when no buffer or no ring room is free right now: retry later.
  Status send_to(std::uint32_t socket, std::uint32_t address, std::uint16_t port,
                 std::span<const std::byte> payload);

  bool readable() const { return from_udp_->has_input(); }

  std::uint64_t received() const { return received_; }
  std::uint64_t refused() const { return refused_; }

 private:
  UdpSockets(recovery::ComponentHost& host, ChannelEnd& channel, ComponentId udp)
      : host_(host), channel_(channel), udp_(udp), from_udp_(&channel.in) {}
  void on_messages(std::span<const Message> messages);

  recovery::ComponentHost& host_;
  ChannelEnd& channel_;
  ComponentId udp_;
  RingConsumer* from_udp_;
  std::uint32_t next_socket_ = 1;
  DatagramHandler datagram_handler_;
  StatusHandler status_handler_;
  std::uint64_t received_ = 0;
  std::uint64_t refused_ = 0;  // messages from UDP that failed their checks
};

}  // namespace flotilla::sockets
