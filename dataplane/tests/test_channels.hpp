// In-memory channels between a component under test and the peers a test plays, with the
// component's ChannelOutputs over them (sending straight into the rings, DirectLink); and
// ComponentFixture, which runs a component over them in a component loop, as its process would.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/channel_outputs.hpp"
#include "dataplane/component.hpp"
#include "dataplane/component_loop.hpp"
#include "dataplane/counters.hpp"
#include "dataplane/doorbell.hpp"
#include "dataplane/tests/test_memory.hpp"

namespace flotilla::testing {

class TestChannels {
 public:
  static constexpr std::uint32_t kCapacity = 64;

  struct Peer {
    std::string channel;
    ComponentId id;
  };

  TestChannels(const std::vector<Peer>& peers, BufferPool& pool, ComponentId self) {
    std::vector<ChannelOutputs::Channel> channels;
    for (const Peer& peer : peers) {
      memory_.push_back(std::make_unique<PageMemory>(channel_bytes(kCapacity)));
      const auto bytes = memory_.back()->bytes();
      if (!format_channel(bytes, kCapacity)) std::abort();
      auto ours = attach_channel(bytes, kCapacity, ChannelSide::a, 1, &peer_bell_, nullptr);
      auto theirs = attach_channel(bytes, kCapacity, ChannelSide::b, 1, &component_bell_, nullptr);
      if (!ours || !theirs) std::abort();  // nothing to test without channels
      ours_.push_back(std::move(ours.value()));
      theirs_.push_back(std::move(theirs.value()));
      channels.push_back(ChannelOutputs::Channel{peer.channel, peer.id, &ours_.back()});
    }
    outputs_.emplace(std::move(channels), pool, self, link_);
  }

  ChannelOutputs& outputs() { return *outputs_; }
  DirectLink& link() { return link_; }
  // The doorbell the peers ring: the component's loop waits on it.
  Doorbell& component_bell() { return component_bell_; }

  // The peer at channel `channel` sends `message` to the component.
  bool send_from_peer(std::size_t channel, const Message& message) {
    auto sent = theirs_[channel].out.send_burst(std::span(&message, 1));
    return sent && sent.value() == 1;
  }
  // Everything the component sent on `channel` so far, taken off the ring.
  std::vector<Message> take_sent(std::size_t channel) {
    std::vector<Message> taken;
    Message burst[kCapacity];
    while (true) {
      auto received = theirs_[channel].in.recv_burst(burst);
      if (!received || received.value() == 0) return taken;
      taken.insert(taken.end(), burst, burst + received.value());
    }
  }

 private:
  std::vector<std::unique_ptr<PageMemory>> memory_;
  std::deque<ChannelEnd> ours_;    // deque: stable addresses for ChannelOutputs
  std::deque<ChannelEnd> theirs_;
  Doorbell component_bell_;
  Doorbell peer_bell_;
  DirectLink link_;
  std::optional<ChannelOutputs> outputs_;
};

inline BufferPool test_pool(std::uint32_t buffers) {
  auto pool = BufferPool::create(1, kDefaultBufferSize, buffers);
  if (!pool) std::abort();  // nothing to test without a pool
  return std::move(pool).value();
}

// A pool, channels to `peers`, named counters and a busy-polling loop for the component `self`;
// run() wires a component to them with the runtime's ComponentRunner. Members are public: tests
// play the peers and read the counters.
struct ComponentFixture {
  ComponentFixture(const std::vector<TestChannels::Peer>& peers, ComponentId self, std::uint32_t buffers = 64)
      : pool(test_pool(buffers)),
        channels(peers, pool, self),
        loop(channels.component_bell(), loop_counters, WaitPolicy::busy_poll()) {}

  void run(Component& component) {
    runner.emplace(loop, channels.outputs(), component);
    if (!runner->start()) std::abort();  // the loop has room for every test's channels
  }
  std::uint64_t counter(std::string_view name) { return counters.counter(name).read(); }

  BufferPool pool;
  TestChannels channels;
  NamedCounterTable counters;
  CounterBlock loop_counters;
  ComponentLoop loop;
  std::optional<ComponentRunner> runner;
};

}  // namespace flotilla::testing
