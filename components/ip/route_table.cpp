// The route table's writer and its attach-time repair (protocol in route_table.hpp).
#include "components/ip/route_table.hpp"

#include <algorithm>

namespace flotilla::ip {
namespace {

std::uint32_t mask_for(std::uint8_t prefix_length) {
  return prefix_length == 0 ? 0u : ~std::uint32_t{0} << (32 - prefix_length);
}

RouteTable::Entry::Values pack(const Route& route, std::uint64_t stamp) {
  return {(std::uint64_t{route.prefix} << 32) | route.gateway,
          (std::uint64_t{route.metric} << 32) | route.prefix_length, stamp};
}

bool same_key(const Route& a, const Route& b) {
  return a.prefix == b.prefix && a.prefix_length == b.prefix_length && a.metric == b.metric;
}

}  // namespace

Result<RouteTable> RouteTable::attach(std::span<std::byte> region) {
  auto view = attach_state_table<Entry>(region, kMagic, kVersion, kMaxEntries);
  if (!view) return view.error();
  if (view->capacity < 2) return Error{Errc::invalid_argument, 0, "route region too small"};
  RouteTable table(*view);
  table.repair_and_load();
  return table;
}

RouteTable::RouteTable(const StateTableView<Entry>& view)
    : entries_(view.entries), slot_count_(view.capacity), formatted_(view.formatted) {
  sorted_.reserve(slot_count_);
}

Route RouteTable::route_at(std::uint32_t entry) const {
  const Entry& e = entries_[entry];
  const std::uint64_t first = e.word(0);
  const std::uint64_t second = e.word(1);
  return Route{static_cast<std::uint32_t>(first >> 32), static_cast<std::uint8_t>(second & 0xff),
               static_cast<std::uint32_t>(first), static_cast<std::uint32_t>(second >> 32)};
}

void RouteTable::repair_and_load() {
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    Entry& entry = entries_[i];
    const EntryKind kind = entry.kind();
    if (kind == EntryKind::writing) {
      entry.retire();  // a write the crash interrupted
      continue;
    }
    if (kind != EntryKind::live) continue;
    const Route route = route_at(i);
    if (route.prefix_length > 32 || (route.prefix & ~mask_for(route.prefix_length)) != 0) {
      entry.retire();  // not something add() could have written
      continue;
    }
    next_stamp_ = std::max(next_stamp_, entry.word(2) + 1);
    // A replacement cut short by a crash leaves two entries for one route: keep the newer.
    for (std::uint32_t j = 0; j < i; ++j) {
      if (entries_[j].kind() != EntryKind::live || !same_key(route_at(j), route)) continue;
      const bool this_is_newer = entry.word(2) > entries_[j].word(2);
      (this_is_newer ? entries_[j] : entry).retire();
      break;
    }
  }
  rebuild_sorted();
}

std::optional<std::uint32_t> RouteTable::free_entry() const {
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    if (entries_[i].kind() == EntryKind::free) return i;
  }
  return std::nullopt;
}

void RouteTable::rebuild_sorted() {
  sorted_.clear();  // keeps the capacity reserved at attach
  for (std::uint32_t i = 0; i < slot_count_; ++i) {
    if (entries_[i].kind() != EntryKind::live) continue;
    const Route route = route_at(i);
    sorted_.push_back(SortedRoute{route, mask_for(route.prefix_length), i});
  }
  std::sort(sorted_.begin(), sorted_.end(), [](const SortedRoute& a, const SortedRoute& b) {
    if (a.route.prefix_length != b.route.prefix_length) {
      return a.route.prefix_length > b.route.prefix_length;
    }
    return a.route.metric < b.route.metric;
  });
}

Status RouteTable::add(const Route& route) {
  if (route.prefix_length > 32) return Error{Errc::invalid_argument, 0, "prefix length > 32"};
  if ((route.prefix & ~mask_for(route.prefix_length)) != 0) {
    return Error{Errc::invalid_argument, 0, "host bits set in route prefix"};
  }
  std::optional<std::uint32_t> replaced;
  for (const SortedRoute& sorted : sorted_) {
    if (same_key(sorted.route, route)) replaced = sorted.entry;
  }
  if (!replaced && size() >= capacity()) return Error{Errc::exhausted, 0, "route table full"};
  const std::optional<std::uint32_t> target = free_entry();  // the spare one is always there
  if (!target) return Error{Errc::exhausted, 0, "route table full"};
  entries_[*target].publish(pack(route, next_stamp_++));
  if (replaced) entries_[*replaced].retire();
  rebuild_sorted();
  return {};
}

Status RouteTable::remove(std::uint32_t prefix, std::uint8_t prefix_length) {
  std::size_t removed = 0;
  for (const SortedRoute& sorted : sorted_) {
    if (sorted.route.prefix == prefix && sorted.route.prefix_length == prefix_length) {
      entries_[sorted.entry].retire();
      ++removed;
    }
  }
  if (removed == 0) return Error{Errc::invalid_argument, 0, "no such route"};
  rebuild_sorted();
  return {};
}

Status RouteTable::remove(std::uint32_t prefix, std::uint8_t prefix_length,
                          std::uint32_t metric) {
  for (const SortedRoute& sorted : sorted_) {
    if (same_key(sorted.route, Route{prefix, prefix_length, 0, metric})) {
      entries_[sorted.entry].retire();
      rebuild_sorted();
      return {};
    }
  }
  return Error{Errc::invalid_argument, 0, "no such route"};
}

std::optional<Route> RouteTable::lookup(std::uint32_t destination) const {
  for (const SortedRoute& sorted : sorted_) {
    if ((destination & sorted.mask) == sorted.route.prefix) return sorted.route;
  }
  return std::nullopt;
}

}  // namespace flotilla::ip
