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
// caller still owns the buffer (the ring is full, or the handle is not the caller's). `send_one`
// sends the message on `channel` and says whether it went.
template <class SendOne>
bool send_with_buffer(BufferPool& pool, ComponentId self, ChannelEnd& channel, ComponentId peer,
                      const BufferHandle& handle, const Message& message, SendOne&& send_one) {
  auto room = channel.out.room();
  if (!room || room.value() == 0) return false;
  if (!pool.hand_off(handle, self, peer)) return false;
  if (send_one(message)) return true;
  // Not sent after all (the ring went bad): the peer never saw the buffer, so take it back.
  (void)pool.hand_off(handle, peer, self);
  return false;
}

inline bool send_with_buffer(ComponentHost& host, ChannelEnd& channel, ComponentId peer,
                             const BufferHandle& handle, const Message& message) {
  return send_with_buffer(host.pool(), host.id(), channel, peer, handle, message, [&](const Message& one) {
    auto sent = host.send(channel, std::span(&one, 1));
    return sent && sent.value() == 1;
  });
}

}  // namespace flotilla
