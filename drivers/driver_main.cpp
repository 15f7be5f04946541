// flotilla-driver: the driver process (Driver, driver.hpp), run by the generic component main. It
// owns one device port (af_xdp, dpdk or memwire; see drivers/packet_port.hpp) and moves frames
// between it and the IP process. A restart builds the port afresh (the supervisor has already
// reclaimed the dead incarnation's buffers).
//
// Waiting: the driver sleeps on its doorbell, which IP rings when it sends. A device with a
// descriptor (AF_XDP) wakes it through a DeviceWaker thread; one without (DPDK, memwire) is polled
// again after at most --idle-poll-us.
#include <linux/capability.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "components/formats/xdp_block_list.hpp"
#include "dataplane/component_main.hpp"
#include "dataplane/hash.hpp"
#include "drivers/af_xdp/af_xdp_port.hpp"
#include "drivers/dpdk/dpdk_port.hpp"
#include "drivers/driver.hpp"
#include "drivers/impaired_port.hpp"
#include "drivers/memwire/memwire_port.hpp"

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
  std::string channel = "driver-ip";
  std::uint32_t idle_poll_us = 200;
  std::string impair;
  drivers::LinkImpairment impairment;  // from `impair`, by check_options
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

// The port, and what installs block rules in its XDP program (empty when it has none).
struct OpenedPort {
  std::unique_ptr<drivers::PacketPort> port;
  drivers::Driver::InstallBlockRules install;
};

Result<OpenedPort> open_port(const Options& options, BufferPool& pool, ComponentId self) {
  if (options.type == "af_xdp") {
    drivers::AfXdpOptions xdp;
    xdp.interface = options.interface;
    xdp.queue = options.queue;
    xdp.mode = options.xdp_mode == "native" ? drivers::AfXdpOptions::Mode::native
               : options.xdp_mode == "skb"  ? drivers::AfXdpOptions::Mode::skb
                                            : drivers::AfXdpOptions::Mode::native_then_skb;
    auto port = drivers::AfXdpPort::open(xdp, pool, self);
    if (!port) return port.error();
    drivers::AfXdpPort* af_xdp = port.value().get();
    return OpenedPort{std::move(port.value()), [af_xdp](std::span<const flotilla_xdp_block_rule> rules) {
                        return af_xdp->set_block_rules(rules);
                      }};
  }
  if (options.type == "dpdk") {
    drivers::DpdkOptions dpdk;
    dpdk.device = !options.dpdk_device.empty() ? options.dpdk_device
                                               : "net_af_packet0,iface=" + options.interface;
    auto port = drivers::DpdkPort::open(dpdk, pool, self);
    if (!port) return port.error();
    return OpenedPort{std::move(port.value()), {}};
  }
  drivers::MemwireOptions wire;
  wire.path = options.memwire_path;
  wire.side = options.memwire_side == "b" ? drivers::MemwireOptions::Side::b : drivers::MemwireOptions::Side::a;
  auto port = drivers::MemwirePort::open(wire, pool, self);
  if (!port) return port.error();
  return OpenedPort{std::move(port.value()), {}};
}

struct DriverProgram {
  static constexpr const char* kName = "flotilla-driver";
  static constexpr const char* kDescription =
      "flotilla-driver: the packet I/O process of the Flotilla stack (started by the supervisor)";
  using Options = ::Options;

  static void declare_options(CLI::App& app, Options& options) {
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
    app.add_option("--channel", options.channel, "Channel to IP")->capture_default_str();
    app.add_option("--impair", options.impair,
                   "emulate a bad link, e.g. \"loss=1%,delay=25ms,reorder=25%,direction=rx\" (drivers/impaired_port.hpp)");
    app.add_option("--idle-poll-us", options.idle_poll_us,
                   "dpdk, memwire: longest sleep before polling the device again")
        ->check(CLI::Range(10u, 100000u))->capture_default_str();
  }

