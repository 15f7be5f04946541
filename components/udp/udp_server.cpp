#include "components/udp/udp_server.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <new>

#include "components/wire/ipv4.hpp"
#include "components/wire/udp.hpp"

namespace flotilla::udp {
namespace {

std::atomic_ref<std::uint32_t> state_word(SocketEntry& entry) {
  return std::atomic_ref<std::uint32_t>(entry.state);
}

// Which member of a port group a client's datagrams go to: a fixed mix of its address and port (no
// seed, so the choice survives a restart of this server), reduced over the members.
std::size_t flow_choice(std::uint32_t remote_address, std::uint16_t remote_port, std::size_t members) {
  std::uint64_t mixed = (std::uint64_t{remote_address} << 16 | remote_port) * 0x9e3779b97f4a7c15ull;
  mixed ^= mixed >> 29;
  mixed *= 0xbf58476d1ce4e5b9ull;
  mixed ^= mixed >> 32;
  return static_cast<std::size_t>(mixed % members);
}

}  // namespace

std::size_t UdpServer::state_bytes_for(std::size_t sockets) {
  return sizeof(UdpStateHeader) + sockets * sizeof(SocketEntry);
}

UdpServer::UdpServer(BufferPool& pool, ComponentId self, std::uint32_t local_address,
                     UdpOutputs& outputs, NamedCounterTable& table)
    : pool_(&pool), self_(self), local_address_(local_address), outputs_(&outputs) {
  counters_.datagrams_in = &table.counter("datagrams_in");
  counters_.datagrams_out = &table.counter("datagrams_out");
  counters_.bad_length = &table.counter("bad_length");
  counters_.bad_checksum = &table.counter("bad_checksum");
  counters_.no_socket = &table.counter("no_socket");
  counters_.app_queue_full = &table.counter("app_queue_full");
  counters_.ip_queue_full = &table.counter("ip_queue_full");
  counters_.bad_request = &table.counter("bad_request");
  counters_.port_in_use = &table.counter("port_in_use");
  counters_.sockets_full = &table.counter("sockets_full");
}

Result<std::unique_ptr<UdpServer>> UdpServer::create(BufferPool& pool, ComponentId self,
                                                     std::uint32_t local_address,
                                                     std::span<std::byte> state, UdpOutputs& outputs,
                                                     NamedCounterTable& counters) {
  if (state.size() < state_bytes_for(16)) {
    return Error{Errc::invalid_argument, 0, "udp: state store too small (state_bytes)"};
  }
  std::unique_ptr<UdpServer> server(new UdpServer(pool, self, local_address, outputs, counters));
  auto* header = reinterpret_cast<UdpStateHeader*>(state.data());
  // At most 65535 entries, so the port index can name each one in 16 bits.
  const std::size_t capacity =
      std::min<std::size_t>((state.size() - sizeof(UdpStateHeader)) / sizeof(SocketEntry), 65535);
  auto* entries = reinterpret_cast<SocketEntry*>(state.data() + sizeof(UdpStateHeader));
  server->header_ = header;
  server->sockets_ = std::span<SocketEntry>(entries, capacity);
  if (header->magic == UdpStateHeader::kMagic && header->version == UdpStateHeader::kVersion &&
      header->capacity == capacity) {
    server->restored_ = true;
    // In table order, so each group's members are ascending as they were before the restart.
    for (SocketEntry& entry : server->sockets_) {
      if (state_word(entry).load(std::memory_order_acquire) == 1 && !server->join_group(entry)) {
        return Error{Errc::exhausted, 0, "udp: no memory for the port groups"};
      }
    }
    return server;
  }
  header->magic = 0;
  header->version = UdpStateHeader::kVersion;
  header->capacity = static_cast<std::uint32_t>(capacity);
  header->next_ephemeral = kEphemeralFirst;
  header->reserved = 0;
  header->next_bind_order = 0;
  for (SocketEntry& entry : server->sockets_) state_word(entry).store(0, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  header->magic = UdpStateHeader::kMagic;
  return server;
}

std::span<const std::uint16_t> UdpServer::members_of(std::uint16_t port) const {
  const std::uint16_t group = port_index_[port];
  if (group == 0) return {};
  return groups_[group - 1u];
}

SocketEntry* UdpServer::receiver(std::uint16_t port, std::uint32_t remote_address, std::uint16_t remote_port) {
  const auto members = members_of(port);
  if (members.empty()) return nullptr;
  if (members.size() == 1) {
    SocketEntry& only = sockets_[members[0]];
    const bool elsewhere = only.remote_port != 0 && (only.remote_address != remote_address || only.remote_port != remote_port);
    return elsewhere ? nullptr : &only;
  }
  SocketEntry* newest = nullptr;
  std::size_t hashed = 0;
  for (const std::uint16_t index : members) {
    SocketEntry& entry = sockets_[index];
    if (entry.remote_port != 0) {
      if (entry.remote_address == remote_address && entry.remote_port == remote_port) return &entry;
    } else if ((entry.flags & SocketEntry::kReusePort) != 0) {
      ++hashed;
    } else if (newest == nullptr || static_cast<std::int32_t>(entry.bind_order - newest->bind_order) > 0) {
      newest = &entry;
    }
  }
  if (hashed == 0) return newest;
  // The unconnected SO_REUSEPORT members in table order, as the hash chose among them.
  std::size_t chosen = flow_choice(remote_address, remote_port, hashed);
  for (const std::uint16_t index : members) {
    SocketEntry& entry = sockets_[index];
    if (entry.remote_port != 0 || (entry.flags & SocketEntry::kReusePort) == 0) continue;
    if (chosen-- == 0) return &entry;
  }
  return nullptr;
}

bool UdpServer::may_share(std::uint16_t port, std::uint16_t flags) const {
  // Linux's rule (udp_lib_lport_inuse): two sockets share a port when both set SO_REUSEADDR or
  // both SO_REUSEPORT.
  for (const std::uint16_t index : members_of(port)) {
    if ((sockets_[index].flags & flags) == 0) return false;
  }
  return true;
}

SocketEntry* UdpServer::member(std::uint16_t port, ComponentId app, std::uint32_t socket) {
  for (const std::uint16_t index : members_of(port)) {
    SocketEntry& entry = sockets_[index];
    if (entry.app == app && entry.socket == socket) return &entry;
  }
  return nullptr;
}

bool UdpServer::join_group(const SocketEntry& entry) {
  const auto index = static_cast<std::uint16_t>(&entry - sockets_.data());
  std::uint16_t& group = port_index_[entry.local_port];
  try {
    if (group == 0) {
      const auto unused = std::find_if(groups_.begin(), groups_.end(), [](const auto& members) { return members.empty(); });
      if (unused == groups_.end()) {
        groups_.emplace_back();
        group = static_cast<std::uint16_t>(groups_.size());
      } else {
        group = static_cast<std::uint16_t>(unused - groups_.begin() + 1);
      }
    }
    auto& members = groups_[group - 1u];
    members.insert(std::upper_bound(members.begin(), members.end(), index), index);
  } catch (const std::bad_alloc&) {
    if (members_of(entry.local_port).empty()) group = 0;
    return false;
  }
  return true;
}

bool UdpServer::leave_group(const SocketEntry& entry) {
  const auto index = static_cast<std::uint16_t>(&entry - sockets_.data());
  std::uint16_t& group = port_index_[entry.local_port];
  if (group == 0) return true;
  auto& members = groups_[group - 1u];
  members.erase(std::remove(members.begin(), members.end(), index), members.end());
  if (!members.empty()) return false;
  group = 0;
  return true;
}

SocketEntry* UdpServer::find_socket(ComponentId app, std::uint32_t socket) {
  for (SocketEntry& entry : sockets_) {
    if (state_word(entry).load(std::memory_order_acquire) == 1 && entry.app == app &&
        entry.socket == socket) {
      return &entry;
    }
  }
  return nullptr;
}

SocketEntry* UdpServer::free_entry() {
  for (SocketEntry& entry : sockets_) {
    if (state_word(entry).load(std::memory_order_relaxed) == 0) return &entry;
  }
  return nullptr;
}

std::uint16_t UdpServer::pick_ephemeral() {
  for (std::uint32_t tries = 0; tries < 65536 - kEphemeralFirst; ++tries) {
    std::uint16_t port = header_->next_ephemeral;
    header_->next_ephemeral = port == 65535 ? kEphemeralFirst : static_cast<std::uint16_t>(port + 1);
    if (port_index_[port] == 0) return port;
  }
  return 0;
}

std::size_t UdpServer::open_sockets() const {
  std::size_t count = 0;
  for (const SocketEntry& entry : sockets_) {
    count += std::atomic_ref<const std::uint32_t>(entry.state).load(std::memory_order_relaxed) == 1;
  }
  return count;
}

void UdpServer::drop(const BufferHandle& handle, NamedCounter* reason) {
  reason->add();
  (void)pool_->free(self_, handle);
}

void UdpServer::on_open(ComponentId app, const stack::SocketOpenBody& open) {
  stack::SocketStatusBody status{open.socket, 0, 0, 0, open.nonce};
  const std::uint16_t flags =
      ((open.options & stack::kSocketOpenReusePort) != 0 ? SocketEntry::kReusePort : 0) |
      ((open.options & stack::kSocketOpenReuseAddress) != 0 ? SocketEntry::kReuseAddress : 0);
  const auto sharers = open.local_port != 0 ? members_of(open.local_port) : std::span<const std::uint16_t>{};
  const bool joins = !sharers.empty() && may_share(open.local_port, flags);
  constexpr std::uint8_t kKnownOptions = stack::kSocketOpenReusePort | stack::kSocketOpenReuseAddress;
  if (open.protocol != wire::kProtocolUdp || (open.options & ~kKnownOptions) != 0 ||
      find_socket(app, open.socket) != nullptr) {
    counters_.bad_request->add();
    status.error = EINVAL;
  } else if (!sharers.empty() && !joins) {
    counters_.port_in_use->add();
    status.error = EADDRINUSE;
  } else if (SocketEntry* entry = free_entry(); entry == nullptr) {
    counters_.sockets_full->add();
    status.error = ENOBUFS;
  } else {
    const std::uint16_t port = open.local_port != 0 ? open.local_port : pick_ephemeral();
    if (port == 0) {
      status.error = EADDRINUSE;
    } else if (!joins && !outputs_->bind_port(
                             stack::PortBindingBody{wire::kProtocolUdp, stack::BindingChange::claim, port})) {
      // IP never heard of the port, so it would deliver nothing to it: fail the open (the
      // application may retry) rather than bind a deaf socket. A group's first member made the
      // claim for all.
      counters_.ip_queue_full->add();
      status.error = EAGAIN;
    } else {
      entry->socket = open.socket;
      entry->app = app;
      entry->local_port = port;
      entry->flags = flags;
      entry->remote_address = 0;
      entry->remote_port = 0;
      entry->reserved = 0;
      entry->bind_order = header_->next_bind_order++;
      entry->nonce = open.nonce;
      if (!join_group(*entry)) {
        if (!joins) outputs_->bind_port(stack::PortBindingBody{wire::kProtocolUdp, stack::BindingChange::release, port});
        counters_.sockets_full->add();
        status.error = ENOBUFS;
      } else {
        state_word(*entry).store(1, std::memory_order_release);
        status.local_port = port;
        expose(*entry);
        if (exposed_slot(*entry) != nullptr) {
          status.exposed_slot = static_cast<std::uint16_t>(entry - sockets_.data() + 1);
        }
      }
    }
  }
  (void)outputs_->status_to_app(app, status);
}

formats::ExposedSocket* UdpServer::exposed_slot(const SocketEntry& entry) {
  const auto index = static_cast<std::size_t>(&entry - sockets_.data());
  if (index > 0xfffe) return nullptr;
  return outputs_->exposed(entry.app).slot(static_cast<std::uint32_t>(index));
}

void UdpServer::expose(const SocketEntry& entry) {
  formats::ExposedSocket* slot = exposed_slot(entry);
  if (slot == nullptr) return;
  slot->bound.store(0, std::memory_order_relaxed);
  slot->socket = entry.socket;
  slot->local_port = entry.local_port;
  slot->delivered.store(0, std::memory_order_relaxed);
  slot->dropped.store(0, std::memory_order_relaxed);
  slot->sent.store(0, std::memory_order_relaxed);
  slot->bound.store(1, std::memory_order_release);
}

void UdpServer::expose_all() {
  for (SocketEntry& entry : sockets_) {
    if (state_word(entry).load(std::memory_order_acquire) == 1) expose(entry);
  }
}

void UdpServer::release(SocketEntry& entry) {
  const std::uint16_t port = entry.local_port;
  if (formats::ExposedSocket* slot = exposed_slot(entry)) slot->bound.store(0, std::memory_order_release);
  const bool last = leave_group(entry);
  state_word(entry).store(0, std::memory_order_release);
  if (last) outputs_->bind_port(stack::PortBindingBody{wire::kProtocolUdp, stack::BindingChange::release, port});
}

void UdpServer::on_close(ComponentId app, const stack::SocketCloseBody& close) {
  SocketEntry* entry = find_socket(app, close.socket);
  if (entry == nullptr) {
    counters_.bad_request->add();
    return;
  }
  release(*entry);
}

void UdpServer::on_connect(ComponentId app, const stack::SocketConnectBody& connect) {
  SocketEntry* entry = member(connect.local_port, app, connect.socket);
  if (entry == nullptr || (connect.remote_address == 0) != (connect.remote_port == 0)) {
    counters_.bad_request->add();
    return;
  }
  // Only this server reads the peer (and a successor after a restart, from the state store).
  entry->remote_address = connect.remote_address;
  entry->remote_port = connect.remote_port;
}

void UdpServer::on_app_restarted(ComponentId app) {
  for (SocketEntry& entry : sockets_) {
    if (state_word(entry).load(std::memory_order_acquire) == 1 && entry.app == app) release(entry);
  }
}

void UdpServer::claim_all() {
  for (const auto& members : groups_) {
    if (members.empty()) continue;
    outputs_->bind_port(
        stack::PortBindingBody{wire::kProtocolUdp, stack::BindingChange::claim, sockets_[members[0]].local_port});
  }
}

void UdpServer::on_app_datagram(ComponentId app, const stack::SocketDatagramBody& datagram) {
  const BufferHandle& payload = datagram.payload;
  auto bytes = pool_->bytes(self_, payload);
  if (!bytes) return;  // counted by the pool; not ours to free
  SocketEntry* entry = member(datagram.local_port, app, datagram.socket);
  if (entry == nullptr || payload.offset < kHeadersBefore || payload.length > 65507 ||
      datagram.remote_address == 0 || datagram.remote_port == 0) {
    drop(payload, counters_.bad_request);
    return;
  }
  BufferHandle segment = payload;
  segment.offset = static_cast<std::uint16_t>(payload.offset - 8);
  segment.length = static_cast<std::uint16_t>(payload.length + 8);
  auto segment_bytes = pool_->bytes(self_, segment);
  if (!segment_bytes) return;
  wire::emit_udp(segment_bytes.value(), entry->local_port, datagram.remote_port, local_address_,
                 datagram.remote_address, payload.length);
  const stack::TransportPacketBody packet{.segment = segment,
                                          .remote_address = datagram.remote_address,
                                          .local_address = local_address_,
                                          .remote_port = datagram.remote_port,
                                          .local_port = entry->local_port,
                                          .protocol = wire::kProtocolUdp,
                                          .reserved = {}};
  if (outputs_->to_ip(packet)) {
    counters_.datagrams_out->add();
    if (formats::ExposedSocket* slot = exposed_slot(*entry)) formats::bump(slot->sent);
  } else {
    drop(segment, counters_.ip_queue_full);
  }
}

void UdpServer::on_ip_packet(const stack::TransportPacketBody& packet) {
  auto bytes = pool_->bytes(self_, packet.segment);
  if (!bytes) return;
  auto datagram = wire::UdpDatagram::parse(bytes.value(), packet.remote_address, packet.local_address);
  if (!datagram) {
    drop(packet.segment, datagram.error() == wire::WireError::bad_checksum ? counters_.bad_checksum
                                                                          : counters_.bad_length);
    return;
  }
  counters_.datagrams_in->add();
  SocketEntry* entry = receiver(datagram->destination_port(), packet.remote_address, datagram->source_port());
  if (entry == nullptr) {
    drop(packet.segment, counters_.no_socket);
    return;
  }
  BufferHandle payload = packet.segment;
  payload.offset = static_cast<std::uint16_t>(payload.offset + 8);
  payload.length = static_cast<std::uint16_t>(datagram->payload().size());
  const stack::SocketDatagramBody body{.payload = payload,
                                       .socket = entry->socket,
                                       .remote_address = packet.remote_address,
                                       .remote_port = datagram->source_port(),
                                       .local_port = entry->local_port,
                                       .local_address = packet.local_address,
                                       .nonce = entry->nonce};
  formats::ExposedSocket* slot = exposed_slot(*entry);
  if (outputs_->to_app(entry->app, body)) {
    if (slot != nullptr) formats::bump(slot->delivered);  // after the message: readable means it is there
  } else {
    if (slot != nullptr) formats::bump(slot->dropped);
    drop(payload, counters_.app_queue_full);
  }
}

}  // namespace flotilla::udp
