// The echo chain the supervisor tests run: a client streams numbered requests to a middle
// component, which forwards them to a server and forwards the replies back. The state each end
// keeps in its state store is what the tests read to judge the run.
#pragma once

#include <atomic>
#include <cstdint>

#include "dataplane/hash.hpp"
#include "dataplane/message.hpp"

namespace flotilla::recovery::echo {

inline constexpr auto kRequest = static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) + 1);
inline constexpr auto kReply = static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) + 2);
inline constexpr std::uint64_t kWindow = 64;  // requests in flight at most

struct Body {
  std::uint64_t sequence;
  std::uint64_t value;
  std::uint64_t check;
};


inline std::uint64_t value_of(std::uint64_t sequence) { return mix64(sequence + 1); }
inline std::uint64_t check_of(MessageKind kind, std::uint64_t sequence, std::uint64_t value) {
  return mix64(sequence ^ (value * 3) ^ static_cast<std::uint64_t>(kind));
}

inline Message make(MessageKind kind, std::uint64_t sequence) {
  const std::uint64_t value = value_of(sequence);
  return Message::make(kind, Body{sequence, value, check_of(kind, sequence, value)});
}

// True when the message is an intact `kind` message.
inline bool intact(const Message& message, MessageKind kind) {
  if (message.kind != kind) return false;
  const auto body = message.read<Body>();
  return body.value == value_of(body.sequence) &&
         body.check == check_of(kind, body.sequence, body.value);
}

struct alignas(64) ClientState {
  std::atomic<std::uint64_t> stop_after;  // set by the test: send sequences below it, 0 = no limit yet
  std::atomic<std::uint64_t> sent_next;
  std::atomic<std::uint64_t> answered;    // distinct sequences answered
  std::atomic<std::uint64_t> duplicates;  // answers to sequences already answered
  std::atomic<std::uint64_t> resent;
  std::atomic<std::uint64_t> rejected;    // garbled replies
  std::atomic<std::uint32_t> done;
};

struct alignas(64) ServerState {
  std::atomic<std::uint64_t> applied_next;  // every sequence below it was applied exactly once
  std::atomic<std::uint64_t> sum;           // of the values applied
  std::atomic<std::uint64_t> duplicates;    // requests seen again (answered again, not applied)
  std::atomic<std::uint64_t> out_of_order;
  std::atomic<std::uint64_t> rejected;      // garbled requests
};

}  // namespace flotilla::recovery::echo
