// The DPDK port: EAL set-up once per process, one queue pair, and the copies between mbufs and
// pool buffers (see dpdk_port.hpp for why they copy).
#include "drivers/dpdk/dpdk_port.hpp"
#include "drivers/dpdk/runtime_dirs.hpp"

#include <dirent.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>

#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

namespace flotilla::drivers {
namespace {

std::string file_prefix() { return "flo" + std::to_string(::getpid()); }

bool is_pci_address(const std::string& device) {
  // dddd:bb:dd.f (the domain may be left out). vdev names never contain ':' before a ','.
  const std::string name = device.substr(0, device.find(','));
  return name.find(':') != std::string::npos && name.find('.') != std::string::npos;
}

// "--lcores=0@(a,b,...)": one lcore that keeps the caller's CPU set instead of being pinned to a
// single CPU, and no worker threads.
std::string lcore_argument() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  std::string list;
  if (::sched_getaffinity(0, sizeof cpus, &cpus) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (!CPU_ISSET(cpu, &cpus)) continue;
      if (!list.empty()) list += ',';
      list += std::to_string(cpu);
    }
  }
  if (list.empty()) list = "0";
  return "--lcores=0@(" + list + ")";
}

Error dpdk_error(int code, const char* context) {
  return Error{Errc::system, code < 0 ? -code : code, context};
}

// EAL's one initialisation per process, and what came of it.
struct EalState {
  std::mutex mutex;
  bool tried = false;
  std::optional<Error> failure;
  bool pci = false;
};
EalState& eal_state() {
  static EalState state;
  return state;
}

Status init_eal_once(const DpdkOptions& options, bool pci) {
  EalState& state = eal_state();
  std::lock_guard lock(state.mutex);
  if (state.tried) {
    if (state.failure) return *state.failure;
    if (pci && !state.pci) return Error{Errc::invalid_argument, 0, "EAL was started with --no-pci"};
    return {};
  }
  state.tried = true;
  state.pci = pci;
  remove_stale_dpdk_runtime_dirs();

  std::vector<std::string> args = {"flotilla-driver", "--no-huge", "--no-shconf", "-m", "256",
                                   "--file-prefix", file_prefix(), "--log-level=warning",
                                   "--no-telemetry", lcore_argument()};
  if (pci) {
    args.emplace_back("-a");  // probe only our device, not every PCI NIC bound to a DPDK driver
    args.push_back(options.device);
  } else {
    args.emplace_back("--no-pci");
  }
  args.insert(args.end(), options.eal_args.begin(), options.eal_args.end());
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  // EAL moves the calling thread onto its lcore's CPU set; put the caller's back afterwards.
  cpu_set_t cpus;
  const bool have_cpus = ::sched_getaffinity(0, sizeof cpus, &cpus) == 0;
  const int parsed = rte_eal_init(static_cast<int>(args.size()), argv.data());
  if (have_cpus) (void)::sched_setaffinity(0, sizeof cpus, &cpus);
  if (parsed < 0) {
    state.failure = dpdk_error(rte_errno, "rte_eal_init");
    return *state.failure;
  }
  return {};
}

}  // namespace

std::string DpdkPort::runtime_directory() {
  EalState& state = eal_state();
  std::lock_guard lock(state.mutex);
  if (!state.tried || state.failure) return {};
  return rte_eal_get_runtime_dir();
}

Result<std::unique_ptr<DpdkPort>> DpdkPort::open(const DpdkOptions& options, BufferPool& pool,
                                                 ComponentId owner) {
  if (options.device.empty() || owner == kNoComponent || options.mbufs < 2 * kBurst) {
    return Error{Errc::invalid_argument, 0, "dpdk options"};
  }
  const bool pci = is_pci_address(options.device);
  if (auto status = init_eal_once(options, pci); !status) return status.error();
  std::unique_ptr<DpdkPort> port(new DpdkPort(pool, owner));
  port->bus_is_pci_ = pci;
  if (auto status = port->start(options); !status) return status.error();
  return port;
}

