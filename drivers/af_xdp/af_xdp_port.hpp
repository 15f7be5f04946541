// The af_xdp driver's device: one AF_XDP socket on one queue of an interface that belongs to
// Flotilla, plus the XDP program (drivers/bpf/flotilla_xdp.bpf.c) that steers every frame of that
// queue to the socket and drops what the packet filter's stateless block rules name.
//
// The UMEM is the buffer pool's data area itself, so frames are never copied between the two: a
// received frame is already a pool buffer, and a frame to send is posted where it lies. Every
// buffer in the fill ring or the transmit ring is owned by the driver component, so after a crash
// BufferPool::reclaim(driver) gives them back; a restarted driver replaces the XDP program the dead
// one left on the interface.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <xdp/xsk.h>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/message.hpp"
#include "dataplane/result.hpp"
#include "components/formats/xdp_block_rule.h"
#include "drivers/packet_port.hpp"

struct bpf_object;

namespace flotilla::drivers {

struct AfXdpOptions {
  std::string interface;
  std::uint32_t queue = 0;
  enum class Mode { native_then_skb, native, skb } mode = Mode::native_then_skb;
  std::uint32_t fill_buffers = 1024;  // buffers posted for receive
  bool zero_copy = false;  // ask for XDP_ZEROCOPY first (veth refuses it); default copy mode
};

class AfXdpPort final : public PacketPort {
 public:
  // The longest frame transmit accepts: Ethernet header plus a 1500-byte payload, no FCS.
  static constexpr std::uint16_t kMaxFrameLength = 1514;
  static constexpr std::uint16_t kMinFrameLength = 14;  // an Ethernet header

  // Removes any XDP program already on the interface (a dead incarnation's), loads and attaches
  // ours, and binds the socket with `pool`'s data area as its UMEM. `pool` must outlive the port.
  static Result<std::unique_ptr<AfXdpPort>> open(const AfXdpOptions& options, BufferPool& pool,
                                                 ComponentId owner);
  // Closes the socket, detaches the program (if it is still ours) and frees every buffer the
  // device held back to the pool.
  ~AfXdpPort() override;
  AfXdpPort(const AfXdpPort&) = delete;
  AfXdpPort& operator=(const AfXdpPort&) = delete;

  std::size_t receive_burst(std::span<BufferHandle> out) override;
  // A handle that is not the driver's, lies outside its buffer, or is shorter than an Ethernet
  // header or longer than kMaxFrameLength is taken too (counted in tx_dropped, freed if the
  // driver owns it), so the caller never retries it. When the ring is full, the rest stays with
  // the caller, uncounted.
  std::size_t transmit_burst(std::span<const BufferHandle> frames) override;
  bool service() override;
  PortStats stats() const override;
  int wait_fd() const override { return fd(); }
  std::string describe() const override;

  // Replaces the block rules (at most FLOTILLA_XDP_MAX_RULES): each given rule is written to a
  // slot with in_use set, every other slot is cleared. Not atomic as a whole: while it runs the
  // program may see a mix of old and new rules.
  Status set_block_rules(std::span<const flotilla_xdp_block_rule> rules);
  // Frames the XDP program dropped on a rule, summed over the CPUs (one bpf syscall).
  std::uint64_t early_drops() const;

  enum class Attach { native, skb };
  Attach attach_mode() const { return attach_; }
  bool zero_copy() const { return zero_copy_; }
  // The socket, for poll(): readable when frames arrived.
  int fd() const;

 private:
  enum class Held : std::uint8_t { no, fill, transmit };
  static constexpr std::uint32_t kBatch = 64;

  AfXdpPort(BufferPool& pool, ComponentId owner, const AfXdpOptions& options);
  Status remove_attached_programs();
  Status load_program();
  Status attach_program();
  Status create_socket();
  bool refill();
  bool reap_completions();
  void kick_transmit();
  bool transmit_pending();
  void release_held_buffers();
  std::uint64_t address_of(std::uint32_t index, std::uint16_t offset) const {
    return std::uint64_t{index} * chunk_size_ + offset;
  }

  BufferPool* pool_;
  ComponentId owner_;
  AfXdpOptions options_;
  int ifindex_ = 0;
  std::uint32_t chunk_size_ = 0;
  std::uint32_t fill_ring_size_ = 0;
  std::uint32_t tx_ring_size_ = 0;

  bpf_object* object_ = nullptr;
  int program_fd_ = -1;
  int xsks_map_fd_ = -1;
  int rules_map_fd_ = -1;
  int drops_map_fd_ = -1;
  bool attached_ = false;
  Attach attach_ = Attach::native;
  bool zero_copy_ = false;

  xsk_umem* umem_ = nullptr;
  xsk_socket* socket_ = nullptr;
  xsk_ring_prod fill_{};
  xsk_ring_cons completion_{};
  xsk_ring_cons rx_{};
  xsk_ring_prod tx_{};

  // Which buffers the device holds (by pool index), so completions and the destructor free only
  // what the port itself posted. Sized once at open.
  std::vector<Held> held_;
  std::uint32_t fill_posted_ = 0;  // in the fill ring or taken by the kernel, not yet received
  std::uint32_t tx_in_flight_ = 0;  // in the transmit ring or sent, not yet completed
  std::array<BufferHandle, kBatch> scratch_{};
  mutable std::vector<std::uint64_t> per_cpu_drops_;
  PortStats stats_{};
};

}  // namespace flotilla::drivers
