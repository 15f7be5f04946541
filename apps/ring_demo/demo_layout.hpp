// What the ring recovery demo's three processes (supervisor, producer, consumer) agree on: the
// shared-memory layouts, the message bodies, and how payloads and checksums are made. All three are
// the same binary, so they agree by construction; each still checks a magic number when it maps a
// region it was handed.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/counters.hpp"
#include "dataplane/cpu.hpp"
#include "dataplane/doorbell.hpp"
#include "dataplane/hash.hpp"
#include "dataplane/message.hpp"

namespace flotilla::ring_demo {

// Who owns buffers. The consumer keeps its id across incarnations: the supervisor reclaims a dead
// incarnation's buffers before it starts the next one, so the id is never held by two at once.
inline constexpr ComponentId kProducerId = 1;
inline constexpr ComponentId kConsumerId = 2;
inline constexpr PoolId kPoolId = 1;

inline constexpr std::uint32_t kRingCapacity = 1024;  // messages per direction of the channel
inline constexpr std::uint32_t kBufferSize = kDefaultBufferSize;
inline constexpr std::uint32_t kBufferCount = 4096;
// Copies the producer may have out at once (published or about to be). Bounded so the pool can
// never run dry: kOutstandingLimit + the consumer's one burst < kBufferCount.
inline constexpr std::size_t kOutstandingLimit = 2048;
inline constexpr std::size_t kBurst = 32;
// The consumer acknowledges at least this often, so a producer blocked on a full ring wakes up.
inline constexpr std::uint64_t kAckEvery = kRingCapacity / 4;
static_assert(kOutstandingLimit + kBurst < kBufferCount);
static_assert(kOutstandingLimit > kRingCapacity + 2 * kBurst);

// Message kinds on the channel. Producer -> consumer: data. Consumer -> producer: ack, and the
// runtime's own peer_restarted when a new consumer incarnation attaches.
inline constexpr MessageKind kDataKind =
    static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) + 1);
inline constexpr MessageKind kAckKind =
    static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) + 2);

struct DataBody {
  std::uint64_t seq;            // 1, 2, 3, ... ; a resend carries the same sequence again
  BufferHandle payload;         // the payload bytes, in the shared pool
  std::uint64_t ring_position;  // the ring index it was published at: the consumer checks that it
                                // reads each message exactly where it was put (ring integrity)
};
static_assert(sizeof(DataBody) <= Message::kBodyBytes);

struct AckBody {
  std::uint64_t incarnation;  // the consumer incarnation that sent it
  std::uint64_t applied;      // highest sequence applied and committed to the state store
};

// ---- Payloads --------------------------------------------------------------------------------
// Every payload is a pure function of its sequence number, so the producer can re-create it for a
// resend and the consumer (and the supervisor, for the expected checksum) can check it.

inline constexpr std::size_t kMaxPayloadWords = 32;  // 256 bytes
static_assert(kMaxPayloadWords * sizeof(std::uint64_t) <= kBufferSize);
// 64, 128, 192 or 256 bytes, depending on the sequence.
inline std::size_t payload_words(std::uint64_t seq) { return 8 * (1 + (seq % 4)); }
inline std::uint16_t payload_bytes(std::uint64_t seq) {
  return static_cast<std::uint16_t>(payload_words(seq) * sizeof(std::uint64_t));
}
// Word `index` of a payload whose first word is `base` (= payload_base(seq)): one mix per payload,
// then a Weyl sequence, so making and checking payloads stays cheap next to the ring itself.
inline std::uint64_t payload_base(std::uint64_t seq) { return mix64(seq); }
inline std::uint64_t payload_word(std::uint64_t base, std::size_t index) {
  return base + index * 0x9e3779b97f4a7c15ull;
}

inline void fill_payload(std::span<std::byte> out, std::uint64_t seq) {
  const std::uint64_t base = payload_base(seq);
  const std::size_t words = out.size() / sizeof(std::uint64_t);
  for (std::size_t i = 0; i < words; ++i) {
    const std::uint64_t word = payload_word(base, i);
    std::memcpy(out.data() + i * sizeof(word), &word, sizeof(word));
  }
}

// Digest of a payload's bytes, folded into the running checksum.
inline std::uint64_t payload_digest(std::span<const std::byte> bytes) {
  std::uint64_t digest = 0xcbf29ce484222325ull;
  for (std::size_t at = 0; at + sizeof(std::uint64_t) <= bytes.size();
       at += sizeof(std::uint64_t)) {
    std::uint64_t word;
    std::memcpy(&word, bytes.data() + at, sizeof(word));
    digest = (digest ^ word) * 0x100000001b3ull;
  }
  return digest;
}

// True when `bytes` is exactly the payload of `seq`.
inline bool payload_matches(std::span<const std::byte> bytes, std::uint64_t seq) {
  if (bytes.size() != payload_bytes(seq)) return false;
  const std::uint64_t base = payload_base(seq);
  for (std::size_t i = 0; i < payload_words(seq); ++i) {
    std::uint64_t word;
    std::memcpy(&word, bytes.data() + i * sizeof(word), sizeof(word));
    if (word != payload_word(base, i)) return false;
  }
  return true;
}

// The digest payload_digest() gives for the payload of `seq`, computed without making it.
inline std::uint64_t expected_digest(std::uint64_t seq) {
  const std::uint64_t base = payload_base(seq);
  std::uint64_t digest = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < payload_words(seq); ++i) {
    digest = (digest ^ payload_word(base, i)) * 0x100000001b3ull;
  }
  return digest;
}

