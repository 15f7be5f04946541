// The packet filter's component: IP asks, on its channel, whether a packet may pass, and gets a
// verdict by ticket. pf reads the packet in the buffer IP keeps parked (it maps the pool read-only),
// decides with its Filter, and answers each burst of requests in one burst. Its connection states
// live in the state store, so a restarted pf forgets nothing, and IP asks again about what was
// pending.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <span>

#include "components/formats/stack_messages.hpp"
#include "components/pf/filter.hpp"
#include "dataplane/channel_outputs.hpp"
#include "dataplane/component.hpp"
#include "dataplane/component_loop.hpp"
#include "dataplane/counters.hpp"

namespace flotilla::pf {

class PfServer final : public Component {
 public:
  static constexpr std::uint64_t kExpirePeriodMs = 1000;

  // `ip_channel`: the index, in `channels`, of the channel to IP. `state`: the state store (the
  // connection table). `xdp_region`: where the block rules XDP may apply go for the driver
  // (components/formats/xdp_block_list.hpp); empty when the configuration gave none.
  static Result<std::unique_ptr<PfServer>> create(ChannelOutputs& channels, std::size_t ip_channel,
                                                  RuleSet rules, std::span<std::byte> state,
                                                  std::span<std::byte> xdp_region,
                                                  NamedCounterTable& counters);

  void on_message(std::size_t channel, const Message& message, std::uint64_t now_ns) override;
  void on_burst_end(std::size_t channel) override;
  std::uint64_t tick_period_ms() const override { return kExpirePeriodMs; }
  void on_tick(std::uint64_t now_ns) override;
  bool reads(std::size_t channel) const override { return channel == ip_channel_; }

  const Filter& filter() const { return filter_; }
  std::size_t restored_states() const { return restored_states_; }
  // Block rules handed to the driver; 0 also when there is no region for them.
  std::size_t offloaded_rules() const { return offloaded_rules_; }

 private:
  PfServer(ChannelOutputs& channels, std::size_t ip_channel, Filter filter, NamedCounterTable& counters);
  stack::VerdictBody verdict_for(const stack::VerdictRequestBody& request, std::uint64_t now_ms);
  void send_answers();

  ChannelOutputs& channels_;
  std::size_t ip_channel_;
  ComponentId ip_;
  Filter filter_;
  std::size_t restored_states_ = 0;
  std::size_t offloaded_rules_ = 0;
  NamedCounter& unreadable_;
  NamedCounter& malformed_;
  NamedCounter& answers_lost_;
  std::array<Message, ComponentLoop::kBurst> answers_{};
  std::size_t answer_count_ = 0;
};

}  // namespace flotilla::pf
