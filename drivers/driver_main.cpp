// flotilla-driver: the driver process. It owns one device port (af_xdp, dpdk or memwire; see
// drivers/packet_port.hpp) and moves frames between it and the IP process: received frames are
// handed to IP as they are, in pool buffers, and frames from IP go to the device. A restart
// builds the port afresh (the supervisor has already reclaimed the dead incarnation's buffers).
//
// Waiting: the driver sleeps on its doorbell, which IP rings when it sends. A device with a
// descriptor (AF_XDP) wakes it through a DeviceWaker thread; one without (DPDK, memwire) is polled
// again after at most --idle-poll-us.
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "dataplane/buffer_send.hpp"
#include "components/pf/rules.hpp"
#include "components/pf/xdp_offload.hpp"
#include "dataplane/hash.hpp"
#include "drivers/af_xdp/af_xdp_port.hpp"
#include "drivers/device_waker.hpp"
#include "drivers/dpdk/dpdk_port.hpp"
#include "drivers/impaired_port.hpp"
#include "drivers/memwire/memwire_port.hpp"
#include "dataplane/component_host.hpp"

namespace {

using namespace flotilla;

struct Options {
  std::string type = "af_xdp";
  std::string interface;
  std::uint32_t queue = 0;
  std::string xdp_mode = "native_then_skb";
  std::string dpdk_device;
  std::string memwire_path;
  std::string memwire_side = "a";
  std::string block_rules;
  std::string channel = "driver-ip";
  std::uint32_t idle_poll_us = 200;
  std::string impair;
};

// The interface's MAC address, or one derived from `seed` when there is no interface (memwire):
// locally administered, unicast.
std::array<std::uint8_t, 6> link_mac(const std::string& interface, const std::string& seed) {
  std::array<std::uint8_t, 6> mac{};
  if (!interface.empty()) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq request{};
    std::strncpy(request.ifr_name, interface.c_str(), IFNAMSIZ - 1);
    const bool ok = fd >= 0 && ::ioctl(fd, SIOCGIFHWADDR, &request) == 0;
    if (fd >= 0) ::close(fd);
    if (ok) {
      std::memcpy(mac.data(), request.ifr_hwaddr.sa_data, 6);
      return mac;
    }
  }
  const std::uint64_t bits = mix64(std::hash<std::string>{}(seed));
  for (std::size_t i = 0; i < 6; ++i) mac[i] = static_cast<std::uint8_t>(bits >> (8 * i));
  mac[0] = static_cast<std::uint8_t>((mac[0] & 0xfe) | 0x02);
  return mac;
}

