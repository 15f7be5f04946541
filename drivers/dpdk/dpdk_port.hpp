// A DPDK ethdev as a Flotilla port: one rx and one tx queue on a vdev (net_af_packet, net_af_xdp,
// ...) or a PCI device, polled from the driver loop.
//
// This machine has no hugepages, so EAL runs with --no-huge and its memory is private anonymous
// memory that cannot be shared with the supervisor's pool. Hence every frame is copied once:
// receive copies each mbuf into a Flotilla buffer (allocated in bursts through a PoolCache, owned
// by the driver component), transmit copies a Flotilla buffer into a fresh mbuf and frees the
// Flotilla buffer at once. Measured copy cost per 1500-byte frame (print_copy_cost in
// drivers/tests/dpdk_test.cpp; 2-vCPU Firecracker VM, debugoptimized, pinned, bursts of 32, warm
// caches, no steal): into an mbuf (mbuf alloc from a cached mempool + append + memcpy + bulk free)
// about 45 ns, out of one (PoolCache alloc + handle check + memcpy + PoolCache free) about 43 ns,
// in the runs where the machine was quiet; 70-120 ns each in 20 runs while others loaded it (load
// average 3-4). 1500 B in 45 ns is ~33 GB/s; small next to the af_packet / af_xdp system call per
// burst; a benchmark will pin it down. With
// hugepages and an external-memory mempool over the pool both copies could go; not done here.
//
// EAL can be initialised once per process. The first open() does it (--no-huge --no-shconf -m 256
// --file-prefix flo<pid>, --no-pci unless the device is a PCI address, one lcore with the calling
// thread's current CPU set, then the configured extra arguments) and remembers the outcome; later
// opens reuse it, or return the remembered error. EAL failures come back as an Error, never an
// abort. A vdev is probed with rte_dev_probe (a PCI device by EAL itself, -a <address>) and the
// device is closed and removed again on close, so a port can be opened, closed and opened again in
// one process. One port per device: the port takes the device over.
//
// Seen on this machine: net_af_xdp on a veth needs rx_descriptors of 1024 or more (256 makes its
// xsk set-up fail with EINVAL), and a net_af_xdp port opened, closed and opened again in the same
// process failed with 2048 descriptors ("Failed to create xsk socket"); a restarted driver is a
// new process, so this does not bite the stack. net_af_packet reopens fine. Close removes EAL's runtime directory
// (/var/run/dpdk/flo<pid>), and open removes stale flo<pid> directories of dead processes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/result.hpp"
#include "drivers/packet_port.hpp"

struct rte_mbuf;
struct rte_mempool;

namespace flotilla::drivers {

struct DpdkOptions {
  std::vector<std::string> eal_args;  // extra EAL arguments from the config, appended after ours
  // A vdev spec such as "net_af_packet0,iface=veth0" or "net_af_xdp0,iface=veth0", or a PCI
  // address "0000:03:00.0".
  std::string device;
  std::uint16_t rx_descriptors = 1024;
  std::uint16_t tx_descriptors = 1024;
  std::uint32_t mbufs = 8191;
};

class DpdkPort final : public PacketPort {
 public:
  static Result<std::unique_ptr<DpdkPort>> open(const DpdkOptions& options, BufferPool& pool,
                                                ComponentId owner);
  ~DpdkPort() override;
  DpdkPort(const DpdkPort&) = delete;
  DpdkPort& operator=(const DpdkPort&) = delete;

  std::size_t receive_burst(std::span<BufferHandle> out) override;
  // Accepted frames are copied into mbufs and their buffers freed at once. Mbufs the device does
  // not take right away wait in a small backlog (retried here and in service()); a full backlog
  // makes this accept fewer.
  std::size_t transmit_burst(std::span<const BufferHandle> frames) override;
  bool service() override;
  PortStats stats() const override;  // rte_eth_stats plus the port's own drops
  std::string describe() const override;  // e.g. "dpdk net_af_packet net_af_packet0 (port 0)"

  std::uint16_t port_id() const { return port_id_; }
  // EAL's runtime directory for this process (empty before EAL is up).
  static std::string runtime_directory();

 private:
  static constexpr std::size_t kBurst = 32;
  static constexpr std::size_t kBacklog = 256;

  DpdkPort(BufferPool& pool, ComponentId owner) : pool_(&pool), cache_(pool, owner), owner_(owner) {}
  Status start(const DpdkOptions& options);
  std::size_t flush_backlog();

  BufferPool* pool_;
  PoolCache cache_;
  ComponentId owner_;
  std::uint16_t port_id_ = 0;
  bool port_probed_ = false;  // the device is ours: closed and removed on close
  bool port_started_ = false;
  bool bus_is_pci_ = false;
  std::string device_name_;  // the ethdev name: the device spec up to its first comma
  std::string driver_name_;
  rte_mempool* mbufs_ = nullptr;
  std::array<rte_mbuf*, kBacklog> backlog_{};
  std::size_t backlog_size_ = 0;
  std::uint64_t rx_dropped_ = 0;  // our own: no Flotilla buffer fits, or a frame too long
  std::uint64_t tx_dropped_ = 0;  // our own: bad handles, frames too long, no mbuf
};

}  // namespace flotilla::drivers
