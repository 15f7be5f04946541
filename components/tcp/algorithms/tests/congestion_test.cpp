// CUBIC and NewReno windows against the formulas of RFC 9438 and RFC 5681, driven by a simple
// ACK-clocked sender: every round trip, one ACK per MSS of the window, spread over the RTT.
#include "components/tcp/algorithms/congestion.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace flotilla::tcp {
namespace {

constexpr std::uint32_t kMss = 1000;
constexpr std::uint64_t kMs = 1'000'000;

double segments(std::uint64_t bytes) { return static_cast<double>(bytes) / kMss; }

// One round trip of a window-limited sender; returns the time at its end.
std::uint64_t run_round(CongestionControl& cc, std::uint64_t rtt_ns, std::uint64_t now_ns) {
  const std::uint64_t acks = std::max<std::uint64_t>(cc.cwnd() / kMss, 1);
  for (std::uint64_t i = 0; i < acks; ++i) {
    now_ns += rtt_ns / acks;
    cc.on_ack(kMss, cc.cwnd(), rtt_ns, now_ns);
  }
  return now_ns;
}

// Slow start (ssthresh unlimited) until the window holds `target` segments.
std::uint64_t grow_to(CongestionControl& cc, std::uint64_t target, std::uint64_t now_ns) {
  while (cc.cwnd() < target * kMss) {
    now_ns += kMs;
    cc.on_ack(kMss, cc.cwnd(), 100 * kMs, now_ns);
  }
  return now_ns;
}

TEST(Congestion, InitialWindowIsTenSegmentsPerRfc6928) {
  CongestionControl cc;
  cc.init(CongestionAlgorithm::cubic, 1460, 0);
  EXPECT_EQ(cc.cwnd(), 14600u);
  EXPECT_TRUE(cc.in_slow_start());
  cc.init(CongestionAlgorithm::newreno, 9000, 0);  // jumbo: max(2*MSS, 14600) = 18000 < 90000
  EXPECT_EQ(cc.cwnd(), 18000u);
}

TEST(Congestion, SlowStartGrowsByTheAckedBytesBelowSsthresh) {
  for (auto algorithm : {CongestionAlgorithm::cubic, CongestionAlgorithm::newreno}) {
    CongestionControl cc;
    cc.init(algorithm, kMss, 0);
    cc.on_ack(kMss, cc.cwnd(), 10 * kMs, 1);
    EXPECT_EQ(cc.cwnd(), 11u * kMss);
    cc.on_ack(5 * kMss, cc.cwnd(), 10 * kMs, 2);  // one stretch ACK counts at most 2 MSS
    EXPECT_EQ(cc.cwnd(), 13u * kMss);
    // After a timeout: from 1 MSS, doubling per round trip up to ssthresh, then no further.
    cc.on_retransmission_timeout(cc.cwnd(), 3);
    EXPECT_EQ(cc.cwnd(), kMss);
    const std::uint64_t ssthresh = cc.ssthresh();
    cc.on_ack(kMss, cc.cwnd(), 10 * kMs, 4);
    EXPECT_EQ(cc.cwnd(), 2u * kMss);
    while (cc.in_slow_start()) cc.on_ack(kMss, cc.cwnd(), 10 * kMs, 5);
    EXPECT_EQ(cc.cwnd(), ssthresh);
  }
}

TEST(Congestion, ApplicationLimitedDoesNotGrow) {
  CongestionControl cc;
  cc.init(CongestionAlgorithm::newreno, kMss, 0);
  cc.on_ack(kMss, cc.cwnd() / 2 - 1, 10 * kMs, 1);
  EXPECT_EQ(cc.cwnd(), 10u * kMss);
}

TEST(Congestion, NewRenoAddsOneMssPerRoundTripAndHalves) {
  CongestionControl cc;
  cc.init(CongestionAlgorithm::newreno, kMss, 0);
  std::uint64_t now = grow_to(cc, 40, 0);
  cc.on_congestion_event(40 * kMss, now);
  EXPECT_EQ(cc.ssthresh(), 20u * kMss);  // FlightSize / 2
  EXPECT_EQ(cc.cwnd(), 20u * kMss);
  cc.on_recovery_exit(now);
  EXPECT_EQ(cc.cwnd(), 20u * kMss);
  for (std::uint64_t round = 1; round <= 5; ++round) {
    now = run_round(cc, 50 * kMs, now);
    EXPECT_EQ(cc.cwnd(), (20 + round) * kMss) << "round " << round;
  }
  cc.on_congestion_event(cc.cwnd(), now);
  EXPECT_EQ(cc.cwnd(), 25u * kMss / 2);
  // Never below 2 MSS.
  cc.on_congestion_event(kMss, now);
  EXPECT_EQ(cc.ssthresh(), 2u * kMss);
}

double w_cubic(double t, double k, double w_max) {
  return CongestionControl::kCubicC * std::pow(t - k, 3) + w_max;
}

TEST(Congestion, CubicFollowsTheCubicCurveAfterALoss) {
  CongestionControl cc;
  cc.init(CongestionAlgorithm::cubic, kMss, 0);
  std::uint64_t now = grow_to(cc, 100, 0);
  const double w_max = segments(cc.cwnd());
  const std::uint64_t loss_at = now;
  cc.on_congestion_event(cc.cwnd(), now);
  EXPECT_NEAR(segments(cc.cwnd()), 0.7 * w_max, 0.01);
  EXPECT_NEAR(segments(cc.ssthresh()), 0.7 * w_max, 0.01);
  cc.on_recovery_exit(now);

  // K = cbrt(W_max * (1 - beta) / C) (RFC 9438 eq. 2 with cwnd_epoch = beta * W_max).
  const double k = std::cbrt(w_max * (1 - 0.7) / 0.4);
  const std::uint64_t rtt = 200 * kMs;  // long enough that the Reno-friendly estimate stays below
  while (now - loss_at < 7'000 * kMs) {
    now = run_round(cc, rtt, now);
    // The window aims one RTT ahead of the curve, so at the end of each round trip it is on it.
    const double t = static_cast<double>(now - loss_at) / 1e9;
    const double expected = w_cubic(t, k, w_max);
    EXPECT_NEAR(segments(cc.cwnd()), expected, 1.0) << "t = " << t;
  }
  // Plateau around W_max near K, convex growth past it.
  EXPECT_GT(segments(cc.cwnd()), w_max + 5);
}

TEST(Congestion, CubicFastConvergenceLowersWmax) {
  CongestionControl cc;
  cc.init(CongestionAlgorithm::cubic, kMss, 0);
  std::uint64_t now = grow_to(cc, 100, 0);
  cc.on_congestion_event(cc.cwnd(), now);  // W_max = 100
  EXPECT_NEAR(cc.w_max_, 100, 0.01);
  cc.on_recovery_exit(now);
  while (cc.cwnd() < 80 * kMss) now = run_round(cc, 200 * kMs, now);
  const double cwnd_at_loss = segments(cc.cwnd());
  cc.on_congestion_event(cc.cwnd(), now);  // below the old W_max: release bandwidth
  EXPECT_NEAR(cc.w_max_, cwnd_at_loss * (1 + 0.7) / 2, 0.01);
  EXPECT_LT(cc.w_max_, cwnd_at_loss);
  // Without fast convergence (a loss above W_max) W_max is the window itself.
  CongestionControl fresh;
  fresh.init(CongestionAlgorithm::cubic, kMss, 0);
  now = grow_to(fresh, 50, 0);
  fresh.on_congestion_event(fresh.cwnd(), now);
  EXPECT_NEAR(fresh.w_max_, 50, 0.01);
}

TEST(Congestion, CubicRenoFriendlyRegionOnShortRoundTrips) {
  CongestionControl cc;
  cc.init(CongestionAlgorithm::cubic, kMss, 0);
  std::uint64_t now = grow_to(cc, 100, 0);
  cc.on_congestion_event(cc.cwnd(), now);
  cc.on_recovery_exit(now);
  const std::uint64_t rtt = 1 * kMs;  // W_cubic barely moves in 50 ms; Reno does not care
  for (int round = 0; round < 40; ++round) now = run_round(cc, rtt, now);
  // W_est = 70 + alpha_cubic * rounds, alpha_cubic = 3 * 0.3 / 1.7.
  const double alpha = 3 * (1 - 0.7) / (1 + 0.7);
  EXPECT_NEAR(segments(cc.cwnd()), 70 + alpha * 40, 1.5);
  EXPECT_GT(segments(cc.cwnd()), w_cubic(0.04, std::cbrt(75.0), 100) + 10);
}

TEST(Congestion, TimeoutSetsTheLossWindowAndReducesSsthreshOnce) {
  CongestionControl cc;
  cc.init(CongestionAlgorithm::cubic, kMss, 0);
  std::uint64_t now = grow_to(cc, 100, 0);
  cc.on_retransmission_timeout(cc.cwnd(), now);
  EXPECT_EQ(cc.cwnd(), kMss);
  EXPECT_EQ(cc.ssthresh(), 70u * kMss);
  cc.on_retransmission_timeout(kMss, now + 1);  // backed-off timer fires again
  EXPECT_EQ(cc.ssthresh(), 70u * kMss);
  EXPECT_EQ(cc.cwnd(), kMss);
}

}  // namespace
}  // namespace flotilla::tcp
