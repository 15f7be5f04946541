// Driver: a device port on the channel to IP; see driver.hpp.
#include "drivers/driver.hpp"

#include <cstdio>
#include <cstring>

#include "components/formats/stack_messages.hpp"

namespace flotilla::drivers {

Driver::Driver(ChannelOutputs& channels, std::size_t ip, std::unique_ptr<PacketPort> port, ImpairedPort* impaired,
               const Link& link, std::span<const std::byte> block_list, InstallBlockRules install, Report report,
               NamedCounterTable& counters)
    : channels_(channels),
      ip_(ip),
      port_(std::move(port)),
      impaired_(impaired),
      link_(link),
      block_list_(block_list.size() >= sizeof(formats::XdpBlockList)
                      ? reinterpret_cast<const formats::XdpBlockList*>(block_list.data())
                      : nullptr),
      install_(std::move(install)),
      report_(std::move(report)),
      rx_frames_(counters.counter("rx_frames")),
      tx_frames_(counters.counter("tx_frames")),
      rx_to_ip_full_(counters.counter("rx_to_ip_full")),
      tx_refused_(counters.counter("tx_refused")),
      device_rx_dropped_(counters.counter("device_rx_dropped")),
      device_tx_dropped_(counters.counter("device_tx_dropped")),
      xdp_early_drops_(counters.counter("xdp_early_drops")),
      malformed_(counters.counter("malformed_messages")),
      offload_failed_(counters.counter("xdp_offload_failed")),
      rx_dropped_before_(device_rx_dropped_.read()),
      tx_dropped_before_(device_tx_dropped_.read()),
      early_drops_before_(xdp_early_drops_.read()) {}

void Driver::announce_link() {
  stack::LinkInfoBody body{};
  std::memcpy(body.mac, link_.mac.data(), sizeof(body.mac));
  body.mtu = link_.mtu;
  (void)channels_.send(ip_, Message::make(stack::kLinkInfoKind, body));
}

void Driver::wake_through_device(ComponentLoop& loop) {
  if (port_->wait_fd() < 0) return;
  waker_.emplace(port_->wait_fd(), loop.doorbell());
  loop.set_sleep_hook([this] { waker_->arm(); });
}

void Driver::on_message(std::size_t channel, const Message& message, std::uint64_t) {
  if (channel != ip_ || message.kind != stack::kFrameKind) {
    malformed_.add();
    return;
  }
  const BufferHandle frame = message.read<stack::FrameBody>().frame;
  if (!channels_.pool().bytes(channels_.self(), frame)) return;  // counted by the pool
  if (outgoing_count_ == outgoing_.size()) on_burst_end(channel);
  outgoing_[outgoing_count_++] = frame;
}

void Driver::on_burst_end(std::size_t) {
  const std::size_t accepted = port_->transmit_burst(std::span(outgoing_.data(), outgoing_count_));
  tx_frames_.add(accepted);
  for (std::size_t i = accepted; i < outgoing_count_; ++i) {
    tx_refused_.add();
    (void)channels_.pool().free(channels_.self(), outgoing_[i]);
  }
  outgoing_count_ = 0;
  channels_.served();
}

bool Driver::poll(std::uint64_t) {
  const bool serviced = port_->service();
  const std::size_t count = port_->receive_burst(received_);
  for (std::size_t i = 0; i < count; ++i) {
    rx_frames_.add();
    const Message message = Message::make(stack::kFrameKind, stack::FrameBody{received_[i]});
    if (!channels_.send_with_buffer(ip_, received_[i], message)) {
      rx_to_ip_full_.add();
      (void)channels_.pool().free(channels_.self(), received_[i]);
    }
  }
  return serviced || count != 0;
}

std::uint64_t Driver::next_wake_ns() const {
  return impaired_ != nullptr ? impaired_->next_release_ns() : UINT64_MAX;
}

void Driver::on_tick(std::uint64_t) {
  mirror_port_stats();
  install_block_list();
}

void Driver::on_peer_restarted(ComponentId peer) {
  if (peer == channels_.peer(ip_)) announce_link();
}

void Driver::mirror_port_stats() {
  const PortStats stats = port_->stats();
  device_rx_dropped_.value.store(rx_dropped_before_ + stats.rx_dropped, std::memory_order_relaxed);
  device_tx_dropped_.value.store(tx_dropped_before_ + stats.tx_dropped, std::memory_order_relaxed);
  xdp_early_drops_.value.store(early_drops_before_ + stats.early_drops, std::memory_order_relaxed);
}

void Driver::install_block_list() {
  if (block_list_ == nullptr || !install_) return;
  switch (formats::read_xdp_block_list(*block_list_, installed_sequence_, block_copy_)) {
    case formats::XdpListRead::unchanged:
    case formats::XdpListRead::busy:  // pf is writing it: look again on the next tick
      return;
    case formats::XdpListRead::invalid:
      installed_sequence_ = block_copy_.sequence;
      offload_failed("XDP block list refused: more than " + std::to_string(FLOTILLA_XDP_MAX_RULES) + " rules");
      return;
    case formats::XdpListRead::copied:
      break;
  }
  installed_sequence_ = block_copy_.sequence;
  if (auto installed = install_(block_copy_.view()); !installed) {
    offload_failed("XDP offload of " + std::to_string(block_copy_.count) + " block rules failed: " +
                   installed.error().message());
    return;
  }
  std::fprintf(stderr, "flotilla-driver: %u block rules offloaded to XDP\n", block_copy_.count);
}

void Driver::offload_failed(const std::string& why) {
  offload_failed_.add();
  std::fprintf(stderr, "flotilla-driver: %s\n", why.c_str());
  if (report_) report_(why);
}

}  // namespace flotilla::drivers
