// The pending queue's node pool and per-hop FIFOs (see pending_queue.hpp).
#include "components/ip/pending_queue.hpp"

namespace flotilla::ip {

PendingQueue::PendingQueue(std::size_t total_capacity, std::size_t per_address)
    : nodes_(total_capacity), per_address_(per_address) {
  free_nodes_.reserve(total_capacity);
  for (std::uint32_t i = static_cast<std::uint32_t>(total_capacity); i-- > 0;) {
    free_nodes_.push_back(i);
  }
  queues_.reserve(total_capacity);
}

std::size_t PendingQueue::find_queue(std::uint32_t next_hop) const {
  std::size_t q = 0;
  while (q < queues_.size() && queues_[q].next_hop != next_hop) ++q;
  return q;
}

bool PendingQueue::push(std::uint32_t next_hop, const BufferHandle& handle, std::uint64_t now_ms) {
  if (free_nodes_.empty()) return false;
  std::size_t q = find_queue(next_hop);
  if (q == queues_.size()) {
    if (per_address_ == 0) return false;
    queues_.push_back(Queue{next_hop, kNone, kNone, 0});  // within the reserved capacity
  } else if (queues_[q].count >= per_address_) {
    return false;
  }
  const std::uint32_t node = free_nodes_.back();
  free_nodes_.pop_back();
  nodes_[node] = Node{handle, now_ms, kNone};
  Queue& queue = queues_[q];
  if (queue.tail == kNone) {
    queue.head = node;
  } else {
    nodes_[queue.tail].next = node;
  }
  queue.tail = node;
  ++queue.count;
  ++size_;
  return true;
}

std::uint32_t PendingQueue::pop_head(Queue& queue) {
  const std::uint32_t node = queue.head;
  queue.head = nodes_[node].next;
  if (queue.head == kNone) queue.tail = kNone;
  --queue.count;
  --size_;
  free_nodes_.push_back(node);  // the caller copies the handle out before anything else
  return node;
}

void PendingQueue::remove_queue(std::size_t q) {
  queues_[q] = queues_.back();
  queues_.pop_back();
}

std::size_t PendingQueue::waiting_for(std::uint32_t next_hop) const {
  const std::size_t q = find_queue(next_hop);
  return q == queues_.size() ? 0 : queues_[q].count;
}

}  // namespace flotilla::ip
