// Reassembly: in-order, reverse and random orders, overlaps, duplicates, size and slot limits,
// timeouts, and endless fragment streams.
#include "components/ip/reassembly.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace flotilla::ip {
namespace {

using Kind = ReassemblyOutcome::Kind;

std::vector<std::byte> datagram_bytes(std::size_t size, std::uint8_t seed = 0) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = std::byte(static_cast<std::uint8_t>(i * 7 + seed));
  return bytes;
}

struct Piece {
  std::size_t offset;
  std::size_t length;
  bool more;
};

std::vector<Piece> split(std::size_t size, std::size_t piece) {
  std::vector<Piece> pieces;
  for (std::size_t offset = 0; offset < size; offset += piece) {
    const std::size_t length = std::min(piece, size - offset);
    pieces.push_back({offset, length, offset + length < size});
  }
  return pieces;
}

ReassemblyOutcome offer_piece(Reassembler& r, const FragmentKey& key,
                              const std::vector<std::byte>& bytes, const Piece& piece,
                              std::uint64_t now = 0) {
  return r.offer(key, piece.offset, piece.more,
                 std::span<const std::byte>(bytes).subspan(piece.offset, piece.length), now);
}

// Offers every piece in the given order; expects incomplete until the last, then the datagram.
void expect_reassembles(std::vector<Piece> pieces, std::size_t size) {
  Reassembler r;
  const FragmentKey key{1, 2, 77, 17};
  const auto bytes = datagram_bytes(size);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const ReassemblyOutcome outcome = offer_piece(r, key, bytes, pieces[i]);
    if (i + 1 < pieces.size()) {
      ASSERT_EQ(outcome.kind, Kind::incomplete) << i;
    } else {
      ASSERT_EQ(outcome.kind, Kind::complete);
      EXPECT_TRUE(std::equal(outcome.datagram.begin(), outcome.datagram.end(), bytes.begin(),
                             bytes.end()));
    }
  }
  EXPECT_EQ(r.completed, 1u);
  EXPECT_EQ(r.in_progress(), 0u);
}

TEST(Reassembly, InOrder) { expect_reassembles(split(1500, 200), 1500); }

TEST(Reassembly, ReverseOrder) {
  auto pieces = split(1203, 96);
  std::reverse(pieces.begin(), pieces.end());
  expect_reassembles(pieces, 1203);
}

TEST(Reassembly, RandomOrders) {
  std::mt19937 random(7);
  for (int round = 0; round < 200; ++round) {
    const std::size_t size = 9 + random() % 1950;
    const std::size_t most_blocks = std::min<std::size_t>(40, (size - 1) / 8);  // >= 2 pieces
    auto pieces = split(size, 8 * (1 + random() % most_blocks));
    std::shuffle(pieces.begin(), pieces.end(), random);
    expect_reassembles(pieces, size);
  }
}

TEST(Reassembly, SpanStaysValidUntilTheNextOffer) {
  Reassembler r(1);
  const auto bytes = datagram_bytes(64);
  ASSERT_EQ(r.offer({1, 2, 3, 17}, 0, true, std::span(bytes).first(32), 0).kind, Kind::incomplete);
  const auto outcome = r.offer({1, 2, 3, 17}, 32, false, std::span(bytes).subspan(32), 0);
  ASSERT_EQ(outcome.kind, Kind::complete);
  EXPECT_EQ(r.in_progress(), 0u);  // the slot is free already...
  EXPECT_TRUE(std::equal(outcome.datagram.begin(), outcome.datagram.end(), bytes.begin()));
  // ...and the next offer may reuse it.
  EXPECT_EQ(r.offer({9, 9, 9, 17}, 0, true, std::span(bytes).first(8), 1).kind, Kind::incomplete);
}

TEST(Reassembly, UnfragmentedPacketPassesThrough) {
  Reassembler r;
  const auto bytes = datagram_bytes(100);
  const auto outcome = r.offer({1, 2, 3, 17}, 0, false, bytes, 0);
  EXPECT_EQ(outcome.kind, Kind::complete);
  EXPECT_EQ(outcome.datagram.data(), bytes.data());
  EXPECT_EQ(r.in_progress(), 0u);
}

