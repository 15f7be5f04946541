// SipHash-2-4: 2 compression rounds per message word, 4 finalization rounds (paper section 2).
#include "components/tcp/algorithms/siphash.hpp"

#include <array>
#include <bit>

namespace flotilla::tcp {

namespace {

struct SipState {
  std::uint64_t v0, v1, v2, v3;

  void round() {  // SipRound, paper figure 2.1
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }

  void compress(std::uint64_t word) {
    v3 ^= word;
    round();
    round();
    v0 ^= word;
  }
};

// Little-endian load of up to 8 bytes, whatever the host's byte order.
std::uint64_t load_le(const std::uint8_t* bytes, std::size_t count) {
  std::uint64_t word = 0;
  for (std::size_t i = 0; i < count; ++i) word |= std::uint64_t{bytes[i]} << (8 * i);
  return word;
}

}  // namespace

std::uint64_t siphash24(const std::uint64_t key[2], std::span<const std::uint8_t> message) {
  // Initialization: the key XORed into the constants "somepseudorandomlygeneratedbytes".
  SipState state{key[0] ^ 0x736f6d6570736575ull, key[1] ^ 0x646f72616e646f6dull,
                 key[0] ^ 0x6c7967656e657261ull, key[1] ^ 0x7465646279746573ull};
  const std::size_t length = message.size();
  const std::size_t whole_words = length / 8;
  for (std::size_t i = 0; i < whole_words; ++i) state.compress(load_le(message.data() + 8 * i, 8));
  // The last word: the remaining 0..7 bytes, and the message length mod 256 in its top byte.
  const std::size_t tail = length % 8;
  const std::uint64_t last =
      load_le(message.data() + 8 * whole_words, tail) | (std::uint64_t{length & 0xff} << 56);
  state.compress(last);
  // Finalization.
  state.v2 ^= 0xff;
  for (int i = 0; i < 4; ++i) state.round();
  return state.v0 ^ state.v1 ^ state.v2 ^ state.v3;
}

namespace {
void store_le32(std::uint8_t* out, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<std::uint8_t>(value >> (8 * i));
}
}  // namespace

std::uint64_t siphash24_tuple(const std::uint64_t key[2], const FourTuple& tuple,
                              TupleHashPurpose purpose, std::uint32_t extra0,
                              std::uint32_t extra1) {
  std::array<std::uint8_t, 21> message{};
  store_le32(&message[0], tuple.local_address);
  store_le32(&message[4], tuple.remote_address);
  store_le32(&message[8], (std::uint32_t{tuple.local_port} << 16) | tuple.remote_port);
  store_le32(&message[12], extra0);
  store_le32(&message[16], extra1);
  message[20] = static_cast<std::uint8_t>(purpose);
  return siphash24(key, message);
}

}  // namespace flotilla::tcp
