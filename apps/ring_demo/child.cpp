// A child's start: take the regions the supervisor handed over, check each, then run the role.
#include <fmt/core.h>

#include <cstdio>

#include "apps/ring_demo/roles.hpp"
#include "dataplane/channel.hpp"

namespace flotilla::ring_demo {
namespace {

Result<ChildRegions> attach_regions(ReceivedSetup& received, Role role) {
  auto& fds = received.fds;
  const auto read_only = SharedRegion::Access::read_only;
  const auto read_write = SharedRegion::Access::read_write;
  // The producer may look at the consumer's progress and the supervisor's orders, not touch them.
  const auto state_access = role == Role::producer ? read_only : read_write;

  ChildRegions regions;
  regions.messages = received.setup.messages;
  regions.incarnation = received.setup.incarnation;

  auto channel = SharedRegion::attach(std::move(fds[kChannelRegion]), read_write);
  if (!channel) return channel.error();
  if (channel->size() < channel_bytes(kRingCapacity)) {
    return Error{Errc::bad_layout, 0, "channel region too small"};
  }
  regions.channel.emplace(std::move(channel.value()));

  auto doorbell = SharedRegion::attach(std::move(fds[kDoorbellRegion]), read_write);
  if (!doorbell) return doorbell.error();
  regions.bells = doorbell->at<Doorbells>(0);
  if (regions.bells == nullptr) return Error{Errc::bad_layout, 0, "doorbell region too small"};
  regions.doorbell.emplace(std::move(doorbell.value()));

  auto pool_region = SharedRegion::attach(std::move(fds[kPoolRegion]), read_write);
  if (!pool_region) return pool_region.error();
  auto pool = BufferPool::attach(std::move(pool_region.value()));
  if (!pool) return pool.error();
  if (pool->id() != kPoolId || pool->buffer_count() != kBufferCount ||
      pool->buffer_size() != kBufferSize) {
    return Error{Errc::bad_layout, 0, "pool is not the demo's shape"};
  }
  regions.pool.emplace(std::move(pool.value()));

  auto stats = SharedRegion::attach(std::move(fds[kStatsRegion]), read_write);
  if (!stats) return stats.error();
  regions.role_stats = stats->at<RoleStats>(0);
  if (regions.role_stats == nullptr) return Error{Errc::bad_layout, 0, "stats region too small"};
  regions.stats.emplace(std::move(stats.value()));

  auto state = SharedRegion::attach(std::move(fds[kStateRegion]), state_access);
  if (!state) return state.error();
  regions.store = state->at<StateStore>(0);
  if (regions.store == nullptr || regions.store->magic != StateStore::kMagic ||
      regions.store->messages != regions.messages) {
    return Error{Errc::bad_layout, 0, "state store"};
  }
  regions.state.emplace(std::move(state.value()));

  if (role == Role::producer) {
    auto control = SharedRegion::attach(std::move(fds[kControlRegion]), read_only);
    if (!control) return control.error();
    regions.supervisor = control->at<SupervisorControl>(0);
    if (regions.supervisor == nullptr || regions.supervisor->magic != SupervisorControl::kMagic) {
      return Error{Errc::bad_layout, 0, "supervisor control region"};
    }
    regions.control.emplace(std::move(control.value()));
  }
  return regions;
}

}  // namespace

int run_child(Role role, int control_fd, std::uint64_t incarnation) {
  auto received = receive_setup(control_fd, role, incarnation);
  if (!received) {
    fmt::print(stderr, "{} {}: setup failed: {}\n", role_name(role), incarnation,
               received.error().message());
    return 2;
  }
  auto regions = attach_regions(received.value(), role);
  if (!regions) {
    fmt::print(stderr, "{} {}: attaching regions failed: {}\n", role_name(role), incarnation,
               regions.error().message());
    return 2;
  }
  regions->control_fd = control_fd;
  return role == Role::producer ? run_producer(regions.value()) : run_consumer(regions.value());
}

}  // namespace flotilla::ring_demo
