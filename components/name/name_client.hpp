// Client side of the name fleet: a lookup cache with expiry, and sends addressed to the
// *intended* name. Every message sent by name carries an IntendedHeader (the name's 64-bit id and
// the incarnation the sender believes holds it); the receiver answers "stale" when it no longer
// holds that name at that incarnation (e.g. the component restarted and registered again), and
// the client then drops its cache entry, looks the name up again and retries once.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <unordered_map>

#include "components/name/name_errors.hpp"
#include "components/name/name_message.hpp"
#include "components/name/name_table.hpp"

namespace flotilla::name {

// Leads the body of a message sent by name: 16 of the 56 bytes.
struct IntendedHeader {
  std::uint64_t name_id = 0;
  std::uint64_t incarnation = 0;
};

// A name the receiving component holds, at the incarnation it registered with.
struct Registration {
  std::uint64_t name_id = 0;
  std::uint64_t incarnation = 0;
};

enum class Delivery : std::uint8_t { accepted, stale };

// For receivers: accepted only if one of `mine` matches both the name and the incarnation.
Delivery check_intended(const IntendedHeader& header, std::span<const Registration> mine);

struct CachedName {
  Endpoint endpoint;
  std::uint64_t expires_ms = 0;
};

// Keyed by name id (a 64-bit FNV-1a; a collision would show up as a stale answer, which the
// retry path already handles). find() does not allocate.
class NameCache {
 public:
  const CachedName* find(std::uint64_t id, std::uint64_t now_ms) const;
  void put(std::uint64_t id, const CachedName& entry) { entries_[id] = entry; }
  void drop(std::uint64_t id) { entries_.erase(id); }
  std::size_t size() const { return entries_.size(); }

 private:
  std::unordered_map<std::uint64_t, CachedName> entries_;
};

struct Resolved {
  NameErrc status = NameErrc::not_found;
  Endpoint endpoint;
};

class NameClient {
 public:
  // Asks the fleet (in a component: a lookup message to its name server, see lookup_request).
  using LookupFn = std::function<LookupResult(std::string_view name)>;
  // Hands one message to `to` with `header` leading its body; answers what the receiver said.
  using SendFn = std::function<Delivery(const Endpoint& to, const IntendedHeader& header)>;

  explicit NameClient(LookupFn lookup) : lookup_(std::move(lookup)) {}

  // From the cache while fresh, else from the fleet. bad_name, not_found, or ok.
  Resolved resolve(std::string_view name, std::uint64_t now_ms);

  // Sends to whoever holds `name`. On a stale answer: drop, look up again, retry once; a second
  // stale answer fails with NameErrc::stale. A name that no longer exists fails with not_found.
  NameErrc send(std::string_view name, std::uint64_t now_ms, const SendFn& deliver);

  void forget(std::string_view name) { cache_.drop(name_id(name)); }
  const NameCache& cache() const { return cache_; }
  std::uint64_t fleet_lookups() const { return fleet_lookups_; }
  std::uint64_t stale_retries() const { return stale_retries_; }

  // Requests for the fleet's wire format.
  static NameMessage lookup_request(ComponentId client, std::uint64_t cookie, std::string_view name);
  static NameMessage change_request(ComponentId client, std::uint64_t cookie, const Change& change);

 private:
  LookupFn lookup_;
  NameCache cache_;
  std::uint64_t fleet_lookups_ = 0;
  std::uint64_t stale_retries_ = 0;
};

}  // namespace flotilla::name
