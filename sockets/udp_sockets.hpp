// The native UDP socket API of libflotilla, for programs that run as Flotilla components with a
// channel to the UDP server. Everything is non-blocking and driven by the component loop: open()
// asks for a socket and the answer arrives through on_status; datagrams arrive through
// on_datagram. Readiness needs no system call: the UDP server exposes each socket's state in a
// region the application maps read-only (components/formats/exposed_sockets.hpp), so readable(socket) is two
// loads; without that region it is whether the channel from UDP holds messages.
//
// Payloads are copied once, between the caller's bytes and a pool buffer.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "components/formats/stack_messages.hpp"
#include "dataplane/result.hpp"
#include "dataplane/component_host.hpp"
#include "components/formats/exposed_sockets.hpp"
#include "sockets/program_nonce.hpp"

namespace flotilla::sockets {

// The shared-memory formats this library reads and writes (components/formats/).
using formats::ExposedSocket;
using formats::ExposedSocketTable;
using formats::exposed_region_name;
using formats::bump;

struct Datagram {
  std::uint32_t socket;
  std::uint32_t remote_address;  // host order
  std::uint16_t remote_port;
  std::uint16_t local_port;
  std::span<const std::byte> payload;  // valid during the callback only
  std::uint32_t local_address = 0;     // the destination the datagram carried (host order)
};

// What a socket shares its port with: sockets that set SO_REUSEPORT too, or SO_REUSEADDR too.
struct PortSharing {
  bool reuse_port = false;
  bool reuse_address = false;
};

class UdpSockets {
 public:
  using DatagramHandler = std::function<void(const Datagram&)>;
  // `error` is 0 when the socket is bound to `local_port`, otherwise an errno value.
  using StatusHandler = std::function<void(std::uint32_t socket, int error, std::uint16_t local_port)>;

  // Largest payload one datagram may carry (what fits a pool buffer behind the headers).
  std::size_t max_payload() const;

  // `channel` leads to the UDP server. Registers itself as an input of the host's loop.
  static Result<std::unique_ptr<UdpSockets>> attach(ComponentHost& host, std::string_view channel);

  void on_datagram(DatagramHandler handler) { datagram_handler_ = std::move(handler); }
  void on_status(StatusHandler handler) { status_handler_ = std::move(handler); }

  // Asks for a socket bound to `local_port` (0: any), sharing it as `sharing` says. Returns the
  // socket id; the outcome comes to on_status.
  Result<std::uint32_t> open(std::uint16_t local_port, PortSharing sharing = {});
  Status close(std::uint32_t socket);
  // Tells the UDP server the socket's peer (connect(2)), or that it has none (address and port 0):
  // it then gets the peer's datagrams before the other sockets of its port, and no one else's.
  // Errc::invalid_argument before the socket's status said it is bound; Errc::exhausted when the
  // channel is full right now: retry later.
  Status connect(std::uint32_t socket, std::uint32_t address, std::uint16_t port);
  // Errc::exhausted when no buffer or no ring room is free right now: retry later.
  // Errc::invalid_argument before the socket's status said it is bound.
  Status send_to(std::uint32_t socket, std::uint32_t address, std::uint16_t port,
                 std::span<const std::byte> payload);

  // Whether a datagram for `socket` waits (false for an unknown socket).
  bool readable(std::uint32_t socket) const;
  // Whether anything from the UDP server waits.
  bool readable() const { return from_udp_->has_input(); }
  // Whether the UDP server took every message sent to it (a datagram still in the channel is lost
  // when this application's lease ends, at an exec for one).
  bool all_taken();
  // Whether the UDP server exposes `socket`'s state to this application (readiness by loads).
  bool exposed(std::uint32_t socket) const;
  // Datagrams the UDP server dropped for `socket` because this application's channel was full;
  // 0 without an exposed table.
  std::uint64_t dropped(std::uint32_t socket) const;

  std::uint64_t received() const { return received_; }
  std::uint64_t refused() const { return refused_; }
  // Statuses and datagrams meant for the program that held this seat before (program_nonce.hpp).
  std::uint64_t stale() const { return stale_; }

 private:
  UdpSockets(ComponentHost& host, ChannelEnd& channel, ComponentId udp)
      : host_(host), channel_(channel), udp_(udp), from_udp_(&channel.in), nonce_(program_nonce()) {}
  void on_messages(std::span<const Message> messages);

  struct LocalSocket {
    std::uint32_t exposed_slot = 0;  // 1 + the slot in the exposed table; 0: none
    std::uint16_t local_port = 0;    // what the UDP server bound it to; 0 until it said
    std::uint64_t consumed = 0;      // datagrams taken from the channel
  };
  const LocalSocket* local(std::uint32_t socket) const;
  const formats::ExposedSocket* exposed(const LocalSocket& socket) const;

  ComponentHost& host_;
  ChannelEnd& channel_;
  ComponentId udp_;
  RingConsumer* from_udp_;
  std::uint32_t next_socket_ = 1;
  std::span<const std::byte> exposed_region_;
  std::vector<LocalSocket> sockets_;  // by socket id - 1; grows on open, never on the data path
  DatagramHandler datagram_handler_;
  StatusHandler status_handler_;
  std::uint64_t received_ = 0;
  std::uint64_t refused_ = 0;  // messages from UDP that failed their checks
  std::uint64_t stale_ = 0;
  std::uint32_t nonce_;  // sent with every open (program_nonce.hpp)
};

}  // namespace flotilla::sockets
