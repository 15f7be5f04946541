// RFC 6298 RTT estimator (see rtt_estimator.hpp).
#include "components/tcp/algorithms/rtt_estimator.hpp"

#include <algorithm>

namespace flotilla::tcp {

namespace {
std::uint64_t clamp_rto(std::uint64_t rto, std::uint64_t min_rto, std::uint64_t max_rto) {
  return std::min(std::max(rto, min_rto), max_rto);
}
}  // namespace

void RttEstimator::init(std::uint64_t initial_rto_ns, std::uint64_t min_rto_ns,
                        std::uint64_t max_rto_ns) {
  *this = RttEstimator{};
  min_rto_ns_ = min_rto_ns;
  max_rto_ns_ = std::max(max_rto_ns, min_rto_ns);
  initial_rto_ns_ = clamp_rto(initial_rto_ns, min_rto_ns_, max_rto_ns_);
  base_rto_ns_ = initial_rto_ns_;
}

void RttEstimator::on_sample(std::uint64_t rtt_ns) {
  if (!has_sample_) {
    // RFC 6298 2.2: first measurement R: SRTT = R, RTTVAR = R/2.
    srtt_ns_ = rtt_ns;
    rttvar_ns_ = rtt_ns / 2;
    has_sample_ = true;
  } else {
    // RFC 6298 2.3: RTTVAR first (it uses the old SRTT), beta = 1/4, alpha = 1/8.
    const std::uint64_t deviation = srtt_ns_ > rtt_ns ? srtt_ns_ - rtt_ns : rtt_ns - srtt_ns_;
    rttvar_ns_ = rttvar_ns_ - rttvar_ns_ / 4 + deviation / 4;
    srtt_ns_ = srtt_ns_ - srtt_ns_ / 8 + rtt_ns / 8;
  }
  // RFC 6298 2.2-2.5: RTO = SRTT + max(G, 4*RTTVAR), at least min (2.4), at most max (2.5).
  base_rto_ns_ =
      clamp_rto(srtt_ns_ + std::max(kGranularityNs, 4 * rttvar_ns_), min_rto_ns_, max_rto_ns_);
  backoff_shift_ = 0;
}

void RttEstimator::back_off() {
  // Stop counting once the doubled value is already at max: the shift cannot overflow.
  if ((base_rto_ns_ << backoff_shift_) < max_rto_ns_ && backoff_shift_ < 32) ++backoff_shift_;
}

void RttEstimator::reset_backoff() { backoff_shift_ = 0; }

std::uint64_t RttEstimator::rto_ns() const {
  return std::min(base_rto_ns_ << backoff_shift_, max_rto_ns_);
}

}  // namespace flotilla::tcp
