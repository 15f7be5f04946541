// The unit every channel carries: one 64-byte, cache-line-sized message. Components define their
// own bodies (trivially copyable structs of at most 56 bytes) and read them back with a size check.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>

#include "dataplane/cpu.hpp"

namespace flotilla {

// Who a component is. 0 means "nobody": a free buffer, an unset owner.
using ComponentId = std::uint32_t;
inline constexpr ComponentId kNoComponent = 0;

enum class MessageKind : std::uint16_t {
  none = 0,
  data = 1,            // an opaque body; its meaning is agreed by the two ends
  buffer = 2,          // a BufferHandle: a packet or payload in a shared pool
  peer_restarted = 3,  // control: the peer on this channel is a new incarnation
  user = 256,          // components number their own kinds from here
};

struct alignas(kCacheLine) Message {
  static constexpr std::size_t kBodyBytes = 56;

  MessageKind kind = MessageKind::none;
  std::uint16_t flags = 0;
  std::uint32_t check = 0;  // reserved for an integrity check over the body
  std::array<std::byte, kBodyBytes> body{};

  template <class Body>
  static Message make(MessageKind kind, const Body& value) {
    static_assert(std::is_trivially_copyable_v<Body>, "message bodies are copied as bytes");
    static_assert(sizeof(Body) <= kBodyBytes, "message body larger than 56 bytes");
    Message message;
    message.kind = kind;
    std::memcpy(message.body.data(), &value, sizeof(Body));
    return message;
  }

  // Copies the body out. The bytes came from another process, so the caller still validates the
  // fields; copying first means the sender cannot change them after they were checked.
  template <class Body>
  Body read() const {
    static_assert(std::is_trivially_copyable_v<Body>, "message bodies are copied as bytes");
    static_assert(sizeof(Body) <= kBodyBytes, "message body larger than 56 bytes");
    Body value;
    std::memcpy(&value, body.data(), sizeof(Body));
    return value;
  }
};
static_assert(sizeof(Message) == kCacheLine);

struct PeerRestartedBody {
  std::uint64_t incarnation;
};

}  // namespace flotilla
