// The one way a stack component passes a pool buffer to its peer: hand the buffer over, then send
// the message that names it, so the receiver owns the buffer by the time it reads the message.
#pragma once

#include <span>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/message.hpp"
#include "dataplane/component_host.hpp"

namespace flotilla {

// True when the peer now owns `handle` and has the message. False: nothing was sent and the
// caller still owns the buffer (the ring is full, or the handle is not the caller's).
inline bool send_with_buffer(ComponentHost& host, ChannelEnd& channel, ComponentId peer,
                             const BufferHandle& handle, const Message& message) {
  auto room = channel.out.room();
  if (!room || room.value() == 0) return false;
  if (!host.pool().hand_off(handle, host.id(), peer)) return false;
  auto sent = host.send(channel, std::span(&message, 1));
  if (sent && sent.value() == 1) return true;
  // Not sent after all (the ring went bad): the peer never saw the buffer, so take it back.
  (void)host.pool().hand_off(handle, peer, host.id());
  return false;
}

}  // namespace flotilla
