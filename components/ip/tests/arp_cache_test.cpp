// ARP cache: the RFC 826 merge rule, expiry, flood resistance, request rate limiting, giving up.
#include "components/ip/arp_cache.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace flotilla::ip {
namespace {

constexpr wire::MacAddress kMacA{0x02, 0, 0, 0, 0, 0xa};
constexpr wire::MacAddress kMacB{0x02, 0, 0, 0, 0, 0xb};
constexpr std::uint32_t kGateway = 0x0a000001;
constexpr std::uint32_t kPeer = 0x0a000002;

TEST(ArpCache, LearnCreatesOnlyWhenAskedThenUpdates) {
  ArpCache cache(8);
  cache.learn(kPeer, kMacA, 0, false);  // not addressed to us: merge only
  EXPECT_FALSE(cache.lookup(kPeer, 0));
  EXPECT_EQ(cache.flood_ignored, 1u);
  cache.learn(kPeer, kMacA, 0, true);
  EXPECT_EQ(cache.lookup(kPeer, 1), kMacA);
  cache.learn(kPeer, kMacB, 2, false);  // an existing entry is updated whatever `create` says
  EXPECT_EQ(cache.lookup(kPeer, 3), kMacB);
  EXPECT_EQ(cache.learned, 2u);
  EXPECT_EQ(cache.created, 1u);
  EXPECT_EQ(cache.size(), 1u);
}

TEST(ArpCache, EntriesExpireAfterTheirLifetime) {
  ArpCache cache(8, 60'000);
  cache.learn(kPeer, kMacA, 1000, true);
  EXPECT_EQ(cache.lookup(kPeer, 60'999), kMacA);
  EXPECT_FALSE(cache.lookup(kPeer, 61'000));
  cache.learn(kGateway, kMacB, 30'000, true);
  EXPECT_EQ(cache.expire(61'000), 1u);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.lookup(kGateway, 61'000), kMacB);
  // A refresh (learn of a known address) pushes expiry out.
  cache.learn(kGateway, kMacB, 80'000, false);
  EXPECT_EQ(cache.lookup(kGateway, 139'999), kMacB);
  EXPECT_EQ(cache.expire(140'000), 1u);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(ArpCache, FloodDoesNotEvictAFreshEntryInUse) {
  ArpCache cache(256, 60'000);
  cache.learn(kGateway, kMacA, 0, true);
  ASSERT_EQ(cache.lookup(kGateway, 10), kMacA);  // in use
  ASSERT_EQ(cache.want(kPeer, 20), ResolveStep::send_request);  // incomplete, packets waiting
  // 100k distinct senders, all "addressed to us", over 50 seconds.
  for (std::uint32_t n = 0; n < 100'000; ++n) {
    cache.learn(0xc0000000u + n, kMacB, 20 + n / 2, true);
  }
  EXPECT_EQ(cache.lookup(kGateway, 50'100), kMacA);
  EXPECT_TRUE(cache.is_incomplete(kPeer));
  EXPECT_EQ(cache.size(), 256u);
  EXPECT_GT(cache.evicted, 99'000u);
  // Merge-only floods (the usual case: not addressed to us) create nothing at all.
  const std::uint64_t created = cache.created;
  for (std::uint32_t n = 0; n < 100'000; ++n) cache.learn(0xd0000000u + n, kMacB, 50'200, false);
  EXPECT_EQ(cache.created, created);
  EXPECT_GE(cache.flood_ignored, 100'000u);
}

TEST(ArpCache, FullOfEntriesInUseRefusesNewOnes) {
  ArpCache cache(4);
  for (std::uint32_t n = 0; n < 4; ++n) {
    cache.learn(kPeer + n, kMacA, 0, true);
    ASSERT_TRUE(cache.lookup(kPeer + n, 1));
  }
  cache.learn(kGateway, kMacB, 2, true);
  EXPECT_FALSE(cache.lookup(kGateway, 3));
  EXPECT_EQ(cache.flood_ignored, 1u);
  EXPECT_EQ(cache.want(kGateway, 3), ResolveStep::give_up);  // no room to resolve either
  // Once an entry expires, its room is reused.
  cache.learn(kGateway, kMacB, 60'000, true);
  EXPECT_EQ(cache.lookup(kGateway, 60'001), kMacB);
  EXPECT_EQ(cache.evicted, 1u);
}

TEST(ArpCache, EvictsTheOldestUnusedResolvedEntry) {
  ArpCache cache(3);
  cache.learn(1, kMacA, 100, true);
  cache.learn(2, kMacA, 50, true);  // oldest, unused
  cache.learn(3, kMacA, 200, true);
  cache.learn(4, kMacB, 300, true);
  EXPECT_FALSE(cache.lookup(2, 300));
  EXPECT_TRUE(cache.lookup(1, 300));
  EXPECT_TRUE(cache.lookup(3, 300));
  EXPECT_TRUE(cache.lookup(4, 300));
}

TEST(ArpCache, RequestsAreRateLimitedThenGivenUp) {
  ArpCache cache(8);
  std::vector<ResolveStep> steps;
  for (std::uint64_t now = 0; now <= 3500; now += 250) steps.push_back(cache.want(kPeer, now));
  using S = ResolveStep;
  // 0: request, 1000: request, 2000: request, 3000: give up, 3250: a fresh start.
  const std::vector<S> expected{S::send_request, S::wait, S::wait, S::wait, S::send_request,
                                S::wait,         S::wait, S::wait, S::send_request, S::wait,
                                S::wait,         S::wait, S::give_up, S::send_request, S::wait};
  EXPECT_EQ(steps, expected);
  EXPECT_EQ(cache.requests, 4u);
  EXPECT_EQ(cache.gave_up, 1u);
  EXPECT_EQ(cache.created, 2u);
}

TEST(ArpCache, AnswerResolvesAnIncompleteEntry) {
  ArpCache cache(8);
  ASSERT_EQ(cache.want(kPeer, 0), ResolveStep::send_request);
  EXPECT_FALSE(cache.lookup(kPeer, 10));
  cache.learn(kPeer, kMacA, 20, false);  // the reply: merge into the incomplete entry
  EXPECT_EQ(cache.lookup(kPeer, 30), kMacA);
  EXPECT_FALSE(cache.is_incomplete(kPeer));
  EXPECT_EQ(cache.want(kPeer, 40), ResolveStep::wait);  // already resolved: look it up
  // Expired: resolve again, in place.
  EXPECT_EQ(cache.want(kPeer, 70'000), ResolveStep::send_request);
  EXPECT_TRUE(cache.is_incomplete(kPeer));
}

TEST(ArpCache, ExpireGivesUpIncompleteEntriesThatUsedTheirRequests) {
  ArpCache cache(8);
  for (std::uint64_t now : {0, 1000, 2000}) ASSERT_EQ(cache.want(kPeer, now), ResolveStep::send_request);
  ASSERT_EQ(cache.want(kGateway, 2500), ResolveStep::send_request);
  EXPECT_EQ(cache.expire(2999), 0u);
  std::vector<std::uint32_t> given_up;
  EXPECT_EQ(cache.expire(3000, [&](std::uint32_t address) { given_up.push_back(address); }), 1u);
  EXPECT_EQ(given_up, std::vector<std::uint32_t>{kPeer});
  EXPECT_TRUE(cache.is_incomplete(kGateway));
  EXPECT_EQ(cache.gave_up, 1u);
}

}  // namespace
}  // namespace flotilla::ip