Status DpdkPort::start(const DpdkOptions& options) {
  device_name_ = options.device.substr(0, options.device.find(','));
  // A PCI ethdev is named by its full address, domain included.
  if (bus_is_pci_ && std::count(device_name_.begin(), device_name_.end(), ':') == 1) {
    device_name_ = "0000:" + device_name_;
  }
  // A PCI device is probed by EAL at start (-a); a vdev, or a device closed before, is probed now.
  if (rte_eth_dev_get_port_by_name(device_name_.c_str(), &port_id_) != 0) {
    const int probed = rte_dev_probe(options.device.c_str());
    if (probed != 0) return dpdk_error(probed, "rte_dev_probe (no such driver or device?)");
    if (rte_eth_dev_get_port_by_name(device_name_.c_str(), &port_id_) != 0) {
      (void)rte_eal_hotplug_remove(bus_is_pci_ ? "pci" : "vdev", device_name_.c_str());
      return Error{Errc::invalid_argument, 0, "dpdk device probed but no ethdev port by its name"};
    }
  }
  port_probed_ = true;

  rte_eth_dev_info info{};
  if (int code = rte_eth_dev_info_get(port_id_, &info); code != 0) {
    return dpdk_error(code, "rte_eth_dev_info_get");
  }
  driver_name_ = info.driver_name != nullptr ? info.driver_name : "?";
  rte_eth_conf conf{};
  if (int code = rte_eth_dev_configure(port_id_, 1, 1, &conf); code != 0) {
    return dpdk_error(code, "rte_eth_dev_configure");
  }
  std::uint16_t rx_descriptors = options.rx_descriptors;
  std::uint16_t tx_descriptors = options.tx_descriptors;
  if (int code = rte_eth_dev_adjust_nb_rx_tx_desc(port_id_, &rx_descriptors, &tx_descriptors);
      code != 0) {
    return dpdk_error(code, "rte_eth_dev_adjust_nb_rx_tx_desc");
  }

  static std::atomic<unsigned> serial{0};
  const std::string pool_name =
      "flo_mbufs_" + std::to_string(port_id_) + "_" + std::to_string(serial.fetch_add(1));
  const int socket = rte_eth_dev_socket_id(port_id_);
  mbufs_ = rte_pktmbuf_pool_create(pool_name.c_str(), options.mbufs, 256, 0,
                                   RTE_MBUF_DEFAULT_BUF_SIZE, socket < 0 ? SOCKET_ID_ANY : socket);
  if (mbufs_ == nullptr) return dpdk_error(rte_errno, "rte_pktmbuf_pool_create");

  if (int code = rte_eth_rx_queue_setup(port_id_, 0, rx_descriptors,
                                        static_cast<unsigned>(socket < 0 ? SOCKET_ID_ANY : socket),
                                        nullptr, mbufs_);
      code != 0) {
    return dpdk_error(code, "rte_eth_rx_queue_setup");
  }
  if (int code = rte_eth_tx_queue_setup(port_id_, 0, tx_descriptors,
                                        static_cast<unsigned>(socket < 0 ? SOCKET_ID_ANY : socket),
                                        nullptr);
      code != 0) {
    return dpdk_error(code, "rte_eth_tx_queue_setup");
  }
  if (int code = rte_eth_dev_start(port_id_); code != 0) return dpdk_error(code, "rte_eth_dev_start");
  port_started_ = true;
  // Not every PMD can (or needs to); a port that stays filtered still works for its own address.
  (void)rte_eth_promiscuous_enable(port_id_);
  return {};
}

DpdkPort::~DpdkPort() {
  if (backlog_size_ > 0) rte_pktmbuf_free_bulk(backlog_.data(), static_cast<unsigned>(backlog_size_));
  if (port_started_) (void)rte_eth_dev_stop(port_id_);
  if (port_probed_) {
    (void)rte_eth_dev_close(port_id_);
    (void)rte_eal_hotplug_remove(bus_is_pci_ ? "pci" : "vdev", device_name_.c_str());
  }
  if (mbufs_ != nullptr) rte_mempool_free(mbufs_);
  cache_.drain();
  // EAL stays up (it cannot start twice in one process) but needs its runtime directory no more:
  // with --no-shconf nothing in it is used after init.
  std::error_code ignored;
  std::filesystem::remove_all(dpdk_runtime_parent() / file_prefix(), ignored);
}

