#include "components/tcp/replica_server.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <iterator>

#include "components/tcp/connection.hpp"
#include "components/tcp/connection_table.hpp"
#include "components/wire/ipv4.hpp"
#include "dataplane/crash.hpp"

namespace flotilla::tcp {
namespace {

using formats::TcpSocketControl;
using formats::TcpSocketStatus;

// Ephemeral ports (RFC 6335's dynamic range). Replica k of N uses the ones with port % N == k, so
// two replicas never pick the same local port for the same peer.
constexpr std::uint32_t kFirstEphemeral = 49152;
constexpr std::uint32_t kEphemeralCount = 65536 - kFirstEphemeral;

// The slot table, in the state store after the engine's connection table:
//   SlotTableHeader, SeatHeader[app count], ForkSlot[app count][kForkSlots], then each
//   application's SlotEntry[its page count]. An all-zero entry is a valid free one, so formatting
//   clears the table (discard_memory) instead of writing it: an idle seat's entries cost no memory.
constexpr std::uint64_t kSlotTableMagic = 0x53544f4c53504354ull;  // "TCPSLOTS"
// 2: listener groups (a listener entry's address, port, backlog, active and reuseport bits, a
// connection's member page). 3: fork pins (a connection's pins, the forks of each application).
// 4: the pages handed out so far (SeatHeader::used_pages), all-zero entries free.
constexpr std::uint32_t kSlotTableLayout = 4;

struct alignas(64) SlotTableHeader {
  std::uint64_t magic = 0;  // stored last, with release, once the whole table is formatted
  std::uint32_t layout = 0;
  std::uint32_t app_count = 0;
  std::uint32_t entry_bytes = 0;
  std::uint32_t reserved[11] = {};
};
static_assert(sizeof(SlotTableHeader) == 64);

// SlotEntry::flags bits.
constexpr std::uint8_t kSlotAppClosed = 1 << 0;
constexpr std::uint8_t kSlotEngineReleased = 1 << 1;
constexpr std::uint8_t kSlotAnnounced = 1 << 2;
constexpr std::uint8_t kSlotUnanswered = 1 << 3;
constexpr std::uint8_t kSlotActive = 1 << 4;     // a listener member whose process accepts
constexpr std::uint8_t kSlotReusePort = 1 << 5;  // a listener member of a group made with SO_REUSEPORT
// A passive connection held for a member that does not accept yet (clear in layout 4's entries
// before it, which meant the same: nothing was held then).
constexpr std::uint8_t kSlotHeld = 1 << 6;
// A holder's page (SocketPage::holder; clear in layout 4's entries before it: no holders then).
constexpr std::uint8_t kSlotHolder = 1 << 7;
// SlotEntry::options bits (the options that are not numbers; the application sends its options
// again to a recovered replica).
constexpr std::uint8_t kSlotNodelay = 1 << 0;
constexpr std::uint8_t kSlotCork = 1 << 1;
constexpr std::uint8_t kSlotKeepalive = 1 << 2;
constexpr std::uint8_t kSlotNewReno = 1 << 3;

constexpr std::size_t align64(std::size_t bytes) { return (bytes + 63) / 64 * 64; }

// What a holder's page's generation word reads while another page carries its connection (no page
// is handed out with it): its library then leaves the rings alone.
constexpr std::uint32_t kHolderGeneration = 0;

// The socket pages a region of an application holds (as TcpRegion::format makes them).
std::uint32_t pages_in(std::span<const std::byte> region, std::size_t ring_bytes) {
  if (region.size() < formats::TcpRegion::bytes_for(1, ring_bytes)) return 0;
  return static_cast<std::uint32_t>((region.size() - formats::TcpRegion::kMemoryPageBytes) /
                                    formats::TcpRegion::page_stride(ring_bytes));
}

}  // namespace

// One page of an application's region, as the replica knows it (SocketPage), in the state store.
struct ReplicaServer::SlotEntry {
  std::uint32_t version = 0;  // as Tcb::version (update_entry, read_entry)
  std::uint8_t kind = 0;      // PageKind
  std::uint8_t flags = 0;     // kSlot*
  std::uint8_t options = 0;   // kSlotNodelay ...
  std::uint8_t reserved = 0;
  std::uint32_t generation = 0;
  // A listener: the group's address, and its port | the member's backlog << 16.
  std::uint32_t connection_index = 0;
  std::uint32_t connection_generation = 0;
  std::uint32_t listener = 0;
  // A listener: accept_announced, accept_taken. A connection: accept_order, its member's page.
  std::uint32_t accept_first = 0;
  std::uint32_t accept_second = 0;
  std::uint64_t pins = 0;  // SocketPage::pins
};

struct alignas(64) ReplicaServer::SeatHeader {
  std::uint32_t page_count = 0;  // of the region, checked against the region at restart
  std::uint32_t ring_bytes = 0;
  // Pages handed out so far, the region's first ones: stored before a page above it is first
  // handed out, so a successor finds every live page below it and reads nothing above.
  std::uint32_t used_pages = 0;
  std::uint32_t reserved[13] = {};
};

// One fork of an application whose pins may still hold connections (App::forks).
struct ReplicaServer::ForkSlot {
  std::uint32_t version = 0;  // as SlotEntry::version
  std::uint32_t reserved = 0;
  std::uint64_t fork = 0;  // 0: free
};

std::size_t ReplicaServer::state_bytes(const ReplicaSettings& settings, std::span<const std::uint32_t> pages) {
  static_assert(sizeof(SlotEntry) == formats::kTcpSlotEntryBytes && sizeof(ForkSlot) == 16 && sizeof(SeatHeader) == 64);
  std::size_t bytes = align64(Engine::table_bytes(settings.engine)) + sizeof(SlotTableHeader) +
                      pages.size() * (sizeof(SeatHeader) + kForkSlots * sizeof(ForkSlot));
  for (const std::uint32_t count : pages) bytes += std::size_t{count} * sizeof(SlotEntry);
  return bytes;
}

ReplicaServer::ReplicaServer(BufferPool& pool, ComponentId self, const ReplicaSettings& settings,
                             ReplicaOutputs& outputs, NamedCounterTable& counters, std::uint64_t incarnation)
    : pool_(&pool),
      self_(self),
      settings_(settings),
      outputs_(&outputs),
      cache_(pool, self),
      // Generations differ between incarnations, so a message about a page of the dead one is stale
      // (and a page a recovered replica hands out anew never matches one the application kept).
      next_generation_(static_cast<std::uint32_t>(incarnation << 20) | 1u),
      incarnation_(incarnation) {
  counters_.register_in(counters);
}

Result<std::unique_ptr<ReplicaServer>> ReplicaServer::create(BufferPool& pool, ComponentId self,
                                                             std::span<std::byte> state,
                                                             std::span<const std::span<std::byte>> apps,
                                                             const ReplicaSettings& settings,
                                                             ReplicaOutputs& outputs, NamedCounterTable& counters,
                                                             std::uint64_t incarnation, std::uint64_t now_ns) {
  if (settings.count == 0 || settings.index >= settings.count) {
    return Error{Errc::invalid_argument, 0, "tcp: replica index must be below the replica count"};
  }
  std::unique_ptr<ReplicaServer> server(new ReplicaServer(pool, self, settings, outputs, counters, incarnation));
  server->apps_.resize(apps.size());
  server->backlogged_.assign((apps.size() + 63) / 64, 0);
  server->connections_.resize(settings.engine.max_connections);
  server->listeners_.resize(settings.engine.max_listeners);
  server->segment_batch_.reserve(settings.engine.segment_batch);
  std::vector<std::uint32_t> pages;
  for (const auto region : apps) pages.push_back(pages_in(region, settings.ring_bytes));
  if (state.size() < state_bytes(settings, pages)) {
    return Error{Errc::invalid_argument, 0,
                 "tcp: state store too small for the connection and slot tables (state_bytes)"};
  }
  const bool recovering = server->attach_slots(state, apps);
  // Announced before the engine runs: its restart RSTs and claims must reach IP after it, and each
  // application hears what became of its sockets before any event about them.
  server->announce(recovering ? stack::TcpReplicaMode::recovering : stack::TcpReplicaMode::fresh);
  // A first incarnation has no predecessor whose sockets could be gone: to an application that
  // attached before it (and so does not know its incarnation yet) nothing changed, and its opens
  // already wait in the channel.
  const stack::TcpReplicaMode formatted =
      incarnation <= 1 ? stack::TcpReplicaMode::ip_restarted : stack::TcpReplicaMode::fresh;
  for (std::size_t app = 0; app < apps.size(); ++app) {
    if (!server->apps_[app].region.valid()) continue;
    server->send_announce(app, server->apps_[app].restored ? stack::TcpReplicaMode::recovering : formatted);
  }
  auto engine = Engine::create(state, settings.engine, *server, counters, now_ns,
                               recovering ? RestorePolicy::resume : RestorePolicy::reset);
  if (!engine) return engine.error();
  server->engine_ = std::move(engine).value();
  if (recovering) {
    // A listener whose page did not come back holds its port for nobody.
    for (ListenerId id = 0; id < server->listeners_.size(); ++id) {
      Group& group = server->listeners_[id];
      if (group.members.empty()) server->engine_->close_listener(id);
      std::sort(group.members.begin(), group.members.end(),
                [](const Place& a, const Place& b) { return a.generation < b.generation; });
    }
    // Before any page is finished: a carrier's close must find its holders.
    for (const App& entry : server->apps_) {
      for (const SocketPage& page : entry.pages) {
        if (!page.holder) continue;
        if (const auto carrier = server->carrier_of(page.connection)) {
          server->apps_[carrier->app].pages[carrier->page].moved = true;
        }
      }
    }
    for (std::size_t app = 0; app < apps.size(); ++app) {
      if (server->apps_[app].restored) server->finish_restore(app, now_ns);
    }
    // Held connections stay held; those the predecessor left with a member that does not accept
    // while another does (it died before it moved them) go now.
    server->count_held();
    for (ListenerId id = 0; id < server->listeners_.size(); ++id) server->place_held(id);
    server->announce(stack::TcpReplicaMode::recovered);
  }
  return server;
}

bool ReplicaServer::attach_slots(std::span<std::byte> state, std::span<const std::span<std::byte>> regions) {
  std::byte* base = state.data() + align64(Engine::table_bytes(settings_.engine));
  auto* header = reinterpret_cast<SlotTableHeader*>(base);
  auto* seats = reinterpret_cast<SeatHeader*>(base + sizeof(SlotTableHeader));
  auto* forks = reinterpret_cast<ForkSlot*>(base + sizeof(SlotTableHeader) + regions.size() * sizeof(SeatHeader));
  auto* entries = reinterpret_cast<SlotEntry*>(forks + regions.size() * kForkSlots);
  std::atomic_ref<std::uint64_t> magic(header->magic);
  const bool previous = magic.load(std::memory_order_acquire) == kSlotTableMagic &&
                        header->layout == kSlotTableLayout && header->app_count == regions.size() &&
                        header->entry_bytes == sizeof(SlotEntry);
  // Each application's entries start where the seat headers' page counts put them, so one seat that
  // no longer fits its region formats the whole table (its connections are reset by the engine).
  std::vector<formats::TcpRegion> attached(regions.size());
  bool fits = previous;
  for (std::size_t app = 0; fits && app < regions.size(); ++app) {
    if (regions[app].empty()) {
      fits = seats[app].page_count == 0;
      continue;
    }
    attached[app] = formats::TcpRegion::attach(regions[app]);
    fits = attached[app].valid() && attached[app].page_count() == seats[app].page_count &&
           attached[app].ring_bytes() == settings_.ring_bytes && seats[app].ring_bytes == settings_.ring_bytes;
  }
  if (!fits) {
    magic.store(0, std::memory_order_relaxed);
    std::size_t slot_bytes = 0;
    for (const auto region : regions) slot_bytes += std::size_t{pages_in(region, settings_.ring_bytes)} * sizeof(SlotEntry);
    discard_memory({reinterpret_cast<std::byte*>(seats), reinterpret_cast<std::byte*>(entries) + slot_bytes});
  }
  SlotEntry* next = entries;
  for (std::size_t app = 0; app < regions.size(); ++app) {
    App& entry = apps_[app];
    entry.seat = &seats[app];
    entry.fork_slots = forks + app * kForkSlots;
    if (fits) {
      entry.region = attached[app];
      entry.slots = next;
      entry.restored = entry.region.valid();
      restore_app(app);
    } else {
      format_app(app, regions[app]);
      entry.slots = next;
      seats[app].page_count = entry.region.page_count();
      seats[app].ring_bytes = static_cast<std::uint32_t>(settings_.ring_bytes);
    }
    next += entry.region.page_count();
  }
  if (!fits) {
    header->layout = kSlotTableLayout;
    header->app_count = static_cast<std::uint32_t>(regions.size());
    header->entry_bytes = sizeof(SlotEntry);
    magic.store(kSlotTableMagic, std::memory_order_release);
  }
  return fits;
}

void ReplicaServer::restore_app(std::size_t app) {
  App& entry = apps_[app];
  const std::uint32_t pages =
      std::min(std::atomic_ref<std::uint32_t>(entry.seat->used_pages).load(std::memory_order_acquire),
               entry.region.page_count());
  entry.pages.assign(pages, SocketPage{});
  entry.outbox = MessageOutbox();
  fit_outbox(entry);
  std::uint64_t live_forks = 0;  // bit k: forks[k] is a fork (a torn slot pins nothing)
  for (std::size_t slot = 0; slot < kForkSlots; ++slot) {
    ForkSlot stored;
    entry.forks[slot] = read_entry(entry.fork_slots[slot], stored) ? stored.fork : 0;
    if (entry.forks[slot] != 0) live_forks |= std::uint64_t{1} << slot;
  }
  const auto drop = [&](std::uint32_t page) {
    counters_.slots_dropped->add();
    entry.pages[page] = SocketPage{};
    store_page(app, page);
    entry.region.page(page)->control.status.store(TcpSocketStatus::free, std::memory_order_release);
  };
  for (std::uint32_t page = 0; page < pages; ++page) {
    SlotEntry slot;
    if (!read_entry(entry.slots[page], slot)) {
      drop(page);
      continue;
    }
    if (slot.kind == static_cast<std::uint8_t>(PageKind::free)) continue;
    const bool connection = slot.kind == static_cast<std::uint8_t>(PageKind::connection);
    const bool listener = slot.kind == static_cast<std::uint8_t>(PageKind::listener);
    SocketPage& state = entry.pages[page];
    state.kind = connection ? PageKind::connection : PageKind::listener;
    state.app_closed = (slot.flags & kSlotAppClosed) != 0;
    state.engine_released = (slot.flags & kSlotEngineReleased) != 0;
    state.announced = (slot.flags & kSlotAnnounced) != 0;
    state.held = connection && (slot.flags & kSlotHeld) != 0;
    state.holder = connection && (slot.flags & kSlotHolder) != 0;
    state.unanswered = (slot.flags & kSlotUnanswered) != 0;
    state.generation = slot.generation;
    state.connection = ConnectionHandle{slot.connection_index, slot.connection_generation};
    state.listener = slot.listener;
    state.options.nodelay = (slot.options & kSlotNodelay) != 0;
    state.options.cork = (slot.options & kSlotCork) != 0;
    state.options.keepalive = (slot.options & kSlotKeepalive) != 0;
    if ((slot.options & kSlotNewReno) != 0) state.options.congestion = CongestionAlgorithm::newreno;
    if (listener) {
      state.accept_announced = slot.accept_first;
      state.accept_taken = slot.accept_second;
      state.active = (slot.flags & kSlotActive) != 0;
      state.reuse_port = (slot.flags & kSlotReusePort) != 0;
      state.listen_address = slot.connection_index;
      state.listen_port = static_cast<std::uint16_t>(slot.connection_generation & 0xffff);
      state.backlog = static_cast<std::uint16_t>(slot.connection_generation >> 16);
      state.connection = ConnectionHandle{};
    } else {
      state.accept_order = slot.accept_first;
      state.listener_page = slot.accept_second;
      state.pins = slot.pins & live_forks;
    }
    // What a page must be to be carried on: a known kind, a generation the application can match,
    // a connection or listener this engine can have, and no other page claiming the same one.
    const std::uint32_t word = state.holder ? kHolderGeneration : state.generation;
    bool valid = (connection || listener) && state.generation != 0 &&
                 entry.region.page(page)->control.generation.load(std::memory_order_acquire) == word;
    if (valid && listener) {
      // Every member of a group names the same address and port.
      valid = state.listener < listeners_.size() && state.accept_taken <= state.accept_announced &&
              state.listen_port != 0;
      if (valid) {
        Group& group = listeners_[state.listener];
        if (group.members.empty()) {
          group.address = state.listen_address;
          group.port = state.listen_port;
        }
        valid = group.address == state.listen_address && group.port == state.listen_port;
        if (valid) {
          group.reuse_port = group.reuse_port || state.reuse_port;
          group.members.push_back(Place{static_cast<std::uint32_t>(app), page, state.generation});
        }
      }
    } else if (valid && state.holder) {
      ++holder_pages_;  // its carrier is looked for once the engine is back (finish_restore)
    } else if (valid && !state.engine_released) {
      valid = state.connection.index < connections_.size() && connections_[state.connection.index].app == UINT32_MAX &&
              (state.listener == kNoListener || state.listener < listeners_.size());
      if (valid) connections_[state.connection.index] = Place{static_cast<std::uint32_t>(app), page, state.generation};
    }
    if (!valid) {
      drop(page);
      continue;
    }
    // A move the old incarnation was waiting to make is gone with it: its asker asks again.
    entry.region.page(page)->control.revoked.store(0, std::memory_order_relaxed);
    counters_.slots_restored->add();
  }
  entry.free_pages.clear();
  for (std::uint32_t page = pages; page > 0; --page) {
    if (entry.pages[page - 1].kind == PageKind::free) entry.free_pages.push_back(page - 1);
  }
}

void ReplicaServer::finish_restore(std::size_t app, std::uint64_t now_ns) {
  App& entry = apps_[app];
  const auto pages = static_cast<std::uint32_t>(entry.pages.size());
  for (std::uint32_t page = 0; page < pages; ++page) {
    SocketPage& state = entry.pages[page];
    if (state.kind != PageKind::listener) continue;
    // The application never heard of this listener and asks again, or the predecessor died while
    // it freed the page (the listener was closed first): it goes.
    const bool freeing = entry.region.page(page)->control.status.load(std::memory_order_acquire) ==
                         TcpSocketStatus::free;
    if (state.unanswered || freeing) leave_group(app, page, now_ns);
  }
  for (std::uint32_t page = 0; page < pages; ++page) {
    SocketPage& state = entry.pages[page];
    if (state.kind != PageKind::connection) continue;
    if (state.holder) {
      if (carrier_of(state.connection)) continue;
      // Nobody carries its connection any more: its application sees it reset.
      if (state.app_closed && state.pins == 0) {
        free_page(app, page);
        continue;
      }
      state.holder = false;
      --holder_pages_;
      state.engine_released = true;
      auto& control = entry.region.page(page)->control;
      control.error.store(ECONNRESET, std::memory_order_relaxed);
      control.status.store(TcpSocketStatus::closed, std::memory_order_relaxed);
      control.generation.store(state.generation, std::memory_order_release);
      store_page(app, page);
      continue;
    }
    if (!state.engine_released && !engine_->info(state.connection)) {
      // The engine did not carry it on (torn, poisoned, or unanswered): the application sees it
      // reset, unless it never heard of it.
      if (connections_[state.connection.index].page == page) connections_[state.connection.index] = Place{};
      state.engine_released = true;
      auto& control = entry.region.page(page)->control;
      if (control.status.load(std::memory_order_relaxed) != TcpSocketStatus::closed) {
        control.error.store(ECONNRESET, std::memory_order_relaxed);
        control.status.store(TcpSocketStatus::closed, std::memory_order_release);
      }
      store_page(app, page);
    }
    if (state.unanswered && !state.engine_released) {
      engine_->abort(state.connection, now_ns);
      free_page(app, page);
      continue;
    }
    if (state.engine_released && state.pins == 0 && (state.app_closed || !state.announced || state.unanswered)) {
      if (state.held) forget_held(app, page);
      free_page(app, page);
      continue;
    }
  }
  // Accept counts from the connections themselves: the predecessor may have died between a
  // connection's announce and its listener's count.
  const auto member_of = [&](const SocketPage& state) -> SocketPage* {
    if (state.kind != PageKind::connection || !state.announced || state.listener >= listeners_.size() ||
        state.listener_page >= pages) {
      return nullptr;
    }
    SocketPage& member = entry.pages[state.listener_page];
    return member.kind == PageKind::listener && member.listener == state.listener ? &member : nullptr;
  };
  for (std::uint32_t page = 0; page < pages; ++page) {
    const SocketPage& state = entry.pages[page];
    SocketPage* member = member_of(state);
    if (member == nullptr) continue;
    SocketPage& listener = *member;
    const std::uint32_t owner_page = state.listener_page;
    if (state.accept_order >= listener.accept_announced && state.accept_order < listener.accept_taken + pages) {
      listener.accept_announced = state.accept_order + 1;
      store_page(app, owner_page);
    }
  }
  // What the dead incarnation may have left unsaid: an event for every live page (its
  // event_pending may be set with the message lost), each accepted connection still queued, and
  // the requests its lost kicks carried.
  for (std::uint32_t page = 0; page < pages; ++page) {
    const SocketPage& state = entry.pages[page];
    if (state.kind == PageKind::free || state.app_closed) continue;
    auto& control = entry.region.page(page)->control;
    control.kick_pending.store(0, std::memory_order_seq_cst);
    if (state.kind == PageKind::listener) {
      control.accept_ready.store(state.accept_announced - state.accept_taken, std::memory_order_release);
    }
    if (!state.announced) continue;
    control.event_pending.store(1, std::memory_order_seq_cst);
    send_app(app, Message::make(stack::kTcpEventKind, stack::TcpPageBody{page, state.generation}));
  }
  for (std::uint32_t page = 0; page < pages; ++page) {
    const SocketPage& state = entry.pages[page];
    const SocketPage* member = state.app_closed ? nullptr : member_of(state);
    if (member == nullptr) continue;
    // The application takes connections in the order they were announced: the ones from its
    // count on wait in its queue, or were lost with the dead outbox.
    const SocketPage& listener = *member;
    const std::uint32_t taken = std::clamp(
        entry.region.page(state.listener_page)->control.accepted.load(std::memory_order_acquire),
        listener.accept_taken, listener.accept_announced);
    if (state.accept_order < taken) continue;
    const auto info = engine_->info(state.connection);
    send_accepted(static_cast<std::uint32_t>(app), state.listener_page, page, info ? info->tuple : page_tuple(app, page));
  }
  for (std::uint32_t page = 0; page < pages; ++page) {
    const SocketPage& state = entry.pages[page];
    if (state.kind == PageKind::free || state.app_closed || !state.announced) continue;
    on_kick(app, stack::TcpPageBody{page, state.generation}, now_ns);
  }
}

void ReplicaServer::store_page(std::size_t app, std::uint32_t page) {
  const SocketPage& state = apps_[app].pages[page];
  update_entry(apps_[app].slots[page], [&](SlotEntry& slot) {
    slot.kind = static_cast<std::uint8_t>(state.kind);
    slot.flags = static_cast<std::uint8_t>((state.app_closed ? kSlotAppClosed : 0) |
                                           (state.engine_released ? kSlotEngineReleased : 0) |
                                           (state.announced ? kSlotAnnounced : 0) |
                                           (state.unanswered ? kSlotUnanswered : 0) |
                                           (state.active ? kSlotActive : 0) |
                                           (state.reuse_port ? kSlotReusePort : 0) |
                                           (state.held ? kSlotHeld : 0) |
                                           (state.holder ? kSlotHolder : 0));
    slot.options = static_cast<std::uint8_t>((state.options.nodelay ? kSlotNodelay : 0) |
                                             (state.options.cork ? kSlotCork : 0) |
                                             (state.options.keepalive ? kSlotKeepalive : 0) |
                                             (state.options.congestion == CongestionAlgorithm::newreno ? kSlotNewReno : 0));
    slot.generation = state.generation;
    const bool listener = state.kind == PageKind::listener;
    slot.connection_index = listener ? state.listen_address : state.connection.index;
    slot.connection_generation =
        listener ? std::uint32_t{state.listen_port} | std::uint32_t{state.backlog} << 16 : state.connection.generation;
    slot.listener = state.listener;
    slot.accept_first = listener ? state.accept_announced : state.accept_order;
    slot.accept_second = listener ? state.accept_taken : state.listener_page;
    slot.pins = state.pins;
  });
}

void ReplicaServer::store_fork(std::size_t app, std::size_t slot) {
  const std::uint64_t fork = apps_[app].forks[slot];
  update_entry(apps_[app].fork_slots[slot], [&](ForkSlot& stored) { stored.fork = fork; });
}

void ReplicaServer::send_announce(std::size_t app, stack::TcpReplicaMode mode) {
  send_app(app, Message::make(stack::kTcpAnnounceKind, stack::TcpAnnounceBody{incarnation_, mode, {}}));
}

void ReplicaServer::format_app(std::size_t app, std::span<std::byte> region) {
  App& entry = apps_[app];
  // Zeros, as a new region is: formatting then writes only the header, and what a predecessor's
  // sockets used goes back to the system.
  discard_memory(region);
  entry.region = region.empty() ? formats::TcpRegion{} : formats::TcpRegion::format(region, settings_.ring_bytes);
  entry.pages.clear();
  entry.free_pages.clear();
  entry.outbox = MessageOutbox();
  fit_outbox(entry);
}

void ReplicaServer::announce(stack::TcpReplicaMode mode) {
  send_ip_control(
      Message::make(stack::kTcpReplicaKind, stack::TcpReplicaBody{settings_.index, settings_.count, mode, {}}));
}

// ---- from IP ----

void ReplicaServer::on_segment(const stack::TransportPacketBody& packet, std::uint64_t now_ns) {
  auto bytes = pool_->bytes(self_, packet.segment);
  if (!bytes) return;  // not ours: counted by the pool
  counters_.segments_from_ip->add();
  if (packet.protocol == wire::kProtocolTcp && packet.local_address == settings_.address) {
    engine_->on_packet(packet.remote_address, packet.local_address, bytes.value(), now_ns);
  } else {
    counters_.bad_segments_from_ip->add();
  }
  (void)cache_.free(packet.segment);
}

bool ReplicaServer::transmit(const OutgoingSegment& segment) {
  if (segment_batch_.size() >= segment_batch_.capacity()) {  // the engine flushes before this
    counters_.no_buffer->add();
    return false;
  }
  BufferHandle handle;
  if (cache_.alloc_burst(std::span(&handle, 1)) != 1) {
    counters_.no_buffer->add();
    return false;
  }
  handle.offset = stack::kHeadroom;
  handle.length = static_cast<std::uint16_t>(pool_->buffer_size() - stack::kHeadroom);
  auto bytes = pool_->bytes(self_, handle);
  const std::size_t length = bytes ? build_segment(bytes.value(), segment) : 0;
  if (length == 0) {
    (void)cache_.free(handle);
    counters_.no_buffer->add();
    return false;
  }
  handle.length = static_cast<std::uint16_t>(length);
  const stack::TransportPacketBody packet{.segment = handle,
                                          .remote_address = segment.tuple.remote_address,
                                          .local_address = segment.tuple.local_address,
                                          .remote_port = segment.tuple.remote_port,
                                          .local_port = segment.tuple.local_port,
                                          .protocol = wire::kProtocolTcp,
                                          .reserved = {}};
  segment_batch_.push_back(packet);
  return true;
}

// Segments and control messages share the channel to IP, in order: a flow's claim parked in the
// outbox must reach IP before the flow's first segment, or IP hands the answer to that segment to
// the replica the 4-tuple hashes to, which resets it. So segments queue behind parked messages.
void ReplicaServer::flush_segments() {
  drain_ip_outbox();
  for (const stack::TransportPacketBody& packet : segment_batch_) {
    if (ip_outbox_.empty() && outputs_->segment_to_ip(packet)) {
      counters_.segments_to_ip->add();
    } else if (ip_outbox_.push(Message::make(stack::kTransportPacketKind, packet))) {
      counters_.segments_parked->add();
    } else {
      (void)cache_.free(packet.segment);
      counters_.ip_ring_full->add();
    }
  }
  segment_batch_.clear();
}

bool ReplicaServer::drain_ip_outbox() {
  return ip_outbox_.drain([&](std::span<const Message> run) {
    std::size_t sent = 0;
    for (const Message& message : run) {
      if (message.kind == stack::kTransportPacketKind) {
        if (!outputs_->segment_to_ip(message.read<stack::TransportPacketBody>())) break;
        counters_.segments_to_ip->add();
      } else if (!outputs_->control_to_ip(message)) {
        break;
      }
      ++sent;
    }
    return sent;
  }) > 0;
}

bool ReplicaServer::claim_flow(const FourTuple& tuple) {
  send_flow_binding(tuple, stack::BindingChange::claim);
  return true;
}

void ReplicaServer::release_flow(const FourTuple& tuple) { send_flow_binding(tuple, stack::BindingChange::release); }

void ReplicaServer::send_flow_binding(const FourTuple& tuple, stack::BindingChange change) {
  send_ip_control(Message::make(stack::kFlowBindingKind,
                                stack::FlowBindingBody{tuple.local_address, tuple.remote_address, tuple.local_port,
                                                       tuple.remote_port, wire::kProtocolTcp, change, {}}));
}

void ReplicaServer::send_ip_control(const Message& message) {
  if (ip_outbox_.empty() && outputs_->control_to_ip(message)) return;
  if (!ip_outbox_.push(message)) counters_.outbox_overflow->add();
}

void ReplicaServer::send_app(std::size_t app, const Message& message) {
  App& entry = apps_[app];
  if (entry.outbox.empty() && outputs_->to_app(app, message)) {
    if (message.kind == stack::kTcpOpenedKind) answered(app, message.read<stack::TcpOpenedBody>());
    return;
  }
  if (!entry.outbox.push(message)) counters_.outbox_overflow->add();
  backlogged_[app / 64] |= std::uint64_t{1} << (app % 64);
}

void ReplicaServer::answered(std::size_t app, const stack::TcpOpenedBody& answer) {
  if (answer.error != 0 || answer.page >= apps_[app].pages.size()) return;
  SocketPage& page = apps_[app].pages[answer.page];
  if (page.kind == PageKind::free || page.generation != answer.generation || !page.unanswered) return;
  page.unanswered = false;
  store_page(app, answer.page);
}

bool ReplicaServer::poll(std::uint64_t now_ns) {
  bool worked = false;
  // The outputs take one message at a time: a run goes until the first that finds no room.
  const auto one_by_one = [](std::span<const Message> run, auto&& send_one) {
    std::size_t sent = 0;
    while (sent < run.size() && send_one(run[sent])) ++sent;
    return sent;
  };
  worked |= drain_ip_outbox();
  for (std::size_t word = 0; word < backlogged_.size(); ++word) {
    for (std::uint64_t bits = backlogged_[word]; bits != 0; bits &= bits - 1) {
      const std::size_t app = word * 64 + static_cast<std::size_t>(std::countr_zero(bits));
      MessageOutbox& outbox = apps_[app].outbox;
      worked |= outbox.drain([&](std::span<const Message> run) {
        return one_by_one(run, [&](const Message& m) {
          if (!outputs_->to_app(app, m)) return false;
          if (m.kind == stack::kTcpOpenedKind) answered(app, m.read<stack::TcpOpenedBody>());
          return true;
        });
      }) > 0;
      if (outbox.empty()) backlogged_[word] &= ~(std::uint64_t{1} << (app % 64));
    }
  }
  if (now_ns >= engine_->next_deadline_ns()) {
    engine_->on_timer(now_ns);
    worked = true;
  }
  if (!waiting_claims_.empty()) serve_waiting_claims(now_ns);
  if (!pending_carries_.empty()) serve_pending_carries(now_ns);
  move_retry_ns_ = waiting_claims_.empty() && pending_carries_.empty() ? UINT64_MAX : now_ns + kMoveRetryNs;
  if (held_to_place_) {
    held_to_place_ = false;
    for (ListenerId id = 0; id < listeners_.size(); ++id) {
      if (listeners_[id].held_to_place) place_held(id);
    }
    worked = true;
  }
  return worked;
}

// ---- pages ----

ReplicaServer::SocketPage* ReplicaServer::checked_page(std::size_t app, std::uint32_t page, std::uint32_t generation) {
  App& entry = apps_[app];
  if (page >= entry.pages.size()) {
    // A page of the region not handed out yet is as stale as a free one.
    (page < entry.region.page_count() ? counters_.stale_app_messages : counters_.bad_app_messages)->add();
    return nullptr;
  }
  SocketPage& state = entry.pages[page];
  if (state.kind == PageKind::free || state.generation != generation || state.app_closed) {
    counters_.stale_app_messages->add();
    return nullptr;
  }
  return &state;
}

std::optional<std::uint32_t> ReplicaServer::take_page(std::size_t app, PageKind kind) {
  App& entry = apps_[app];
  std::uint32_t index = 0;
  if (!entry.free_pages.empty()) {
    index = entry.free_pages.back();
    entry.free_pages.pop_back();
  } else if (entry.pages.size() < entry.region.page_count()) {
    index = static_cast<std::uint32_t>(entry.pages.size());
    std::atomic_ref<std::uint32_t>(entry.seat->used_pages).store(index + 1, std::memory_order_release);
    entry.pages.emplace_back();
    fit_outbox(entry);
  } else {
    counters_.pages_exhausted->add();
    return std::nullopt;
  }
  SocketPage& page = entry.pages[index];
  page = SocketPage{};
  page.kind = kind;
  page.generation = next_generation_++;
  auto* header = entry.region.page(index);
  TcpSocketControl& control = header->control;
  control.status.store(TcpSocketStatus::free, std::memory_order_relaxed);
  control.error.store(0, std::memory_order_relaxed);
  control.flags.store(0, std::memory_order_relaxed);
  control.accept_ready.store(0, std::memory_order_relaxed);
  control.event_pending.store(0, std::memory_order_relaxed);
  control.requests.store(0, std::memory_order_relaxed);
  control.kick_pending.store(0, std::memory_order_relaxed);
  control.accepted.store(0, std::memory_order_relaxed);
  control.in_use.store(0, std::memory_order_relaxed);
  control.revoked.store(0, std::memory_order_relaxed);
  control.holder_ready.store(0, std::memory_order_relaxed);
  control.holds_connections.store(0, std::memory_order_relaxed);
  control.takes_served.store(0, std::memory_order_relaxed);
  control.takes_asked.store(0, std::memory_order_relaxed);
  control.accept_waiting.store(0, std::memory_order_relaxed);
  // The application's ring indices too: a fresh socket starts both streams at 0.
  header->send.tail.store(0, std::memory_order_relaxed);
  header->receive.head.store(0, std::memory_order_relaxed);
  control.generation.store(page.generation, std::memory_order_release);
  return index;
}

std::uint32_t ReplicaServer::pages_left(const App& entry) const {
  return static_cast<std::uint32_t>(entry.free_pages.size() + (entry.region.page_count() - entry.pages.size()));
}

void ReplicaServer::fit_outbox(App& entry) {
  const std::size_t needed = 2 * entry.pages.size() + 64;
  if (entry.outbox.capacity() >= needed) return;
  MessageOutbox grown(std::max(needed, 2 * entry.outbox.capacity()));
  entry.outbox.drain([&](std::span<const Message> run) {
    for (const Message& message : run) grown.push(message);
    return run.size();
  });
  entry.outbox = std::move(grown);
}

void ReplicaServer::free_page(std::size_t app, std::uint32_t page) {
  App& entry = apps_[app];
  if (entry.pages[page].holder) --holder_pages_;
  set_held(app, page, false);
  entry.pages[page] = SocketPage{};
  // The application's view first: a successor that finds the slot still live frees it again, but
  // one that found it free with the page still live could hand it out under a socket it kept.
  auto* header = entry.region.page(page);
  header->control.status.store(TcpSocketStatus::free, std::memory_order_release);
  store_page(app, page);
  entry.free_pages.push_back(page);
  // Memory follows the live sockets, not the bytes that went by: a ring that moved data gives its
  // pages back (the next socket on this page starts both streams at 0 and faults them in anew).
  if (header->send.tail.load(std::memory_order_relaxed) != 0) discard_memory(entry.region.send_bytes(page));
  if (header->receive.tail.load(std::memory_order_relaxed) != 0) discard_memory(entry.region.receive_bytes(page));
}

StreamRings ReplicaServer::rings_of(std::size_t app, std::uint32_t page) {
  const formats::TcpRegion& region = apps_[app].region;
  auto* header = region.page(page);
  return StreamRings{formats::ByteRingConsumer(&header->send, region.send_bytes(page)),
                     formats::ByteRingProducer(&header->receive, region.receive_bytes(page))};
}

void ReplicaServer::notify(std::size_t app, std::uint32_t page) {
  const SocketPage& state = apps_[app].pages[page];
  if (state.moved && !state.holder && holder_pages_ != 0) {
    tell_holders(Place{static_cast<std::uint32_t>(app), page, state.generation});
  }
  auto& control = apps_[app].region.page(page)->control;
  if (control.event_pending.exchange(1, std::memory_order_seq_cst) != 0) return;
  send_app(app, Message::make(stack::kTcpEventKind,
                              stack::TcpPageBody{page, apps_[app].pages[page].generation}));
}

void ReplicaServer::tell_holders(const Place& carrier) {
  const ConnectionHandle connection = apps_[carrier.app].pages[carrier.page].connection;
  const std::uint32_t ready = holder_readiness(carrier);
  for (std::uint32_t app = 0; app < apps_.size(); ++app) {
    const auto& pages = apps_[app].pages;
    for (std::uint32_t page = 0; page < pages.size(); ++page) {
      const SocketPage& state = pages[page];
      if (state.kind != PageKind::connection || !state.holder || state.app_closed || state.connection != connection) {
        continue;
      }
      // Only what it gained wakes a poller; what it lost is seen at its next look.
      const std::uint32_t before = apps_[app].region.page(page)->control.holder_ready.exchange(ready, std::memory_order_acq_rel);
      if ((ready & ~before) != 0) notify(app, page);
    }
  }
}

std::uint32_t ReplicaServer::holder_readiness(const Place& carrier) const {
  const formats::TcpSocketPageHeader* header = apps_[carrier.app].region.page(carrier.page);
  const auto status = header->control.status.load(std::memory_order_acquire);
  if (status == TcpSocketStatus::closed) return formats::kTcpHolderReadable | formats::kTcpHolderWritable;
  std::uint32_t ready = 0;
  // The carrier's own words are untrusted, but a wrong answer costs its holders a wake-up only.
  const bool peer_closed = (header->control.flags.load(std::memory_order_acquire) & formats::kTcpPeerClosed) != 0;
  if (peer_closed || header->receive.tail.load(std::memory_order_acquire) != header->receive.head.load(std::memory_order_acquire)) {
    ready |= formats::kTcpHolderReadable;
  }
  const std::uint64_t queued = header->send.tail.load(std::memory_order_acquire) - header->send.head.load(std::memory_order_acquire);
  if (status == TcpSocketStatus::connected && queued < settings_.ring_bytes) ready |= formats::kTcpHolderWritable;
  return ready;
}

void ReplicaServer::publish_info(std::size_t app, std::uint32_t page, ConnectionHandle connection) {
  if (!engine_) return;  // Engine::create is telling a restored connection's events again
  const auto info = engine_->info(connection);
  if (!info) return;
  auto& control = apps_[app].region.page(page)->control;
  control.tcp_state.store(static_cast<std::uint32_t>(info->state), std::memory_order_relaxed);
  control.rtt_us.store(static_cast<std::uint32_t>(info->srtt_ns / 1000), std::memory_order_relaxed);
  control.rto_ms.store(static_cast<std::uint32_t>(info->rto_ns / 1'000'000), std::memory_order_relaxed);
  control.mss.store(info->mss, std::memory_order_relaxed);
  control.cwnd_bytes.store(info->cwnd_bytes, std::memory_order_relaxed);
  control.retransmits.store(info->retransmits, std::memory_order_relaxed);
  control.bytes_sent.store(info->bytes_acked, std::memory_order_relaxed);
  control.bytes_received.store(info->bytes_received, std::memory_order_relaxed);
}

const ReplicaServer::Place* ReplicaServer::place_of(ConnectionHandle connection) const {
  if (connection.index >= connections_.size()) return nullptr;
  const Place& place = connections_[connection.index];
  if (place.app == UINT32_MAX) return nullptr;
  const SocketPage& page = apps_[place.app].pages[place.page];
  if (page.kind != PageKind::connection || page.generation != place.generation || page.connection != connection) {
    return nullptr;
  }
  return &place;
}

// ---- from applications ----

void ReplicaServer::on_app_message(std::size_t app, const Message& message, std::uint64_t now_ns) {
  if (app >= apps_.size() || !apps_[app].region.valid()) {
    counters_.bad_app_messages->add();
    return;
  }
  if (message.kind == stack::kTcpKickKind) {
    on_kick(app, message.read<stack::TcpPageBody>(), now_ns);
  } else if (message.kind == stack::kTcpOpenKind) {
    on_open(app, message.read<stack::TcpOpenBody>(), now_ns);
  } else if (message.kind == stack::kTcpOptionKind) {
    on_option(app, message.read<stack::TcpOptionBody>(), now_ns);
  } else if (message.kind == stack::kTcpJoinKind) {
    on_join(app, message.read<stack::TcpJoinBody>());
  } else if (message.kind == stack::kTcpActivateKind) {
    on_activate(app, message.read<stack::TcpPageBody>());
  } else if (message.kind == stack::kTcpReleaseKind) {
    const auto release = message.read<stack::TcpReleaseBody>();
    if (checked_page(app, release.page, release.generation) != nullptr) {
      serve_requests(app, release.page, release.generation,
                     release.requests & (formats::kTcpRequestClose | formats::kTcpRequestAbort), now_ns);
    }
  } else if (message.kind == stack::kTcpForkHoldKind) {
    on_fork_hold(app, message.read<stack::TcpForkHoldBody>(), now_ns);
  } else if (message.kind == stack::kTcpClaimKind) {
    on_claim(app, message.read<stack::TcpClaimBody>(), now_ns);
  } else if (message.kind == stack::kTcpCarryKind) {
    on_carry(app, message.read<stack::TcpPageBody>(), now_ns);
  } else {
    counters_.bad_app_messages->add();
  }
}

ConnectionOptions ReplicaServer::options_from(std::uint8_t bits) const {
  ConnectionOptions options;
  options.nodelay = (bits & stack::kTcpOpenNoDelay) != 0;
  options.keepalive = (bits & stack::kTcpOpenKeepalive) != 0;
  if ((bits & stack::kTcpOpenNewReno) != 0) options.congestion = CongestionAlgorithm::newreno;
  return options;
}

std::uint16_t ReplicaServer::pick_local_port() {
  const std::uint32_t per_replica = kEphemeralCount / settings_.count;
  const std::uint32_t step = next_port_++ % per_replica;
  return static_cast<std::uint16_t>(kFirstEphemeral + step * settings_.count + settings_.index);
}

void ReplicaServer::on_open(std::size_t app, const stack::TcpOpenBody& open, std::uint64_t now_ns) {
  auto answer = [&](int error, std::uint32_t page, std::uint32_t generation, std::uint16_t port) {
    send_app(app, Message::make(stack::kTcpOpenedKind,
                                stack::TcpOpenedBody{open.socket, error, page, generation, port, 0, open.nonce}));
  };
  const bool local_ok = open.local_address == 0 || open.local_address == settings_.address;
  if (!local_ok) {
    answer(EADDRNOTAVAIL, 0, 0, 0);
    return;
  }
  if (open.operation == stack::TcpOpenOperation::listen) {
    if (open.local_port == 0) {
      answer(EINVAL, 0, 0, 0);
      return;
    }
    const std::uint16_t backlog = open.backlog == 0 ? 128 : open.backlog;
    const bool reuse_port = (open.options & stack::kTcpOpenReusePort) != 0;
    const auto existing = find_group(open.local_address, open.local_port);
    if (existing && (open.options & stack::kTcpOpenRejoin) == 0 && !(reuse_port && listeners_[*existing].reuse_port)) {
      answer(EADDRINUSE, 0, 0, 0);
      return;
    }
    const auto index = take_page(app, PageKind::listener);
    if (!index) {
      answer(EMFILE, 0, 0, 0);
      return;
    }
    if (existing) {
      counters_.group_joins->add();
      add_member(app, *index, *existing, open.socket, open.nonce, open.options, backlog);
      return;
    }
    auto listener = engine_->listen(open.local_address, open.local_port, backlog, options_from(open.options));
    if (!listener || listener.value() >= listeners_.size()) {
      free_page(app, *index);
      answer(listener ? ENOBUFS : (listener.error().code == Errc::exhausted ? ENOBUFS : EADDRINUSE), 0, 0, 0);
      return;
    }
    listeners_[listener.value()] = Group{{}, open.local_address, open.local_port, reuse_port};
    add_member(app, *index, listener.value(), open.socket, open.nonce, open.options, backlog);
    return;
  }
  if (open.operation != stack::TcpOpenOperation::connect || open.remote_address == 0 || open.remote_port == 0) {
    counters_.bad_app_messages->add();
    answer(EINVAL, 0, 0, 0);
    return;
  }
  const auto index = take_page(app, PageKind::connection);
  if (!index) {
    answer(EMFILE, 0, 0, 0);
    return;
  }
  FourTuple tuple{settings_.address, open.remote_address, open.local_port, open.remote_port};
  // A port the application chose is tried once; an ephemeral one until a free tuple turns up.
  Result<ConnectionHandle> connected = Error{Errc::invalid_argument, 0, "no port"};
  const std::uint32_t attempts = open.local_port != 0 ? 1 : 64;
  for (std::uint32_t attempt = 0; attempt < attempts; ++attempt) {
    if (open.local_port == 0) tuple.local_port = pick_local_port();
    connected = engine_->connect(tuple, rings_of(app, *index), options_from(open.options), now_ns);
    if (connected || connected.error().code == Errc::exhausted) break;
  }
  if (!connected || connected.value().index >= connections_.size()) {
    free_page(app, *index);
    answer(connected ? ENOBUFS : (connected.error().code == Errc::exhausted ? ENOBUFS : EADDRINUSE), 0, 0, 0);
    return;
  }
  SocketPage& page = apps_[app].pages[*index];
  page.connection = connected.value();
  page.options = options_from(open.options);
  page.announced = true;
  page.unanswered = true;
  store_page(app, *index);
  connections_[page.connection.index] = Place{static_cast<std::uint32_t>(app), *index, page.generation};
  auto& control = apps_[app].region.page(*index)->control;
  control.local_address = tuple.local_address;
  control.remote_address = tuple.remote_address;
  control.local_port = tuple.local_port;
  control.remote_port = tuple.remote_port;
  control.status.store(TcpSocketStatus::connecting, std::memory_order_release);
  answer(0, *index, page.generation, tuple.local_port);
}

// ---- listener groups ----

std::optional<ListenerId> ReplicaServer::find_group(std::uint32_t address, std::uint16_t port) const {
  for (ListenerId id = 0; id < listeners_.size(); ++id) {
    const Group& group = listeners_[id];
    if (!group.members.empty() && group.address == address && group.port == port) return id;
  }
  return std::nullopt;
}

void ReplicaServer::add_member(std::size_t app, std::uint32_t index, ListenerId listener, std::uint32_t socket,
                               std::uint32_t nonce, std::uint8_t options, std::uint16_t backlog) {
  Group& group = listeners_[listener];
  SocketPage& page = apps_[app].pages[index];
  page.listener = listener;
  page.options = options_from(options);
  page.reuse_port = group.reuse_port;
  page.backlog = backlog;
  page.listen_address = group.address;
  page.listen_port = group.port;
  page.announced = true;
  page.unanswered = true;
  store_page(app, index);
  group.members.push_back(Place{static_cast<std::uint32_t>(app), index, page.generation});
  auto& control = apps_[app].region.page(index)->control;
  control.local_address = settings_.address;
  control.local_port = group.port;
  control.status.store(TcpSocketStatus::listening, std::memory_order_release);
  control.holds_connections.store(listeners_[listener].held > 0 ? 1 : 0, std::memory_order_release);
  send_app(app, Message::make(stack::kTcpOpenedKind,
                              stack::TcpOpenedBody{socket, 0, index, page.generation, group.port, 0, nonce}));
}

void ReplicaServer::on_join(std::size_t app, const stack::TcpJoinBody& join) {
  const auto refuse = [&](int error) {
    counters_.group_joins_refused->add();
    send_app(app, Message::make(stack::kTcpOpenedKind, stack::TcpOpenedBody{join.socket, error, 0, 0, 0, 0, join.nonce}));
  };
  // The proof: the page and generation of a member of the group at that address and port, in any
  // application's region (generations are unique in a replica's life).
  const auto id = find_group(join.local_address, join.local_port);
  if (!id) return refuse(EADDRNOTAVAIL);
  const auto& members = listeners_[*id].members;
  const bool proven = std::any_of(members.begin(), members.end(), [&](const Place& member) {
    return member.page == join.home_page && member.generation == join.home_generation;
  });
  if (!proven || join.home_generation == 0) return refuse(EADDRNOTAVAIL);
  const auto index = take_page(app, PageKind::listener);
  if (!index) return refuse(EMFILE);
  counters_.group_joins->add();
  add_member(app, *index, *id, join.socket, join.nonce, join.options, join.backlog == 0 ? 128 : join.backlog);
}

void ReplicaServer::on_activate(std::size_t app, const stack::TcpPageBody& activate) {
  SocketPage* page = checked_page(app, activate.page, activate.generation);
  if (page == nullptr) return;
  if (page->kind != PageKind::listener) {
    counters_.bad_app_messages->add();
    return;
  }
  if (page->active) return;
  page->active = true;
  store_page(app, activate.page);
  place_held(page->listener);
  // What note_placed said of connections in the handshake is over: the page says what the group
  // holds now (a take of its library follows, where processes share the queue).
  const std::uint32_t word = listeners_[page->listener].held > 0 ? 1 : 0;
  auto& control = apps_[app].region.page(activate.page)->control;
  if (control.holds_connections.exchange(word, std::memory_order_acq_rel) != word) notify(app, activate.page);
}

std::uint32_t ReplicaServer::accept_queue_of(const Place& place) const {
  const SocketPage& page = apps_[place.app].pages[place.page];
  // The application's running count, which it stores before its kick: fresher than accept_taken.
  const std::uint32_t taken =
      std::clamp(apps_[place.app].region.page(place.page)->control.accepted.load(std::memory_order_acquire),
                 page.accept_taken, page.accept_announced);
  return page.accept_announced - taken;
}

std::optional<ReplicaServer::Place> ReplicaServer::pick_member(ListenerId listener) {
  Group& group = listeners_[listener];
  const std::size_t count = group.members.size();
  if (count == 0) return std::nullopt;
  std::size_t best = count;
  std::uint32_t best_queue = 0;
  bool best_under = false;
  bool best_waiting = false;
  const bool shared = shared_queue(group);
  for (std::size_t step = 0; step < count; ++step) {
    const std::size_t at = (group.next + step) % count;
    const Place& member = group.members[at];
    const SocketPage& page = apps_[member.app].pages[member.page];
    if (!page.active) continue;
    const std::uint32_t queue = accept_queue_of(member);
    const bool under = queue < page.backlog;
    const bool waiting = shared && queue == 0 && waiting_to_accept(member);
    // Waiting to accept with nothing queued first (where members share the queue), then under its
    // backlog, then the shortest queue; the first found wins a tie.
    const bool better = best == count || (waiting != best_waiting ? waiting
                                          : under != best_under   ? under
                                                                  : queue < best_queue);
    if (better) {
      best = at;
      best_queue = queue;
      best_under = under;
      best_waiting = waiting;
    }
  }
  if (best == count) return group.members.front();
  group.next = static_cast<std::uint32_t>((best + 1) % count);
  return group.members[best];
}

void ReplicaServer::leave_group(std::size_t app, std::uint32_t page, std::uint64_t now_ns) {
  SocketPage& state = apps_[app].pages[page];
  const ListenerId id = state.listener;
  if (id < listeners_.size()) {
    Group& group = listeners_[id];
    std::erase_if(group.members, [&](const Place& member) { return member.app == app && member.page == page; });
    counters_.group_leaves->add();
    group.next = 0;
    hand_over_queue(app, page, now_ns);
    if (group.members.empty()) {
      engine_->close_listener(id);
      group = Group{};
    }
  }
  free_page(app, page);
}

void ReplicaServer::hand_over_queue(std::size_t app, std::uint32_t page, std::uint64_t now_ns) {
  const SocketPage& member = apps_[app].pages[page];
  const ListenerId id = member.listener;
  const std::uint32_t taken =
      std::clamp(apps_[app].region.page(page)->control.accepted.load(std::memory_order_acquire), member.accept_taken,
                 member.accept_announced);
  // The connections placed with it that its process has not accepted: announced ones in the order
  // its queue holds them, then held ones, then those still in the handshake.
  std::vector<std::uint32_t> queued;
  // Announced ones the engine's accept queue forgets: those its process accepted without a kick
  // served yet (its lease ended), and those that stay (over, closed, or not moved).
  std::uint32_t forgotten = taken - member.accept_taken;
  const auto& pages = apps_[app].pages;
  for (std::uint32_t other = 0; other < pages.size(); ++other) {
    const SocketPage& connection = pages[other];
    if (connection.kind != PageKind::connection || connection.listener != id || connection.listener_page != page ||
        !connection.announced || static_cast<std::int32_t>(connection.accept_order - taken) < 0) {
      continue;
    }
    if (connection.engine_released || connection.app_closed || connection.pins != 0) {
      ++forgotten;
      continue;
    }
    queued.push_back(other);
  }
  std::stable_sort(queued.begin(), queued.end(), [&](std::uint32_t a, std::uint32_t b) {
    return static_cast<std::int32_t>(pages[a].accept_order - pages[b].accept_order) < 0;
  });
  const std::vector<std::uint32_t> unannounced = unannounced_of(app, page, id);
  queued.insert(queued.end(), unannounced.begin(), unannounced.end());
  for (const std::uint32_t from : queued) {
    const bool announced = apps_[app].pages[from].announced;
    const bool in_accept_queue = announced || apps_[app].pages[from].held;
    switch (move_in_group(app, from, id)) {
      case Handover::moved:
        counters_.group_moved_on_leave->add();
        continue;
      case Handover::over:
        if (in_accept_queue) ++forgotten;
        continue;
      case Handover::not_moved:
        break;
    }
    // Its application closes an announced one with its accept queue; one held or in the handshake
    // would have nobody to accept it: reset, as Linux resets a closed listener's queue.
    if (in_accept_queue) ++forgotten;
    if (announced) continue;
    counters_.group_reset_on_leave->add();
    SocketPage& connection = apps_[app].pages[from];
    set_held(app, from, false);  // counted in `forgotten`
    store_page(app, from);
    engine_->abort(connection.connection, now_ns);
  }
  if (forgotten > 0) engine_->accepted(id, forgotten);
}

std::vector<std::uint32_t> ReplicaServer::unannounced_of(std::size_t app, std::uint32_t member,
                                                         ListenerId listener) const {
  std::vector<std::uint32_t> found;
  const auto& pages = apps_[app].pages;
  for (std::uint32_t page = 0; page < pages.size(); ++page) {
    const SocketPage& connection = pages[page];
    if (connection.kind == PageKind::connection && connection.listener == listener &&
        connection.listener_page == member && !connection.announced && !connection.engine_released) {
      found.push_back(page);
    }
  }
  std::stable_sort(found.begin(), found.end(), [&](std::uint32_t a, std::uint32_t b) {
    if (pages[a].held != pages[b].held) return pages[a].held;
    return static_cast<std::int32_t>(pages[a].accept_order - pages[b].accept_order) < 0;
  });
  return found;
}

std::uint32_t ReplicaServer::next_held_order(const Place& member) const {
  const SocketPage& listener = apps_[member.app].pages[member.page];
  std::uint32_t order = listener.accept_announced;
  for (const SocketPage& other : apps_[member.app].pages) {
    if (other.kind == PageKind::connection && other.held && other.listener == listener.listener &&
        other.listener_page == member.page && static_cast<std::int32_t>(other.accept_order - order) >= 0) {
      order = other.accept_order + 1;
    }
  }
  return order;
}

void ReplicaServer::place_held(ListenerId id) {
  if (id >= listeners_.size()) return;
  Group& group = listeners_[id];
  group.held_to_place = false;
  // Processes sharing the queue take held connections themselves, whichever accepts first.
  if (shared_queue(group)) return;
  const auto accepts = [&](const Place& member) { return apps_[member.app].pages[member.page].active; };
  if (std::none_of(group.members.begin(), group.members.end(), accepts)) return;
  const std::vector<Place> members = group.members;  // moves leave membership alone; a copy all the same
  for (const Place& member : members) {
    const bool active = accepts(member);
    for (const std::uint32_t from : unannounced_of(member.app, member.page, id)) {
      SocketPage& connection = apps_[member.app].pages[from];
      if (!active) {
        const bool held = connection.held;
        const Handover handover = move_in_group(member.app, from, id);
        if (handover == Handover::moved) counters_.group_moved_to_acceptor->add();
        if (handover == Handover::over && held) engine_->accepted(id, 1);
        continue;
      }
      if (!connection.held) continue;  // in the handshake: announced once established
      set_held(member.app, from, false);
      connection.announced = true;
      connection.accept_order = apps_[member.app].pages[member.page].accept_announced;
      store_page(member.app, from);
      counters_.group_held_announced->add();
      announce_queued(member, from, page_tuple(member.app, from));
    }
  }
}

ReplicaServer::Handover ReplicaServer::move_in_group(std::size_t app, std::uint32_t from, ListenerId id) {
  const auto target = pick_member(id);
  if (!target) return Handover::not_moved;
  const SocketPage& connection = apps_[app].pages[from];
  const bool established = connection.announced || connection.held;
  const SocketPage& member = apps_[target->app].pages[target->page];
  SocketPage role;
  role.listener = id;
  role.listener_page = target->page;
  role.announced = member.active && established;
  role.held = !member.active && established;
  role.accept_order = member.active ? member.accept_announced : next_held_order(*target);
  const MovedConnection moved = move_connection(app, from, target->app, role, 0);
  if (moved.error != 0) return Handover::not_moved;
  note_placed(*target);
  if (!moved.live) {
    free_page(target->app, moved.page);
    return Handover::over;
  }
  if (role.announced) announce_queued(*target, moved.page, page_tuple(target->app, moved.page));
  return Handover::moved;
}

void ReplicaServer::note_placed(const Place& member) {
  // A member that has not shown it accepts gets its connections held once established; its first
  // accept may come before its process ever polled (a program that connects to its own listener).
  if (apps_[member.app].pages[member.page].active) return;
  apps_[member.app].region.page(member.page)->control.holds_connections.store(1, std::memory_order_release);
}

void ReplicaServer::set_held(std::size_t app, std::uint32_t page, bool held) {
  SocketPage& connection = apps_[app].pages[page];
  if (connection.held == held) return;
  connection.held = held;
  if (connection.listener >= listeners_.size()) return;
  Group& group = listeners_[connection.listener];
  auto& pages = apps_[app].pages;
  if (connection.listener_page < pages.size() && pages[connection.listener_page].kind == PageKind::listener &&
      pages[connection.listener_page].listener == connection.listener) {
    std::uint32_t& here = pages[connection.listener_page].held_here;
    here = held ? here + 1 : (here == 0 ? 0 : here - 1);
  }
  if (held) {
    if (group.held++ == 0) publish_held(connection.listener, true);
  } else if (group.held > 0 && --group.held == 0) {
    publish_held(connection.listener, false);
  }
}

void ReplicaServer::publish_held(ListenerId listener, bool wake) {
  const Group& group = listeners_[listener];
  const std::uint32_t word = group.held > 0 ? 1 : 0;
  for (const Place& member : group.members) {
    apps_[member.app].region.page(member.page)->control.holds_connections.store(word, std::memory_order_release);
    if (wake) notify(member.app, member.page);
  }
}

void ReplicaServer::count_held() {
  for (Group& group : listeners_) group.held = 0;
  for (App& entry : apps_) {
    for (SocketPage& page : entry.pages) page.held_here = 0;
  }
  for (App& entry : apps_) {
    for (const SocketPage& page : entry.pages) {
      if (page.kind != PageKind::connection || !page.held || page.listener >= listeners_.size()) continue;
      ++listeners_[page.listener].held;
      if (page.listener_page < entry.pages.size() && entry.pages[page.listener_page].kind == PageKind::listener) {
        ++entry.pages[page.listener_page].held_here;
      }
    }
  }
  for (ListenerId id = 0; id < listeners_.size(); ++id) {
    if (listeners_[id].held > 0) publish_held(id, true);
  }
}

bool ReplicaServer::shared_queue(const Group& group) const { return group.members.size() > 1; }

bool ReplicaServer::waiting_to_accept(const Place& member) const {
  return apps_[member.app].region.page(member.page)->control.accept_waiting.load(std::memory_order_acquire) != 0;
}

void ReplicaServer::serve_take(const Place& member) {
  const ListenerId id = apps_[member.app].pages[member.page].listener;
  // One queued here since the take was asked (announced while it was on its way) is what the
  // accept returns: a second would wait behind the client it serves while another member waits.
  if (id >= listeners_.size() || listeners_[id].held == 0 || accept_queue_of(member) != 0) {
    counters_.group_takes_empty->add();
    return;
  }
  // Its own held connections first (no move), then the other members' in the group's order (-1:
  // the asker; a move leaves membership alone).
  const auto& members = listeners_[id].members;
  for (std::ptrdiff_t at = -1; at < static_cast<std::ptrdiff_t>(members.size()); ++at) {
    const Place source = at < 0 ? member : members[static_cast<std::size_t>(at)];
    if (at >= 0 && source.app == member.app && source.page == member.page) continue;
    if (apps_[source.app].pages[source.page].held_here == 0) continue;
    for (const std::uint32_t from : unannounced_of(source.app, source.page, id)) {
      if (!apps_[source.app].pages[from].held) break;  // held ones come first
      if (source.app == member.app && source.page == member.page) {
        SocketPage& connection = apps_[member.app].pages[from];
        set_held(member.app, from, false);
        connection.announced = true;
        connection.accept_order = apps_[member.app].pages[member.page].accept_announced;
        store_page(member.app, from);
        announce_queued(member, from, page_tuple(member.app, from));
        counters_.group_takes->add();
        return;
      }
      SocketPage role;
      role.listener = id;
      role.listener_page = member.page;
      role.announced = true;
      role.accept_order = apps_[member.app].pages[member.page].accept_announced;
      const MovedConnection moved = move_connection(source.app, from, member.app, role, 0);
      if (moved.error != 0) {
        counters_.group_takes_empty->add();
        return;  // no page left in the asker's region: the connection stays held
      }
      if (!moved.live) {
        free_page(member.app, moved.page);
        engine_->accepted(id, 1);  // it ended while held: it leaves the engine's accept queue
        continue;
      }
      announce_queued(member, moved.page, page_tuple(member.app, moved.page));
      counters_.group_takes->add();
      return;
    }
  }
  counters_.group_takes_empty->add();
}

void ReplicaServer::forget_held(std::size_t app, std::uint32_t page) {
  SocketPage& connection = apps_[app].pages[page];
  set_held(app, page, false);
  store_page(app, page);
  if (connection.listener < listeners_.size() && !listeners_[connection.listener].members.empty()) {
    engine_->accepted(connection.listener, 1);
  }
}

FourTuple ReplicaServer::page_tuple(std::size_t app, std::uint32_t page) const {
  const auto& control = apps_[app].region.page(page)->control;
  return FourTuple{control.local_address, control.remote_address, control.local_port, control.remote_port};
}

void ReplicaServer::on_kick(std::size_t app, const stack::TcpPageBody& kick, std::uint64_t now_ns) {
  SocketPage* page = checked_page(app, kick.page, kick.generation);
  if (page == nullptr) return;
  auto& control = apps_[app].region.page(kick.page)->control;
  // Clear first, then read: a request made after this load sends a new kick.
  control.kick_pending.store(0, std::memory_order_seq_cst);
  serve_requests(app, kick.page, kick.generation, control.requests.exchange(0, std::memory_order_acq_rel), now_ns);
}

void ReplicaServer::serve_requests(std::size_t app, std::uint32_t index, std::uint32_t generation,
                                   std::uint32_t requests, std::uint64_t now_ns) {
  SocketPage* page = &apps_[app].pages[index];
  const stack::TcpPageBody kick{index, generation};
  auto& control = apps_[app].region.page(index)->control;
  if (page->kind == PageKind::listener) {
    if ((requests & formats::kTcpRequestAccepted) != 0) {
      // A running count the application keeps: it may only grow, by at most what waits.
      const std::uint32_t growth = control.accepted.load(std::memory_order_acquire) - page->accept_taken;
      const std::uint32_t waiting = page->accept_announced - page->accept_taken;
      if (growth > waiting) {
        counters_.bad_app_messages->add();
      } else if (growth > 0) {
        page->accept_taken += growth;
        store_page(app, kick.page);
        engine_->accepted(page->listener, growth);
        control.accept_ready.store(waiting - growth, std::memory_order_release);
      }
    }
    if ((requests & formats::kTcpRequestTake) != 0) {
      // A take shows its process accepts, as an activate does.
      if (!page->active) {
        page->active = true;
        store_page(app, kick.page);
      }
      serve_take(Place{static_cast<std::uint32_t>(app), index, generation});
      control.takes_served.store(control.takes_asked.load(std::memory_order_acquire), std::memory_order_release);
    }
    if ((requests & (formats::kTcpRequestClose | formats::kTcpRequestAbort)) != 0) leave_group(app, kick.page, now_ns);
    return;
  }
  const ConnectionHandle connection = page->connection;
  const bool closing = (requests & (formats::kTcpRequestClose | formats::kTcpRequestAbort)) != 0;
  if (page->holder) {
    // Its rings are idle: only its application letting go counts.
    if (!closing) return;
    page->app_closed = true;
    store_page(app, kick.page);
    if (page->pins == 0) {
      free_page(app, kick.page);
      holder_let_go(connection, now_ns);
    }
    return;
  }
  if (closing && page->pins != 0) {
    // A fork child may still hold it: the connection stays, untouched, until claimed or unpinned.
    page->app_closed = true;
    store_page(app, kick.page);
    return;
  }
  if (closing && held_elsewhere(*page)) {
    // Another process holds it still (SO_LINGER's abort, too, is the last holder's only).
    page->app_closed = true;
    store_page(app, kick.page);
    carrier_let_go(app, kick.page, now_ns);
    return;
  }
  if (page->engine_released) {
    // The connection is over; all that is left is the application letting go of the page.
    if (closing) free_page(app, kick.page);
    return;
  }
  if ((requests & formats::kTcpRequestAbort) != 0) {
    page->app_closed = true;
    store_page(app, kick.page);
    engine_->abort(connection, now_ns);
  } else {
    if ((requests & formats::kTcpRequestSend) != 0) engine_->on_send_ready(connection, now_ns);
    if ((requests & formats::kTcpRequestWindow) != 0) engine_->on_receive_consumed(connection, now_ns);
    if ((requests & formats::kTcpRequestShutdownWrite) != 0) engine_->shutdown_write(connection, now_ns);
    if ((requests & formats::kTcpRequestClose) != 0) {
      page->app_closed = true;
      store_page(app, kick.page);
      engine_->close(connection, now_ns);
    }
  }
  // The engine may have released the connection in one of those calls (on_events saw it).
  SocketPage& after = apps_[app].pages[kick.page];
  if (after.kind == PageKind::connection && after.generation == kick.generation) {
    if (after.app_closed && after.engine_released) {
      free_page(app, kick.page);
    } else if (!after.app_closed) {
      publish_info(app, kick.page, connection);
      // What the carrier read or wrote changes what its holders' pollers see.
      if (after.moved && holder_pages_ != 0) tell_holders(Place{static_cast<std::uint32_t>(app), kick.page, kick.generation});
    }
  }
}

void ReplicaServer::on_option(std::size_t app, const stack::TcpOptionBody& option, std::uint64_t now_ns) {
  SocketPage* page = checked_page(app, option.page, option.generation);
  // A holder's page carries no connection to set: the carrier's options stay.
  if (page == nullptr || page->kind != PageKind::connection || page->engine_released || page->holder) return;
  ConnectionOptions& options = page->options;
  const bool on = option.value != 0;
  switch (option.option) {
    case stack::TcpOption::nodelay: options.nodelay = on; break;
    case stack::TcpOption::cork: options.cork = on; break;
    case stack::TcpOption::keepalive: options.keepalive = on; break;
    case stack::TcpOption::keepalive_idle_s: options.keepalive_idle_s = option.value; break;
    case stack::TcpOption::keepalive_interval_s: options.keepalive_interval_s = option.value; break;
    case stack::TcpOption::keepalive_count: options.keepalive_count = option.value; break;
    default: counters_.bad_app_messages->add(); return;
  }
  store_page(app, option.page);
  if (!engine_->set_options(page->connection, options, now_ns)) counters_.bad_app_messages->add();
}

void ReplicaServer::on_app_restarted(std::size_t app, std::uint64_t now_ns) {
  if (app >= apps_.size()) return;
  App& entry = apps_[app];
  // Its listeners leave first: the connections queued at them that it never accepted go to the
  // group's other members, as the other processes sharing a Linux accept queue take them.
  for (std::uint32_t i = 0; i < entry.pages.size(); ++i) {
    if (entry.pages[i].kind == PageKind::listener) leave_group(app, i, now_ns);
  }
  // Its holder's pages go first, so that none of its carriers hands a connection back to it.
  std::vector<ConnectionHandle> let_go;
  for (std::uint32_t i = 0; i < entry.pages.size(); ++i) {
    SocketPage& page = entry.pages[i];
    if (page.kind != PageKind::connection || !page.holder) continue;
    page.app_closed = true;
    store_page(app, i);
    if (page.pins != 0) continue;
    let_go.push_back(page.connection);
    free_page(app, i);
  }
  // The process is gone, and Linux closes a dead process's connections as close() would: what it
  // wrote still goes, then a FIN, or a RST when it left bytes unread. Such a page stays until the
  // engine releases the connection (its send ring is still being read). A pinned connection
  // outlives its application's lease: a fork child may still claim it. One that other processes
  // hold goes back to one of them.
  for (std::uint32_t i = 0; i < entry.pages.size(); ++i) {
    SocketPage& page = entry.pages[i];
    if (page.kind != PageKind::connection || page.holder) continue;
    const bool shared = held_elsewhere(page);
    if (page.engine_released && page.pins == 0 && !shared) continue;
    const bool closed_before = page.app_closed;
    page.app_closed = true;
    store_page(app, i);
    if (page.pins != 0 || closed_before) continue;
    if (shared) {
      carrier_let_go(app, i, now_ns);
    } else {
      engine_->close(page.connection, now_ns);
    }
  }
  for (const ConnectionHandle connection : let_go) holder_let_go(connection, now_ns);
  for (std::uint32_t i = 0; i < entry.pages.size(); ++i) {
    const SocketPage& page = entry.pages[i];
    // A carrier kept for a holder's page that a fork pins stays too.
    const bool closing = page.kind == PageKind::connection &&
                         (!page.engine_released || held_elsewhere(page));
    if (page.kind != PageKind::free && page.pins == 0 && !closing) free_page(app, i);
  }
  entry.outbox.clear();
  // The new application learns who we are; the pages it may know of are all free.
  send_announce(app, stack::TcpReplicaMode::ip_restarted);
}

// ---- connections shared over fork ----

void ReplicaServer::on_fork_hold(std::size_t app, const stack::TcpForkHoldBody& hold, std::uint64_t now_ns) {
  App& entry = apps_[app];
  if (hold.fork == 0 || std::find(std::begin(entry.forks), std::end(entry.forks), hold.fork) != std::end(entry.forks)) {
    counters_.bad_app_messages->add();
    return;
  }
  // Every process of that fork is gone already (the supervisor's word came first).
  if (std::find(std::begin(ended_forks_), std::end(ended_forks_), hold.fork) != std::end(ended_forks_)) return;
  // What the child inherits: the connections the application knows and has not closed, and of
  // the ones a listener placed, those it accepted (its running count, stored before its kick).
  const auto held = [&](const SocketPage& page) {
    if (page.kind != PageKind::connection || !page.announced || page.app_closed || page.unanswered) return false;
    if (page.listener == kNoListener || page.listener_page >= entry.pages.size()) return true;
    const SocketPage& member = entry.pages[page.listener_page];
    if (member.kind != PageKind::listener || member.listener != page.listener) return true;
    const std::uint32_t taken =
        std::clamp(entry.region.page(page.listener_page)->control.accepted.load(std::memory_order_acquire),
                   member.accept_taken, member.accept_announced);
    return static_cast<std::int32_t>(taken - page.accept_order) > 0;
  };
  if (std::none_of(entry.pages.begin(), entry.pages.end(), held)) return;
  const auto free_slot = std::find(std::begin(entry.forks), std::end(entry.forks), std::uint64_t{0});
  if (free_slot == std::end(entry.forks)) {
    counters_.fork_holds_refused->add();
    return;
  }
  const auto slot = static_cast<std::size_t>(free_slot - std::begin(entry.forks));
  entry.forks[slot] = hold.fork;
  store_fork(app, slot);
  for (std::uint32_t page = 0; page < entry.pages.size(); ++page) {
    if (!held(entry.pages[page])) continue;
    entry.pages[page].pins |= std::uint64_t{1} << slot;
    store_page(app, page);
  }
  counters_.fork_holds->add();
  if (!waiting_claims_.empty()) serve_waiting_claims(now_ns);
}

namespace {

// Copies stream positions [head, tail) from one ring's bytes to another's of the same capacity:
// a position is at the same offset in both.
void copy_stream(std::span<std::byte> to, std::span<const std::byte> from, std::uint64_t head, std::uint64_t tail) {
  const std::size_t mask = to.size() - 1;
  const std::size_t start = static_cast<std::size_t>(head) & mask;
  const auto length = static_cast<std::size_t>(tail - head);
  const std::size_t first = std::min(length, to.size() - start);
  std::memcpy(to.data() + start, from.data() + start, first);
  std::memcpy(to.data(), from.data(), length - first);
}

}  // namespace

void ReplicaServer::refuse_claim(std::size_t app, const stack::TcpClaimBody& claim, int error) {
  counters_.claims_refused->add();
  send_app(app, Message::make(stack::kTcpOpenedKind, stack::TcpOpenedBody{claim.socket, error, 0, 0, 0, 0, claim.nonce}));
}

void ReplicaServer::on_claim(std::size_t app, const stack::TcpClaimBody& claim, std::uint64_t now_ns) {
  if (try_claim(app, claim, now_ns)) return;
  const bool ended = std::find(std::begin(ended_forks_), std::end(ended_forks_), claim.fork) != std::end(ended_forks_);
  if (ended || claim.fork == 0 || waiting_claims_.size() >= kWaitingClaims) return refuse_claim(app, claim, EBADF);
  waiting_claims_.push_back(WaitingClaim{app, claim, now_ns + kClaimWaitNs});
}

void ReplicaServer::serve_waiting_claims(std::uint64_t now_ns) {
  std::erase_if(waiting_claims_, [&](const WaitingClaim& waiting) {
    if (try_claim(waiting.app, waiting.claim, now_ns)) return true;
    if (now_ns < waiting.deadline_ns) return false;
    refuse_claim(waiting.app, waiting.claim, EBADF);
    return true;
  });
}

bool ReplicaServer::try_claim(std::size_t app, const stack::TcpClaimBody& claim, std::uint64_t now_ns) {
  const auto answer = [&](int error, std::uint32_t page, std::uint32_t generation, std::uint16_t port) {
    if (error != 0) {
      refuse_claim(app, claim, error);
      return true;
    }
    send_app(app, Message::make(stack::kTcpOpenedKind,
                                stack::TcpOpenedBody{claim.socket, error, page, generation, port, 0, claim.nonce}));
    return true;
  };
  // The proof: a connection page with that generation (unique in this replica's life), in any
  // application's region, pinned by that fork of its application.
  std::size_t home = apps_.size();
  std::size_t slot = kForkSlots;
  for (std::size_t candidate = 0; candidate < apps_.size() && claim.generation != 0 && claim.fork != 0; ++candidate) {
    const App& entry = apps_[candidate];
    if (claim.page >= entry.pages.size()) continue;
    const SocketPage& page = entry.pages[claim.page];
    if (page.kind != PageKind::connection || page.generation != claim.generation) continue;
    const auto found = std::find(std::begin(entry.forks), std::end(entry.forks), claim.fork);
    const auto at = static_cast<std::size_t>(found - std::begin(entry.forks));
    if (found != std::end(entry.forks) && (page.pins >> at & 1) != 0) {
      home = candidate;
      slot = at;
    }
    break;
  }
  if (home == apps_.size()) return false;
  const std::uint64_t pin = std::uint64_t{1} << slot;
  // A holder's page proves the claim; the connection comes from the page that carries it.
  Place from{static_cast<std::uint32_t>(home), claim.page, claim.generation};
  if (apps_[home].pages[claim.page].holder) {
    const auto carrier = carrier_of(apps_[home].pages[claim.page].connection);
    if (!carrier) return answer(EBADF, 0, 0, 0);
    from = *carrier;
  }
  SocketPage role;
  role.announced = true;
  role.unanswered = true;
  role.listener = kNoListener;
  // The parent keeps holding what it has not closed; a seat claiming from itself (an image after
  // exec on the same seat) lets go of its old page.
  const bool keep_holder = from.app != app;
  // A parent still using the connection finishes its ring operation first (the claim waits).
  if (keep_holder && !outside_rings(from)) {
    counters_.carries_waited->add();
    return false;
  }
  const bool from_proof = from.app == home && from.page == claim.page;
  const MovedConnection moved = move_connection(from.app, from.page, app, role, from_proof ? pin : 0, keep_holder);
  if (moved.error != 0) return answer(moved.error, 0, 0, 0);
  if (!from_proof) {
    SocketPage& proof = apps_[home].pages[claim.page];
    proof.pins &= ~pin;
    store_page(home, claim.page);
    if (proof.app_closed && proof.pins == 0) free_page(home, claim.page);
  }
  counters_.claims->add();
  free_fork_slot_if_unused(home, slot);
  const SocketPage& page = apps_[app].pages[moved.page];
  answer(0, moved.page, page.generation, apps_[app].region.page(moved.page)->control.local_port);
  if (moved.live) {
    // What the parent wrote or read before the claim may have been waiting for this.
    engine_->on_send_ready(page.connection, now_ns);
    engine_->on_receive_consumed(page.connection, now_ns);
    publish_info(app, moved.page, page.connection);
  }
  return true;
}

std::optional<std::array<std::uint64_t, 4>> ReplicaServer::ring_positions(std::size_t app, std::uint32_t page) const {
  const formats::TcpSocketPageHeader* header = apps_[app].region.page(page);
  // The send tail and the receive head are its application's word: checked.
  const std::array<std::uint64_t, 4> positions{
      header->send.head.load(std::memory_order_acquire), header->send.tail.load(std::memory_order_acquire),
      header->receive.head.load(std::memory_order_acquire), header->receive.tail.load(std::memory_order_acquire)};
  const std::size_t ring = settings_.ring_bytes;
  if (positions[1] < positions[0] || positions[1] - positions[0] > ring || positions[3] < positions[2] ||
      positions[3] - positions[2] > ring) {
    return std::nullopt;
  }
  return positions;
}

bool ReplicaServer::copy_connection(std::size_t home, std::uint32_t from_page, std::size_t app, std::uint32_t to_page,
                                    const std::array<std::uint64_t, 4>& positions) {
  const auto [send_head, send_tail, receive_head, receive_tail] = positions;
  const formats::TcpRegion& from_region = apps_[home].region;
  formats::TcpSocketPageHeader* from = from_region.page(from_page);
  const formats::TcpRegion& region = apps_[app].region;
  formats::TcpSocketPageHeader* to = region.page(to_page);
  copy_stream(region.send_bytes(to_page), from_region.send_bytes(from_page), send_head, send_tail);
  copy_stream(region.receive_bytes(to_page), from_region.receive_bytes(from_page), receive_head, receive_tail);
  to->send.head.store(send_head, std::memory_order_relaxed);
  to->send.tail.store(send_tail, std::memory_order_relaxed);
  to->receive.head.store(receive_head, std::memory_order_relaxed);
  to->receive.tail.store(receive_tail, std::memory_order_relaxed);
  auto& control = to->control;
  const auto& old_control = from->control;
  control.local_address = old_control.local_address;
  control.remote_address = old_control.remote_address;
  control.local_port = old_control.local_port;
  control.remote_port = old_control.remote_port;
  control.flags.store(old_control.flags.load(std::memory_order_acquire) & formats::kTcpPeerClosed,
                      std::memory_order_relaxed);
  control.error.store(old_control.error.load(std::memory_order_acquire), std::memory_order_relaxed);
  const SocketPage& old = apps_[home].pages[from_page];
  SocketPage& page = apps_[app].pages[to_page];
  page.connection = old.connection;
  page.options = old.options;
  page.engine_released = old.engine_released;
  if (page.holder) --holder_pages_;
  page.holder = false;
  page.moved = true;
  bool live = !old.engine_released;
  if (live) {
    live = engine_->rebind_rings(page.connection,
                                 StreamRings{formats::ByteRingConsumer(&to->send, region.send_bytes(to_page), send_head),
                                             formats::ByteRingProducer(&to->receive, region.receive_bytes(to_page),
                                                                       receive_tail)});
    if (live) {
      connections_[page.connection.index] = Place{static_cast<std::uint32_t>(app), to_page, page.generation};
    } else {
      page.engine_released = true;
      control.error.store(ECONNRESET, std::memory_order_relaxed);
    }
  }
  const TcpSocketStatus status = live ? old_control.status.load(std::memory_order_acquire) : TcpSocketStatus::closed;
  control.status.store(status, std::memory_order_relaxed);
  control.revoked.store(0, std::memory_order_relaxed);
  control.holder_ready.store(0, std::memory_order_relaxed);
  // Last: a holder's library takes its page back once the word reads its generation again, and
  // then reads the rings' positions.
  control.generation.store(page.generation, std::memory_order_release);
  return live;
}

ReplicaServer::MovedConnection ReplicaServer::move_connection(std::size_t home, std::uint32_t from_page,
                                                              std::size_t app, const SocketPage& role,
                                                              std::uint64_t pin, bool keep_holder) {
  const auto positions = ring_positions(home, from_page);
  if (!positions) return MovedConnection{EBADF};
  const auto index = take_page(app, PageKind::connection);
  if (!index) return MovedConnection{EMFILE};
  SocketPage& page = apps_[app].pages[*index];
  page.announced = role.announced;
  page.unanswered = role.unanswered;
  page.listener = role.listener;
  page.listener_page = role.listener_page;
  set_held(app, *index, role.held);
  page.accept_order = role.accept_order;
  const bool live = copy_connection(home, from_page, app, *index, *positions);
  store_page(app, *index);
  SocketPage& old = apps_[home].pages[from_page];
  old.pins &= ~pin;
  if (keep_holder) {
    leave_carrier(home, from_page);
    return MovedConnection{0, *index, live};
  }
  // The old page no longer carries the connection: it goes once its application let go of it (or
  // never knew it), else that application finds it closed.
  old.engine_released = true;
  old.connection = ConnectionHandle{};
  if ((old.app_closed && old.pins == 0) || !old.announced) {
    free_page(home, from_page);
  } else {
    formats::TcpSocketPageHeader* from = apps_[home].region.page(from_page);
    from->control.error.store(EBADF, std::memory_order_relaxed);
    from->control.status.store(TcpSocketStatus::closed, std::memory_order_release);
    store_page(home, from_page);
  }
  return MovedConnection{0, *index, live};
}

void ReplicaServer::leave_carrier(std::size_t home, std::uint32_t page) {
  SocketPage& old = apps_[home].pages[page];
  if (!old.announced || (old.app_closed && old.pins == 0)) {
    free_page(home, page);
    return;
  }
  old.holder = true;
  ++holder_pages_;
  old.engine_released = false;
  set_held(home, page, false);
  old.listener = kNoListener;
  formats::TcpSocketPageHeader* header = apps_[home].region.page(page);
  header->control.generation.store(kHolderGeneration, std::memory_order_release);
  header->control.revoked.store(0, std::memory_order_relaxed);
  store_page(home, page);
  // The bytes went with the connection; the positions stay, for the library to compare.
  discard_memory(apps_[home].region.send_bytes(page));
  discard_memory(apps_[home].region.receive_bytes(page));
}

std::optional<ReplicaServer::Place> ReplicaServer::carrier_of(ConnectionHandle connection) const {
  if (const Place* place = place_of(connection)) return *place;
  for (std::uint32_t app = 0; app < apps_.size(); ++app) {
    const auto& pages = apps_[app].pages;
    for (std::uint32_t page = 0; page < pages.size(); ++page) {
      const SocketPage& state = pages[page];
      if (state.kind == PageKind::connection && !state.holder && state.connection == connection) {
        return Place{app, page, state.generation};
      }
    }
  }
  return std::nullopt;
}

bool ReplicaServer::held_elsewhere(const SocketPage& page) const {
  return page.moved && holder_of(page.connection, false).has_value();
}

std::optional<ReplicaServer::Place> ReplicaServer::holder_of(ConnectionHandle connection, bool open_only) const {
  if (holder_pages_ == 0) return std::nullopt;
  for (std::uint32_t app = 0; app < apps_.size(); ++app) {
    const auto& pages = apps_[app].pages;
    for (std::uint32_t page = 0; page < pages.size(); ++page) {
      const SocketPage& state = pages[page];
      if (state.kind == PageKind::connection && state.holder && state.connection == connection &&
          (!open_only || !state.app_closed)) {
        return Place{app, page, state.generation};
      }
    }
  }
  return std::nullopt;
}

void ReplicaServer::on_carry(std::size_t app, const stack::TcpPageBody& carry, std::uint64_t now_ns) {
  SocketPage* page = checked_page(app, carry.page, carry.generation);
  if (page == nullptr) return;
  if (page->kind != PageKind::connection) {
    counters_.bad_app_messages->add();
    return;
  }
  const Place asker{static_cast<std::uint32_t>(app), carry.page, carry.generation};
  const bool queued = std::any_of(pending_carries_.begin(), pending_carries_.end(), [&](const PendingCarry& pending) {
    return pending.holder.app == asker.app && pending.holder.page == asker.page;
  });
  // A carrier asks when it found itself revoked (its page turns holder once the move it waits for
  // is done, then its turn comes) or when it was handed the connection back before this came.
  if (!queued && pending_carries_.size() >= kPendingCarries) {
    // Its library asks again after this event.
    counters_.carries_refused->add();
    notify(app, carry.page);
    return;
  }
  if (!queued) pending_carries_.push_back(PendingCarry{asker, page->connection});
  serve_pending_carries(now_ns);
}

void ReplicaServer::serve_pending_carries(std::uint64_t now_ns) {
  for (std::size_t index = 0; index < pending_carries_.size();) {
    const PendingCarry pending = pending_carries_[index];
    const auto earlier = pending_carries_.begin() + static_cast<std::ptrdiff_t>(index);
    const bool behind = std::any_of(pending_carries_.begin(), earlier, [&](const PendingCarry& other) {
      return other.connection == pending.connection;
    });
    const auto outcome = behind ? CarryOutcome::waits : try_carry(pending, now_ns);
    if (outcome == CarryOutcome::waits) {
      ++index;
      continue;
    }
    pending_carries_.erase(earlier);
  }
}

ReplicaServer::CarryOutcome ReplicaServer::try_carry(const PendingCarry& pending, std::uint64_t now_ns) {
  const Place& holder = pending.holder;
  if (holder.app >= apps_.size() || holder.page >= apps_[holder.app].pages.size()) return CarryOutcome::dropped;
  SocketPage& page = apps_[holder.app].pages[holder.page];
  if (page.kind != PageKind::connection || page.generation != holder.generation || page.connection != pending.connection) {
    return CarryOutcome::dropped;
  }
  auto& control = apps_[holder.app].region.page(holder.page)->control;
  if (!page.holder) {
    // It carries the connection. Revoked, it waits for the move that revoked it (a claim's);
    // with none under way the mark is stale and goes, and its library looks again.
    if (control.revoked.load(std::memory_order_relaxed) == 0) return CarryOutcome::dropped;
    if (!waiting_claims_.empty()) return CarryOutcome::waits;
    control.revoked.store(0, std::memory_order_release);
    notify(holder.app, holder.page);
    return CarryOutcome::dropped;
  }
  const auto carrier = carrier_of(page.connection);
  if (carrier && !outside_rings(*carrier)) {
    counters_.carries_waited->add();
    return CarryOutcome::waits;
  }
  if (carrier && carry_to(holder, *carrier, now_ns)) return CarryOutcome::carried;
  // Nobody carries it (or its carrier's rings are impossible): its application sees it reset.
  page.holder = false;
  --holder_pages_;
  page.engine_released = true;
  page.connection = ConnectionHandle{};
  control.error.store(ECONNRESET, std::memory_order_relaxed);
  control.status.store(TcpSocketStatus::closed, std::memory_order_relaxed);
  control.generation.store(page.generation, std::memory_order_release);
  store_page(holder.app, holder.page);
  notify(holder.app, holder.page);
  return CarryOutcome::dropped;
}

bool ReplicaServer::outside_rings(const Place& carrier) {
  // A process that closed its page (or whose lease ended) no longer touches its rings.
  if (apps_[carrier.app].pages[carrier.page].app_closed) return true;
  auto& control = apps_[carrier.app].region.page(carrier.page)->control;
  control.revoked.store(1, std::memory_order_seq_cst);
  return control.in_use.load(std::memory_order_seq_cst) == 0;
}

bool ReplicaServer::carry_to(const Place& holder, const Place& carrier, std::uint64_t now_ns) {
  const auto positions = ring_positions(carrier.app, carrier.page);
  if (!positions) return false;
  const bool live = copy_connection(carrier.app, carrier.page, holder.app, holder.page, *positions);
  store_page(holder.app, holder.page);
  leave_carrier(carrier.app, carrier.page);
  counters_.carries->add();
  const SocketPage& page = apps_[holder.app].pages[holder.page];
  if (live) {
    engine_->on_send_ready(page.connection, now_ns);
    engine_->on_receive_consumed(page.connection, now_ns);
    publish_info(holder.app, holder.page, page.connection);
  }
  // The page that carried it is a holder's now: its process may be polling.
  notify(holder.app, holder.page);
  return true;
}

void ReplicaServer::carrier_let_go(std::size_t app, std::uint32_t page, std::uint64_t now_ns) {
  const SocketPage& state = apps_[app].pages[page];
  const ConnectionHandle connection = state.connection;
  if (const auto holder = holder_of(connection, true)) {
    counters_.returns_to_holders->add();
    if (carry_to(*holder, Place{static_cast<std::uint32_t>(app), page, state.generation}, now_ns)) return;
  }
  // A closed holder's page that a fork pins: a child may still claim the connection from it.
  if (holder_of(connection, false)) return;
  if (state.engine_released) {
    free_page(app, page);
  } else {
    engine_->close(connection, now_ns);
  }
}

void ReplicaServer::holder_let_go(ConnectionHandle connection, std::uint64_t now_ns) {
  const auto carrier = carrier_of(connection);
  if (!carrier) return;
  const SocketPage& state = apps_[carrier->app].pages[carrier->page];
  // Kept for holders only: its application closed it and no fork pins it.
  if (state.app_closed && state.pins == 0) carrier_let_go(carrier->app, carrier->page, now_ns);
}

void ReplicaServer::free_fork_slot_if_unused(std::size_t app, std::size_t slot) {
  App& entry = apps_[app];
  const std::uint64_t bit = std::uint64_t{1} << slot;
  if (std::any_of(entry.pages.begin(), entry.pages.end(), [&](const SocketPage& page) { return (page.pins & bit) != 0; })) {
    return;
  }
  entry.forks[slot] = 0;
  store_fork(app, slot);
}

void ReplicaServer::unpinned(std::size_t app, std::uint32_t index, std::uint64_t now_ns) {
  SocketPage& page = apps_[app].pages[index];
  if (page.kind != PageKind::connection || page.pins != 0 || !page.app_closed) return;
  if (page.holder) {
    const ConnectionHandle connection = page.connection;
    free_page(app, index);
    holder_let_go(connection, now_ns);
  } else if (held_elsewhere(page)) {
    carrier_let_go(app, index, now_ns);
  } else if (page.engine_released) {
    free_page(app, index);
  } else {
    // The last holder closed it: FIN after what is queued, or RST when unread data remains.
    engine_->close(page.connection, now_ns);
  }
}

void ReplicaServer::on_fork_ended(std::uint64_t fork, std::uint64_t now_ns) {
  if (fork == 0) return;
  ended_forks_[next_ended_] = fork;
  next_ended_ = (next_ended_ + 1) % kForkSlots;
  for (std::size_t app = 0; app < apps_.size(); ++app) {
    App& entry = apps_[app];
    const auto found = std::find(std::begin(entry.forks), std::end(entry.forks), fork);
    if (found == std::end(entry.forks)) continue;
    const auto slot = static_cast<std::size_t>(found - std::begin(entry.forks));
    const std::uint64_t bit = std::uint64_t{1} << slot;
    entry.forks[slot] = 0;
    store_fork(app, slot);
    for (std::uint32_t page = 0; page < entry.pages.size(); ++page) {
      if ((entry.pages[page].pins & bit) == 0) continue;
      entry.pages[page].pins &= ~bit;
      store_page(app, page);
      unpinned(app, page, now_ns);
    }
  }
}

void ReplicaServer::on_control(const Message& message, std::uint64_t now_ns) {
  if (message.kind == stack::kTcpForkEndedKind) {
    on_fork_ended(message.read<stack::TcpForkEndedBody>().fork, now_ns);
  } else {
    counters_.bad_app_messages->add();
  }
}

// ---- engine events ----

std::uint32_t ReplicaServer::connection_room(ListenerId listener) {
  if (listener >= listeners_.size()) return 0;
  const auto& members = listeners_[listener].members;
  std::uint32_t room = 0;
  for (std::size_t i = 0; i < members.size(); ++i) {
    const bool app_seen_before = std::any_of(members.begin(), members.begin() + static_cast<std::ptrdiff_t>(i),
                                             [&](const Place& earlier) { return earlier.app == members[i].app; });
    if (!app_seen_before) room += pages_left(apps_[members[i].app]);
  }
  return room;
}

std::optional<StreamRings> ReplicaServer::rings_for(ListenerId listener, ConnectionHandle connection,
                                                    const FourTuple& tuple) {
  if (listener >= listeners_.size() || connection.index >= connections_.size()) return std::nullopt;
  const auto member = pick_member(listener);
  if (!member) return std::nullopt;
  const Place owner = *member;
  const auto index = take_page(owner.app, PageKind::connection);
  if (!index) return std::nullopt;
  SocketPage& page = apps_[owner.app].pages[*index];
  page.connection = connection;
  page.listener = listener;
  page.listener_page = owner.page;
  page.options = apps_[owner.app].pages[owner.page].options;
  store_page(owner.app, *index);
  connections_[connection.index] = Place{owner.app, *index, page.generation};
  auto& control = apps_[owner.app].region.page(*index)->control;
  control.local_address = tuple.local_address;
  control.remote_address = tuple.remote_address;
  control.local_port = tuple.local_port;
  control.remote_port = tuple.remote_port;
  control.status.store(TcpSocketStatus::connecting, std::memory_order_release);
  note_placed(owner);
  return rings_of(owner.app, *index);
}

void ReplicaServer::on_accept_ready(ListenerId listener, ConnectionHandle connection, const FourTuple& tuple) {
  const Place* place = place_of(connection);
  if (place == nullptr || listener >= listeners_.size()) return;
  SocketPage& page = apps_[place->app].pages[place->page];
  // The member it was placed with (leave_group resets the connections of a member that leaves).
  const Place owner{place->app, page.listener_page, 0};
  if (page.listener_page >= apps_[owner.app].pages.size()) return;
  SocketPage& listener_page = apps_[owner.app].pages[owner.page];
  if (listener_page.kind != PageKind::listener || listener_page.listener != listener) return;
  Group& group = listeners_[listener];
  if (!listener_page.active ||
      (shared_queue(group) && (!waiting_to_accept(owner) || accept_queue_of(owner) != 0))) {
    // Its process has not shown it accepts, and may never (a server's master), or, sharing the
    // queue, is not waiting for one (busy with a client), or has one to take already (it may
    // serve that one while another member waits: postfix's smtpd processes take turns waiting
    // under a lock): the connection waits here, unannounced, for the first member that accepts
    // (a take, or place_held).
    page.accept_order = next_held_order(owner);
    set_held(place->app, place->page, true);
    store_page(place->app, place->page);
    counters_.group_held->add();
    if (!shared_queue(group) && std::any_of(group.members.begin(), group.members.end(),
                                             [&](const Place& member) { return apps_[member.app].pages[member.page].active; })) {
      group.held_to_place = true;
      held_to_place_ = true;
    }
    return;
  }
  page.announced = true;
  page.accept_order = listener_page.accept_announced;
  store_page(place->app, place->page);
  announce_queued(owner, place->page, tuple);
}

void ReplicaServer::announce_queued(const Place& member, std::uint32_t page, const FourTuple& tuple) {
  SocketPage& listener_page = apps_[member.app].pages[member.page];
  ++listener_page.accept_announced;
  store_page(member.app, member.page);
  auto& listener_control = apps_[member.app].region.page(member.page)->control;
  listener_control.accept_ready.store(listener_page.accept_announced - listener_page.accept_taken,
                                      std::memory_order_release);
  send_accepted(member.app, member.page, page, tuple);
}

void ReplicaServer::crash_if_test_port(const Place& place) {
  const auto& control = apps_[place.app].region.page(place.page)->control;
  // Inside the engine's call (its events come before it returns), as a real bug would crash: the
  // connection is the one the table names as in flight. A restored connection's events come
  // again at the restart, so it crashes there too.
  if (control.local_port == settings_.test_crash_port || control.remote_port == settings_.test_crash_port) {
    crash_by_sigsegv();
  }
}

void ReplicaServer::send_accepted(std::uint32_t app, std::uint32_t listener_page, std::uint32_t page,
                                  const FourTuple& tuple) {
  send_app(app, Message::make(stack::kTcpAcceptedKind,
                              stack::TcpAcceptedBody{listener_page, apps_[app].pages[listener_page].generation, page,
                                                     apps_[app].pages[page].generation, tuple.remote_address,
                                                     tuple.remote_port, tuple.local_port, tuple.local_address}));
}

std::optional<StreamRings> ReplicaServer::rings_for_restored(ConnectionHandle connection, const FourTuple&,
                                                             ListenerId) {
  const Place* place = place_of(connection);
  // An open the application never heard answered: it asks again, so this one goes.
  if (place == nullptr || apps_[place->app].pages[place->page].unanswered) return std::nullopt;
  const formats::TcpRegion& region = apps_[place->app].region;
  auto* header = region.page(place->page);
  // At the positions the shared indices hold: the engine checks them against its table.
  return StreamRings{formats::ByteRingConsumer(&header->send, region.send_bytes(place->page),
                                               header->send.head.load(std::memory_order_acquire)),
                     formats::ByteRingProducer(&header->receive, region.receive_bytes(place->page),
                                               header->receive.tail.load(std::memory_order_acquire))};
}

void ReplicaServer::on_events(ConnectionHandle connection, std::uint32_t events, int error) {
  const Place* place = place_of(connection);
  if (place == nullptr) return;
  if (settings_.test_crash_port != 0 && (events & kEventReadable) != 0) crash_if_test_port(*place);
  const std::uint32_t app = place->app;
  const std::uint32_t index = place->page;
  SocketPage& page = apps_[app].pages[index];
  auto& control = apps_[app].region.page(index)->control;
  if ((events & kEventEstablished) != 0) {
    control.status.store(TcpSocketStatus::connected, std::memory_order_release);
    publish_info(app, index, connection);
  }
  if ((events & kEventPeerClosed) != 0) {
    control.flags.fetch_or(formats::kTcpPeerClosed, std::memory_order_release);
  }
  if ((events & kEventFailed) != 0) {
    control.error.store(error, std::memory_order_relaxed);
    control.status.store(TcpSocketStatus::closed, std::memory_order_release);
  }
  if ((events & kEventReleased) != 0) {
    page.engine_released = true;
    store_page(app, index);
    connections_[connection.index] = Place{};
    if ((events & kEventFailed) == 0 && control.status.load(std::memory_order_relaxed) != TcpSocketStatus::closed) {
      control.status.store(TcpSocketStatus::closed, std::memory_order_release);
    }
    // Gone before the application heard of it (a passive connection reset in the handshake or
    // while held), or after the application let go: nobody will ask for the page again.
    const bool shared = held_elsewhere(page);
    if ((page.app_closed && page.pins == 0 && !shared) || !page.announced) {
      if (page.held) {
        if (!engine_) return;  // the restoring engine dropped it: finish_restore lets it go
        forget_held(app, index);
      }
      free_page(app, index);
      return;
    }
  }
  if (!page.app_closed && page.announced) notify(app, index);
}

}  // namespace flotilla::tcp
