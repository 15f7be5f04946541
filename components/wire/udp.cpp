// UDP parsing and building; see udp.hpp.
#include "components/wire/udp.hpp"

#include "components/wire/checksum.hpp"
#include "components/wire/ipv4.hpp"

namespace flotilla::wire {

Checked<UdpDatagram> UdpDatagram::parse(std::span<std::byte> bytes, std::uint32_t source,
                                        std::uint32_t destination) {
  if (bytes.size() < kUdpHeaderBytes) return WireError::too_short;
  const std::size_t length = load_be16(bytes, 4);
  if (length < kUdpHeaderBytes || length > bytes.size()) return WireError::bad_length;
  const auto datagram = bytes.first(length);
  if (load_be16(bytes, 6) != 0) {
    const std::uint32_t sum =
        pseudo_header_sum(source, destination, kProtocolUdp, static_cast<std::uint16_t>(length));
    if (checksum_finish(checksum_add(sum, datagram)) != 0) return WireError::bad_checksum;
  }
  return UdpDatagram(datagram);
}

std::size_t emit_udp(std::span<std::byte> out, std::uint16_t source_port,
                     std::uint16_t destination_port, std::uint32_t source,
                     std::uint32_t destination, std::size_t payload_length) {
  const std::size_t length = kUdpHeaderBytes + payload_length;
  if (payload_length > 0xffff - kUdpHeaderBytes || out.size() < length) return 0;
  const auto length16 = static_cast<std::uint16_t>(length);
  store_be16(out, 0, source_port);
  store_be16(out, 2, destination_port);
  store_be16(out, 4, length16);
  store_be16(out, 6, 0);
  const std::uint32_t sum = pseudo_header_sum(source, destination, kProtocolUdp, length16);
  const std::uint16_t checksum = checksum_finish(checksum_add(sum, out.first(length)));
  store_be16(out, 6, checksum == 0 ? 0xffff : checksum);  // 0 on the wire means "no checksum"
  return length;
}

}  // namespace flotilla::wire
