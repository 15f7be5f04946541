// The snapshot stream: a Snapshot encoded as NameMessages and decoded back, and the checks that
// refuse a damaged stream.
#include "components/name/snapshot_stream.hpp"

#include <gtest/gtest.h>

#include <array>

namespace flotilla::name {
namespace {

Snapshot sample() {
  Snapshot snapshot;
  Change reg;
  reg.op = ChangeOp::register_direct;
  reg.name = "/proc/a";
  reg.owner = 3;
  reg.endpoint = Endpoint{3, 1, 2};
  EXPECT_EQ(snapshot.table.apply(reg), NameErrc::ok);
  reg.endpoint.incarnation = 3;
  EXPECT_EQ(snapshot.table.apply(reg), NameErrc::ok);  // version 2
  reg.name = "/proc/b";
  reg.owner = 4;
  EXPECT_EQ(snapshot.table.apply(reg), NameErrc::ok);
  Change group;
  group.op = ChangeOp::add_member;
  group.name = "/svc/both";
  group.owner = 3;
  group.member = "/proc/b";
  group.weight = 7;
  EXPECT_EQ(snapshot.table.apply(group), NameErrc::ok);
  group.member = "/proc/a";
  group.weight = 2;
  EXPECT_EQ(snapshot.table.apply(group), NameErrc::ok);
  Change reserve;
  reserve.op = ChangeOp::reserve;
  reserve.name = "/net";
  reserve.owner = 5;
  EXPECT_EQ(snapshot.table.apply(reserve), NameErrc::ok);
  PreparedChange prepared;
  prepared.txn = TxnId{17, 4, 2, 1};
  prepared.change = reg;
  prepared.change.name = "/proc/c";
  prepared.in_doubt = true;
  snapshot.prepared.emplace("/proc/c", prepared);
  snapshot.recent_commits.push_back(TxnId{12, 3, 1, 0});
  snapshot.members = {1, 2, 9};
  snapshot.epoch = 4;
  return snapshot;
}

TEST(SnapshotStream, RoundTripsEverything) {
  const Snapshot original = sample();
  const auto records = encode_snapshot(original, 2);
  SnapshotDecoder decoder;
  for (std::size_t i = 0; i < records.size(); ++i) {
    ASSERT_TRUE(well_formed(records[i])) << i;
    const auto state = decoder.feed(records[i]);
    ASSERT_EQ(state, i + 1 == records.size() ? SnapshotDecoder::State::complete
                                             : SnapshotDecoder::State::receiving)
        << i;
  }
  const Snapshot& copy = decoder.snapshot();
  EXPECT_TRUE(copy.table.same_entries(original.table));
  EXPECT_EQ(copy.table.digest(), original.table.digest());
  EXPECT_EQ(copy.members, original.members);
  EXPECT_EQ(copy.epoch, original.epoch);
  ASSERT_EQ(copy.prepared.size(), 1u);
  const PreparedChange& prepared = copy.prepared.at("/proc/c");
  EXPECT_EQ(prepared.txn, original.prepared.at("/proc/c").txn);
  EXPECT_TRUE(prepared.in_doubt);
  EXPECT_EQ(prepared.change.endpoint, (Endpoint{3, 1, 3}));
  ASSERT_EQ(copy.recent_commits.size(), 1u);
  EXPECT_EQ(copy.recent_commits[0], (TxnId{12, 3, 1, 0}));
}

TEST(SnapshotStream, EmptySnapshotRoundTrips) {
  SnapshotDecoder decoder;
  SnapshotDecoder::State state = SnapshotDecoder::State::receiving;
  for (const auto& record : encode_snapshot(Snapshot{NameTable(), {}, {}, {}, 0}, 1, 63)) state = decoder.feed(record);
  EXPECT_EQ(state, SnapshotDecoder::State::complete);
  EXPECT_EQ(decoder.snapshot().table.size(), 0u);
}

TEST(SnapshotStream, RefusesAMissingEntry) {
  auto records = encode_snapshot(sample(), 2);
  records.erase(records.begin() + 2);  // "/proc/b"'s entry: the count and digest no longer match
  SnapshotDecoder decoder;
  SnapshotDecoder::State state = SnapshotDecoder::State::receiving;
  for (const auto& record : records) state = decoder.feed(record);
  EXPECT_EQ(state, SnapshotDecoder::State::failed);
}

TEST(SnapshotStream, RefusesAChangedVersion) {
  auto records = encode_snapshot(sample(), 2);
  records[0].version += 1;
  SnapshotDecoder decoder;
  SnapshotDecoder::State state = SnapshotDecoder::State::receiving;
  for (const auto& record : records) state = decoder.feed(record);
  EXPECT_EQ(state, SnapshotDecoder::State::failed);
}

TEST(SnapshotStream, RefusesBadRecords) {
  const auto records = encode_snapshot(sample(), 2);
  std::vector<NameMessage> bad;
  NameMessage kind = records[0];
  kind.weight = 9;  // no such EntryKind
  bad.push_back(kind);
  NameMessage version = records[0];
  version.version = 0;
  bad.push_back(version);
  NameMessage orphan = records[0];
  orphan.kind = NameMsgKind::snapshot_group;  // a group member of an entry never sent
  set_name(orphan.member, "/proc/x");
  orphan.weight = 1;
  bad.push_back(orphan);
  NameMessage member = records[0];
  member.kind = NameMsgKind::snapshot_member;
  member.version = 0;
  bad.push_back(member);
  NameMessage garbage = records[0];
  garbage.kind = static_cast<NameMsgKind>(200);
  bad.push_back(garbage);
  for (const auto& record : bad) {
    SnapshotDecoder decoder;
    EXPECT_EQ(decoder.feed(record), SnapshotDecoder::State::failed);
  }
}

TEST(SnapshotStream, ServerInstallsAStreamFromADonor) {
  ServerConfig donor_config;
  donor_config.self = 1;
  NameServer donor(donor_config, {1});
  NameMessage request;
  request.kind = NameMsgKind::request;
  request.from = kClientSource;
  request.client = 40;
  request.cookie = 1;
  Change reg;
  reg.op = ChangeOp::register_direct;
  reg.name = "/proc/x";
  reg.owner = 40;
  reg.endpoint = Endpoint{40, 0, 1};
  put_change(request, reg);
  std::vector<Envelope> out;
  donor.handle(request, out);
  ASSERT_EQ(donor.table().size(), 1u);

  ServerConfig joiner_config;
  joiner_config.self = 2;
  NameServer joiner(joiner_config);
  out.clear();
  donor.add_member(2, out);
  donor.send_snapshot(2, out);
  for (const Envelope& envelope : out) {
    ASSERT_FALSE(envelope.to_client);
    std::vector<Envelope> ignored;
    joiner.handle(envelope.message, ignored);
  }
  EXPECT_TRUE(joiner.installed());
  EXPECT_TRUE(joiner.table().same_entries(donor.table()));
  EXPECT_EQ(joiner.members(), (std::vector<MemberId>{1, 2}));
  EXPECT_EQ(joiner.counters().bad_snapshots, 0u);
}

}  // namespace
}  // namespace flotilla::name
