// The supervisor: owns every region (so nothing a child holds dies with it), starts the consumer
// and the producer, kills the consumer with SIGKILL at the planned points, reclaims the dead
// incarnation's buffers, starts the next incarnation, and at the end checks the result itself
// rather than taking the children's word for it.
#include <fmt/core.h>
#include <sys/wait.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <new>
#include <string>
#include <vector>

#include "apps/ring_demo/format.hpp"
#include "apps/ring_demo/roles.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/ring.hpp"

namespace flotilla::ring_demo {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

void sleep_for(std::chrono::microseconds duration) {
  timespec request{};
  request.tv_sec = static_cast<time_t>(duration.count() / 1'000'000);
  request.tv_nsec = static_cast<long>(duration.count() % 1'000'000) * 1000;
  while (::clock_nanosleep(CLOCK_MONOTONIC, 0, &request, &request) == EINTR) {
  }
}

// The checksum a consumer must end with: every payload 1..N, folded in order. Computed from the
// sequence numbers alone, independently of anything the children did.
std::uint64_t expected_checksum(std::uint64_t messages) {
  std::uint64_t checksum = 0;
  for (std::uint64_t seq = 1; seq <= messages; ++seq) {
    checksum = fold_checksum(checksum, expected_digest(seq));
  }
  return checksum;
}

template <class T>
Result<T*> place(SharedRegion& region) {
  T* object = region.at<T>(0);
  if (object == nullptr) return Error{Errc::invalid_argument, 0, "region too small"};
  return new (object) T{};
}

class Supervisor {
 public:
  explicit Supervisor(const DemoOptions& options) : options_(options) {}

  int run() {
    start_ = Clock::now();
    if (auto made = create_regions(); !made) {
      fmt::print(stderr, "error: setting up shared memory: {}\n", made.error().message());
      return 1;
    }
    plan_kills();
    say("flotilla ring demo: {} messages, {} consumer kill{}, ring of {} slots, pool of {} x {} B "
        "buffers\n",
        grouped(options_.messages), options_.kills, options_.kills == 1 ? "" : "s",
        grouped(kRingCapacity), grouped(kBufferCount), grouped(kBufferSize));

    if (!start_consumer() || !start_producer()) return finish();
    say("[{:5.2f} s] started consumer (pid {}, incarnation 1) and producer (pid {})\n", elapsed(),
        consumer_.pid(), producer_.pid());

    supervise();
    return finish();
  }

 private:
  template <class... Args>
  void say(fmt::format_string<Args...> format, Args&&... args) {
    if (options_.quiet) return;
    fmt::print(format, std::forward<Args>(args)...);
    std::fflush(stdout);
  }

  double elapsed() const { return seconds_between(start_, Clock::now()); }

  Status create_regions() {
    auto channel = SharedRegion::create("flotilla-demo-channel", channel_bytes(kRingCapacity));
    if (!channel) return channel.error();
    if (auto formatted = format_channel(channel->bytes(), kRingCapacity); !formatted) {
      return formatted;
    }
    channel_.emplace(std::move(channel.value()));

    auto bells = SharedRegion::create("flotilla-demo-doorbells", sizeof(Doorbells));
    if (!bells) return bells.error();
    doorbells_.emplace(std::move(bells.value()));
    auto placed_bells = place<Doorbells>(*doorbells_);
    if (!placed_bells) return placed_bells.error();
    bells_ = placed_bells.value();

    auto pool = BufferPool::create(kPoolId, kBufferSize, kBufferCount);
    if (!pool) return pool.error();
    pool_.emplace(std::move(pool.value()));

    for (auto* slot : {&producer_stats_region_, &consumer_stats_region_}) {
      auto region = SharedRegion::create("flotilla-demo-stats", sizeof(RoleStats));
      if (!region) return region.error();
      slot->emplace(std::move(region.value()));
    }
    auto producer_stats = place<RoleStats>(*producer_stats_region_);
    if (!producer_stats) return producer_stats.error();
    producer_stats_ = producer_stats.value();
    auto consumer_stats = place<RoleStats>(*consumer_stats_region_);
    if (!consumer_stats) return consumer_stats.error();
    consumer_stats_ = consumer_stats.value();

    auto state = SharedRegion::create("flotilla-demo-state", sizeof(StateStore));
    if (!state) return state.error();
    state_.emplace(std::move(state.value()));
    auto store = place<StateStore>(*state_);
    if (!store) return store.error();
    store_ = store.value();
    store_->magic = StateStore::kMagic;
    store_->messages = options_.messages;

    auto control = SharedRegion::create("flotilla-demo-control", sizeof(SupervisorControl));
    if (!control) return control.error();
    control_.emplace(std::move(control.value()));
    auto supervisor = place<SupervisorControl>(*control_);
    if (!supervisor) return supervisor.error();
    supervisor_ = supervisor.value();
    supervisor_->magic = SupervisorControl::kMagic;

    // The producer gets read-only views of the consumer's state and of our orders.
    auto state_ro = state_->reopen_read_only();
    if (!state_ro) return state_ro.error();
    state_read_only_ = std::move(state_ro.value());
    auto control_ro = control_->reopen_read_only();
    if (!control_ro) return control_ro.error();
    control_read_only_ = std::move(control_ro.value());
    return {};
  }

