#include "components/name/channel_transport.hpp"

#include <array>

namespace flotilla::name {

Result<NameChannel> NameChannel::attach(std::span<std::byte> memory, std::uint32_t capacity,
                                        ChannelSide side, std::uint64_t incarnation,
                                        Doorbell* peer_bell, CounterBlock* counters) {
  auto end = attach_channel(memory, capacity, side, incarnation, peer_bell, counters);
  if (!end) return end.error();
  return NameChannel(end.value());
}

Result<SendOutcome> NameChannel::send(const NameMessage& message) {
  std::array<Message, kMaxChunks> chunks;
  const std::size_t count = encode_chunks(message, static_cast<std::uint16_t>(sequence_ + 1), chunks);
  auto room = end_.out.room();
  if (!room) return room.error();
  if (*room < count) {
    ++stats_.refused_full;
    return SendOutcome::ring_full;
  }
  auto sent = end_.out.send_burst(std::span<const Message>(chunks.data(), count));
  if (!sent) return sent.error();
  ++sequence_;
  stats_.chunks_sent += *sent;
  if (*sent != count) {
    // Only a consumer that moved its index backwards can get here. The receiver's assembler
    // discards the partial message when the next one starts.
    return Error{Errc::corrupt_index, 0, "ring tail moved backwards during a send"};
  }
  ++stats_.messages_sent;
  return SendOutcome::sent;
}

std::optional<NameMessage> NameChannel::feed(const Message& chunk) {
  ++stats_.chunks_received;
  const std::uint64_t rejected_before = assembler_.rejected();
  std::optional<NameMessage> message = assembler_.push(chunk);
  stats_.chunks_rejected += assembler_.rejected() - rejected_before;
  if (!message) return std::nullopt;
  if (!well_formed(*message)) {
    ++stats_.messages_malformed;
    return std::nullopt;
  }
  ++stats_.messages_received;
  return message;
}

Result<std::size_t> NameChannel::receive(std::vector<NameMessage>& out, std::size_t max_chunks) {
  std::array<Message, 16> burst;
  std::size_t messages = 0;
  std::size_t chunks = 0;
  while (chunks < max_chunks) {
    const std::size_t want = std::min(burst.size(), max_chunks - chunks);
    auto got = end_.in.recv_burst(std::span<Message>(burst.data(), want));
    if (!got) return got.error();
    if (*got == 0) break;
    chunks += *got;
    for (std::size_t i = 0; i < *got; ++i) {
      if (auto message = feed(burst[i])) {
        out.push_back(*message);
        ++messages;
      }
    }
  }
  return messages;
}

// ---- ServerPump ----

void ServerPump::add_member(MemberId member, NameChannel& channel) {
  links_.push_back(Link{false, member, &channel, {}});
}

void ServerPump::add_client(ComponentId client, NameChannel& channel) {
  links_.push_back(Link{true, client, &channel, {}});
}

ServerPump::Link* ServerPump::find(bool client, std::uint32_t id) {
  for (Link& link : links_) {
    if (link.client == client && link.id == id) return &link;
  }
  return nullptr;
}

bool ServerPump::has_input() const {
  for (const Link& link : links_) {
    if (link.channel->has_input()) return true;
  }
  return false;
}

Result<std::size_t> ServerPump::discard_input(MemberId member) {
  Link* link = find(false, member);
  std::size_t dropped = 0;
  while (link != nullptr && link->channel->has_input()) {
    received_.clear();
    auto got = link->channel->receive(received_);
    if (!got) return got.error();
    dropped += *got;
  }
  return dropped;
}

std::size_t ServerPump::backlog() const {
  std::size_t total = 0;
  for (const Link& link : links_) total += link.backlog.size();
  return total;
}

Status ServerPump::flush(Link& link) {
  while (!link.backlog.empty()) {
    auto sent = link.channel->send(link.backlog.front());
    if (!sent) return sent.error();
    if (*sent == SendOutcome::ring_full) return {};
    link.backlog.pop_front();
  }
  return {};
}

Status ServerPump::route(std::vector<Envelope>& out) {
  for (const Envelope& envelope : out) {
    Link* link = find(envelope.to_client, envelope.to);
    if (link == nullptr) {
      ++unroutable_;
      continue;
    }
    link->backlog.push_back(envelope.message);  // behind anything already waiting: FIFO
    if (auto status = flush(*link); !status) return status;
  }
  out.clear();
  return {};
}

Result<std::size_t> ServerPump::poll(std::uint64_t now_ms) {
  std::size_t handled = 0;
  for (Link& link : links_) {
    if (auto status = flush(link); !status) return status.error();
  }
  for (std::size_t i = 0; i < links_.size(); ++i) {
    received_.clear();
    auto got = links_[i].channel->receive(received_);
    if (!got) return got.error();
    for (const NameMessage& message : received_) {
      // A channel speaks for one peer: a message claiming another sender is dropped.
      const bool genuine = links_[i].client
                               ? message.from == kClientSource && message.client == links_[i].id
                               : message.from == links_[i].id;
      if (!genuine) {
        ++spoofed_;
        continue;
      }
      server_->handle(message, out_);
      ++handled;
      if (auto status = route(out_); !status) return status.error();
    }
  }
  if (now_ms != last_tick_ms_) {
    last_tick_ms_ = now_ms;
    server_->tick(now_ms, out_);
    if (auto status = route(out_); !status) return status.error();
  }
  return handled;
}

}  // namespace flotilla::name
