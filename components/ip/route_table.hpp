// IPv4 routes, kept in the state store so a restarted IP process finds them again.
//
// Semantics (as Linux): a route is identified by (prefix, prefix_length, metric). add() of an
// identical triple replaces that route's gateway; routes for one prefix with different metrics
// coexist, and lookup() takes the longest matching prefix, then the lowest metric.
//
// Storage: a state-store table (state_table.hpp) of entries {prefix, gateway, metric, length,
// stamp}; the entries are the truth. Every change publishes or retires one whole entry (see the
// protocol in state_table.hpp), so a crash never leaves a half-written route:
//   - add() of a new route publishes it into a free entry;
//   - a replacement publishes the new route into a free entry FIRST, then retires the old one.
//     One entry is kept spare for this, so capacity() is one less than the entries in the region.
//     A crash between the two steps leaves both; attach() keeps the one with the higher stamp;
//   - remove() retires entries, one release store each.
// attach() also retires entries left half-written. Lookups use a private copy of the live routes,
// sorted longest prefix first, rebuilt (without allocating) on every change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "components/ip/state_table.hpp"
#include "dataplane/result.hpp"

namespace flotilla::ip {

struct Route {
  std::uint32_t prefix = 0;  // host order, host bits zero
  std::uint8_t prefix_length = 0;
  std::uint32_t gateway = 0;  // 0 = on-link
  std::uint32_t metric = 0;

  friend bool operator==(const Route&, const Route&) = default;
};

class RouteTable {
 public:
  static constexpr std::uint64_t kMagic = 0x6574756f'526f6c46ull;  // "FloRoute"
  static constexpr std::uint32_t kVersion = 1;
  static constexpr std::size_t kMaxEntries = 257;  // 256 routes + the spare entry
  using Entry = PublishedEntry<3>;  // words: prefix<<32|gateway, metric<<32|length, stamp

  // Bytes a region needs to hold `routes` routes.
  static constexpr std::size_t bytes_for(std::size_t routes) {
    return state_table_bytes<Entry>(routes + 1);
  }

  // Reuses the table in `region` (the region must stay mapped while this object lives), or
  // formats it empty. Errc::invalid_argument if the region is misaligned or too small.
  static Result<RouteTable> attach(std::span<std::byte> region);

  // Errc::invalid_argument: prefix_length > 32 or host bits set; Errc::exhausted: table full.
  Status add(const Route& route);
  // Removes every route for this prefix (all metrics). Errc::invalid_argument if there is none.
  Status remove(std::uint32_t prefix, std::uint8_t prefix_length);
  // Removes the one route with this prefix and metric.
  Status remove(std::uint32_t prefix, std::uint8_t prefix_length, std::uint32_t metric);

  // Longest prefix match; among equal prefixes the lowest metric.
  std::optional<Route> lookup(std::uint32_t destination) const;

  std::size_t size() const { return sorted_.size(); }
  std::size_t capacity() const { return slot_count_ - 1; }
  bool was_formatted() const { return formatted_; }  // attach found no valid table

  // Every route, longest prefix first, then lowest metric.
  template <class F>
  void for_each(F&& each) const {
    for (const SortedRoute& sorted : sorted_) each(sorted.route);
  }

 private:
  struct SortedRoute {
    Route route;
    std::uint32_t mask = 0;
    std::uint32_t entry = 0;
  };

  explicit RouteTable(const StateTableView<Entry>& view);
  void repair_and_load();
  std::optional<std::uint32_t> free_entry() const;
  void rebuild_sorted();
  Route route_at(std::uint32_t entry) const;

  Entry* entries_ = nullptr;
  std::uint32_t slot_count_ = 0;
  bool formatted_ = false;
  std::uint64_t next_stamp_ = 1;
  std::vector<SortedRoute> sorted_;  // reserved to slot_count_ at attach
};

}  // namespace flotilla::ip
