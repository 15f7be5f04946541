// The ARP cache's merge rule, eviction and resolution steps (policy in arp_cache.hpp).
#include "components/ip/arp_cache.hpp"

#include "dataplane/hash.hpp"

namespace flotilla::ip {

ArpCache::ArpCache(std::size_t capacity, std::uint64_t lifetime_ms)
    : entries_(capacity == 0 ? 1 : capacity), index_(entries_.size()), lifetime_ms_(lifetime_ms) {
  free_.reserve(entries_.size());
  for (std::uint32_t i = static_cast<std::uint32_t>(entries_.size()); i-- > 0;) free_.push_back(i);
}

std::optional<std::uint32_t> ArpCache::find(std::uint32_t address) const {
  return index_.find(mix64(address),
                     [&](std::uint32_t entry) { return entries_[entry].address == address; });
}

std::uint32_t ArpCache::insert(std::uint32_t address) {
  const std::uint32_t entry = free_.back();
  free_.pop_back();
  entries_[entry] = Entry{};
  entries_[entry].address = address;
  index_.insert(mix64(address), entry);
  ++size_;
  ++created;
  return entry;
}

void ArpCache::remove(std::uint32_t entry) {
  index_.erase(mix64(entries_[entry].address), entry);
  entries_[entry] = Entry{};
  free_.push_back(entry);
  --size_;
}

// Frees an entry for insert() if the cache is full. O(capacity), only when full.
bool ArpCache::make_room(std::uint64_t now_ms) {
  if (!free_.empty()) return true;
  std::optional<std::uint32_t> victim;
  for (std::uint32_t i = 0; i < entries_.size(); ++i) {
    const Entry& entry = entries_[i];
    if (expired(entry, now_ms)) {
      victim = i;
      break;
    }
    if (entry.state != State::resolved || in_use(entry, now_ms)) continue;
    if (!victim || entry.learned_at < entries_[*victim].learned_at) victim = i;
  }
  if (!victim) return false;
  remove(*victim);
  ++evicted;
  return true;
}

void ArpCache::learn(std::uint32_t address, const wire::MacAddress& mac, std::uint64_t now_ms, bool create) {
  std::optional<std::uint32_t> entry = find(address);
  if (!entry) {
    if (!create || !make_room(now_ms)) {
      ++flood_ignored;
      return;
    }
    entry = insert(address);
  }
  Entry& e = entries_[*entry];
  if (e.state != State::resolved || e.mac != mac || expired(e, now_ms)) e.used = false;
  e.state = State::resolved;
  e.mac = mac;
  e.learned_at = now_ms;
  e.expires_at = now_ms + lifetime_ms_;
  e.requests_sent = 0;
  ++learned;
}

std::optional<wire::MacAddress> ArpCache::lookup(std::uint32_t address, std::uint64_t now_ms) {
  const std::optional<std::uint32_t> entry = find(address);
  if (!entry) return std::nullopt;
  Entry& e = entries_[*entry];
  if (e.state != State::resolved || expired(e, now_ms)) return std::nullopt;
  e.used = true;
  e.last_used = now_ms;
  return e.mac;
}

ResolveStep ArpCache::want(std::uint32_t address, std::uint64_t now_ms) {
  std::optional<std::uint32_t> entry = find(address);
  if (!entry) {
    if (!make_room(now_ms)) {
      ++gave_up;
      return ResolveStep::give_up;
    }
    entry = insert(address);
  }
  Entry& e = entries_[*entry];
  if (e.state == State::resolved) {
    if (!expired(e, now_ms)) return ResolveStep::wait;
    e.state = State::incomplete;  // re-resolve in place
    e.used = false;
    e.requests_sent = 0;
  }
  if (e.state == State::free) e.state = State::incomplete;  // just inserted
  if (e.requests_sent > 0 && now_ms - e.last_request < kRequestInterval) return ResolveStep::wait;
  if (e.requests_sent >= kMaxRequests) {
    remove(*entry);
    ++gave_up;
    return ResolveStep::give_up;
  }
  ++e.requests_sent;
  e.last_request = now_ms;
  ++requests;
  return ResolveStep::send_request;
}

std::size_t ArpCache::expire(std::uint64_t now_ms) {
  return expire(now_ms, [](std::uint32_t) {});
}

bool ArpCache::is_incomplete(std::uint32_t address) const {
  const std::optional<std::uint32_t> entry = find(address);
  return entry && entries_[*entry].state == State::incomplete;
}

}  // namespace flotilla::ip
