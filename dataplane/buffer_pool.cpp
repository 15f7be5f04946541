#include "dataplane/buffer_pool.hpp"

#include <bit>
#include <new>

namespace flotilla {
namespace {

constexpr std::size_t kPage = 4096;
constexpr std::uint32_t kMinBufferSize = 256;
constexpr std::uint32_t kMaxBufferCount = 1u << 24;

constexpr std::uint64_t pack(std::uint32_t generation, ComponentId owner) {
  return (static_cast<std::uint64_t>(generation) << 32) | owner;
}
constexpr ComponentId owner_of_state(std::uint64_t state) {
  return static_cast<ComponentId>(state & 0xffffffffu);
}
constexpr std::uint32_t generation_of_state(std::uint64_t state) {
  return static_cast<std::uint32_t>(state >> 32);
}

constexpr std::size_t data_offset_for(std::uint32_t buffer_count) {
  const std::size_t states_end = sizeof(PoolHeader) + std::size_t{buffer_count} * sizeof(std::uint64_t);
  return (states_end + kPage - 1) / kPage * kPage;
}

bool valid_shape(std::uint32_t buffer_size, std::uint32_t buffer_count) {
  return buffer_size >= kMinBufferSize && buffer_size <= kMaxBufferSize &&
         std::has_single_bit(buffer_size) && buffer_count >= 1 && buffer_count <= kMaxBufferCount;
}

}  // namespace

std::size_t BufferPool::bytes_for(std::uint32_t buffer_size, std::uint32_t buffer_count) {
  return data_offset_for(buffer_count) + std::size_t{buffer_size} * buffer_count;
}

Result<BufferPool> BufferPool::create(PoolId id, std::uint32_t buffer_size,
                                      std::uint32_t buffer_count) {
  if (!valid_shape(buffer_size, buffer_count)) {
    return Error{Errc::invalid_argument, 0,
                 "pool: buffer size must be a power of two in [256, 4096], count in [1, 2^24]"};
  }
  auto region = SharedRegion::create("flotilla-pool", bytes_for(buffer_size, buffer_count));
  if (!region) return region.error();
  auto* header = new (region->data()) PoolHeader{};
  header->magic = PoolHeader::kMagic;
  header->version = PoolHeader::kVersion;
  header->pool_id = id;
  header->buffer_size = buffer_size;
  header->buffer_count = buffer_count;
  header->states_offset = sizeof(PoolHeader);
  header->data_offset = data_offset_for(buffer_count);
  // The region arrives zero-filled: every state word already reads (generation 0, free).
  const PoolHeader copy = *header;
  return BufferPool(std::move(region.value()), copy);
}

Result<BufferPool> BufferPool::attach(SharedRegion region) {
  if (region.size() < sizeof(PoolHeader)) return Error{Errc::bad_layout, 0, "pool: region too small"};
  const PoolHeader header = *reinterpret_cast<const PoolHeader*>(region.data());  // one snapshot
  if (header.magic != PoolHeader::kMagic || header.version != PoolHeader::kVersion) {
    return Error{Errc::bad_layout, 0, "pool: header magic/version"};
  }
  if (!valid_shape(header.buffer_size, header.buffer_count) ||
      header.states_offset != sizeof(PoolHeader) ||
      header.data_offset != data_offset_for(header.buffer_count) ||
      bytes_for(header.buffer_size, header.buffer_count) > region.size()) {
    return Error{Errc::bad_layout, 0, "pool: header shape does not fit the region"};
  }
  return BufferPool(std::move(region), header);
}

BufferPool::BufferPool(SharedRegion region, const PoolHeader& header)
    : region_(std::move(region)),
      states_(reinterpret_cast<std::atomic<std::uint64_t>*>(region_.data() + header.states_offset)),
      data_(region_.data() + header.data_offset),
      id_(header.pool_id),
      buffer_size_(header.buffer_size),
      buffer_count_(header.buffer_count),
      cursor_(0) {}

std::size_t BufferPool::alloc_burst(ComponentId owner, std::span<BufferHandle> out) {
  if (owner == kNoComponent || out.empty()) return 0;
  std::size_t found = 0;
  for (std::uint32_t scanned = 0; scanned < buffer_count_ && found < out.size(); ++scanned) {
    const std::uint32_t index = cursor_;
    cursor_ = cursor_ + 1 == buffer_count_ ? 0 : cursor_ + 1;
    std::uint64_t state = states_[index].load(std::memory_order_relaxed);
    if (owner_of_state(state) != kNoComponent) continue;
    const std::uint32_t generation = generation_of_state(state);
    if (!states_[index].compare_exchange_strong(state, pack(generation, owner),
                                                std::memory_order_acquire,
                                                std::memory_order_relaxed)) {
      continue;  // someone else took it first
    }
    out[found++] = BufferHandle{index, generation, id_, 0, 0, 0};
  }
  return found;
}

Error BufferPool::refuse(Errc code) const {
  if (counters_ != nullptr) counters_->add(Counter::bad_handles);
  return Error{code, 0, "buffer handle"};
}

Status BufferPool::check_range(const BufferHandle& handle) const {
  if (handle.pool != id_ || handle.index >= buffer_count_ ||
      std::uint32_t{handle.offset} + handle.length > buffer_size_) {
    return refuse(Errc::bad_handle);
  }
  return {};
}

Status BufferPool::check_generation(const BufferHandle& handle, std::uint64_t state) const {
  if (generation_of_state(state) != handle.generation) return refuse(Errc::stale_handle);
  return {};
}

Status BufferPool::transition(const BufferHandle& handle, ComponentId from, ComponentId to,
                              std::uint32_t generation_step) {
  if (auto status = check_range(handle); !status) return status;
  if (from == kNoComponent) return Error{Errc::invalid_argument, 0, "buffer owner is nobody"};
  std::uint64_t expected = pack(handle.generation, from);
  const std::uint64_t desired = pack(handle.generation + generation_step, to);
  if (states_[handle.index].compare_exchange_strong(expected, desired, std::memory_order_acq_rel,
                                                    std::memory_order_acquire)) {
    return {};
  }
  if (auto status = check_generation(handle, expected); !status) return status;
  return refuse(Errc::not_owner);
}

Status BufferPool::free(ComponentId owner, const BufferHandle& handle) {
  return transition(handle, owner, kNoComponent, 1);
}

Status BufferPool::hand_off(const BufferHandle& handle, ComponentId from, ComponentId to) {
  if (to == kNoComponent) return Error{Errc::invalid_argument, 0, "hand_off to nobody"};
  return transition(handle, from, to, 0);
}

Result<std::uint32_t> BufferPool::retire_handle(ComponentId owner, const BufferHandle& handle) {
  if (auto status = transition(handle, owner, owner, 1); !status) return status.error();
  return handle.generation + 1;
}

Status BufferPool::validate(const BufferHandle& handle) const {
  if (auto status = check_range(handle); !status) return status;
  return check_generation(handle, states_[handle.index].load(std::memory_order_acquire));
}

Result<std::span<std::byte>> BufferPool::bytes(ComponentId owner, const BufferHandle& handle) const {
  if (auto status = check_range(handle); !status) return status.error();
  const std::uint64_t state = states_[handle.index].load(std::memory_order_acquire);
  if (auto status = check_generation(handle, state); !status) return status.error();
  if (owner_of_state(state) != owner) return refuse(Errc::not_owner);
  std::byte* start = data_ + std::size_t{handle.index} * buffer_size_ + handle.offset;
  return std::span<std::byte>(start, handle.length);
}

Result<BufferHandle> BufferPool::owned_handle(ComponentId owner, std::uint32_t index) const {
  if (index >= buffer_count_) return refuse(Errc::bad_handle);
  if (owner == kNoComponent) return Error{Errc::invalid_argument, 0, "buffer owner is nobody"};
  const std::uint64_t state = states_[index].load(std::memory_order_acquire);
  if (owner_of_state(state) != owner) return refuse(Errc::not_owner);
  return BufferHandle{index, generation_of_state(state), id_, 0, 0, 0};
}

std::size_t BufferPool::reclaim(ComponentId owner) {
  if (owner == kNoComponent) return 0;
  std::size_t returned = 0;
  for (std::uint32_t index = 0; index < buffer_count_; ++index) {
    std::uint64_t state = states_[index].load(std::memory_order_acquire);
    while (owner_of_state(state) == owner) {
      const std::uint64_t freed = pack(generation_of_state(state) + 1, kNoComponent);
      if (states_[index].compare_exchange_weak(state, freed, std::memory_order_acq_rel,
                                               std::memory_order_acquire)) {
        ++returned;
        break;
      }
    }
  }
  return returned;
}

std::size_t BufferPool::count_owned(ComponentId owner) const {
  std::size_t count = 0;
  for (std::uint32_t index = 0; index < buffer_count_; ++index) {
    if (owner_of_state(states_[index].load(std::memory_order_relaxed)) == owner) ++count;
  }
  return count;
}

ComponentId BufferPool::owner_of(std::uint32_t index) const {
  if (index >= buffer_count_) return kNoComponent;
  return owner_of_state(states_[index].load(std::memory_order_acquire));
}

std::size_t PoolCache::alloc_burst(std::span<BufferHandle> out) {
  std::size_t given = 0;
  while (given < out.size()) {
    if (size_ == 0) {
      refill();
      if (size_ == 0) break;
    }
    out[given++] = cache_[--size_];
  }
  return given;
}

Status PoolCache::free(const BufferHandle& handle) {
  auto generation = pool_->retire_handle(owner_, handle);
  if (!generation) return generation.error();
  if (size_ == kCapacity) spill(kCapacity / 2);
  cache_[size_++] = BufferHandle{handle.index, generation.value(), pool_->id(), 0, 0, 0};
  return {};
}

std::size_t PoolCache::free_burst(std::span<const BufferHandle> handles) {
  std::size_t freed = 0;
  for (const auto& handle : handles) {
    if (free(handle)) ++freed;
  }
  return freed;
}

void PoolCache::drain() { spill(size_); }

void PoolCache::refill() {
  size_ += pool_->alloc_burst(owner_, std::span<BufferHandle>(cache_).subspan(size_, kRefill));
}

void PoolCache::spill(std::size_t count) {
  while (count-- > 0 && size_ > 0) {
    // Cached handles are current by construction; a failure means someone else rewrote the
    // state word. The pool has counted it; the buffer stays with whoever owns it now.
    (void)pool_->free(owner_, cache_[--size_]);
  }
}

}  // namespace flotilla