std::size_t DpdkPort::receive_burst(std::span<BufferHandle> out) {
  const std::size_t want = std::min(out.size(), kBurst);
  if (want == 0) return 0;
  // Take pool buffers first so that no mbuf is ever pulled without a place to put it.
  const std::size_t buffers = cache_.alloc_burst(out.first(want));
  if (buffers == 0) return 0;  // frames wait in the device; it drops (and counts) if it must
  std::array<rte_mbuf*, kBurst> mbufs{};
  const std::uint16_t got =
      rte_eth_rx_burst(port_id_, 0, mbufs.data(), static_cast<std::uint16_t>(buffers));
  std::size_t delivered = 0;
  for (std::uint16_t i = 0; i < got; ++i) {
    rte_mbuf* mbuf = mbufs[i];
    const std::uint32_t length = rte_pktmbuf_pkt_len(mbuf);
    BufferHandle handle = out[delivered];
    if (length == 0 || length > pool_->buffer_size() || length > UINT16_MAX) {
      ++rx_dropped_;
      continue;
    }
    handle.offset = 0;
    handle.length = static_cast<std::uint16_t>(length);
    auto bytes = pool_->bytes(owner_, handle);
    if (!bytes) {
      ++rx_dropped_;
      continue;
    }
    std::byte* to = bytes->data();
    for (const rte_mbuf* segment = mbuf; segment != nullptr; segment = segment->next) {
      std::memcpy(to, rte_pktmbuf_mtod(segment, const void*), segment->data_len);
      to += segment->data_len;
    }
    out[delivered++] = handle;
  }
  if (got > 0) rte_pktmbuf_free_bulk(mbufs.data(), got);
  for (std::size_t i = delivered; i < buffers; ++i) (void)cache_.free(out[i]);
  return delivered;
}

std::size_t DpdkPort::flush_backlog() {
  if (backlog_size_ == 0) return 0;
  const std::uint16_t sent = rte_eth_tx_burst(
      port_id_, 0, backlog_.data(),
      static_cast<std::uint16_t>(std::min<std::size_t>(backlog_size_, UINT16_MAX)));
  std::copy(backlog_.begin() + sent, backlog_.begin() + static_cast<std::ptrdiff_t>(backlog_size_),
            backlog_.begin());
  backlog_size_ -= sent;
  return sent;
}

std::size_t DpdkPort::transmit_burst(std::span<const BufferHandle> frames) {
  flush_backlog();
  const std::size_t accepted = std::min({frames.size(), kBurst, kBacklog - backlog_size_});
  if (accepted == 0) return 0;
  std::array<rte_mbuf*, kBurst> mbufs{};
  if (rte_pktmbuf_alloc_bulk(mbufs_, mbufs.data(), static_cast<unsigned>(accepted)) != 0) {
    return 0;  // mbufs all in flight: the caller keeps its frames and retries
  }
  std::size_t used = 0;
  for (std::size_t i = 0; i < accepted; ++i) {
    const BufferHandle& handle = frames[i];
    auto bytes = pool_->bytes(owner_, handle);
    if (!bytes) {  // not ours to send or free; the pool has counted it
      ++tx_dropped_;
      continue;
    }
    rte_mbuf* mbuf = mbufs[used];
    char* to = handle.length == 0 ? nullptr : rte_pktmbuf_append(mbuf, handle.length);
    if (to == nullptr) {  // empty, or longer than an mbuf holds
      ++tx_dropped_;
      (void)cache_.free(handle);
      continue;
    }
    std::memcpy(to, bytes->data(), handle.length);
    (void)cache_.free(handle);  // checked by bytes() above
    backlog_[backlog_size_++] = mbuf;
    ++used;
  }
  if (used < accepted) {
    rte_pktmbuf_free_bulk(mbufs.data() + used, static_cast<unsigned>(accepted - used));
  }
  flush_backlog();
  return accepted;
}

bool DpdkPort::service() { return flush_backlog() > 0; }

PortStats DpdkPort::stats() const {
  PortStats result;
  rte_eth_stats device{};
  if (rte_eth_stats_get(port_id_, &device) == 0) {
    result.rx_frames = device.ipackets;
    result.rx_bytes = device.ibytes;
    result.tx_frames = device.opackets;
    result.tx_bytes = device.obytes;
    result.rx_dropped = device.imissed + device.ierrors + device.rx_nombuf;
    result.tx_dropped = device.oerrors;
  }
  result.rx_dropped += rx_dropped_;
  result.tx_dropped += tx_dropped_;
  return result;
}

std::string DpdkPort::describe() const {
  return "dpdk " + driver_name_ + " " + device_name_ + " (port " + std::to_string(port_id_) +
         ", 1 rx + 1 tx queue, copying)";
}

}  // namespace flotilla::drivers