// Order-sensitive: folding the same digests in another order gives another value.
inline std::uint64_t fold_checksum(std::uint64_t running, std::uint64_t digest) {
  return mix64(running ^ digest);
}

// ---- The consumer's state store ---------------------------------------------------------------
// The consumer's progress lives here, not in the consumer, so it outlives any incarnation. A
// commit writes the whole record into the slot that is not current and then flips `commits` with
// one release store, so a consumer killed at any instant leaves the last whole commit behind.
// Readers (the producer, read-only; the supervisor) retry if a commit overtook their copy.

struct ProgressValues {
  std::uint64_t applied = 0;        // highest sequence applied; sequences apply strictly in order
  std::uint64_t checksum = 0;       // fold_checksum over every applied payload, in order
  std::uint64_t duplicates = 0;     // copies of sequences already applied, discarded
  std::uint64_t out_of_order = 0;   // sequences past a hole, discarded (the hole comes again first)
  std::uint64_t stale_refused = 0;  // messages whose buffer handle had gone stale
  std::uint64_t refused = 0;        // anything else refused: bad kind, bad handle, not the owner
  std::uint64_t bad_payload = 0;    // payload bytes that were not what the sequence says
  std::uint64_t ring_mismatches = 0;  // messages found at another ring index than published at
  std::uint64_t incarnation = 0;      // the consumer incarnation that made this commit
};

inline constexpr std::uint64_t ProgressValues::*kProgressFields[] = {
    &ProgressValues::applied,      &ProgressValues::checksum,        &ProgressValues::duplicates,
    &ProgressValues::out_of_order, &ProgressValues::stale_refused,   &ProgressValues::refused,
    &ProgressValues::bad_payload,  &ProgressValues::ring_mismatches, &ProgressValues::incarnation,
};
inline constexpr std::size_t kProgressFieldCount = std::size(kProgressFields);

struct alignas(kCacheLine) ProgressSlot {
  std::array<std::atomic<std::uint64_t>, kProgressFieldCount> words;
};

struct alignas(kCacheLine) StateStore {
  static constexpr std::uint64_t kMagic = 0x65746174'536f6c46ull;  // "FloState"

  std::uint64_t magic;
  std::uint64_t messages;                                  // how many sequences the run has
  alignas(kCacheLine) std::atomic<std::uint64_t> commits;  // slots[commits & 1] is current
  ProgressSlot slots[2];
};

// Only the consumer calls this, and only one consumer incarnation lives at a time.
inline void commit_progress(StateStore& store, const ProgressValues& values) {
  // Acquire: the commit we build on may have been made by an earlier incarnation.
  const std::uint64_t current = store.commits.load(std::memory_order_acquire);
  ProgressSlot& next = store.slots[(current + 1) & 1];
  // A reader still copying this slot (from two commits ago) must see `commits` move once it has
  // seen any of the stores below; the fence pairs with the one in load_progress.
  std::atomic_thread_fence(std::memory_order_release);
  for (std::size_t i = 0; i < kProgressFieldCount; ++i) {
    next.words[i].store(values.*kProgressFields[i], std::memory_order_relaxed);
  }
  store.commits.store(current + 1, std::memory_order_release);
}

inline ProgressValues load_progress(const StateStore& store) {
  for (;;) {
    const std::uint64_t before = store.commits.load(std::memory_order_acquire);
    const ProgressSlot& slot = store.slots[before & 1];
    ProgressValues values;
    for (std::size_t i = 0; i < kProgressFieldCount; ++i) {
      values.*kProgressFields[i] = slot.words[i].load(std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (store.commits.load(std::memory_order_relaxed) == before) return values;
    cpu_relax();
  }
}

// ---- The supervisor's orders ------------------------------------------------------------------
// Written only by the supervisor; the producer maps it read-only.
struct alignas(kCacheLine) SupervisorControl {
  static constexpr std::uint64_t kMagic = 0x6c727443'6f6c6646ull;  // "FloCtrl"

  std::uint64_t magic;
  // The producer sends no sequence above this. The supervisor moves it past each planned kill
  // point only after that kill, so that even a short run is still streaming when the kill comes.
  alignas(kCacheLine) std::atomic<std::uint64_t> release_limit;
};

// ---- Doorbells and statistics -----------------------------------------------------------------

struct Doorbells {
  Doorbell producer;  // rung by the consumer's acks (and by the supervisor when it moves the limit)
  Doorbell consumer;  // rung by the producer's data
};

// What the producer tells the supervisor about its resends. Written only by the producer.
struct alignas(kCacheLine) ProducerReport {
  std::atomic<std::uint64_t> first_sends;    // sequences published for the first time
  std::atomic<std::uint64_t> resends;        // sequences published again after a consumer restart
  std::atomic<std::uint64_t> restarts_seen;  // consumer incarnation changes handled
  std::atomic<std::uint64_t> seen_incarnation;
  std::atomic<std::uint64_t> resend_from;  // for the last restart: first sequence resent
  std::atomic<std::uint64_t> in_flight;    // for the last restart: sequences sent, not applied
  std::atomic<std::uint64_t> released;     // for the last restart: copies freed (now stale)
  std::atomic<std::uint64_t> released_total;
  std::atomic<std::uint64_t> released_at_exit;  // copies nobody consumed, freed when done
};

// One per process role, written only by that role (one consumer incarnation at a time).
struct RoleStats {
  CounterBlock counters;
  ProducerReport producer;  // used by the producer only
};

}  // namespace flotilla::ring_demo
