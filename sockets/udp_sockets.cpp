#include "sockets/udp_sockets.hpp"

#include <cstring>

#include "components/messages/buffer_send.hpp"

namespace flotilla::sockets {
namespace {

constexpr std::uint8_t kProtocolUdp = 17;
// In front of the payload: room for the UDP, IPv4 and Ethernet headers the stack adds.
constexpr std::uint16_t kPayloadOffset = stack::kHeadroom + 8;

}  // namespace

std::size_t UdpSockets::max_payload() const {
  const std::size_t room = host_.pool().buffer_size() - kPayloadOffset;
  return std::min<std::size_t>(room, 1472);  // one Ethernet frame: the stack does not fragment
}

Result<std::unique_ptr<UdpSockets>> UdpSockets::attach(recovery::ComponentHost& host,
                                                       std::string_view channel_name) {
  ChannelEnd* channel = host.channel(channel_name);
  if (channel == nullptr) return Error{Errc::invalid_argument, 0, "udp sockets: no such channel"};
  std::unique_ptr<UdpSockets> sockets(new UdpSockets(host, *channel, host.peer_of(channel_name)));
  UdpSockets* self = sockets.get();
  if (auto s = host.loop().add_input(channel->in, [self](std::span<const Message> m) { self->on_messages(m); });
      !s) {
    return s.error();
  }
  return sockets;
}

Result<std::uint32_t> UdpSockets::open(std::uint16_t local_port) {
  const std::uint32_t socket = next_socket_++;
  const Message message =
      Message::make(stack::kSocketOpenKind, stack::SocketOpenBody{socket, local_port, kProtocolUdp, 0});
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

Status UdpSockets::send_to(std::uint32_t socket, std::uint32_t address, std::uint16_t port,
                           std::span<const std::byte> payload) {
  if (payload.size() > max_payload()) return Error{Errc::invalid_argument, 0, "udp sockets: payload too large"};
  BufferHandle handle;
  if (host_.pool().alloc_burst(host_.id(), std::span(&handle, 1)) != 1) {
    return Error{Errc::exhausted, 0, "udp sockets: no free buffer"};
  }
  handle.offset = kPayloadOffset;
  handle.length = static_cast<std::uint16_t>(payload.size());
  auto bytes = host_.pool().bytes(host_.id(), handle);
  if (!bytes) return bytes.error();
  if (!payload.empty()) std::memcpy(bytes->data(), payload.data(), payload.size());
  const stack::SocketDatagramBody body{handle, socket, address, port, 0};
  if (!stack::send_with_buffer(host_, channel_, udp_, handle,
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
      auto bytes = host_.pool().bytes(host_.id(), body.payload);
      if (!bytes) {
        ++refused_;
        continue;
      }
      ++received_;
      if (datagram_handler_) {
        datagram_handler_(Datagram{body.socket, body.remote_address, body.remote_port, body.local_port,
                                   bytes.value()});
      }
      (void)host_.pool().free(host_.id(), body.payload);
      host_.served();
    } else if (message.kind == stack::kSocketStatusKind) {
      const auto body = message.read<stack::SocketStatusBody>();
      if (status_handler_) status_handler_(body.socket, body.error, body.local_port);
    } else {
      ++refused_;
    }
  }
}

}  // namespace flotilla::sockets