Result<std::unique_ptr<drivers::PacketPort>> open_port(const Options& options, BufferPool& pool,
                                                       ComponentId self) {
  if (options.type == "af_xdp") {
    drivers::AfXdpOptions xdp;
    xdp.interface = options.interface;
    xdp.queue = options.queue;
    xdp.mode = options.xdp_mode == "native" ? drivers::AfXdpOptions::Mode::native
               : options.xdp_mode == "skb"  ? drivers::AfXdpOptions::Mode::skb
                                            : drivers::AfXdpOptions::Mode::native_then_skb;
    auto port = drivers::AfXdpPort::open(xdp, pool, self);
    if (!port) return port.error();
    if (!options.block_rules.empty()) {
      auto parsed = pf::parse_rules(options.block_rules, "rules");
      if (auto* rules = std::get_if<pf::RuleSet>(&parsed)) {
        const auto offload = pf::offloadable_block_rules(*rules);
        if (auto s = port.value()->set_block_rules(offload); !s) return s.error();
        std::fprintf(stderr, "flotilla-driver: %zu block rules offloaded to XDP\n", offload.size());
      }
    }
    return std::unique_ptr<drivers::PacketPort>(std::move(port.value()));
  }
  if (options.type == "dpdk") {
    drivers::DpdkOptions dpdk;
    dpdk.device = !options.dpdk_device.empty() ? options.dpdk_device
                                               : "net_af_packet0,iface=" + options.interface;
    auto port = drivers::DpdkPort::open(dpdk, pool, self);
    if (!port) return port.error();
    return std::unique_ptr<drivers::PacketPort>(std::move(port.value()));
  }
  drivers::MemwireOptions wire;
  wire.path = options.memwire_path;
  wire.side = options.memwire_side == "b" ? drivers::MemwireOptions::Side::b : drivers::MemwireOptions::Side::a;
  auto port = drivers::MemwirePort::open(wire, pool, self);
  if (!port) return port.error();
  return std::unique_ptr<drivers::PacketPort>(std::move(port.value()));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flotilla-driver: the packet I/O process of the Flotilla stack (started by the supervisor)"};
  Options options;
  app.add_option("--type", options.type, "af_xdp, dpdk or memwire")
      ->check(CLI::IsMember({"af_xdp", "dpdk", "memwire"}))->capture_default_str();
  app.add_option("--interface", options.interface, "Network interface (af_xdp, dpdk on net_af_packet)");
  app.add_option("--queue", options.queue, "af_xdp: receive queue")->capture_default_str();
  app.add_option("--xdp-mode", options.xdp_mode, "af_xdp: native_then_skb, native or skb")
      ->check(CLI::IsMember({"native_then_skb", "native", "skb"}))->capture_default_str();
  app.add_option("--dpdk-device", options.dpdk_device, "dpdk: vdev spec or PCI address");
  app.add_option("--memwire-path", options.memwire_path, "memwire: the shared file");
  app.add_option("--memwire-side", options.memwire_side, "memwire: a or b")
      ->check(CLI::IsMember({"a", "b"}))->capture_default_str();
  app.add_option("--block-rules", options.block_rules,
                 "af_xdp: the packet filter's rules; stateless block rules are dropped in XDP");
  app.add_option("--channel", options.channel, "Channel to IP")->capture_default_str();
  app.add_option("--impair", options.impair,
                 "emulate a bad link, e.g. \"loss=1%,delay=25ms,reorder=25%,direction=rx\" (drivers/impaired_port.hpp)");
  app.add_option("--idle-poll-us", options.idle_poll_us,
                 "dpdk, memwire: longest sleep before polling the device again")
      ->check(CLI::Range(10u, 100000u))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (options.type != "memwire" && options.interface.empty() && options.dpdk_device.empty()) {
    std::fprintf(stderr, "flotilla-driver: --interface is required for %s\n", options.type.c_str());
    return 2;
  }
  if (options.type == "memwire" && options.memwire_path.empty()) {
    std::fprintf(stderr, "flotilla-driver: --memwire-path is required for memwire\n");
    return 2;
  }

  const auto impairment = drivers::parse_impairment(options.impair);
  if (!impairment) {
    std::fprintf(stderr, "flotilla-driver: --impair '%s': %s\n", options.impair.c_str(),
                 impairment.error().message().c_str());
    return 2;
  }

  WaitPolicy policy = WaitPolicy::shared_core();
  // AF_XDP's socket wakes the loop (DeviceWaker); other devices are polled on a timer.
  if (options.type != "af_xdp") policy.sleep_max = std::chrono::microseconds(options.idle_poll_us);
  auto attached = ComponentHost::attach(policy);
  if (!attached) {
    std::fprintf(stderr, "flotilla-driver: %s\n", attached.error().message().c_str());
    return 1;
  }
  ComponentHost& host = *attached.value();
  ChannelEnd* ip = host.channel(options.channel);
  if (ip == nullptr) {
    std::fprintf(stderr, "flotilla-driver: no channel '%s' to IP\n", options.channel.c_str());
    return 2;
  }
  const ComponentId ip_id = host.peer_of(options.channel);
  auto opened = open_port(options, host.pool(), host.id());
  if (!opened) {
    std::fprintf(stderr, "flotilla-driver: %s: %s\n", options.type.c_str(), opened.error().message().c_str());
    return 1;
  }
  drivers::ImpairedPort* impaired = nullptr;
  if (impairment->active()) {
    auto wrapped = std::make_unique<drivers::ImpairedPort>(std::move(opened.value()), *impairment, host.pool(), host.id());
    impaired = wrapped.get();
    opened.value() = std::move(wrapped);
  }
  drivers::PacketPort& port = *opened.value();
  const auto mac = link_mac(options.interface, options.memwire_path + options.memwire_side);

  NamedCounterTable& named = host.named_counters();
  NamedCounter& rx_frames = named.counter("rx_frames");
  NamedCounter& tx_frames = named.counter("tx_frames");
  NamedCounter& rx_to_ip_full = named.counter("rx_to_ip_full");
  NamedCounter& tx_refused = named.counter("tx_refused");
  NamedCounter& device_rx_dropped = named.counter("device_rx_dropped");
  NamedCounter& device_tx_dropped = named.counter("device_tx_dropped");
  NamedCounter& xdp_early_drops = named.counter("xdp_early_drops");
  NamedCounter& malformed = named.counter("malformed_messages");

  auto announce_link = [&] {
    stack::LinkInfoBody link{};
    std::memcpy(link.mac, mac.data(), 6);
    link.mtu = 1500;
    const Message message = Message::make(stack::kLinkInfoKind, link);
    (void)host.send(*ip, std::span(&message, 1));
  };

  // Frames an impaired link holds are due at a time no device event marks: a timer wakes the loop.
  Timer release_held([](Timer&) {});
  std::array<BufferHandle, ComponentLoop::kBurst> received{};
  (void)host.loop().add_poller([&] {
    if (impaired != nullptr) host.loop().wake_at(release_held, impaired->next_release_ns());
    bool worked = port.service();
    const std::size_t count = port.receive_burst(received);
    for (std::size_t i = 0; i < count; ++i) {
      rx_frames.add();
      const Message message = Message::make(stack::kFrameKind, stack::FrameBody{received[i]});
      if (!send_with_buffer(host, *ip, ip_id, received[i], message)) {
        rx_to_ip_full.add();
        (void)host.pool().free(host.id(), received[i]);
      }
    }
    return worked || count != 0;
  });

  std::array<BufferHandle, ComponentLoop::kBurst> outgoing{};
  (void)host.loop().add_input(ip->in, [&](std::span<const Message> messages) {
    std::size_t count = 0;
    for (const Message& message : messages) {
      if (message.kind != stack::kFrameKind) {
        malformed.add();
        continue;
      }
      const BufferHandle frame = message.read<stack::FrameBody>().frame;
      if (!host.pool().bytes(host.id(), frame)) continue;  // counted by the pool
      outgoing[count++] = frame;
    }
    const std::size_t accepted = port.transmit_burst(std::span(outgoing.data(), count));
    tx_frames.add(accepted);
    for (std::size_t i = accepted; i < count; ++i) {
      tx_refused.add();
      (void)host.pool().free(host.id(), outgoing[i]);
    }
    host.served();
  });

  host.on_peer_restarted([&](ComponentId peer, std::uint64_t) {
    if (peer == ip_id) announce_link();
  });
  std::optional<drivers::DeviceWaker> waker;
  if (port.wait_fd() >= 0) {
    waker.emplace(port.wait_fd(), host.loop().doorbell());
    host.loop().set_sleep_hook([&] { waker->arm(); });
  }
  // Device counters are mirrored into named counters for `flotilla top`. A new port counts from
  // zero, so each incarnation adds its counts to what the earlier ones left.
  const std::uint64_t rx_dropped_before = device_rx_dropped.read();
  const std::uint64_t tx_dropped_before = device_tx_dropped.read();
  const std::uint64_t early_drops_before = xdp_early_drops.read();
  Timer mirror([&](Timer& self) {
    const drivers::PortStats stats = port.stats();
    device_rx_dropped.value.store(rx_dropped_before + stats.rx_dropped, std::memory_order_relaxed);
    device_tx_dropped.value.store(tx_dropped_before + stats.tx_dropped, std::memory_order_relaxed);
    xdp_early_drops.value.store(early_drops_before + stats.early_drops, std::memory_order_relaxed);
    host.loop().timers().arm(self, host.loop().now_ms() + 100);
  });
  host.loop().timers().arm(mirror, host.loop().now_ms() + 100);
  announce_link();
  std::fprintf(stderr, "flotilla-driver: %s\n", port.describe().c_str());
  host.run();
  return 0;
}
