// What every driver's device looks like to the driver process (drivers/driver_main.cpp): Ethernet frames
// in and out as buffers of the supervisor's pool. A port owns (in the pool's sense) every buffer
// the device holds: the ones posted for receive and the ones queued for transmit. So when the driver
// dies, BufferPool::reclaim(driver) gives all of them back, and a restarted driver builds its port
// afresh (a new socket or port; nothing of the dead one is reused).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/result.hpp"

namespace flotilla::drivers {

struct PortStats {
  std::uint64_t rx_frames = 0;
  std::uint64_t rx_bytes = 0;
  std::uint64_t tx_frames = 0;
  std::uint64_t tx_bytes = 0;
  std::uint64_t rx_dropped = 0;  // frames the device or the port dropped (no buffer, ring full)
  std::uint64_t tx_dropped = 0;  // frames refused for transmit (bad handle, too long, ring full)
  std::uint64_t early_drops = 0;  // frames dropped before user space (XDP block rules)
};

class PacketPort {
 public:
  virtual ~PacketPort() = default;

  // Frames that arrived. Each returned handle covers one whole Ethernet frame (handle.offset is
  // where it starts inside the buffer) and is owned by the driver component.
  virtual std::size_t receive_burst(std::span<BufferHandle> out) = 0;

  // Queues frames for transmit. The port takes every handle it accepts (returns how many, from the
  // front of `frames`), frees it to the pool once the device is done with it, and leaves the rest
  // with the caller, who retries or frees them.
  virtual std::size_t transmit_burst(std::span<const BufferHandle> frames) = 0;

  // Housekeeping the device needs even with no traffic: refilling receive buffers, reaping
  // transmit completions, kicking the kernel. Returns whether it did anything.
  virtual bool service() = 0;

  // A descriptor that polls readable when frames wait (AF_XDP's socket), so the driver can sleep
  // until the device has work; -1 when the device has none and must be polled on a timer.
  virtual int wait_fd() const { return -1; }

  virtual PortStats stats() const = 0;
  virtual std::string describe() const = 0;  // e.g. "af_xdp veth0 queue 0 (native, copy)"
};

}  // namespace flotilla::drivers
