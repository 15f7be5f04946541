#include "drivers/af_xdp/af_xdp_port.hpp"

#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>

#include "drivers/bpf/flotilla_xdp_object.hpp"

namespace flotilla::drivers {
namespace {

constexpr std::uint32_t kMinChunkSize = 2048;  // the kernel refuses smaller UMEM chunks
constexpr std::uint32_t kMaxFillBuffers = 1u << 15;
constexpr std::uint32_t kTxRingSize = 2048;
constexpr std::uint32_t kMaxQueue = 64;  // xsks_map's size in the XDP program

// libbpf and libxdp return -errno.
Error libbpf_error(int result, const char* context) {
  return Error{Errc::system, result < 0 ? -result : EINVAL, context};
}

__u32 attach_flags(AfXdpPort::Attach mode) {
  return mode == AfXdpPort::Attach::native ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;
}

}  // namespace

AfXdpPort::AfXdpPort(BufferPool& pool, ComponentId owner, const AfXdpOptions& options)
    : pool_(&pool),
      owner_(owner),
      options_(options),
      chunk_size_(pool.buffer_size()),
      held_(pool.buffer_count(), Held::no) {}

Result<std::unique_ptr<AfXdpPort>> AfXdpPort::open(const AfXdpOptions& options, BufferPool& pool,
                                                   ComponentId owner) {
  if (owner == kNoComponent) return Error{Errc::invalid_argument, 0, "af_xdp: owner is nobody"};
  if (options.interface.empty() || options.interface.size() >= IF_NAMESIZE) {
    return Error{Errc::invalid_argument, 0, "af_xdp: interface name"};
  }
  if (options.queue >= kMaxQueue) return Error{Errc::invalid_argument, 0, "af_xdp: queue >= 64"};
  if (options.fill_buffers == 0 || options.fill_buffers > kMaxFillBuffers) {
    return Error{Errc::invalid_argument, 0, "af_xdp: fill_buffers must be in [1, 32768]"};
  }
  if (pool.buffer_size() < kMinChunkSize) {
    return Error{Errc::invalid_argument, 0, "af_xdp: pool buffers must be at least 2048 bytes"};
  }

  std::unique_ptr<AfXdpPort> port(new AfXdpPort(pool, owner, options));
  port->ifindex_ = static_cast<int>(::if_nametoindex(options.interface.c_str()));
  if (port->ifindex_ == 0) return Error::from_errno("af_xdp: if_nametoindex");
  port->fill_ring_size_ = std::bit_ceil(std::max(options.fill_buffers, kBatch));
  port->tx_ring_size_ = kTxRingSize;
  port->per_cpu_drops_.resize(static_cast<std::size_t>(std::max(libbpf_num_possible_cpus(), 1)));

  if (auto status = port->remove_attached_programs(); !status) return status.error();
  if (auto status = port->load_program(); !status) return status.error();
  if (auto status = port->attach_program(); !status) return status.error();
  if (auto status = port->create_socket(); !status) return status.error();
  port->refill();
  return port;
}

AfXdpPort::~AfXdpPort() {
  // The socket first, so the kernel stops writing into the pool before its buffers go back.
  if (socket_ != nullptr) xsk_socket__delete(socket_);
  if (umem_ != nullptr) (void)xsk_umem__delete(umem_);
  if (attached_) {
    // Only if the program on the interface is still ours: a newer incarnation's stays.
    bpf_xdp_attach_opts opts{};
    opts.sz = sizeof(opts);
    opts.old_prog_fd = program_fd_;
    (void)bpf_xdp_detach(ifindex_, attach_flags(attach_) | XDP_FLAGS_REPLACE, &opts);
  }
  if (object_ != nullptr) bpf_object__close(object_);
  release_held_buffers();
}

Status AfXdpPort::remove_attached_programs() {
  bpf_xdp_query_opts query{};
  query.sz = sizeof(query);
  if (int result = bpf_xdp_query(ifindex_, 0, &query); result < 0) {
    return libbpf_error(result, "af_xdp: bpf_xdp_query");
  }
  const std::pair<__u32, __u32> attached[] = {{query.drv_prog_id, XDP_FLAGS_DRV_MODE},
                                              {query.skb_prog_id, XDP_FLAGS_SKB_MODE},
                                              {query.hw_prog_id, XDP_FLAGS_HW_MODE}};
  for (const auto& [program_id, mode] : attached) {
    if (program_id == 0) continue;
    if (int result = bpf_xdp_detach(ifindex_, mode, nullptr); result < 0) {
      return libbpf_error(result, "af_xdp: bpf_xdp_detach (a program left on the interface)");
    }
  }
  return {};
}

Status AfXdpPort::load_program() {
  const auto image = flotilla_xdp_object();
  bpf_object_open_opts opts{};
  opts.sz = sizeof(opts);
  opts.object_name = "flotilla_xdp";
  object_ = bpf_object__open_mem(image.data(), image.size(), &opts);
  if (object_ == nullptr) return Error::from_errno("af_xdp: bpf_object__open_mem");
  if (int result = bpf_object__load(object_); result < 0) {
    return libbpf_error(result, "af_xdp: bpf_object__load");
  }
  bpf_program* program = bpf_object__find_program_by_name(object_, "flotilla_xdp");
  if (program == nullptr) return Error{Errc::bad_layout, 0, "af_xdp: no program flotilla_xdp"};
  program_fd_ = bpf_program__fd(program);
  xsks_map_fd_ = bpf_object__find_map_fd_by_name(object_, "xsks_map");
  rules_map_fd_ = bpf_object__find_map_fd_by_name(object_, "block_rules");
  drops_map_fd_ = bpf_object__find_map_fd_by_name(object_, "early_drops");
  if (program_fd_ < 0 || xsks_map_fd_ < 0 || rules_map_fd_ < 0 || drops_map_fd_ < 0) {
    return Error{Errc::bad_layout, 0, "af_xdp: the XDP object lacks a program or map"};
  }
  return {};
}

Status AfXdpPort::attach_program() {
  const bool try_native = options_.mode != AfXdpOptions::Mode::skb;
  const bool try_skb = options_.mode != AfXdpOptions::Mode::native;
  int result = -EINVAL;
  if (try_native) {
    result = bpf_xdp_attach(ifindex_, program_fd_, XDP_FLAGS_DRV_MODE, nullptr);
    if (result == 0) attach_ = Attach::native;
  }
  if (result < 0 && try_skb) {
    result = bpf_xdp_attach(ifindex_, program_fd_, XDP_FLAGS_SKB_MODE, nullptr);
    if (result == 0) attach_ = Attach::skb;
  }
  if (result < 0) return libbpf_error(result, "af_xdp: bpf_xdp_attach");
  attached_ = true;
  return {};
}

Status AfXdpPort::create_socket() {
  const auto area = pool_->data_area();
  xsk_umem_config umem_config{};
  umem_config.fill_size = fill_ring_size_;
  umem_config.comp_size = tx_ring_size_;
  umem_config.frame_size = chunk_size_;
  umem_config.frame_headroom = 0;
  umem_config.flags = 0;

  xsk_socket_config socket_config{};
  socket_config.rx_size = fill_ring_size_;
  socket_config.tx_size = tx_ring_size_;
  socket_config.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;  // our program, our map
  socket_config.xdp_flags = attach_flags(attach_);

  // The queue may still be bound by the socket of a driver that was just killed: the kernel lets go
  // of it a moment after the process is gone (EBUSY until then), so a restart waits up to a second.
  constexpr int kBusyAttempts = 100;
  constexpr auto kBusyPause = std::chrono::milliseconds(10);
  int result = 0;
  for (int attempt = 0; attempt == 0 || (result == -EBUSY && attempt < kBusyAttempts); ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(kBusyPause);
    for (const bool zero_copy : {true, false}) {
      if (zero_copy && !options_.zero_copy) continue;
      result = xsk_umem__create(&umem_, area.data(), area.size(), &fill_, &completion_, &umem_config);
      if (result < 0) {
        umem_ = nullptr;
        return libbpf_error(result, "af_xdp: xsk_umem__create");
      }
      socket_config.bind_flags =
          static_cast<__u16>(XDP_USE_NEED_WAKEUP | (zero_copy ? XDP_ZEROCOPY : XDP_COPY));
      result = xsk_socket__create(&socket_, options_.interface.c_str(), options_.queue, umem_, &rx_,
                                  &tx_, &socket_config);
      if (result == 0) {
        zero_copy_ = zero_copy;
        break;
      }
      // A refused bind leaves the UMEM unused; start again from a fresh one.
      socket_ = nullptr;
      (void)xsk_umem__delete(umem_);
      umem_ = nullptr;
    }
  }
  if (result < 0) return libbpf_error(result, "af_xdp: xsk_socket__create");
  if (int map_result = xsk_socket__update_xskmap(socket_, xsks_map_fd_); map_result < 0) {
    return libbpf_error(map_result, "af_xdp: xsk_socket__update_xskmap");
  }
  return {};
}

int AfXdpPort::fd() const { return xsk_socket__fd(socket_); }

std::size_t AfXdpPort::receive_burst(std::span<BufferHandle> out) {
  std::uint32_t first = 0;
  const std::uint32_t available = xsk_ring_cons__peek(
      &rx_, static_cast<std::uint32_t>(std::min<std::size_t>(out.size(), fill_ring_size_)), &first);
  std::size_t received = 0;
  for (std::uint32_t i = 0; i < available; ++i) {
    const xdp_desc* desc = xsk_ring_cons__rx_desc(&rx_, first + i);
    const std::uint64_t index = desc->addr / chunk_size_;
    const std::uint32_t offset = static_cast<std::uint32_t>(desc->addr % chunk_size_);
    // The ring lives in memory the kernel shares with us; trust it only as far as we checked.
    if (index >= held_.size() || held_[index] != Held::fill) {
      ++stats_.rx_dropped;
      continue;
    }
    held_[index] = Held::no;
    --fill_posted_;
    auto handle = pool_->owned_handle(owner_, static_cast<std::uint32_t>(index));
    if (!handle) {
      ++stats_.rx_dropped;
      continue;
    }
    if (offset + desc->len > chunk_size_ || desc->len < kMinFrameLength) {
      ++stats_.rx_dropped;
      (void)pool_->free(owner_, handle.value());
      continue;
    }
    handle->offset = static_cast<std::uint16_t>(offset);
    handle->length = static_cast<std::uint16_t>(desc->len);
    out[received++] = handle.value();
    ++stats_.rx_frames;
    stats_.rx_bytes += desc->len;
  }
  if (available > 0) xsk_ring_cons__release(&rx_, available);
  if (options_.fill_buffers - fill_posted_ >= std::min(kBatch, options_.fill_buffers)) refill();
  return received;
}

bool AfXdpPort::refill() {
  bool posted_any = false;
  while (fill_posted_ < options_.fill_buffers) {
    const std::uint32_t wanted = std::min(options_.fill_buffers - fill_posted_, kBatch);
    const auto got = static_cast<std::uint32_t>(
        pool_->alloc_burst(owner_, std::span<BufferHandle>(scratch_.data(), wanted)));
    if (got == 0) break;  // the pool is dry; try again at the next service()
    std::uint32_t slot = 0;
    if (xsk_ring_prod__reserve(&fill_, got, &slot) != got) {
      // Cannot happen while fill_buffers <= the ring size; give the buffers back all the same.
      for (std::uint32_t i = 0; i < got; ++i) (void)pool_->free(owner_, scratch_[i]);
      break;
    }
    for (std::uint32_t i = 0; i < got; ++i) {
      *xsk_ring_prod__fill_addr(&fill_, slot + i) = address_of(scratch_[i].index, 0);
      held_[scratch_[i].index] = Held::fill;
    }
    xsk_ring_prod__submit(&fill_, got);
    fill_posted_ += got;
    posted_any = true;
  }
  return posted_any;
}

std::size_t AfXdpPort::transmit_burst(std::span<const BufferHandle> frames) {
  std::size_t taken = 0;
  while (taken < frames.size()) {
    const std::uint32_t room =
        std::min({xsk_prod_nb_free(&tx_, kBatch), tx_ring_size_ - tx_in_flight_, kBatch});
    if (room == 0) break;
    // Check and claim up to `room` frames first, so exactly as many slots are reserved as used.
    std::uint32_t ready = 0;
    while (taken < frames.size() && ready < room) {
      BufferHandle frame = frames[taken++];
      const bool length_ok =
          frame.length >= kMinFrameLength && frame.length <= kMaxFrameLength;
      if (!length_ok || !pool_->bytes(owner_, frame)) {
        ++stats_.tx_dropped;
        if (!length_ok) (void)pool_->free(owner_, frame);  // ours but unsendable
        continue;
      }
      // A new generation while the device holds the buffer: the caller's copy of the handle is
      // dead, so posting it twice is refused instead of corrupting the ring.
      auto generation = pool_->retire_handle(owner_, frame);
      if (!generation) {
        ++stats_.tx_dropped;
        continue;
      }
      frame.generation = generation.value();
      scratch_[ready++] = frame;
    }
    if (ready == 0) continue;
    std::uint32_t slot = 0;
    (void)xsk_ring_prod__reserve(&tx_, ready, &slot);  // room was checked above
    for (std::uint32_t i = 0; i < ready; ++i) {
      xdp_desc* desc = xsk_ring_prod__tx_desc(&tx_, slot + i);
      desc->addr = address_of(scratch_[i].index, scratch_[i].offset);
      desc->len = scratch_[i].length;
      desc->options = 0;
      held_[scratch_[i].index] = Held::transmit;
      ++stats_.tx_frames;
      stats_.tx_bytes += scratch_[i].length;
    }
    xsk_ring_prod__submit(&tx_, ready);
    tx_in_flight_ += ready;
  }
  if (taken > 0) kick_transmit();
  return taken;
}

void AfXdpPort::kick_transmit() {
  if (!xsk_ring_prod__needs_wakeup(&tx_)) return;
  // EAGAIN/EBUSY/ENOBUFS only mean "not all sent yet": service() kicks again while descriptors
  // wait in the ring.
  (void)::sendto(xsk_socket__fd(socket_), nullptr, 0, MSG_DONTWAIT, nullptr, 0);
}

bool AfXdpPort::transmit_pending() {
  // Descriptors the kernel has not consumed yet: the ring's free count short of its size.
  return xsk_prod_nb_free(&tx_, tx_ring_size_) < tx_ring_size_;
}

bool AfXdpPort::reap_completions() {
  if (tx_in_flight_ == 0) return false;
  std::uint32_t first = 0;
  const std::uint32_t done = xsk_ring_cons__peek(&completion_, tx_ring_size_, &first);
  for (std::uint32_t i = 0; i < done; ++i) {
    const std::uint64_t index = *xsk_ring_cons__comp_addr(&completion_, first + i) / chunk_size_;
    if (index >= held_.size() || held_[index] != Held::transmit) continue;
    held_[index] = Held::no;
    --tx_in_flight_;
    if (auto handle = pool_->owned_handle(owner_, static_cast<std::uint32_t>(index))) {
      (void)pool_->free(owner_, handle.value());
    }
  }
  if (done > 0) xsk_ring_cons__release(&completion_, done);
  return done > 0;
}

bool AfXdpPort::service() {
  bool worked = reap_completions();
  worked |= refill();
  if (tx_in_flight_ > 0 && transmit_pending() && xsk_ring_prod__needs_wakeup(&tx_)) {
    kick_transmit();
    worked = true;
  }
  // Drivers that stop taking fill buffers until told (zero-copy ones) set this flag.
  if (fill_posted_ > 0 && xsk_ring_prod__needs_wakeup(&fill_)) {
    (void)::recvfrom(xsk_socket__fd(socket_), nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
  }
  return worked;
}

void AfXdpPort::release_held_buffers() {
  for (std::uint32_t index = 0; index < held_.size(); ++index) {
    if (held_[index] == Held::no) continue;
    held_[index] = Held::no;
    if (auto handle = pool_->owned_handle(owner_, index)) (void)pool_->free(owner_, handle.value());
  }
  fill_posted_ = 0;
  tx_in_flight_ = 0;
}

Status AfXdpPort::set_block_rules(std::span<const flotilla_xdp_block_rule> rules) {
  if (rules.size() > FLOTILLA_XDP_MAX_RULES) {
    return Error{Errc::invalid_argument, 0, "af_xdp: more block rules than map slots"};
  }
  for (std::uint32_t slot = 0; slot < FLOTILLA_XDP_MAX_RULES; ++slot) {
    flotilla_xdp_block_rule rule{};
    if (slot < rules.size()) {
      rule = rules[slot];
      rule.in_use = 1;
    }
    if (bpf_map_update_elem(rules_map_fd_, &slot, &rule, BPF_ANY) < 0) {
      return Error::from_errno("af_xdp: bpf_map_update_elem (block rules)");
    }
  }
  return {};
}

std::uint64_t AfXdpPort::early_drops() const {
  const std::uint32_t key = 0;
  if (bpf_map_lookup_elem(drops_map_fd_, &key, per_cpu_drops_.data()) < 0) return 0;
  std::uint64_t total = 0;
  for (const auto count : per_cpu_drops_) total += count;
  return total;
}

PortStats AfXdpPort::stats() const {
  PortStats stats = stats_;
  stats.early_drops = early_drops();
  return stats;
}

std::string AfXdpPort::describe() const {
  return "af_xdp " + options_.interface + " queue " + std::to_string(options_.queue) + " (" +
         (attach_ == Attach::native ? "native" : "skb") + ", " +
         (zero_copy_ ? "zero-copy" : "copy") + ")";
}

}  // namespace flotilla::drivers
