#include "sockets/udp_sockets.hpp"

#include <cstring>

#include "components/wire/ipv4.hpp"
#include "dataplane/buffer_send.hpp"

namespace flotilla::sockets {
namespace {

// In front of the payload: room for the UDP, IPv4 and Ethernet headers the stack adds.
constexpr std::uint16_t kPayloadOffset = stack::kHeadroom + 8;

}  // namespace

std::size_t UdpSockets::max_payload() const {
  const std::size_t room = host_.pool().buffer_size() - kPayloadOffset;
  return std::min<std::size_t>(room, 1472);  // one Ethernet frame: the stack does not fragment
}

Result<std::unique_ptr<UdpSockets>> UdpSockets::attach(ComponentHost& host,
                                                       std::string_view channel_name) {
  ChannelEnd* channel = host.channel(channel_name);
  if (channel == nullptr) return Error{Errc::invalid_argument, 0, "udp sockets: no such channel"};
  std::unique_ptr<UdpSockets> sockets(new UdpSockets(host, *channel, host.peer_of(channel_name)));
  sockets->exposed_region_ = host.region(exposed_region_name(channel_name));
  UdpSockets* self = sockets.get();
  if (auto s = host.loop().add_input(channel->in, [self](std::span<const Message> m) { self->on_messages(m); });
      !s) {
    return s.error();
  }
  return sockets;
}

const UdpSockets::LocalSocket* UdpSockets::local(std::uint32_t socket) const {
  return socket >= 1 && socket <= sockets_.size() ? &sockets_[socket - 1] : nullptr;
}

const ExposedSocket* UdpSockets::exposed(const LocalSocket& socket) const {
  if (socket.exposed_slot == 0) return nullptr;
  // Read afresh each time: the UDP server formats the table when it (re)starts.
  const ExposedSocketTable table = ExposedSocketTable::read(exposed_region_);
  return table.slot(socket.exposed_slot - 1);
}

bool UdpSockets::readable(std::uint32_t socket) const {
  const LocalSocket* entry = local(socket);
  if (entry == nullptr) return false;
  const ExposedSocket* slot = exposed(*entry);
  if (slot == nullptr || slot->bound.load(std::memory_order_acquire) != 1 || slot->socket != socket) {
    return readable();
  }
  return slot->delivered.load(std::memory_order_acquire) > entry->consumed;
}

bool UdpSockets::all_taken() {
  const auto room = channel_.out.room();
  return !room || room.value() == channel_.out.capacity();  // a corrupt index: nothing to wait for
}

bool UdpSockets::exposed(std::uint32_t socket) const {
  const LocalSocket* entry = local(socket);
  const ExposedSocket* slot = entry != nullptr ? exposed(*entry) : nullptr;
  return slot != nullptr && slot->socket == socket && slot->bound.load(std::memory_order_acquire) == 1;
}

std::uint64_t UdpSockets::dropped(std::uint32_t socket) const {
  const LocalSocket* entry = local(socket);
  const ExposedSocket* slot = entry != nullptr ? exposed(*entry) : nullptr;
  return slot != nullptr && slot->socket == socket ? slot->dropped.load(std::memory_order_acquire) : 0;
}

Result<std::uint32_t> UdpSockets::open(std::uint16_t local_port, PortSharing sharing) {
  const std::uint32_t socket = next_socket_++;
  sockets_.resize(socket);
  const auto options = static_cast<std::uint8_t>((sharing.reuse_port ? stack::kSocketOpenReusePort : 0) |
                                                 (sharing.reuse_address ? stack::kSocketOpenReuseAddress : 0));
  const Message message =
      Message::make(stack::kSocketOpenKind, stack::SocketOpenBody{socket, local_port, wire::kProtocolUdp, options, nonce_});
  auto sent = host_.send(channel_, std::span(&message, 1));
  if (!sent) return sent.error();
  if (sent.value() != 1) return Error{Errc::exhausted, 0, "udp sockets: channel full"};
  return socket;
}

Status UdpSockets::close(std::uint32_t socket) {
  const Message message = Message::make(stack::kSocketCloseKind, stack::SocketCloseBody{socket});
  auto sent = host_.send(channel_, std::span(&message, 1));
  if (!sent) return sent.error();
  if (sent.value() != 1) return Error{Errc::exhausted, 0, "udp sockets: channel full"};
  return {};
}

Status UdpSockets::connect(std::uint32_t socket, std::uint32_t address, std::uint16_t port) {
  const LocalSocket* entry = local(socket);
  if (entry == nullptr || entry->local_port == 0) {
    return Error{Errc::invalid_argument, 0, "udp sockets: socket not bound (wait for its status)"};
  }
  const Message message = Message::make(stack::kSocketConnectKind,
                                        stack::SocketConnectBody{socket, address, port, entry->local_port});
  auto sent = host_.send(channel_, std::span(&message, 1));
  if (!sent) return sent.error();
  if (sent.value() != 1) return Error{Errc::exhausted, 0, "udp sockets: channel full"};
  return {};
}

Status UdpSockets::send_to(std::uint32_t socket, std::uint32_t address, std::uint16_t port,
                           std::span<const std::byte> payload) {
  if (payload.size() > max_payload()) return Error{Errc::invalid_argument, 0, "udp sockets: payload too large"};
  const LocalSocket* entry = local(socket);
  if (entry == nullptr || entry->local_port == 0) {
    return Error{Errc::invalid_argument, 0, "udp sockets: socket not bound (wait for its status)"};
  }
  BufferHandle handle;
  if (host_.pool().alloc_burst(host_.id(), std::span(&handle, 1)) != 1) {
    return Error{Errc::exhausted, 0, "udp sockets: no free buffer"};
  }
  handle.offset = kPayloadOffset;
  handle.length = static_cast<std::uint16_t>(payload.size());
  auto bytes = host_.pool().bytes(host_.id(), handle);
  if (!bytes) return bytes.error();
  if (!payload.empty()) std::memcpy(bytes->data(), payload.data(), payload.size());
  const stack::SocketDatagramBody body{handle, socket, address, port, entry->local_port};
  if (!send_with_buffer(host_, channel_, udp_, handle,
                               Message::make(stack::kSocketDatagramKind, body))) {
    (void)host_.pool().free(host_.id(), handle);
    return Error{Errc::exhausted, 0, "udp sockets: channel full"};
  }
  return {};
}

void UdpSockets::on_messages(std::span<const Message> messages) {
  for (const Message& message : messages) {
    if (message.kind == stack::kSocketDatagramKind) {
      const auto body = message.read<stack::SocketDatagramBody>();
      if (body.nonce != nonce_) {
        ++stale_;
        (void)host_.pool().free(host_.id(), body.payload);
        host_.served();
        continue;
      }
      auto bytes = host_.pool().bytes(host_.id(), body.payload);
      if (!bytes) {
        ++refused_;
        continue;
      }
      ++received_;
      if (body.socket >= 1 && body.socket <= sockets_.size()) ++sockets_[body.socket - 1].consumed;
      if (datagram_handler_) {
        datagram_handler_(Datagram{body.socket, body.remote_address, body.remote_port, body.local_port,
                                   bytes.value(), body.local_address});
      }
      (void)host_.pool().free(host_.id(), body.payload);
      host_.served();
    } else if (message.kind == stack::kSocketStatusKind) {
      const auto body = message.read<stack::SocketStatusBody>();
      if (body.nonce != nonce_) {
        ++stale_;
        continue;
      }
      if (body.socket >= 1 && body.socket <= sockets_.size()) {
        sockets_[body.socket - 1] = body.error == 0 ? LocalSocket{.exposed_slot = body.exposed_slot, .local_port = body.local_port, .consumed = 0} : LocalSocket{};
      }
      if (status_handler_) status_handler_(body.socket, body.error, body.local_port);
    } else {
      ++refused_;
    }
  }
}

}  // namespace flotilla::sockets
