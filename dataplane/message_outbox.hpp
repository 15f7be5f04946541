// Messages waiting for room in a channel, oldest first, in a capacity fixed at construction. A
// sender whose ring is full parks its message here and drains it, in order, once the ring has room
// again. Nothing here grows: when the outbox is full, push() refuses and the caller decides what
// the message's loss means (count it, fail its call, or ask again later).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "dataplane/message.hpp"

namespace flotilla {

class MessageOutbox {
 public:
  explicit MessageOutbox(std::size_t capacity = 0) : messages_(capacity) {}

  std::size_t capacity() const { return messages_.size(); }
  std::size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  bool full() const { return count_ == messages_.size(); }

  // false when full: the message is not kept.
  bool push(const Message& message) {
    if (full()) return false;
    messages_[(first_ + count_) % messages_.size()] = message;
    ++count_;
    return true;
  }

  // Hands the waiting messages, oldest first, to `send` (a callable taking a
  // std::span<const Message> and returning how many of them it sent, from the front) and forgets
  // those it sent. Stops at the first run not sent whole. Returns how many were sent.
  template <typename Send>
  std::size_t drain(Send&& send) {
    std::size_t sent_total = 0;
    while (count_ > 0) {
      const std::size_t run = std::min(count_, messages_.size() - first_);
      const std::size_t sent = std::min<std::size_t>(send(std::span<const Message>(&messages_[first_], run)), run);
      first_ = (first_ + sent) % messages_.size();
      count_ -= sent;
      sent_total += sent;
      if (sent < run) break;
    }
    return sent_total;
  }

  void clear() { first_ = count_ = 0; }

 private:
  std::vector<Message> messages_;
  std::size_t first_ = 0;
  std::size_t count_ = 0;
};

}  // namespace flotilla