TEST(Reassembly, AnyOverlapDropsTheDatagram) {
  const auto bytes = datagram_bytes(64);
  const auto other = datagram_bytes(64, 1);
  const FragmentKey key{1, 2, 3, 17};
  struct Case {
    Piece first, second;
    const std::vector<std::byte>* second_bytes;
  };
  const std::vector<Case> cases{
      {{0, 32, true}, {24, 16, true}, &bytes},    // partial overlap
      {{8, 16, true}, {0, 32, true}, &bytes},     // covers an earlier piece
      {{0, 32, true}, {0, 16, true}, &bytes},     // a prefix of an earlier piece
      {{0, 16, true}, {0, 16, true}, &other},     // same place, different bytes
      {{32, 32, false}, {40, 8, true}, &bytes},   // inside the last piece
      {{32, 32, false}, {64, 8, true}, &bytes},   // past the end the last piece set
      {{40, 16, true}, {16, 24, false}, &bytes},  // a last piece ending before received data
      {{16, 16, true}, {16, 16, false}, &bytes},  // same range, now claiming to be last
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    Reassembler r;
    ASSERT_EQ(offer_piece(r, key, bytes, cases[i].first).kind, Kind::incomplete) << i;
    const auto outcome = offer_piece(r, key, *cases[i].second_bytes, cases[i].second);
    EXPECT_EQ(outcome.kind, Kind::overlap) << i;
    EXPECT_EQ(r.overlaps, 1u) << i;
    EXPECT_EQ(r.in_progress(), 0u) << i;
  }
}

TEST(Reassembly, ExactDuplicatesAreHarmless) {
  Reassembler r;
  const FragmentKey key{1, 2, 3, 17};
  const auto bytes = datagram_bytes(100);
  const auto pieces = split(100, 32);  // 0-32, 32-64, 64-96, 96-100 (last)
  ASSERT_EQ(offer_piece(r, key, bytes, pieces[0]).kind, Kind::incomplete);
  ASSERT_EQ(offer_piece(r, key, bytes, pieces[0]).kind, Kind::incomplete);
  ASSERT_EQ(offer_piece(r, key, bytes, pieces[3]).kind, Kind::incomplete);
  ASSERT_EQ(offer_piece(r, key, bytes, pieces[3]).kind, Kind::incomplete);
  ASSERT_EQ(offer_piece(r, key, bytes, pieces[1]).kind, Kind::incomplete);
  // Two adjacent pieces resent as one is not a duplicate of either.
  Reassembler merged;
  ASSERT_EQ(offer_piece(merged, key, bytes, pieces[0]).kind, Kind::incomplete);
  ASSERT_EQ(offer_piece(merged, key, bytes, pieces[1]).kind, Kind::incomplete);
  EXPECT_EQ(offer_piece(merged, key, bytes, Piece{0, 64, true}).kind, Kind::overlap);

  EXPECT_EQ(r.duplicates, 2u);
  const auto outcome = offer_piece(r, key, bytes, pieces[2]);
  ASSERT_EQ(outcome.kind, Kind::complete);
  EXPECT_EQ(outcome.datagram.size(), 100u);
  EXPECT_EQ(r.overlaps, 0u);
}

TEST(Reassembly, BadFragments) {
  Reassembler r;
  const FragmentKey key{1, 2, 3, 17};
  const auto bytes = datagram_bytes(64);
  EXPECT_EQ(r.offer(key, 4, true, std::span(bytes).first(8), 0).kind, Kind::bad_fragment);
  EXPECT_EQ(r.offer(key, 4, false, std::span(bytes).first(8), 0).kind, Kind::bad_fragment);
  EXPECT_EQ(r.offer(key, 0, true, std::span(bytes).first(12), 0).kind, Kind::bad_fragment);
  EXPECT_EQ(r.offer(key, 8, true, std::span(bytes).first(0), 0).kind, Kind::bad_fragment);
  EXPECT_EQ(r.bad_fragments, 4u);
  EXPECT_EQ(r.in_progress(), 0u);
}

TEST(Reassembly, TooLargeDropsTheDatagram) {
  Reassembler r(4, 1960);
  const FragmentKey key{1, 2, 3, 17};
  const auto bytes = datagram_bytes(2048);
  ASSERT_EQ(r.offer(key, 0, true, std::span(bytes).first(1000), 0).kind, Kind::incomplete);
  EXPECT_EQ(r.offer(key, 1000, false, std::span(bytes).subspan(1000, 961), 0).kind,
            Kind::too_large);
  EXPECT_EQ(r.too_large, 1u);
  EXPECT_EQ(r.in_progress(), 0u);
  // Exactly the limit is fine.
  ASSERT_EQ(r.offer(key, 0, true, std::span(bytes).first(1000), 0).kind, Kind::incomplete);
  EXPECT_EQ(r.offer(key, 1000, false, std::span(bytes).subspan(1000, 960), 0).kind,
            Kind::complete);
}

