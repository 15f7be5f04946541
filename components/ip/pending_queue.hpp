// Packets waiting for ARP to resolve their next hop: one FIFO per next hop, bounded in total and
// per address, all nodes preallocated in the constructor. The queue holds buffer handles only;
// the caller owns the buffers and frees whatever push() refuses or drop_*() hands back.
// The callbacks given to take()/drop_*() must not push into the same queue.
//
// The queues of the (few) next hops with waiting packets are found by a linear scan: bounded by
// the total capacity, and in practice a handful.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dataplane/buffer_pool.hpp"

namespace flotilla::ip {

class PendingQueue {
 public:
  explicit PendingQueue(std::size_t total_capacity = 256, std::size_t per_address = 16);

  // Queues a packet for `next_hop`. False when either bound is hit: the caller frees and counts.
  bool push(std::uint32_t next_hop, const BufferHandle& handle, std::uint64_t now_ms);

  // Hands every waiting handle for `next_hop` to each(const BufferHandle&), in FIFO order, and
  // forgets them. Returns how many.
  template <class F>
  std::size_t take(std::uint32_t next_hop, F&& each);
  // Drops (hands to `each`) every packet queued before cutoff_ms, for all next hops.
  template <class F>
  std::size_t drop_older_than(std::uint64_t cutoff_ms, F&& each);
  // Drops (hands to `each`) everything waiting for `next_hop` (ARP gave up).
  template <class F>
  std::size_t drop_address(std::uint32_t next_hop, F&& each) {
    return take(next_hop, each);
  }

  std::size_t size() const { return size_; }
  std::size_t waiting_for(std::uint32_t next_hop) const;
  // Calls each(next_hop) for every address something waits for. `each` must not change the queue.
  template <class F>
  void for_each_hop(F&& each) const {
    for (const Queue& queue : queues_) each(queue.next_hop);
  }

 private:
  static constexpr std::uint32_t kNone = ~std::uint32_t{0};
  struct Node {
    BufferHandle handle;
    std::uint64_t queued_at = 0;
    std::uint32_t next = kNone;
  };
  struct Queue {
    std::uint32_t next_hop = 0;
    std::uint32_t head = kNone;
    std::uint32_t tail = kNone;
    std::uint32_t count = 0;
  };

  std::size_t find_queue(std::uint32_t next_hop) const;  // queues_.size() when absent
  // Unlinks the head node of queue `q` and returns it (the node goes back to the free list).
  std::uint32_t pop_head(Queue& queue);
  void remove_queue(std::size_t q);

  std::vector<Node> nodes_;
  std::vector<std::uint32_t> free_nodes_;
  std::vector<Queue> queues_;  // the active ones; reserved to total_capacity
  std::size_t per_address_;
  std::size_t size_ = 0;
};

template <class F>
std::size_t PendingQueue::take(std::uint32_t next_hop, F&& each) {
  const std::size_t q = find_queue(next_hop);
  if (q == queues_.size()) return 0;
  std::size_t taken = 0;
  while (queues_[q].head != kNone) {
    const BufferHandle handle = nodes_[pop_head(queues_[q])].handle;
    each(handle);
    ++taken;
  }
  remove_queue(q);
  return taken;
}

template <class F>
std::size_t PendingQueue::drop_older_than(std::uint64_t cutoff_ms, F&& each) {
  std::size_t dropped = 0;
  for (std::size_t q = queues_.size(); q-- > 0;) {
    // Each queue is in arrival order, so the old packets are at its head.
    while (queues_[q].head != kNone && nodes_[queues_[q].head].queued_at < cutoff_ms) {
      const BufferHandle handle = nodes_[pop_head(queues_[q])].handle;
      each(handle);
      ++dropped;
    }
    if (queues_[q].head == kNone) remove_queue(q);
  }
  return dropped;
}

}  // namespace flotilla::ip
