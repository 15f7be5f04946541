// The checks on memory an application can write (components/formats): a TCP socket region's
// header (TcpRegion::attach must give an invalid view, never pages outside the region), and both
// ends of a byte ring whose other index the application sets to anything between the replica's
// reads and writes (the ring must report corruption rather than move outside its bytes or count
// more than its capacity). The region is an exact-size heap buffer, so ASan sees any stray access.
#include <cstring>
#include <vector>

#include "components/formats/byte_ring.hpp"
#include "components/formats/tcp_socket_page.hpp"
#include "fuzz/fuzz_input.hpp"

namespace {

using namespace flotilla;
using namespace flotilla::formats;
using fuzz::require;

constexpr std::size_t kRingBytes = 4096;

bool inside(std::span<const std::byte> part, std::span<const std::byte> region) {
  return part.data() >= region.data() && part.data() + part.size() <= region.data() + region.size();
}

void header(fuzz::FuzzInput& input, std::vector<std::byte>& region) {
  TcpRegion::format(region, kRingBytes);
  auto* fields = reinterpret_cast<TcpRegionHeader*>(region.data());
  const std::uint8_t which = input.byte();
  if (which & 1) fields->version = input.take<std::uint32_t>();
  if (which & 2) fields->page_count = input.take<std::uint32_t>();
  if (which & 4) fields->ring_bytes = input.take<std::uint32_t>();
  if (which & 8) fields->page_stride = input.take<std::uint32_t>();
  if (which & 16) fields->magic.store(input.take<std::uint64_t>());
  const TcpRegion view = TcpRegion::attach(region);
  if (!view.valid()) return;
  for (std::uint32_t i = 0; i < view.page_count(); ++i) {
    require(inside(view.send_bytes(i), region) && inside(view.receive_bytes(i), region));
    require(inside({reinterpret_cast<const std::byte*>(view.page(i)), sizeof(TcpSocketPageHeader)}, region));
  }
  require(view.page(view.page_count()) == nullptr && view.send_bytes(view.page_count()).empty());
}

void rings(fuzz::FuzzInput& input, const TcpRegion& view) {
  TcpSocketPageHeader& page = *view.page(0);
  const std::uint64_t start = input.take<std::uint64_t>() % (1ull << 40);
  // The replica consumes the send ring and produces into the receive ring.
  ByteRingConsumer consumer(&page.send, view.send_bytes(0), start);
  ByteRingProducer producer(&page.receive, view.receive_bytes(0), start);
  std::vector<std::byte> scratch(kRingBytes + 1);
  while (!input.empty()) {
    const std::uint8_t step = input.byte();
    const std::size_t amount = input.take<std::uint16_t>() % (kRingBytes + 1);
    switch (step % 8) {
      case 0: page.send.tail.store(start + input.take<std::uint16_t>() - 0x100); break;  // the application's index
      case 1: page.receive.head.store(start + input.take<std::uint16_t>() - 0x100); break;
      case 2: page.send.tail.store(input.take<std::uint64_t>()); break;
      case 3: require(consumer.readable() <= consumer.capacity()); break;
      case 4: require(consumer.read(std::span(scratch).first(amount)) <= amount); break;
      case 5: (void)consumer.peek(input.take<std::uint16_t>(), std::span(scratch).first(amount)); break;
      case 6: require(producer.write(std::span(scratch).first(amount)) <= amount); break;
      default:
        require(producer.free_space() <= producer.capacity());
        (void)producer.write_ahead(input.take<std::uint16_t>(), std::span(scratch).first(amount));
        break;
    }
    if (consumer.corrupt()) require(consumer.readable() == 0);
    if (producer.corrupt()) require(producer.free_space() == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::FuzzInput input(data, size);
  std::vector<std::byte> region(TcpRegion::bytes_for(2, kRingBytes));
  if (input.byte() % 2 == 0) {
    header(input, region);
  } else {
    const TcpRegion view = TcpRegion::format(region, kRingBytes);
    require(view.valid());
    rings(input, view);
  }
  return 0;
}