TEST(Reassembly, TimesOutFromTheFirstFragment) {
  Reassembler r(4, 1960, 5000);
  const FragmentKey key{1, 2, 3, 17};
  const auto bytes = datagram_bytes(64);
  ASSERT_EQ(r.offer(key, 0, true, std::span(bytes).first(32), 1000).kind, Kind::incomplete);
  EXPECT_EQ(r.expire(5999), 0u);
  EXPECT_EQ(r.expire(6000), 1u);
  EXPECT_EQ(r.timed_out, 1u);
  // The rest arrives too late: it starts a new datagram, which stays incomplete.
  EXPECT_EQ(r.offer(key, 32, false, std::span(bytes).subspan(32), 6001).kind, Kind::incomplete);
  // offer() notices a timed-out datagram by itself too.
  EXPECT_EQ(r.offer(key, 0, true, std::span(bytes).first(32), 11'001).kind, Kind::incomplete);
  EXPECT_EQ(r.timed_out, 2u);
  EXPECT_EQ(r.in_progress(), 1u);
}

TEST(Reassembly, NoSlotWhenAllAreBusyThenRoomAfterTimeout) {
  Reassembler r(3, 1960, 5000);
  const auto bytes = datagram_bytes(64);
  for (std::uint16_t id = 0; id < 3; ++id) {
    ASSERT_EQ(r.offer({1, 2, id, 17}, 0, true, std::span(bytes).first(8), 0).kind,
              Kind::incomplete);
  }
  EXPECT_EQ(r.offer({1, 2, 99, 17}, 0, true, std::span(bytes).first(8), 10).kind, Kind::no_slot);
  EXPECT_EQ(r.no_slot, 1u);
  // Datagrams in progress still complete.
  EXPECT_EQ(r.offer({1, 2, 1, 17}, 8, false, std::span(bytes).subspan(8, 8), 20).kind,
            Kind::complete);
  EXPECT_EQ(r.offer({1, 2, 99, 17}, 0, true, std::span(bytes).first(8), 30).kind,
            Kind::incomplete);
  EXPECT_EQ(r.offer({1, 2, 98, 17}, 0, true, std::span(bytes).first(8), 40).kind, Kind::no_slot);
  EXPECT_EQ(r.offer({1, 2, 98, 17}, 0, true, std::span(bytes).first(8), 5000).kind,
            Kind::incomplete);  // the two old ones timed out
}

TEST(Reassembly, EndlessFragmentsStayBounded) {
  Reassembler r(4, 1960, 5000);
  const auto bytes = datagram_bytes(8);
  std::uint64_t now = 0;
  // One datagram that never ends: its pieces march on until it is too large, over and over.
  std::size_t offset = 0;
  for (int i = 0; i < 100'000; ++i, now += 1) {
    const auto outcome = r.offer({1, 2, 3, 17}, offset, true, bytes, now);
    ASSERT_TRUE(outcome.kind == Kind::incomplete || outcome.kind == Kind::too_large);
    offset = outcome.kind == Kind::too_large ? 0 : offset + 8;
    ASSERT_LE(r.in_progress(), 1u);
  }
  EXPECT_GT(r.too_large, 0u);
  // A stream of never-finished datagrams with new ids: at most the slots, then no_slot.
  for (std::uint32_t id = 0; id < 100'000; ++id, now += 1) {
    const auto outcome =
        r.offer({1, 2, static_cast<std::uint16_t>(id), 6}, 8, true, bytes, now);
    ASSERT_TRUE(outcome.kind == Kind::incomplete || outcome.kind == Kind::no_slot);
    ASSERT_LE(r.in_progress(), r.slot_count());
  }
  EXPECT_GT(r.no_slot, 90'000u);
  EXPECT_GT(r.timed_out, 0u);  // slots came back through the timeout and were reused
  r.expire(now + 5000);
  EXPECT_EQ(r.in_progress(), 0u);
}

}  // namespace
}  // namespace flotilla::ip