  static Status check_options(Options& options) {
    if (options.type != "memwire" && options.interface.empty() && options.dpdk_device.empty()) {
      std::fprintf(stderr, "%s: --interface is required for %s\n", kName, options.type.c_str());
      return Error{Errc::invalid_argument, 0, "--interface"};
    }
    if (options.type == "memwire" && options.memwire_path.empty()) {
      std::fprintf(stderr, "%s: --memwire-path is required for memwire\n", kName);
      return Error{Errc::invalid_argument, 0, "--memwire-path"};
    }
    const auto impairment = drivers::parse_impairment(options.impair);
    if (!impairment) {
      std::fprintf(stderr, "%s: --impair '%s': %s\n", kName, options.impair.c_str(),
                   impairment.error().message().c_str());
      return Error{Errc::invalid_argument, 0, "--impair"};
    }
    options.impairment = impairment.value();
    return {};
  }

  // Opening an AF_XDP port loads and attaches an XDP program (CAP_BPF, CAP_PERFMON for the
  // verifier's pointer rules, CAP_NET_ADMIN) and binds an XDP socket (CAP_NET_RAW); without
  // CAP_NET_RAW or CAP_PERFMON the open fails (tried); its UMEM is locked memory, and with another
  // stack's on the machine (the same user's) beyond RLIMIT_MEMLOCK without CAP_IPC_LOCK (ENOBUFS).
  // Only these are kept while a sandboxed driver sets up, none once it runs.
  static std::span<const int> setup_capabilities() {
    static constexpr int kSetup[] = {CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON, CAP_IPC_LOCK};
    return kSetup;
  }

  // At run time AF_XDP needs the kicks on its socket (sendto, recvfrom, poll: the runtime's list has
  // them), the block-rule and drop-counter maps (bpf, on the descriptors it holds; without CAP_BPF
  // nothing else), and the DeviceWaker's thread. DPDK starts its own threads inside rte_eal_init,
  // before any sandbox could cover them, so a DPDK driver runs without one.
  static std::optional<SandboxPolicy> sandbox(const Options& options) {
    static constexpr std::string_view kAfXdpCalls[] = {"bpf"};
    if (options.type == "dpdk") return std::nullopt;
    SandboxPolicy policy;
    if (options.type == "af_xdp") {
      policy.system_calls = kAfXdpCalls;
      policy.starts_threads = true;
    }
    return policy;
  }

  // AF_XDP's socket wakes the loop (Driver::wake_through_device); other devices are polled on a timer.
  static WaitPolicy wait_policy(const Options& options) {
    WaitPolicy policy = WaitPolicy::shared_core();
    if (options.type != "af_xdp") policy.sleep_max = std::chrono::microseconds(options.idle_poll_us);
    return policy;
  }

  static Result<std::unique_ptr<Component>> create(ComponentHost& host, ChannelOutputs& channels, Options& options) {
    const auto ip = required_channel(kName, channels, options.channel, "IP");
    if (!ip) return ip.error();
    auto opened = open_port(options, host.pool(), host.id());
    if (!opened) {
      std::fprintf(stderr, "%s: cannot open the %s port\n", kName, options.type.c_str());
      return opened.error();
    }
    std::unique_ptr<drivers::PacketPort> port = std::move(opened.value().port);
    drivers::ImpairedPort* impaired = nullptr;
    if (options.impairment.active()) {
      auto wrapped = std::make_unique<drivers::ImpairedPort>(std::move(port), options.impairment, host.pool(), host.id());
      impaired = wrapped.get();
      port = std::move(wrapped);
    }
    const drivers::Driver::Link link{link_mac(options.interface, options.memwire_path + options.memwire_side), 1500};
    auto driver = std::make_unique<drivers::Driver>(channels, *ip, std::move(port), impaired, link,
                                                    host.region(formats::kXdpBlockListRegion),
                                                    std::move(opened.value().install),
                                                    [&host](std::string_view why) { (void)host.report(why); },
                                                    host.named_counters());
    driver->wake_through_device(host.loop());
    driver->announce_link();
    std::fprintf(stderr, "%s: %s\n", kName, driver->port().describe().c_str());
    return std::unique_ptr<Component>(std::move(driver));
  }
};

}  // namespace

int main(int argc, char** argv) { return component_main<DriverProgram>(argc, argv); }
