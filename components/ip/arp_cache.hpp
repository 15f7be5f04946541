// IP's ARP cache: private memory (rebuilt by ARP after a restart), fixed capacity allocated once
// in the constructor. Times are the caller's now_ms, never read here.
//
// Entries are resolved (mac, expires_at) or incomplete (requests sent, last request time).
//
// Learning follows the RFC 826 merge rule: learn() updates an entry that exists (whatever its
// state) and creates one only when `create` is true, which the caller passes only for ARP packets
// addressed to us. A learn that creates nothing is counted in flood_ignored.
//
// Flood resistance: a full cache makes room by evicting, in this order, an expired entry, then
// the resolved entry not in use with the oldest learn time. An entry is "in use" while it is
// unexpired and lookup() found it within the last lifetime; in-use entries and incomplete ones
// (packets may be waiting for them) are never evicted. When nothing can be evicted, the creation
// is refused (flood_ignored; for want(): give_up). So a flood of any number of senders only
// churns the entries nobody uses.
//
// Resolution: after a lookup() miss, the caller calls want(). It creates an incomplete entry and
// answers send_request at most once per kRequestInterval per address; after kMaxRequests requests
// without an answer it answers give_up and forgets the address (the caller drops what waits).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "components/ip/slot_index.hpp"
#include "components/wire/address.hpp"

namespace flotilla::ip {

enum class ResolveStep { send_request, wait, give_up };

class ArpCache {
 public:
  static constexpr std::uint64_t kRequestInterval = 1000;  // ms between requests for one address
  static constexpr std::uint32_t kMaxRequests = 3;

  explicit ArpCache(std::size_t capacity = 256, std::uint64_t lifetime_ms = 60'000);

  // Stores address -> mac (resolving an incomplete entry, refreshing a resolved one). Creates an
  // entry only when `create` is true.
  void learn(std::uint32_t address, const wire::MacAddress& mac, std::uint64_t now_ms, bool create);
  // The MAC of a resolved, unexpired entry; marks the entry in use.
  std::optional<wire::MacAddress> lookup(std::uint32_t address, std::uint64_t now_ms);
  // What to do about a packet for an address lookup() did not resolve. If the address is in fact
  // resolved and fresh, answers wait (call lookup() again).
  ResolveStep want(std::uint32_t address, std::uint64_t now_ms);
  // Removes expired resolved entries and incomplete ones that have used up their requests.
  // Returns how many were removed. The second form reports each given-up address.
  std::size_t expire(std::uint64_t now_ms);
  template <class F>
  std::size_t expire(std::uint64_t now_ms, F&& on_give_up);  // on_give_up(std::uint32_t address)

  std::size_t size() const { return size_; }
  std::size_t capacity() const { return entries_.size(); }
  bool is_incomplete(std::uint32_t address) const;

  // Counters.
  std::uint64_t learned = 0;        // learn() stored a MAC
  std::uint64_t created = 0;        // entries created (by learn or want)
  std::uint64_t evicted = 0;        // entries evicted to make room
  std::uint64_t requests = 0;       // send_request answers
  std::uint64_t gave_up = 0;        // addresses given up (by want or expire)
  std::uint64_t flood_ignored = 0;  // learn() that created nothing, or found no room

 private:
  enum class State : std::uint8_t { free, incomplete, resolved };
  struct Entry {
    std::uint32_t address = 0;
    State state = State::free;
    bool used = false;  // lookup() found it since it was learned
    std::uint8_t requests_sent = 0;
    wire::MacAddress mac{};
    std::uint64_t learned_at = 0;  // resolved: last learn
    std::uint64_t expires_at = 0;  // resolved
    std::uint64_t last_request = 0;  // incomplete
    std::uint64_t last_used = 0;     // resolved, when used
  };

  std::optional<std::uint32_t> find(std::uint32_t address) const;
  bool make_room(std::uint64_t now_ms);
  std::uint32_t insert(std::uint32_t address);
  void remove(std::uint32_t entry);
  bool expired(const Entry& entry, std::uint64_t now_ms) const {
    return entry.state == State::resolved && now_ms >= entry.expires_at;
  }
  bool in_use(const Entry& entry, std::uint64_t now_ms) const {
    return entry.used && !expired(entry, now_ms) && now_ms - entry.last_used < lifetime_ms_;
  }
  bool requests_used_up(const Entry& entry, std::uint64_t now_ms) const {
    return entry.state == State::incomplete && entry.requests_sent >= kMaxRequests &&
           now_ms - entry.last_request >= kRequestInterval;
  }

  std::vector<Entry> entries_;
  std::vector<std::uint32_t> free_;
  SlotIndex index_;
  std::size_t size_ = 0;
  std::uint64_t lifetime_ms_;
};

template <class F>
std::size_t ArpCache::expire(std::uint64_t now_ms, F&& on_give_up) {
  std::size_t removed = 0;
  for (std::uint32_t i = 0; i < entries_.size(); ++i) {
    Entry& entry = entries_[i];
    if (expired(entry, now_ms)) {
      remove(i);
      ++removed;
    } else if (requests_used_up(entry, now_ms)) {
      const std::uint32_t address = entry.address;
      remove(i);
      ++removed;
      ++gave_up;
      on_give_up(address);
    }
  }
  return removed;
}

}  // namespace flotilla::ip
