// Congestion control for one connection: CUBIC (RFC 9438) or NewReno (RFC 5681 / RFC 6582) behind
// one plain-old-data struct that lives in the connection's control block. The caller (the engine)
// decides when a congestion event, a recovery exit or an RTO happens (loss detection is its job,
// with the SACK scoreboard); this only says how large the window is.
//
// Units: windows in bytes, time in nanoseconds from the caller's monotonic clock.
#pragma once

#include <cstdint>
#include <type_traits>

namespace flotilla::tcp {

enum class CongestionAlgorithm : std::uint8_t { cubic = 0, newreno = 1 };

struct CongestionControl {
  // cwnd = the initial window of RFC 6928 (min(10*MSS, max(2*MSS, 14600))), ssthresh unlimited.
  void init(CongestionAlgorithm algorithm, std::uint32_t mss, std::uint64_t now_ns);
  // New data acknowledged outside loss recovery. `bytes_in_flight` is the flight size when the ACK
  // arrived (before `acked_bytes` left it). When it is below cwnd/2 the connection is
  // application-limited and cwnd does not grow (RFC 7661 in its simplest form: an unused window
  // says nothing about the path). `srtt_ns` is the smoothed RTT (0 when there is no sample).
  void on_ack(std::uint64_t acked_bytes, std::uint64_t bytes_in_flight, std::uint64_t srtt_ns,
              std::uint64_t now_ns);
  // A loss detected by duplicate ACKs / SACK (fast retransmit), once per window:
  // NewReno: ssthresh = max(FlightSize/2, 2*MSS) (RFC 5681 eq. 4);
  // CUBIC: ssthresh = cwnd * 0.7 (RFC 9438 4.6), W_max with fast convergence (RFC 9438 4.7).
  // Then cwnd = ssthresh: recovery runs with RFC 6675's pipe, so no RFC 6582 window inflation.
  void on_congestion_event(std::uint64_t bytes_in_flight, std::uint64_t now_ns);
  // Loss recovery finished (the recovery point is acknowledged): cwnd = ssthresh (RFC 6582 3.2
  // step 3, first option), and the next ACK starts a new CUBIC epoch.
  void on_recovery_exit(std::uint64_t now_ns);
  // The retransmission timer expired: ssthresh reduced as on a congestion event, cwnd = the loss
  // window of 1 MSS (RFC 5681 3.1, RFC 9438 4.8). Only the first of a run of timeouts reduces
  // ssthresh: after it the flight is 1 MSS and would collapse ssthresh to 2 MSS (as Linux does).
  void on_retransmission_timeout(std::uint64_t bytes_in_flight, std::uint64_t now_ns);
  // Path MSS changed: the windows keep their byte values but never drop below 1 MSS / 2 MSS.
  void set_mss(std::uint32_t mss);

  std::uint64_t cwnd() const { return cwnd_; }
  std::uint64_t ssthresh() const { return ssthresh_; }
  bool in_slow_start() const { return cwnd_ < ssthresh_; }
  CongestionAlgorithm algorithm() const { return algorithm_; }

  // RFC 9438 4.1/4.6: C = 0.4 (segments / s^3), beta_cubic = 0.7.
  static constexpr double kCubicC = 0.4;
  static constexpr double kCubicBeta = 0.7;
  static constexpr std::uint64_t kUnlimitedSsthresh = ~std::uint64_t{0} >> 2;

  // State (public members keep the struct an aggregate; use the functions above).
  std::uint64_t cwnd_ = 0;
  std::uint64_t ssthresh_ = kUnlimitedSsthresh;
  std::uint64_t bytes_acked_ = 0;  // NewReno CA: acked bytes not yet turned into +1 MSS
  std::uint32_t mss_ = 1460;
  CongestionAlgorithm algorithm_ = CongestionAlgorithm::cubic;
  bool after_timeout_ = false;  // the previous reduction was an RTO with no ACK since
  // CUBIC (RFC 9438 4), windows in segments (double) and times in ns.
  bool epoch_running_ = false;
  std::uint64_t epoch_start_ns_ = 0;
  double w_max_ = 0;       // window before the last reduction (after fast convergence)
  double k_s_ = 0;         // seconds for W_cubic to return to w_max (eq. 2)
  double cwnd_epoch_ = 0;  // cwnd when the epoch began
  double w_est_ = 0;       // Reno-friendly estimate (4.3)
  double cwnd_prior_ = 0;  // cwnd just before the last reduction (4.3: alpha becomes 1 past it)

 private:
  void reduce(std::uint64_t bytes_in_flight);
  void cubic_congestion_avoidance(std::uint64_t acked_bytes, std::uint64_t srtt_ns,
                                  std::uint64_t now_ns);
  void reno_congestion_avoidance(std::uint64_t acked_bytes);
};

// Control-block state in shared memory: copyable as bytes, no pointers.
static_assert(std::is_trivially_copyable_v<CongestionControl> &&
              std::is_standard_layout_v<CongestionControl>);

}  // namespace flotilla::tcp
