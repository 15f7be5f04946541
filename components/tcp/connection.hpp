// The engine's private, per-connection runtime state: the rings, timers, RTT and congestion state,
// the SACK scoreboard and the receiver's out-of-order ranges. The part a successor needs is copied
// into the connection's Tcb (connection_table.hpp) after every change; this part dies with the
// process.
#pragma once

#include <cstdint>

#include "components/tcp/algorithms/congestion.hpp"
#include "components/tcp/algorithms/rtt_estimator.hpp"
#include "components/tcp/algorithms/sack_scoreboard.hpp"
#include "components/tcp/engine.hpp"

namespace flotilla::tcp {

inline constexpr ListenerId kNoListener = UINT32_MAX;
inline constexpr std::uint64_t kNever = UINT64_MAX;
inline constexpr std::uint32_t kNoSlot = UINT32_MAX;

struct Connection {
  // Identity and life cycle.
  bool in_use = false;
  std::uint32_t index = 0;  // the slot: its Tcb in the table, and its handle's index
  std::uint32_t generation = 0;
  TcpState state = TcpState::closed;
  FourTuple tuple;
  ListenerId listener = kNoListener;  // set for passive connections until accepted
  bool in_syn_queue = false;
  bool in_accept_queue = false;
  bool rings_live = false;     // the engine still uses the rings (no kEventReleased yet)
  bool app_closed = false;     // close(): the application is gone; data arriving gets RST
  bool write_shut = false;     // shutdown_write()/close(): FIN once the send ring drains
  bool fin_sent = false;
  bool peer_fin_pending = false;  // a FIN arrived out of order at peer_fin_seq
  ConnectionOptions options;
  StreamRings rings;

  // Negotiated in the SYN exchange.
  bool timestamps = false;
  bool sack = false;
  bool window_scaling = false;
  std::uint8_t send_window_shift = 0;     // applied to windows the peer announces
  std::uint8_t receive_window_shift = 0;  // applied to windows we announce
  std::uint32_t mss = 536;                // payload bytes per segment we send (options excluded)
  std::uint32_t peer_mss = 536;

  // Send sequence space. Sequence `head_seq` is the send ring's head byte.
  std::uint32_t iss = 0;
  std::uint32_t snd_una = 0;
  std::uint32_t snd_nxt = 0;  // next to send (moves back to snd_una on RTO)
  std::uint32_t snd_max = 0;  // highest sequence ever sent + 1
  std::uint32_t snd_wnd = 0;  // bytes, already scaled
  std::uint32_t max_snd_wnd = 0;
  std::uint32_t snd_wl1 = 0;
  std::uint32_t snd_wl2 = 0;
  std::uint32_t head_seq = 0;
  std::uint32_t fin_seq = 0;  // valid once fin_sent
  // Valid once write_shut: where the stream ends, whatever the application's memory says later (a
  // successor on its seat shares the region while the connection drains).
  std::uint32_t write_end = 0;

  // Receive sequence space. Sequence `rcv_nxt` is the receive ring's tail byte.
  std::uint32_t irs = 0;
  std::uint32_t rcv_nxt = 0;
  std::uint32_t rcv_adv = 0;  // right edge of the window we announced
  std::uint32_t peer_fin_seq = 0;
  std::uint32_t ts_recent = 0;
  std::uint32_t last_ack_sent = 0;
  std::uint32_t unacked_bytes = 0;  // received since our last ACK (delayed ACK)
  std::uint32_t rcv_mss = 536;      // largest payload seen: "a full segment"
  std::uint32_t last_out_of_order_left = 0;  // the latest out-of-order segment: first SACK block
  OutOfOrderRanges out_of_order;

  // Timers (kNever: disarmed); the connection's DeadlineHeap entry is their minimum.
  std::uint64_t rto_at = kNever;        // retransmission (SYN, SYN-ACK, data, FIN)
  std::uint64_t delayed_ack_at = kNever;
  std::uint64_t persist_at = kNever;    // zero-window probe
  std::uint64_t keepalive_at = kNever;
  std::uint64_t linger_at = kNever;     // TIME_WAIT end; orphaned FIN_WAIT_2 end
  std::uint32_t time_wait_previous = kNoSlot;  // the engine's TIME-WAIT list, oldest first
  std::uint32_t time_wait_next = kNoSlot;
  std::uint32_t retries = 0;            // consecutive RTO expiries
  std::uint32_t persist_backoff = 0;
  std::uint32_t persist_unanswered = 0;  // probes in a row with nothing heard back
  std::uint64_t persist_sent_ns = 0;
  std::uint32_t keepalive_probes = 0;
  std::uint64_t last_received_ns = 0;
  std::uint64_t last_out_of_window_ack_ns = 0;  // rate limit of ACKs to bare out-of-window segments

  // Round trip (Karn's rule without timestamps: time one segment never retransmitted).
  RttEstimator rtt;
  bool rtt_timing = false;
  std::uint32_t rtt_seq = 0;
  std::uint64_t rtt_start_ns = 0;

  // Congestion control and loss recovery.
  CongestionControl congestion;
  SackScoreboard scoreboard;
  bool in_recovery = false;
  std::uint32_t recovery_point = 0;  // snd_max when recovery began (RFC 6675 RecoveryPoint)
  std::uint32_t high_rxt = 0;        // RFC 6675 HighRxt
  std::uint32_t dupacks = 0;
  bool head_resent = false;             // the segment at head_resent_seq was retransmitted ...
  std::uint32_t head_resent_seq = 0;
  std::uint32_t head_resent_snd_max = 0;  // ... when snd_max was this
  // Restored with data in flight: segments the predecessor built and never handed on may be
  // missing at the peer, below restored_snd_max, until an ACK shows a hole or covers it all.
  bool restored_tail_unknown = false;
  std::uint32_t restored_snd_max = 0;

  // Events gathered while handling one call, reported once at its end.
  std::uint32_t pending_events = 0;
  int pending_error = 0;

  // ConnectionInfo statistics.
  std::uint64_t retransmits = 0;
  std::uint64_t bytes_acked = 0;
  std::uint64_t bytes_received = 0;
};

}  // namespace flotilla::tcp
