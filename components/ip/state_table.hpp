// The layout shared by IP's tables in the state store (routes, flows): a header, then an array of
// fixed-size entries, all plain old data inside a region the supervisor owns and keeps across IP
// restarts.
//
// Crash consistency. IP may be killed at any instruction, so every entry is published through one
// 32-bit state word, (generation << 2) | kind:
//   free    -> the entry holds nothing;
//   writing -> a writer was filling the words (odd low bits: never trust the words);
//   live    -> the words are stable and belong to the table.
// publish(): state := writing, release fence, store the words, state := live (release store).
// retire():  state := free with one release store, so a removal is atomic.
// A reader loads the state (acquire), copies the words, and re-reads the state: a different value
// means the entry changed underneath it (a seqlock), so a concurrent reader (`flotilla status`)
// never sees a half-written entry. On attach, an entry left in `writing` is a write the crash
// interrupted: it is retired, and the operation that was writing it is simply lost.
//
// The header is published the same way: formatting clears the magic first and writes it last, so a
// crash while formatting leaves a region the next attach formats again.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <span>

#include "dataplane/result.hpp"

namespace flotilla::ip {

enum class EntryKind : std::uint32_t { free = 0, writing = 1, live = 2 };

template <std::size_t Words>
struct PublishedEntry {
  std::atomic<std::uint32_t> state{0};  // (generation << 2) | EntryKind
  std::uint32_t reserved = 0;
  std::array<std::atomic<std::uint64_t>, Words> words{};

  using Values = std::array<std::uint64_t, Words>;

  static EntryKind kind_of(std::uint32_t state) { return static_cast<EntryKind>(state & 3u); }
  EntryKind kind() const { return kind_of(state.load(std::memory_order_acquire)); }

  void publish(const Values& values) {
    const std::uint32_t generation = (state.load(std::memory_order_relaxed) >> 2) + 1;
    state.store((generation << 2) | static_cast<std::uint32_t>(EntryKind::writing),
                std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);  // `writing` is visible before any word
    for (std::size_t i = 0; i < Words; ++i) words[i].store(values[i], std::memory_order_relaxed);
    state.store((generation << 2) | static_cast<std::uint32_t>(EntryKind::live),
                std::memory_order_release);
  }

  void retire() {
    const std::uint32_t generation = state.load(std::memory_order_relaxed) >> 2;
    state.store(generation << 2 | static_cast<std::uint32_t>(EntryKind::free),
                std::memory_order_release);
  }

  // The words of the table's own writer: no concurrent change is possible, so no re-check.
  std::uint64_t word(std::size_t i) const { return words[i].load(std::memory_order_relaxed); }

  // A stable copy of a live entry, for readers that may run beside the writer. nullopt when the
  // entry is not live or kept changing while being read.
  std::optional<Values> read_live() const {
    for (int attempt = 0; attempt < 16; ++attempt) {
      const std::uint32_t before = state.load(std::memory_order_acquire);
      if (kind_of(before) != EntryKind::live) return std::nullopt;
      Values values;
      for (std::size_t i = 0; i < Words; ++i) values[i] = words[i].load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (state.load(std::memory_order_relaxed) == before) return values;
    }
    return std::nullopt;
  }
};

struct alignas(64) StateTableHeader {
  std::atomic<std::uint64_t> magic{0};  // written last by format(), so a torn format is redone
  std::uint32_t version = 0;
  std::uint32_t capacity = 0;  // entries that follow the header
  std::uint32_t entry_bytes = 0;
  std::uint32_t reserved = 0;
};

template <class Entry>
struct StateTableView {
  StateTableHeader* header = nullptr;
  Entry* entries = nullptr;
  std::uint32_t capacity = 0;
  bool formatted = false;  // true: the region held no valid table and was laid out empty
};

// How many entries a region of `bytes` holds (at most max_entries).
template <class Entry>
constexpr std::size_t state_table_capacity(std::size_t bytes, std::size_t max_entries) {
  if (bytes < sizeof(StateTableHeader)) return 0;
  const std::size_t fit = (bytes - sizeof(StateTableHeader)) / sizeof(Entry);
  return fit < max_entries ? fit : max_entries;
}

template <class Entry>
constexpr std::size_t state_table_bytes(std::size_t capacity) {
  return sizeof(StateTableHeader) + capacity * sizeof(Entry);
}

// Reuses the table in `region` when its header is valid for this span (magic, version, entry
// size and the capacity this span gives); otherwise formats the region as an empty table.
template <class Entry>
Result<StateTableView<Entry>> attach_state_table(std::span<std::byte> region, std::uint64_t magic,
                                                 std::uint32_t version, std::size_t max_entries) {
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
  static_assert(alignof(Entry) <= alignof(StateTableHeader));
  if (reinterpret_cast<std::uintptr_t>(region.data()) % alignof(StateTableHeader) != 0) {
    return Error{Errc::invalid_argument, 0, "state table region not 64-byte aligned"};
  }
  const std::size_t capacity = state_table_capacity<Entry>(region.size(), max_entries);
  if (capacity == 0) return Error{Errc::invalid_argument, 0, "state table region too small"};

  StateTableView<Entry> view;
  view.header = reinterpret_cast<StateTableHeader*>(region.data());
  view.entries = reinterpret_cast<Entry*>(region.data() + sizeof(StateTableHeader));
  view.capacity = static_cast<std::uint32_t>(capacity);

  StateTableHeader& header = *view.header;
  const bool valid = header.magic.load(std::memory_order_acquire) == magic &&
                     header.version == version && header.capacity == capacity &&
                     header.entry_bytes == sizeof(Entry);
  if (valid) return view;

  header.magic.store(0, std::memory_order_release);  // a crash from here on leaves "not a table"
  for (std::size_t i = 0; i < capacity; ++i) new (&view.entries[i]) Entry{};
  header.version = version;
  header.capacity = static_cast<std::uint32_t>(capacity);
  header.entry_bytes = sizeof(Entry);
  header.reserved = 0;
  header.magic.store(magic, std::memory_order_release);
  view.formatted = true;
  return view;
}

}  // namespace flotilla::ip
