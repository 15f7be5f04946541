// The block rules the packet filter compiled for the driver's XDP program, in a region the
// configuration declares with pf as writer and the driver as reader (kXdpBlockListRegion). pf
// publishes a new list under a sequence word, seqlock style: odd while it writes, even when the
// list is whole; so the driver, which only reads, never installs a torn list. The driver never sees
// rule text; a list it cannot use (a count beyond FLOTILLA_XDP_MAX_RULES) is refused.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

#include "components/formats/xdp_block_rule.h"

namespace flotilla::formats {

inline constexpr std::string_view kXdpBlockListRegion = "xdp-block-rules";

struct XdpBlockList {
  // 0: nothing published yet; odd: a write is in progress (or its writer died in it).
  std::atomic<std::uint64_t> sequence;
  std::uint32_t count;
  std::uint32_t reserved;
  flotilla_xdp_block_rule rules[FLOTILLA_XDP_MAX_RULES];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// The list in `region`, or nullptr when the region is missing or too small.
inline XdpBlockList* xdp_block_list(std::span<std::byte> region) {
  if (region.size() < sizeof(XdpBlockList)) return nullptr;
  return reinterpret_cast<XdpBlockList*>(region.data());
}

// The writer's side: publishes `rules` (at most FLOTILLA_XDP_MAX_RULES; the rest are cut off)
// under a new even sequence, and returns it.
inline std::uint64_t publish_xdp_block_list(XdpBlockList& list, std::span<const flotilla_xdp_block_rule> rules) {
  const std::uint64_t before = list.sequence.load(std::memory_order_relaxed);
  const std::uint64_t writing = (before | 1) + ((before & 1) ? 2 : 0);  // odd, and never one seen before
  list.sequence.store(writing, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  const std::size_t count = rules.size() < FLOTILLA_XDP_MAX_RULES ? rules.size() : FLOTILLA_XDP_MAX_RULES;
  list.count = static_cast<std::uint32_t>(count);
  // Not memcpy: an empty span may hold a null pointer, which memcpy must never be given.
  std::copy_n(rules.data(), count, list.rules);
  list.sequence.store(writing + 1, std::memory_order_release);
  return writing + 1;
}

struct XdpBlockListCopy {
  std::uint64_t sequence = 0;
  std::uint32_t count = 0;
  flotilla_xdp_block_rule rules[FLOTILLA_XDP_MAX_RULES]{};
  std::span<const flotilla_xdp_block_rule> view() const { return {rules, count}; }
};

enum class XdpListRead { unchanged, copied, busy, invalid };

// The reader's side: copies the list when its sequence is even and differs from `seen`. `busy`: a
// write is in progress or overlapped the copy (try again later); `invalid`: the count is out of
// range (the copy's sequence is set, so the same bad list is not reported twice).
inline XdpListRead read_xdp_block_list(const XdpBlockList& list, std::uint64_t seen, XdpBlockListCopy& copy) {
  const std::uint64_t first = list.sequence.load(std::memory_order_acquire);
  if (first == seen) return XdpListRead::unchanged;
  if ((first & 1) != 0) return XdpListRead::busy;
  const std::uint32_t count = list.count;
  std::memcpy(copy.rules, list.rules, sizeof(copy.rules));
  std::atomic_thread_fence(std::memory_order_acquire);
  if (list.sequence.load(std::memory_order_relaxed) != first) return XdpListRead::busy;
  copy.sequence = first;
  if (count > FLOTILLA_XDP_MAX_RULES) {
    copy.count = 0;
    return XdpListRead::invalid;
  }
  copy.count = count;
  return XdpListRead::copied;
}

}  // namespace flotilla::formats
