// RFC 6298 estimator: the formulas' values, clamping and back-off.
#include "components/tcp/algorithms/rtt_estimator.hpp"

#include <gtest/gtest.h>

namespace flotilla::tcp {
namespace {

constexpr std::uint64_t kMs = 1'000'000;

RttEstimator make(std::uint64_t min_rto = 200 * kMs, std::uint64_t max_rto = 60'000 * kMs) {
  RttEstimator estimator;
  estimator.init(1000 * kMs, min_rto, max_rto);
  return estimator;
}

TEST(RttEstimator, InitialRtoBeforeAnySample) {
  RttEstimator estimator = make();
  EXPECT_FALSE(estimator.has_sample());
  EXPECT_EQ(estimator.rto_ns(), 1000 * kMs);
}

TEST(RttEstimator, FirstSampleSetsSrttAndHalfVariance) {
  RttEstimator estimator = make(/*min_rto=*/1 * kMs);
  estimator.on_sample(100 * kMs);
  EXPECT_TRUE(estimator.has_sample());
  EXPECT_EQ(estimator.srtt_ns(), 100 * kMs);
  EXPECT_EQ(estimator.rttvar_ns(), 50 * kMs);
  EXPECT_EQ(estimator.rto_ns(), 100 * kMs + 4 * 50 * kMs);  // 300 ms
}

TEST(RttEstimator, LaterSamplesUseAlphaAndBeta) {
  RttEstimator estimator = make(/*min_rto=*/1 * kMs);
  estimator.on_sample(100 * kMs);
  estimator.on_sample(200 * kMs);
  // RTTVAR = 3/4 * 50 + 1/4 * |100 - 200| = 62.5 ms; SRTT = 7/8 * 100 + 1/8 * 200 = 112.5 ms.
  EXPECT_EQ(estimator.rttvar_ns(), 62'500'000u);
  EXPECT_EQ(estimator.srtt_ns(), 112'500'000u);
  EXPECT_EQ(estimator.rto_ns(), 112'500'000u + 4 * 62'500'000u);
}

TEST(RttEstimator, GranularityFloorsTheVarianceTerm) {
  RttEstimator estimator = make(/*min_rto=*/0);
  estimator.on_sample(10'000);  // 10 µs: 4*RTTVAR = 20 µs < G = 1 ms
  EXPECT_EQ(estimator.rto_ns(), 10'000 + RttEstimator::kGranularityNs);
}

TEST(RttEstimator, ClampedByMinAndMax) {
  RttEstimator low = make(/*min_rto=*/200 * kMs);
  low.on_sample(1 * kMs);
  EXPECT_EQ(low.rto_ns(), 200 * kMs);

  RttEstimator high = make(200 * kMs, /*max_rto=*/2000 * kMs);
  high.on_sample(1500 * kMs);  // 1500 + 4 * 750 = 4500 ms
  EXPECT_EQ(high.rto_ns(), 2000 * kMs);
}

TEST(RttEstimator, BackOffDoublesUpToMaxAndResets) {
  RttEstimator estimator = make(200 * kMs, /*max_rto=*/5000 * kMs);
  estimator.on_sample(100 * kMs);  // rto 300 ms
  estimator.back_off();
  EXPECT_EQ(estimator.rto_ns(), 600 * kMs);
  estimator.back_off();
  EXPECT_EQ(estimator.rto_ns(), 1200 * kMs);
  estimator.back_off();
  estimator.back_off();
  EXPECT_EQ(estimator.rto_ns(), 4800 * kMs);
  for (int i = 0; i < 100; ++i) estimator.back_off();  // no overflow past the cap
  EXPECT_EQ(estimator.rto_ns(), 5000 * kMs);
  estimator.reset_backoff();
  EXPECT_EQ(estimator.rto_ns(), 300 * kMs);
}

TEST(RttEstimator, NewSampleEndsBackOff) {
  RttEstimator estimator = make(1 * kMs);
  estimator.on_sample(100 * kMs);
  estimator.back_off();
  estimator.on_sample(100 * kMs);
  // RTTVAR = 3/4 * 50 = 37.5 ms, SRTT 100 ms.
  EXPECT_EQ(estimator.rto_ns(), 100 * kMs + 150 * kMs);
}

}  // namespace
}  // namespace flotilla::tcp
