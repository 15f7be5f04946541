// The logic of flotilla-perf, apart from its process so tests can drive it over fake replicas:
// the deterministic stream pattern, the SHA-256 of a stream, the bulk sender and receiver over the
// native TCP API, and the progress and report lines.
//
// The pattern (so a receiver anywhere, e.g. a Python script on the kernel side, can check it): byte
// i of every stream, counted from 0, is byte (i mod 8) of the little-endian 64-bit word
//   floor(i / 8) * 0x9E3779B97F4A7C15   (mod 2^64).
// In Python: struct.pack('<Q', (w * 0x9E3779B97F4A7C15) & (2**64 - 1)) for word w = 0, 1, 2, ...
// It never repeats within a stream (the multiplier is odd), so a lost, doubled or misplaced chunk
// shows at its first byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/result.hpp"
#include "sockets/tcp_sockets.hpp"

namespace flotilla::apps {

inline constexpr std::uint64_t kPatternMultiplier = 0x9E3779B97F4A7C15ull;

std::byte pattern_byte(std::uint64_t position);
// Writes the pattern's bytes [position, position + out.size()).
void fill_pattern(std::uint64_t position, std::span<std::byte> out);
// How many of `bytes` differ from the pattern at `position`; the offset of the first in *first.
std::uint64_t count_pattern_mismatches(std::uint64_t position, std::span<const std::byte> bytes,
                                       std::uint64_t* first);

// SHA-256 over a stream of bytes (OpenSSL's libcrypto, through its EVP interface).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&& other) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::span<const std::byte> bytes);
  // The digest in lower-case hex; the object is spent afterwards.
  std::string finish();

 private:
  void* context_;  // EVP_MD_CTX*, kept out of this header
};

double gbps(std::uint64_t bytes, double seconds);
// "[ 1.0s] 0.94 Gbps"
std::string progress_line(double elapsed_seconds, double rate_gbps);

struct PerfStream {
  int socket = -1;
  std::uint64_t bytes = 0;       // sent (queued in the send ring) or received
  std::uint64_t mismatches = 0;  // receiver with verify: bytes that differ from the pattern
  std::uint64_t first_mismatch = std::numeric_limits<std::uint64_t>::max();
  int error = 0;                 // errno that ended the stream, 0 if none
  int replica = -1;              // the TCP replica that carried it, noted when closed
  std::uint64_t retransmits = 0; // sender: the last TCP_INFO figure
  bool shut = false;             // sender: FIN requested
  bool done = false;
  std::uint64_t retry_at_ns = 0; // sender: refused before any byte; connect again at this time
  Sha256 hash;                   // with verify
  std::string digest;            // set when done, with verify
  // Sender: pattern bytes made ahead, from stream position staged_from, so a send the ring only
  // partly takes does not make them again.
  std::vector<std::byte> staged;
  std::uint64_t staged_from = 0;
};

struct PerfReport {
  std::string role;
  std::uint64_t bytes = 0;
  double seconds = 0;
  std::size_t streams = 0;
  std::size_t failed_streams = 0;
  bool verify = false;
  std::uint64_t mismatches = 0;
  std::uint64_t first_mismatch = std::numeric_limits<std::uint64_t>::max();  // stream offset
  std::vector<std::string> sha256;  // one per stream, with verify
  std::vector<int> errors;          // one per stream: the errno that ended it, 0 if none
  std::uint64_t retransmits = 0;    // sender: what the replicas reported (TCP_INFO)
  std::vector<int> replicas;        // one per stream: the replica index, -1 if it never had one
  // Connections the name fleet placed, and those that fell back to round robin
  // (sockets::TcpPlacementStats; both 0 without a name channel).
  std::uint64_t placed_by_name = 0;
  std::uint64_t placed_by_fallback = 0;
  sockets::TcpPlacementStats placement;  // why they fell back, and the replies ignored
};
// One JSON object on one line (no newline).
std::string report_json(const PerfReport& report);

// Sends `bytes_per_stream` pattern bytes (0: until stop()) on each of `streams` connections.
class PerfSender {
 public:
  PerfSender(sockets::TcpSockets& sockets, std::uint32_t address, std::uint16_t port, std::size_t streams,
             std::uint64_t bytes_per_stream, bool verify, sockets::SocketOptions options = {});
  Status start();
  // A connection refused before it carried a byte is tried again every 100 ms until `deadline_ns`
  // (monotonic), for a receiver that is not listening yet.
  void retry_refused_until(std::uint64_t deadline_ns) { retry_until_ns_ = deadline_ns; }
  // Moves what fits into the send rings. True when it did anything.
  bool pump();
  // Stop queueing (time is up): every stream shuts down writing.
  void stop();
  // Every stream has queued its bytes and either the peer acknowledged them all (the replica
  // consumed the send ring), or it closed, or the stream failed.
  bool finished();
  // Closes every connection (call once finished, or when giving up on waiting).
  void close();
  std::uint64_t bytes() const;
  PerfReport report(double seconds);

 private:
  static constexpr std::size_t kChunk = 64 * 1024;
  sockets::TcpSockets& sockets_;
  std::uint32_t address_;
  std::uint16_t port_;
  std::uint64_t bytes_per_stream_;
  bool verify_;
  // A refused stream that has carried nothing may connect again (see retry_refused_until).
  bool may_retry(const PerfStream& stream, int error) const;

  sockets::SocketOptions options_;
  std::vector<PerfStream> streams_;
  std::uint64_t retry_until_ns_ = 0;
};

// Accepts `streams` connections on `port` and reads each to its end, checking the pattern and
// hashing the stream with verify.
class PerfReceiver {
 public:
  PerfReceiver(sockets::TcpSockets& sockets, std::uint16_t port, std::size_t streams, bool verify);
  Status start();
  bool pump();
  // Every expected stream was accepted and has ended.
  bool finished() const;
  // 0, or the errno with which a replica refused the listener.
  int listen_error() const;
  void close();
  std::uint64_t bytes() const;
  PerfReport report(double seconds);

 private:
  static constexpr std::size_t kChunk = 64 * 1024;
  static constexpr std::size_t kReadBudget = 1 << 20;  // per stream per pump, for fairness
  sockets::TcpSockets& sockets_;
  std::uint16_t port_;
  std::size_t expected_;
  bool verify_;
  int listener_ = -1;
  std::vector<PerfStream> streams_;
  std::vector<std::byte> chunk_;
};

}  // namespace flotilla::apps
