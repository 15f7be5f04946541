// The consumer: applies sequences strictly in order, exactly once, and keeps its progress in the
// state store so that the next incarnation carries on where this one's last commit left off.
//
// Each burst is handled as one transaction:
//   1. take every buffer the burst carries (hand_off producer -> consumer); a handle that went
//      stale (the producer freed that copy after a restart) is refused by the pool and counted;
//   2. apply the next expected sequence(s): a sequence already applied is a duplicate, one beyond
//      a hole is out of order; both are discarded, since the producer resends from the hole on;
//   3. commit the progress record (one release store makes the whole burst's effect visible);
//   4. only then free the buffers.
// A SIGKILL anywhere in there loses nothing: before step 3 the burst never happened as far as the
// state store (and so the producer) is concerned and the sequences are resent; buffers held
// between steps 1 and 4 are reclaimed by the supervisor.
#include <fmt/core.h>

#include <cstdio>

#include "apps/ring_demo/roles.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/component_loop.hpp"
#include "dataplane/ring.hpp"

namespace flotilla::ring_demo {
namespace {

class Consumer {
 public:
  Consumer(ChildRegions& regions, ChannelEnd& end, ComponentLoop& loop)
      : ring_memory_(regions.channel->data()),
        pool_(*regions.pool),
        end_(end),
        loop_(loop),
        store_(*regions.store),
        counters_(regions.role_stats->counters),
        messages_(regions.messages),
        incarnation_(regions.incarnation),
        progress_(load_progress(*regions.store)) {
    progress_.incarnation = incarnation_;
    // Whatever this incarnation resumes from was acknowledged (or will be found in the store).
    last_acked_ = progress_.applied;
  }

  bool done() const { return progress_.applied >= messages_; }
  int exit_code() const { return exit_code_; }

  void on_burst(std::span<const Message> burst) {
    std::array<BufferHandle, ComponentLoop::kBurst> taken;
    std::array<std::uint64_t, ComponentLoop::kBurst> sequences;
    std::size_t count = 0;

    // 1. Take the buffers.
    const std::uint64_t first_position = end_.in.consumed() - burst.size();
    for (std::size_t i = 0; i < burst.size(); ++i) {
      const Message& message = burst[i];
      if (message.kind != kDataKind || count == taken.size()) {
        ++progress_.refused;
        continue;
      }
      const auto body = message.read<DataBody>();
      if (body.ring_position != first_position + i) {
        // The ring handed us something other than what was published at this index: a slot read
        // before it was written, or overwritten before it was read. Nothing above the ring can
        // repair that, so stop and say exactly what was seen.
        ++progress_.ring_mismatches;
        const auto* layout = reinterpret_cast<const RingLayout*>(ring_memory_);
        fmt::print(stderr,
                   "consumer {}: ring integrity: index {} holds the message published at index {} "
                   "(sequence {}); ring head {}, tail {}; burst of {} starting at {}\n",
                   incarnation_, first_position + i, body.ring_position, body.seq,
                   layout->head.value.load(std::memory_order_acquire),
                   layout->tail.value.load(std::memory_order_acquire), burst.size(),
                   first_position);
        exit_code_ = 5;
        break;
      }
      if (auto took = pool_.hand_off(body.payload, kProducerId, kConsumerId); !took) {
        if (took.error().code == Errc::stale_handle) {
          ++progress_.stale_refused;
        } else {
          ++progress_.refused;
        }
        continue;
      }
      taken[count] = body.payload;
      sequences[count] = body.seq;
      ++count;
    }

    // 2. Apply, strictly in order.
    for (std::size_t i = 0; i < count && exit_code_ == 0; ++i) {
      const std::uint64_t seq = sequences[i];
      if (seq == 0 || seq > messages_) {
        ++progress_.refused;
      } else if (seq <= progress_.applied) {
        ++progress_.duplicates;
      } else if (seq > progress_.applied + 1) {
        ++progress_.out_of_order;
      } else {
        auto bytes = pool_.bytes(kConsumerId, taken[i]);
        if (!bytes || !payload_matches(bytes.value(), seq)) {
          ++progress_.bad_payload;
          fmt::print(stderr, "consumer {}: payload of sequence {} is wrong ({})\n", incarnation_,
                     seq, bytes ? "bytes differ" : bytes.error().message());
          exit_code_ = 3;
          break;
        }
        progress_.checksum = fold_checksum(progress_.checksum, payload_digest(bytes.value()));
        progress_.applied = seq;
      }
    }

    // 3. Commit.
    commit_progress(store_, progress_);

    // 4. Release.
    for (std::size_t i = 0; i < count; ++i) {
      if (!pool_.free(kConsumerId, taken[i])) counters_.add(Counter::corrupt);
    }

    if (exit_code_ != 0) {
      loop_.stop();
      return;
    }
    // Acknowledge regularly (that is what wakes a producer stuck on a full ring), and whenever we
    // have caught up, since we may be about to sleep.
    const std::uint64_t unacked = progress_.applied - last_acked_;
    if (unacked >= kAckEvery || (unacked > 0 && (done() || !end_.in.has_input()))) send_ack();
    if (done()) loop_.stop();
  }