  // Kill i happens once the consumer has applied kill_points_[i]. Until then the producer is held
  // to at most `margin` sequences past that point, so the stream is still running when the kill
  // comes even if we are slow to notice; after the last kill it may run to the end.
  void plan_kills() {
    const std::uint64_t stretch = options_.messages / (options_.kills + 1);
    margin_ = std::clamp<std::uint64_t>(stretch / 2, 1, 65'536);
    for (std::uint32_t i = 0; i < options_.kills; ++i) {
      kill_points_.push_back(options_.messages * (i + 1) / (options_.kills + 1));
    }
    supervisor_->release_limit.store(release_limit_after(0), std::memory_order_release);
  }

  std::uint64_t release_limit_after(std::size_t kills_done) const {
    return kills_done < kill_points_.size() ? kill_points_[kills_done] + margin_
                                            : options_.messages;
  }

  bool start_consumer() {
    ++consumer_incarnation_;
    const int fds[kConsumerRegions] = {channel_->fd(), doorbells_->fd(), pool_->region().fd(),
                                       consumer_stats_region_->fd(), state_->fd()};
    auto child = spawn_child(Role::consumer, consumer_incarnation_, options_.messages, fds,
                             std::chrono::seconds(5));
    if (!child) {
      failures_.push_back(fmt::format("could not start consumer incarnation {}: {}",
                                      consumer_incarnation_, child.error().message()));
      return false;
    }
    consumer_ = std::move(child.value());
    return true;
  }

  bool start_producer() {
    const int fds[kProducerRegions] = {channel_->fd(),         doorbells_->fd(),
                                       pool_->region().fd(),   producer_stats_region_->fd(),
                                       state_read_only_.get(), control_read_only_.get()};
    auto child = spawn_child(Role::producer, 1, options_.messages, fds, std::chrono::seconds(5));
    if (!child) {
      failures_.push_back(fmt::format("could not start producer: {}", child.error().message()));
      return false;
    }
    producer_ = std::move(child.value());
    return true;
  }

  // Reaps a child that exited by itself. Returns false when that is a failure.
  bool check_exit(ChildProcess& child, const char* what, bool& done) {
    auto status = child.poll_exit();
    if (!status) return true;
    if (WIFEXITED(*status) && WEXITSTATUS(*status) == 0) {
      done = true;
      return true;
    }
    failures_.push_back(
        fmt::format("{} exited unexpectedly ({})", what, describe_wait_status(*status)));
    return false;
  }

  void supervise() {
    const auto deadline = start_ + std::chrono::seconds(effective_timeout_seconds(options_));
    auto next_report = start_ + std::chrono::seconds(1);
    auto last_report = start_;
    std::uint64_t last_reported = 0;
    for (;;) {
      // Look often while a kill is due, so it lands close to its point; lazily afterwards.
      sleep_for(kills_done_ < kill_points_.size() ? std::chrono::microseconds(1000)
                                                  : std::chrono::microseconds(10'000));
      const std::string consumer_name =
          fmt::format("consumer incarnation {}", consumer_incarnation_);
      if (!check_exit(consumer_, consumer_name.c_str(), consumer_done_) ||
          !check_exit(producer_, "producer", producer_done_)) {
        return;
      }
      if (consumer_done_ && producer_done_) return;

      const ProgressValues progress = load_progress(*store_);
      if (kills_done_ < kill_points_.size() && !consumer_done_ &&
          progress.applied >= kill_points_[kills_done_]) {
        if (!kill_and_restart()) return;
        continue;
      }
      const auto now = Clock::now();
      if (now >= next_report) {
        const double rate = static_cast<double>(progress.applied - last_reported) /
                            seconds_between(last_report, now);
        say("[{:5.2f} s] delivered {:>13} / {}  ({} msg/s)  consumer incarnation {}, pool {} "
            "free\n",
            elapsed(), grouped(progress.applied), grouped(options_.messages),
            grouped(static_cast<std::uint64_t>(rate)), consumer_incarnation_,
            grouped(pool_->count_free()));
        last_reported = progress.applied;
        last_report = now;
        next_report += std::chrono::seconds(1);
      }
      if (progress.applied != last_applied_) {
        last_applied_ = progress.applied;
        last_progress_ = now;
      } else if (now - last_progress_ >= kStallLimit) {
        failures_.push_back(
            fmt::format("stalled: no progress for {} s at {} delivered; {}",
                        std::chrono::duration_cast<std::chrono::seconds>(kStallLimit).count(),
                        grouped(progress.applied), diagnostics()));
        return;
      }
      if (now >= deadline) {
        failures_.push_back(fmt::format("timed out after {} s with {} of {} delivered",
                                        effective_timeout_seconds(options_),
                                        grouped(progress.applied), grouped(options_.messages)));
        return;
      }
    }
  }

  // What the supervisor can see of the channel and the pool, for a failure report.
  std::string diagnostics() const {
    const auto* data_ring = reinterpret_cast<const RingLayout*>(channel_->data());
    const auto* ack_ring = reinterpret_cast<const RingLayout*>(
        channel_->data() + RingLayout::bytes_for(kRingCapacity));
    const ProducerReport& report = producer_stats_->producer;
    return fmt::format(
        "data ring head {} tail {}; ack ring head {} tail {}; producer sent up to #{} "
        "(incarnation seen {}); pool: {} free, {} held by the producer, {} by the consumer",
        data_ring->head.value.load(), data_ring->tail.value.load(), ack_ring->head.value.load(),
        ack_ring->tail.value.load(), report.first_sends.load(std::memory_order_relaxed),
        report.seen_incarnation.load(std::memory_order_relaxed), pool_->count_free(),
        pool_->count_owned(kProducerId), pool_->count_owned(kConsumerId));
  }

  bool kill_and_restart() {
    const auto killed_at = Clock::now();
    const int status = consumer_.kill_and_reap();
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
      failures_.push_back(fmt::format("consumer incarnation {} was not killed by us ({})",
                                      consumer_incarnation_, describe_wait_status(status)));
      return false;
    }
    // The dead incarnation's last commit is exactly what it delivered.
    const std::uint64_t delivered = load_progress(*store_).applied;
    const std::size_t reclaimed = pool_->reclaim(kConsumerId);
    reclaimed_total_ += reclaimed;
    if (!start_consumer()) return false;
    const double restart_ms = seconds_between(killed_at, Clock::now()) * 1000.0;
    ++kills_done_;
    supervisor_->release_limit.store(release_limit_after(kills_done_), std::memory_order_release);
    ring_doorbell(bells_->producer, nullptr);
    say("[{:5.2f} s] consumer killed (SIGKILL) at {} delivered; restarted as incarnation {} in "
        "{:.1f} ms; {} buffer{} reclaimed\n",
        elapsed(), grouped(delivered), consumer_incarnation_, restart_ms, grouped(reclaimed),
        reclaimed == 1 ? "" : "s");

    // The producer notices by itself (ring header); wait briefly so its side of the story can be
    // told next to ours.
    const ProducerReport& report = producer_stats_->producer;
    const auto give_up = Clock::now() + std::chrono::seconds(2);
    while (report.restarts_seen.load(std::memory_order_acquire) < kills_done_ &&
           Clock::now() < give_up) {
      sleep_for(std::chrono::microseconds(200));
    }
    if (report.restarts_seen.load(std::memory_order_acquire) >= kills_done_) {
      say("[{:5.2f} s]   producer saw incarnation {}: resending from #{} ({} in flight); "
          "{} outstanding copies freed, their handles now stale\n",
          elapsed(), report.seen_incarnation.load(std::memory_order_relaxed),
          grouped(report.resend_from.load(std::memory_order_relaxed)),
          grouped(report.in_flight.load(std::memory_order_relaxed)),
          grouped(report.released.load(std::memory_order_relaxed)));
    }
    return true;
  }

  int finish() {
    // Whatever is still running is stopped now (a failure path); the regions are ours, so the
    // pool can be checked whatever happened.
    if (producer_.running()) producer_.kill_and_reap();
    if (consumer_.running()) {
      consumer_.kill_and_reap();
      pool_->reclaim(kConsumerId);
    }
    const double seconds = elapsed();
    const ProgressValues final_state = load_progress(*store_);
    const std::uint64_t expected = expected_checksum(options_.messages);
    const ProducerReport& report = producer_stats_->producer;
    const CounterBlock& pc = producer_stats_->counters;
    const CounterBlock& cc = consumer_stats_->counters;
    const std::uint64_t lost =
        options_.messages > final_state.applied ? options_.messages - final_state.applied : 0;
    const std::size_t free_buffers = pool_->count_free();
    const bool checksum_ok = final_state.checksum == expected;

    if (lost != 0) failures_.push_back(fmt::format("{} messages lost", grouped(lost)));
    if (final_state.applied > options_.messages) failures_.push_back("applied past the end");
    if (!checksum_ok) failures_.push_back("checksum mismatch (content or order is wrong)");
    if (final_state.bad_payload != 0) failures_.push_back("payloads with wrong bytes");
    if (final_state.ring_mismatches != 0) {
      failures_.push_back("the ring delivered a message at another index than it was published at");
    }
    if (final_state.refused != 0) {
      failures_.push_back(fmt::format("{} messages refused for reasons other than a stale handle",
                                      grouped(final_state.refused)));
    }
    if (kills_done_ != options_.kills) {
      failures_.push_back(
          fmt::format("{} of {} planned kills happened", kills_done_, options_.kills));
    }
    if (free_buffers != kBufferCount) {
      failures_.push_back(
          fmt::format("pool leaked {} buffers", grouped(kBufferCount - free_buffers)));
    }
    if (pc.read(Counter::corrupt) != 0 || cc.read(Counter::corrupt) != 0) {
      failures_.push_back("corruption counters are not zero");
    }

    const auto row = [](std::string_view name, const std::string& value) {
      fmt::print("  {:<24}{}\n", name, value);
    };
    fmt::print("summary\n");
    row("messages", grouped(options_.messages));
    row("sent by producer", fmt::format("{}  ({} first sends + {} resent after restarts)",
                                        grouped(pc.read(Counter::messages_out)),
                                        grouped(report.first_sends.load(std::memory_order_relaxed)),
                                        grouped(report.resends.load(std::memory_order_relaxed))));
    row("delivered in order", fmt::format("{}  (sequences applied strictly one after another)",
                                          grouped(final_state.applied)));
    row("duplicates discarded", grouped(final_state.duplicates));
    row("out-of-order discarded",
        fmt::format("{}  (past a hole a killed consumer left; the hole was resent first)",
                    grouped(final_state.out_of_order)));
    row("stale handles refused", fmt::format("{}  (old copies the producer freed on a restart)",
                                             grouped(final_state.stale_refused)));
    row("lost", grouped(lost));
    row("checksum", fmt::format("{:#018x} {} expected {:#018x}", final_state.checksum,
                                checksum_ok ? "matches" : "DIFFERS from", expected));
    row("consumer incarnations", fmt::format("{} ({} restart{})", consumer_incarnation_,
                                             kills_done_, kills_done_ == 1 ? "" : "s"));
    row("buffers reclaimed",
        fmt::format("{}  (held by killed consumers; plus {} freed by the producer on restarts, "
                    "{} at the end)",
                    grouped(reclaimed_total_),
                    grouped(report.released_total.load(std::memory_order_relaxed)),
                    grouped(report.released_at_exit.load(std::memory_order_relaxed))));
    row("pool", fmt::format("{} of {} buffers free{}", grouped(free_buffers), grouped(kBufferCount),
                            free_buffers == kBufferCount ? " (nothing leaked)" : ""));
    row("producer counters",
        fmt::format("messages_out {}, ring_full {}, sleeps {}, futex_wakes {}",
                    grouped(pc.read(Counter::messages_out)), grouped(pc.read(Counter::ring_full)),
                    grouped(pc.read(Counter::sleeps)), grouped(pc.read(Counter::futex_wakes))));
    row("consumer counters",
        fmt::format(
            "messages_in {}, messages_out {} (acks), sleeps {}, futex_wakes {}, wasted_wakes {}",
            grouped(cc.read(Counter::messages_in)), grouped(cc.read(Counter::messages_out)),
            grouped(cc.read(Counter::sleeps)), grouped(cc.read(Counter::futex_wakes)),
            grouped(cc.read(Counter::wasted_wakes))));
    row("elapsed", fmt::format("{:.2f} s  ({} msg/s delivered)", seconds,
                               grouped(static_cast<std::uint64_t>(
                                   static_cast<double>(final_state.applied) / seconds))));
    if (failures_.empty()) {
      fmt::print(
          "result: PASS - all {} message{} delivered exactly once, in order, across {} "
          "consumer kill{}; no buffer leaked\n",
          grouped(options_.messages), options_.messages == 1 ? "" : "s", kills_done_,
          kills_done_ == 1 ? "" : "s");
      std::fflush(stdout);
      return 0;
    }
    fmt::print("result: FAIL\n");
    for (const auto& failure : failures_) fmt::print("  - {}\n", failure);
    std::fflush(stdout);
    return 1;
  }

  const DemoOptions options_;
  Clock::time_point start_;

  std::optional<SharedRegion> channel_;
  std::optional<SharedRegion> doorbells_;
  std::optional<SharedRegion> producer_stats_region_;
  std::optional<SharedRegion> consumer_stats_region_;
  std::optional<SharedRegion> state_;
  std::optional<SharedRegion> control_;
  std::optional<BufferPool> pool_;
  UniqueFd state_read_only_;
  UniqueFd control_read_only_;

  Doorbells* bells_ = nullptr;
  RoleStats* producer_stats_ = nullptr;
  RoleStats* consumer_stats_ = nullptr;
  StateStore* store_ = nullptr;
  SupervisorControl* supervisor_ = nullptr;

  ChildProcess consumer_;
  ChildProcess producer_;
  std::uint64_t consumer_incarnation_ = 0;
  bool consumer_done_ = false;
  bool producer_done_ = false;

  static constexpr auto kStallLimit = std::chrono::seconds(5);
  std::uint64_t last_applied_ = 0;
  Clock::time_point last_progress_ = Clock::now();

  std::vector<std::uint64_t> kill_points_;
  std::uint64_t margin_ = 0;
  std::size_t kills_done_ = 0;
  std::uint64_t reclaimed_total_ = 0;
  std::vector<std::string> failures_;
};

}  // namespace

int run_supervisor(const DemoOptions& options) {
  Supervisor supervisor(options);
  return supervisor.run();
}

}  // namespace flotilla::ring_demo
