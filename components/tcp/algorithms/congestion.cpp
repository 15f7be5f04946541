// CUBIC (RFC 9438) and NewReno (RFC 5681 / RFC 6582) window arithmetic (see congestion.hpp).
#include "components/tcp/algorithms/congestion.hpp"

#include <algorithm>
#include <cmath>

namespace flotilla::tcp {

namespace {
constexpr double kNsPerSecond = 1e9;
// RFC 9438 4.3: the Reno-friendly additive increase 3*(1-beta)/(1+beta) segments per RTT, which
// makes the estimate grow like Reno with beta 0.5 on average.
constexpr double kRenoFriendlyAlpha =
    3.0 * (1.0 - CongestionControl::kCubicBeta) / (1.0 + CongestionControl::kCubicBeta);

std::uint64_t initial_window(std::uint32_t mss) {
  // RFC 6928 2: min(10*MSS, max(2*MSS, 14600)).
  return std::min<std::uint64_t>(10ull * mss, std::max<std::uint64_t>(2ull * mss, 14600));
}
}  // namespace

void CongestionControl::init(CongestionAlgorithm algorithm, std::uint32_t mss,
                             std::uint64_t /*now_ns*/) {
  *this = CongestionControl{};
  algorithm_ = algorithm;
  mss_ = std::max<std::uint32_t>(mss, 1);
  cwnd_ = initial_window(mss_);
}

void CongestionControl::set_mss(std::uint32_t mss) {
  mss_ = std::max<std::uint32_t>(mss, 1);
  cwnd_ = std::max<std::uint64_t>(cwnd_, mss_);
  ssthresh_ = std::max<std::uint64_t>(ssthresh_, 2ull * mss_);
}

void CongestionControl::on_ack(std::uint64_t acked_bytes, std::uint64_t bytes_in_flight,
                               std::uint64_t srtt_ns, std::uint64_t now_ns) {
  after_timeout_ = false;
  if (acked_bytes == 0) return;
  if (bytes_in_flight < cwnd_ / 2) {
    // Application-limited: no growth, and a CUBIC epoch restarts from the current window when
    // the connection is window-limited again, so idle time does not count as growth time.
    epoch_running_ = false;
    return;
  }
  if (in_slow_start()) {
    // RFC 5681 3.1 with RFC 3465 byte counting, L = 2*SMSS per ACK; stop at ssthresh so the rest
    // of the growth follows the congestion-avoidance rule.
    cwnd_ = std::min(cwnd_ + std::min<std::uint64_t>(acked_bytes, 2ull * mss_), ssthresh_);
    return;
  }
  if (algorithm_ == CongestionAlgorithm::cubic) {
    cubic_congestion_avoidance(acked_bytes, srtt_ns, now_ns);
  } else {
    reno_congestion_avoidance(acked_bytes);
  }
}

void CongestionControl::reno_congestion_avoidance(std::uint64_t acked_bytes) {
  // RFC 5681 3.1 (byte-counting variant, RFC 3465 2.1): +1 SMSS once a whole cwnd is acked,
  // i.e. one segment per RTT.
  bytes_acked_ += acked_bytes;
  if (bytes_acked_ >= cwnd_) {
    bytes_acked_ -= cwnd_;
    cwnd_ += mss_;
  }
}

void CongestionControl::cubic_congestion_avoidance(std::uint64_t acked_bytes, std::uint64_t srtt_ns,
                                                   std::uint64_t now_ns) {
  const double mss = static_cast<double>(mss_);
  const double cwnd_segments = static_cast<double>(cwnd_) / mss;
  if (!epoch_running_) {
    // RFC 9438 4.2: a new congestion-avoidance stage. With no larger W_max to return to (first
    // slow-start exit, or the window grew past it), K = 0 and the curve starts convex here.
    epoch_running_ = true;
    epoch_start_ns_ = now_ns;
    cwnd_epoch_ = cwnd_segments;
    if (w_max_ <= cwnd_segments) {
      w_max_ = cwnd_segments;
      k_s_ = 0;
    } else {
      k_s_ = std::cbrt((w_max_ - cwnd_epoch_) / kCubicC);  // eq. 2
    }
    w_est_ = cwnd_epoch_;
  }
  const double acked_segments = static_cast<double>(acked_bytes) / mss;
  const double t = static_cast<double>(now_ns - epoch_start_ns_) / kNsPerSecond;
  const double rtt = static_cast<double>(srtt_ns) / kNsPerSecond;
  auto w_cubic = [&](double seconds) {  // eq. 1
    const double offset = seconds - k_s_;
    return kCubicC * offset * offset * offset + w_max_;
  };

  // RFC 9438 4.3: Reno-friendly estimate; alpha becomes 1 once it passes the pre-loss window.
  const double alpha = w_est_ >= cwnd_prior_ ? 1.0 : kRenoFriendlyAlpha;
  w_est_ += alpha * acked_segments / cwnd_segments;

  double next_segments;
  if (w_cubic(t) < w_est_) {
    next_segments = w_est_;  // Reno-friendly region
  } else {
    // RFC 9438 4.4/4.5: aim at W_cubic one RTT ahead, bounded to [cwnd, 1.5*cwnd], and move
    // (target - cwnd)/cwnd per acknowledged segment.
    const double target = std::clamp(w_cubic(t + rtt), cwnd_segments, 1.5 * cwnd_segments);
    next_segments = cwnd_segments + (target - cwnd_segments) / cwnd_segments * acked_segments;
  }
  const auto next = static_cast<std::uint64_t>(next_segments * mss);
  cwnd_ = std::max(cwnd_, next);  // never shrinks on an ACK
}

void CongestionControl::reduce(std::uint64_t bytes_in_flight) {
  epoch_running_ = false;
  bytes_acked_ = 0;
  if (algorithm_ == CongestionAlgorithm::newreno) {
    ssthresh_ = std::max<std::uint64_t>(bytes_in_flight / 2, 2ull * mss_);  // RFC 5681 eq. 4
    return;
  }
  const double cwnd_segments = static_cast<double>(cwnd_) / static_cast<double>(mss_);
  // RFC 9438 4.7 fast convergence: a window that stopped short of the previous W_max means
  // another flow took bandwidth; release some by remembering a lower W_max.
  if (cwnd_segments < w_max_) {
    w_max_ = cwnd_segments * (1.0 + kCubicBeta) / 2.0;
  } else {
    w_max_ = cwnd_segments;
  }
  cwnd_prior_ = cwnd_segments;
  // RFC 9438 4.6: ssthresh = cwnd * beta_cubic, at least 2 segments.
  const auto reduced = static_cast<std::uint64_t>(static_cast<double>(cwnd_) * kCubicBeta);
  ssthresh_ = std::max<std::uint64_t>(reduced, 2ull * mss_);
}

void CongestionControl::on_congestion_event(std::uint64_t bytes_in_flight,
                                            std::uint64_t /*now_ns*/) {
  reduce(bytes_in_flight);
  cwnd_ = ssthresh_;
  after_timeout_ = false;
}

void CongestionControl::on_recovery_exit(std::uint64_t /*now_ns*/) {
  cwnd_ = ssthresh_;
  epoch_running_ = false;
  bytes_acked_ = 0;
}

void CongestionControl::on_retransmission_timeout(std::uint64_t bytes_in_flight,
                                                  std::uint64_t /*now_ns*/) {
  if (!after_timeout_) reduce(bytes_in_flight);
  epoch_running_ = false;
  bytes_acked_ = 0;
  cwnd_ = mss_;
  after_timeout_ = true;
}

}  // namespace flotilla::tcp