  void send_ack() {
    const Message ack = Message::make(kAckKind, AckBody{incarnation_, progress_.applied});
    auto sent = end_.out.send_burst(std::span(&ack, 1));
    // A full reverse ring only delays the ack: we try again after the next burst, and the producer
    // also looks at the state store when it is idle.
    if (sent && sent.value() == 1) last_acked_ = progress_.applied;
  }

 private:
  const std::byte* ring_memory_;  // the data ring's header, for diagnostics
  BufferPool& pool_;
  ChannelEnd& end_;
  ComponentLoop& loop_;
  StateStore& store_;
  CounterBlock& counters_;
  const std::uint64_t messages_;
  const std::uint64_t incarnation_;
  ProgressValues progress_;
  std::uint64_t last_acked_ = 0;
  int exit_code_ = 0;
};

}  // namespace

int run_consumer(ChildRegions& regions) {
  const std::uint64_t incarnation = regions.incarnation;
  // Side b: consumes the producer's data ring, produces acks into the other one.
  auto end = attach_channel(regions.channel->bytes(), kRingCapacity, ChannelSide::b, incarnation,
                            &regions.bells->producer, &regions.role_stats->counters);
  if (!end) {
    fmt::print(stderr, "consumer {}: attach channel: {}\n", incarnation, end.error().message());
    return 2;
  }
  ComponentLoop loop(regions.bells->consumer, regions.role_stats->counters,
                     WaitPolicy::dedicated_core());
  Consumer consumer(regions, end.value(), loop);

  // Tell the producer we are a new incarnation. It learns the same from the ring header; the
  // message is what wakes it if it sleeps on a full ring.
  const Message hello = Message::make(MessageKind::peer_restarted, PeerRestartedBody{incarnation});
  if (auto sent = end->out.send_burst(std::span(&hello, 1)); !sent) {
    fmt::print(stderr, "consumer {}: {}\n", incarnation, sent.error().message());
    return 2;
  }
  if (auto ready = send_ready(regions.control_fd, incarnation); !ready) {
    fmt::print(stderr, "consumer {}: ready: {}\n", incarnation, ready.error().message());
    return 2;
  }
  if (consumer.done()) {  // an earlier incarnation committed the last sequence before it died
    consumer.send_ack();
    return 0;
  }
  auto added = loop.add_input(
      end->in, [&consumer](std::span<const Message> burst) { consumer.on_burst(burst); });
  if (!added) {
    fmt::print(stderr, "consumer {}: {}\n", incarnation, added.error().message());
    return 2;
  }
  // ComponentLoop sets a faulted input aside and keeps running; for this one-input component that
  // means the stream is over, so a timer checks and stops the loop.
  Timer watchdog([&loop](Timer& self) {
    if (loop.input_faulted(0)) {
      loop.stop();
    } else {
      loop.timers().arm(self, loop.now_ms() + 100);
    }
  });
  loop.timers().arm(watchdog, loop.now_ms() + 100);
  loop.run();
  if (loop.input_faulted(0)) {
    fmt::print(stderr, "consumer {}: data ring reported a corrupt index\n", incarnation);
    return 4;
  }
  return consumer.exit_code();
}

}  // namespace flotilla::ring_demo
