// IP's receive path on the real IpServer: a sequence of frames from the link (ARP, IPv4 with
// options and fragments, ICMP, UDP, TCP, anything), each optionally given a valid Ethernet header
// to us and a valid IPv4 header checksum from the peer, so the checks behind those run; time moves
// on between them (reassembly timeouts, ARP). Every buffer IP sends or delivers is taken back, and
// at the end every pool buffer is free or held by IP (nothing leaked or double-freed).
#include <cstring>
#include <memory>
#include <vector>

#include "components/ip/ip_server.hpp"
#include "components/ip/tests/test_region.hpp"
#include "components/wire/checksum.hpp"
#include "components/wire/ethernet.hpp"
#include "components/wire/ipv4.hpp"
#include "fuzz/fuzz_input.hpp"

namespace {

using namespace flotilla;
using namespace flotilla::ip;
using fuzz::require;

constexpr ComponentId kIp = 2;
constexpr ComponentId kPeer = 3;
constexpr std::uint32_t kPoolBuffers = 64;
constexpr std::uint16_t kFrameOffset = 64;
constexpr std::uint32_t kOurAddress = 0x0a4d0002;
constexpr std::uint32_t kPeerAddress = 0x0a4d0001;
constexpr wire::MacAddress kOurMac{0x02, 0x00, 0x0a, 0x4d, 0x00, 0x02};
constexpr wire::MacAddress kPeerMac{0x02, 0x00, 0x0a, 0x4d, 0x00, 0x01};

class TakeBack final : public IpOutputs {
 public:
  explicit TakeBack(BufferPool& pool) : pool_(pool) {}
  bool send_frame(const BufferHandle& frame) override { return take(frame); }
  bool has_filter() const override { return false; }
  bool request_verdict(const stack::VerdictRequestBody&) override { return false; }
  bool deliver(ComponentId, const stack::TransportPacketBody& packet) override { return take(packet.segment); }

 private:
  bool take(const BufferHandle& handle) {
    require(pool_.hand_off(handle, kIp, kPeer).ok() && pool_.free(kPeer, handle).ok());
    return true;
  }
  BufferPool& pool_;
};

void shape(std::span<std::byte> frame, std::uint8_t how) {
  if ((how & 1) != 0 && frame.size() >= wire::kEthernetHeaderBytes) {
    std::memcpy(frame.data(), kOurMac.data(), 6);
    std::memcpy(frame.data() + 6, kPeerMac.data(), 6);
    wire::store_be16(frame, 12, wire::kEtherTypeIpv4);
  }
  auto packet = frame.size() >= wire::kEthernetHeaderBytes ? frame.subspan(wire::kEthernetHeaderBytes)
                                                           : std::span<std::byte>{};
  if ((how & 2) == 0 || packet.size() < 20) return;
  packet[0] = std::byte{static_cast<std::uint8_t>(0x40 | (std::to_integer<std::uint8_t>(packet[0]) & 0x0f))};
  if ((how & 4) != 0) wire::store_be16(packet, 2, static_cast<std::uint16_t>(packet.size()));
  wire::store_be32(packet, 12, kPeerAddress);
  wire::store_be32(packet, 16, kOurAddress);
  const std::size_t ihl = (std::to_integer<std::size_t>(packet[0]) & 0x0f) * 4;
  if (ihl < 20 || ihl > packet.size()) return;
  wire::store_be16(packet, 10, 0);
  wire::store_be16(packet, 10, wire::internet_checksum(packet.first(ihl)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::FuzzInput input(data, size);
  // One pool and one state region for the whole run (making them is most of an input's time):
  // each input starts from a fresh IP over a zeroed region, and ends by taking back what IP held.
  static BufferPool pool = [] {
    auto created_pool = BufferPool::create(1, 2048, kPoolBuffers);
    if (!created_pool) fuzz::invariant_broken();
    return std::move(created_pool).value();
  }();
  static testing::TestRegion region(IpServer::state_bytes_needed());
  std::memset(region.bytes().data(), 0, region.bytes().size());
  TakeBack outputs(pool);
  NamedCounterTable counters{};
  const IpSettings settings{.address = kOurAddress, .prefix_length = 24, .gateway = 0x0a4d00fe};
  auto created = IpServer::create(pool, kIp, region.bytes(), settings, outputs, counters);
  if (!created) fuzz::invariant_broken();
  IpServer& server = *created.value();
  stack::LinkInfoBody link{};
  std::memcpy(link.mac, kOurMac.data(), 6);
  link.mtu = 1500;
  server.on_link_info(link);
  std::uint64_t now_ms = 100'000;
  server.on_tick(now_ms);
  while (!input.empty()) {
    const std::uint8_t how = input.byte();
    if ((how & 0xc0) == 0xc0) {
      now_ms += input.take<std::uint16_t>();
      server.on_tick(now_ms);
      continue;
    }
    const auto bytes = input.bytes(1514);
    BufferHandle handle;
    if (pool.alloc_burst(kPeer, std::span(&handle, 1)) != 1) break;  // IP holds them all: a finding of its own
    handle.offset = kFrameOffset;
    handle.length = static_cast<std::uint16_t>(bytes.size());
    auto frame = pool.bytes(kPeer, handle);
    require(frame.ok());
    if (!bytes.empty()) std::memcpy(frame->data(), bytes.data(), bytes.size());
    shape(*frame, how);
    require(pool.hand_off(handle, kPeer, kIp).ok());
    server.on_frame(handle, now_ms);
  }
  require(pool.count_owned(kPeer) == 0);
  require(pool.count_free() + pool.count_owned(kIp) + pool.count_owned(parked_owner(kIp)) == kPoolBuffers);
  require(pool.count_owned(kIp) + pool.count_owned(parked_owner(kIp)) == server.buffers_held());
  created.value().reset();
  (void)pool.reclaim(kIp);
  (void)pool.reclaim(parked_owner(kIp));
  require(pool.count_free() == kPoolBuffers);
  return 0;
}
