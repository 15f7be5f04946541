// The driver as a component: one device port (drivers/packet_port.hpp) and the channel to IP.
// Received frames go to IP as they are, in pool buffers; frames from IP go to the device, a burst at
// a time. The block rules the packet filter compiled for the XDP program arrive in a region pf
// writes (components/formats/xdp_block_list.hpp); the driver looks at its sequence word on every
// tick and installs a list that changed. The driver never sees rule text.
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <string>

#include "components/formats/xdp_block_list.hpp"
#include "dataplane/channel_outputs.hpp"
#include "dataplane/component.hpp"
#include "dataplane/component_loop.hpp"
#include "drivers/device_waker.hpp"
#include "drivers/impaired_port.hpp"
#include "drivers/packet_port.hpp"

namespace flotilla::drivers {

class Driver final : public Component {
 public:
  static constexpr std::uint64_t kTickPeriodMs = 100;
  // Installs a block list in the device's XDP program.
  using InstallBlockRules = std::function<Status(std::span<const flotilla_xdp_block_rule>)>;
  // Tells the supervisor's event log about a failure the driver survived (ComponentHost::report).
  using Report = std::function<void(std::string_view)>;

  struct Link {
    std::array<std::uint8_t, 6> mac{};
    std::uint16_t mtu = 1500;
  };

  // `ip`: the index of the channel to IP in `channels`. `impaired`: the port itself when it is an
  // ImpairedPort (its held frames are due at times no device event marks), else null.
  // `block_list`: the region pf publishes block rules in (empty: none); `install` is empty when the
  // device has no XDP program, and the list is then ignored. A failed offload is counted
  // (xdp_offload_failed), said on stderr and reported through `report`.
  Driver(ChannelOutputs& channels, std::size_t ip, std::unique_ptr<PacketPort> port, ImpairedPort* impaired,
         const Link& link, std::span<const std::byte> block_list, InstallBlockRules install, Report report,
         NamedCounterTable& counters);

  PacketPort& port() { return *port_; }
  // Tells IP the link's address and MTU.
  void announce_link();
  // A device with a descriptor wakes `loop` through a DeviceWaker thread while the loop sleeps.
  void wake_through_device(ComponentLoop& loop);

  void on_message(std::size_t channel, const Message& message, std::uint64_t now_ns) override;
  void on_burst_end(std::size_t channel) override;
  bool reads(std::size_t channel) const override { return channel == ip_; }
  bool poll(std::uint64_t now_ns) override;
  std::uint64_t next_wake_ns() const override;
  std::uint64_t tick_period_ms() const override { return kTickPeriodMs; }
  void on_tick(std::uint64_t now_ns) override;
  void on_peer_restarted(ComponentId peer) override;

 private:
  void mirror_port_stats();
  void install_block_list();

  ChannelOutputs& channels_;
  std::size_t ip_;
  std::unique_ptr<PacketPort> port_;
  ImpairedPort* impaired_;
  Link link_;
  const formats::XdpBlockList* block_list_;
  InstallBlockRules install_;
  Report report_;
  void offload_failed(const std::string& why);
  std::uint64_t installed_sequence_ = 0;
  formats::XdpBlockListCopy block_copy_;
  std::optional<DeviceWaker> waker_;

  NamedCounter& rx_frames_;
  NamedCounter& tx_frames_;
  NamedCounter& rx_to_ip_full_;
  NamedCounter& tx_refused_;
  NamedCounter& device_rx_dropped_;
  NamedCounter& device_tx_dropped_;
  NamedCounter& xdp_early_drops_;
  NamedCounter& malformed_;
  NamedCounter& offload_failed_;
  // A new port counts from zero, so each incarnation adds its device counts to what the earlier
  // ones left.
  std::uint64_t rx_dropped_before_;
  std::uint64_t tx_dropped_before_;
  std::uint64_t early_drops_before_;

  std::array<BufferHandle, ComponentLoop::kBurst> received_{};
  std::array<BufferHandle, ComponentLoop::kBurst> outgoing_{};
  std::size_t outgoing_count_ = 0;
};

}  // namespace flotilla::drivers
