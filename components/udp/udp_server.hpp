// The UDP server's logic: sockets that applications open over their channel, ports claimed in IP's
// flow table, datagrams checked (length, checksum) on the way in and given their header on the
// way out. The socket table lives in the state store, so a restarted UDP server still knows every
// socket and claims its ports again; applications notice nothing but the datagrams lost meanwhile.
//
// Sockets that all asked for SO_REUSEPORT share a port, as on Linux: a port group whose members
// each get the datagrams of some clients, chosen by a hash of the client's address and port, so a
// client stays with one member while the group is unchanged (and across a restart of this server:
// the hash has no seed and the members keep their table order). Linux lets only sockets of one
// user share a port; here that user is the stack's: every application leased its slot through the
// supervisor's control socket, which admits only the supervisor's own user and root (SO_PEERCRED,
// recovery/control_socket.cpp), so any two applications of one stack may share a port, as the TCP
// replicas' listener groups let them.
//
// Sockets that all set SO_REUSEADDR share a port too (iperf2's UDP server binds a new listener for
// each client next to the one it connected to the last). A connected socket (the application sent
// its peer) takes its peer's datagrams before any other member and no one else's; the unconnected
// members take the rest: the SO_REUSEPORT ones by the hash, else the one bound last, as on Linux.
//
// Kept apart from the channels (UdpComponent, udp_component.hpp, wires it to them) so tests can
// drive it with plain calls.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "components/formats/stack_messages.hpp"
#include "dataplane/buffer_pool.hpp"
#include "dataplane/counters.hpp"
#include "dataplane/result.hpp"
#include "components/formats/exposed_sockets.hpp"

namespace flotilla::udp {

// Where the UDP server's messages go. Calls that pass a buffer return true when it was handed off
// and sent; on false the server still owns it.
class UdpOutputs {
 public:
  virtual ~UdpOutputs() = default;
  virtual bool to_ip(const stack::TransportPacketBody& packet) = 0;
  virtual bool bind_port(const stack::PortBindingBody& binding) = 0;
  virtual bool to_app(ComponentId app, const stack::SocketDatagramBody& datagram) = 0;
  virtual bool status_to_app(ComponentId app, const stack::SocketStatusBody& status) = 0;
  // Where the application's socket state is exposed to it (components/formats/exposed_sockets.hpp); an empty
  // table when the configuration gave it none.
  virtual formats::ExposedSocketTable exposed(ComponentId app) { (void)app; return {}; }
};

struct SocketEntry {
  static constexpr std::uint16_t kReusePort = 1;     // opened with SO_REUSEPORT
  static constexpr std::uint16_t kReuseAddress = 2;  // opened with SO_REUSEADDR
  std::uint32_t state;  // 0 free, 1 bound; published last with a release store
  std::uint32_t socket;
  ComponentId app;
  std::uint16_t local_port;
  std::uint16_t flags;  // kReusePort, kReuseAddress
  std::uint32_t remote_address;  // the peer of a connected socket
  std::uint16_t remote_port;     // 0: not connected
  std::uint16_t reserved;
  std::uint32_t bind_order;  // from UdpStateHeader::next_bind_order: the newest is the largest
  std::uint32_t nonce;       // its opener's (SocketOpenBody), in its status and datagrams
};

struct UdpStateHeader {
  static constexpr std::uint64_t kMagic = 0x6574617453706455ull;  // "UdpState"
  static constexpr std::uint32_t kVersion = 4;  // 2: SocketEntry::flags; 3: its peer and bind order; 4: nonce
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t capacity;
  std::uint16_t next_ephemeral;
  std::uint16_t reserved;
  std::uint32_t next_bind_order;
};

class UdpServer {
 public:
  static constexpr std::uint16_t kEphemeralFirst = 49152;
  // Bytes a datagram from an application needs in front of its payload: UDP, IPv4 and Ethernet.
  static constexpr std::uint16_t kHeadersBefore = 8 + 20 + 14;

  static std::size_t state_bytes_for(std::size_t sockets);
  static Result<std::unique_ptr<UdpServer>> create(BufferPool& pool, ComponentId self,
                                                   std::uint32_t local_address,
                                                   std::span<std::byte> state, UdpOutputs& outputs,
                                                   NamedCounterTable& counters);

  void on_open(ComponentId app, const stack::SocketOpenBody& open);
  void on_close(ComponentId app, const stack::SocketCloseBody& close);
  void on_connect(ComponentId app, const stack::SocketConnectBody& connect);
  void on_app_datagram(ComponentId app, const stack::SocketDatagramBody& datagram);
  void on_ip_packet(const stack::TransportPacketBody& packet);
  // The application restarted: its sockets are gone.
  void on_app_restarted(ComponentId app);
  // IP restarted, or this server did: claim every bound port again (claims are idempotent).
  void claim_all();
  // This server (re)started and formatted the exposed tables: show every bound socket again.
  void expose_all();

  std::size_t open_sockets() const;
  bool restored() const { return restored_; }

 private:
  UdpServer(BufferPool& pool, ComponentId self, std::uint32_t local_address, UdpOutputs& outputs,
            NamedCounterTable& counters);
  // The sockets bound to `port`, in table order (empty: none).
  std::span<const std::uint16_t> members_of(std::uint16_t port) const;
  // The member of `port`'s group that gets a datagram from remote_address:remote_port, or nullptr.
  SocketEntry* receiver(std::uint16_t port, std::uint32_t remote_address, std::uint16_t remote_port);
  // Whether a socket opened with `flags` may share `port` with every socket bound there.
  bool may_share(std::uint16_t port, std::uint16_t flags) const;
  // `app`'s `socket` when it is bound to `port`, or nullptr.
  SocketEntry* member(std::uint16_t port, ComponentId app, std::uint32_t socket);
  SocketEntry* find_socket(ComponentId app, std::uint32_t socket);
  SocketEntry* free_entry();
  std::uint16_t pick_ephemeral();
  // Adds the bound entry to its port's group; false when no memory was left for it.
  bool join_group(const SocketEntry& entry);
  // Takes the entry out of its port's group; true when it was the last member.
  bool leave_group(const SocketEntry& entry);
  void release(SocketEntry& entry);
  // The entry's slot in its application's exposed table, or nullptr.
  formats::ExposedSocket* exposed_slot(const SocketEntry& entry);
  void expose(const SocketEntry& entry);
  void drop(const BufferHandle& handle, NamedCounter* reason);

  BufferPool* pool_;
  ComponentId self_;
  std::uint32_t local_address_;
  UdpOutputs* outputs_;
  UdpStateHeader* header_ = nullptr;
  std::span<SocketEntry> sockets_;
  // Private index from local port to 1 + its group in groups_ (0: none), and the groups' members
  // (entry indexes, ascending), rebuilt from the state store at create, so finding a datagram's
  // socket is a few loads, not a scan of the table. A group without members is free for reuse.
  std::vector<std::uint16_t> port_index_ = std::vector<std::uint16_t>(65536, 0);
  std::vector<std::vector<std::uint16_t>> groups_;
  bool restored_ = false;

  struct Counters {
    NamedCounter* datagrams_in;
    NamedCounter* datagrams_out;
    NamedCounter* bad_length;
    NamedCounter* bad_checksum;
    NamedCounter* no_socket;
    NamedCounter* app_queue_full;
    NamedCounter* ip_queue_full;
    NamedCounter* bad_request;
    NamedCounter* port_in_use;
    NamedCounter* sockets_full;
  } counters_{};
};

}  // namespace flotilla::udp
