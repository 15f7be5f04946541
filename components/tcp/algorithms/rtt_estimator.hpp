// Round-trip time estimation and the retransmission timeout, RFC 6298. POD: lives in a connection's
// control block. Karn's rule (RFC 6298 3) is the caller's: never feed a sample from a retransmitted
// segment unless timestamps say which transmission was acknowledged.
#pragma once

#include <cstdint>
#include <type_traits>

namespace flotilla::tcp {

struct RttEstimator {
  // RFC 6298 2.1: before any sample RTO is `initial_rto_ns` (1 s recommended).
  void init(std::uint64_t initial_rto_ns, std::uint64_t min_rto_ns, std::uint64_t max_rto_ns);
  // RFC 6298 2.2/2.3: SRTT/RTTVAR update with alpha 1/8, beta 1/4; RTO = SRTT + max(G, 4*RTTVAR).
  // A new sample also ends any back-off (the RTO is recomputed from the estimates).
  void on_sample(std::uint64_t rtt_ns);
  // RFC 6298 5.5: on a retransmission timeout the RTO doubles, up to max.
  void back_off();
  // Forget the back-off (e.g. new data acknowledged): the RTO is again the computed one.
  void reset_backoff();

  std::uint64_t rto_ns() const;
  std::uint64_t srtt_ns() const { return srtt_ns_; }
  std::uint64_t rttvar_ns() const { return rttvar_ns_; }
  bool has_sample() const { return has_sample_; }
  std::uint32_t backoff_count() const { return backoff_shift_; }

  // Clock granularity G of RFC 6298 2: our clock is in ns, but timers fire on a wheel tick; 1 ms.
  static constexpr std::uint64_t kGranularityNs = 1'000'000;

  std::uint64_t initial_rto_ns_ = 1'000'000'000;
  std::uint64_t min_rto_ns_ = 200'000'000;
  std::uint64_t max_rto_ns_ = 120'000'000'000ull;
  std::uint64_t srtt_ns_ = 0;
  std::uint64_t rttvar_ns_ = 0;
  std::uint64_t base_rto_ns_ = 1'000'000'000;  // clamped, before back-off
  std::uint32_t backoff_shift_ = 0;
  bool has_sample_ = false;
};

// Control-block state in shared memory: copyable as bytes, no pointers.
static_assert(std::is_trivially_copyable_v<RttEstimator> &&
              std::is_standard_layout_v<RttEstimator>);

}  // namespace flotilla::tcp
