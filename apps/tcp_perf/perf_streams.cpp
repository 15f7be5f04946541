#include "apps/tcp_perf/perf_streams.hpp"

#include "dataplane/clock.hpp"

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace flotilla::apps {

// ---- the pattern ------------------------------------------------------------------------------

std::byte pattern_byte(std::uint64_t position) {
  const std::uint64_t word = (position >> 3) * kPatternMultiplier;
  return static_cast<std::byte>(word >> (8 * (position & 7)));
}

void fill_pattern(std::uint64_t position, std::span<std::byte> out) {
  std::size_t i = 0;
  for (; i < out.size() && ((position + i) & 7) != 0; ++i) out[i] = pattern_byte(position + i);
  for (; i + 8 <= out.size(); i += 8) {
    std::uint64_t word = ((position + i) >> 3) * kPatternMultiplier;
    if constexpr (std::endian::native == std::endian::big) word = __builtin_bswap64(word);
    std::memcpy(out.data() + i, &word, 8);
  }
  for (; i < out.size(); ++i) out[i] = pattern_byte(position + i);
}

std::uint64_t count_pattern_mismatches(std::uint64_t position, std::span<const std::byte> bytes,
                                       std::uint64_t* first) {
  std::array<std::byte, 4096> reference;
  std::uint64_t mismatches = 0;
  for (std::size_t done = 0; done < bytes.size(); done += reference.size()) {
    const std::size_t length = std::min(reference.size(), bytes.size() - done);
    fill_pattern(position + done, std::span(reference).first(length));
    if (std::memcmp(reference.data(), bytes.data() + done, length) == 0) continue;
    for (std::size_t i = 0; i < length; ++i) {
      if (reference[i] == bytes[done + i]) continue;
      if (mismatches == 0 && first != nullptr) *first = done + i;
      ++mismatches;
    }
  }
  return mismatches;
}

// ---- SHA-256 ----------------------------------------------------------------------------------

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  if (context_ != nullptr && EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(context_), EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(context_));
    context_ = nullptr;
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(context_)); }

Sha256::Sha256(Sha256&& other) noexcept : context_(std::exchange(other.context_, nullptr)) {}

Sha256& Sha256::operator=(Sha256&& other) noexcept {
  std::swap(context_, other.context_);
  return *this;
}

void Sha256::update(std::span<const std::byte> bytes) {
  if (context_ != nullptr && !bytes.empty()) {
    (void)EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(context_), bytes.data(), bytes.size());
  }
}

std::string Sha256::finish() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (context_ == nullptr || EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(context_), digest, &length) != 1) {
    return "unavailable";
  }
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(context_));
  context_ = nullptr;
  std::string text;
  char hex[3];
  for (unsigned int i = 0; i < length; ++i) {
    std::snprintf(hex, sizeof hex, "%02x", digest[i]);
    text += hex;
  }
  return text;
}

// ---- text -------------------------------------------------------------------------------------

double gbps(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) * 8 / seconds / 1e9 : 0;
}

std::string progress_line(double elapsed_seconds, double rate_gbps) {
  char line[64];
  std::snprintf(line, sizeof line, "[%4.1fs] %.2f Gbps", elapsed_seconds, rate_gbps);
  return line;
}

std::string report_json(const PerfReport& report) {
  // Seconds to the microsecond, Gbit/s to four decimals.
  const auto rounded = [](double value, double scale) { return std::round(value * scale) / scale; };
  nlohmann::ordered_json json = {{"role", report.role},
                                 {"bytes", report.bytes},
                                 {"seconds", rounded(report.seconds, 1e6)},
                                 {"gbps", rounded(gbps(report.bytes, report.seconds), 1e4)},
                                 {"streams", report.streams},
                                 {"failed_streams", report.failed_streams}};
  if (report.role == "send") json["retransmits"] = report.retransmits;
  json["errors"] = report.errors;
  json["replicas"] = report.replicas;
  json["placed_by_name"] = report.placed_by_name;
  json["placed_by_fallback"] = report.placed_by_fallback;
  const sockets::TcpPlacementStats& placement = report.placement;
  if (placement.by_fallback + placement.late_replies + placement.bad_replies != 0) {
    json["placement"] = {{"timeouts", placement.timeouts},
                         {"error_replies", placement.error_replies},
                         {"unknown_replicas", placement.unknown_replicas},
                         {"unsent", placement.unsent},
                         {"late_replies", placement.late_replies},
                         {"bad_replies", placement.bad_replies}};
  }
  if (report.verify) {
    json["mismatches"] = report.mismatches;
    if (report.mismatches != 0) json["first_mismatch"] = report.first_mismatch;
    json["sha256"] = report.sha256;
  }
  return json.dump();
}

namespace {

PerfReport make_report(std::string role, std::vector<PerfStream>& streams, std::size_t expected, bool verify,
                       double seconds, const sockets::TcpPlacementStats& placement) {
  PerfReport report;
  report.placed_by_name = placement.by_name;
  report.placed_by_fallback = placement.by_fallback;
  report.placement = placement;
  report.role = std::move(role);
  report.seconds = seconds;
  report.streams = expected;
  report.verify = verify;
  report.failed_streams = expected - std::min(expected, streams.size());  // never connected
  for (PerfStream& stream : streams) {
    report.bytes += stream.bytes;
    report.mismatches += stream.mismatches;
    report.first_mismatch = std::min(report.first_mismatch, stream.first_mismatch);
    report.retransmits += stream.retransmits;
    if (stream.error != 0) ++report.failed_streams;
    report.errors.push_back(stream.error);
    report.replicas.push_back(stream.replica);
    if (verify) {
      if (stream.digest.empty()) stream.digest = stream.hash.finish();
      report.sha256.push_back(stream.digest);
    }
  }
  return report;
}

void note_replica(const sockets::TcpSockets& sockets, PerfStream& stream) {
  if (const auto replica = sockets.replica_of(stream.socket)) stream.replica = static_cast<int>(*replica);
}

}  // namespace

// ---- the sender -------------------------------------------------------------------------------

PerfSender::PerfSender(sockets::TcpSockets& sockets, std::uint32_t address, std::uint16_t port, std::size_t streams,
                       std::uint64_t bytes_per_stream, bool verify, sockets::SocketOptions options)
    : sockets_(sockets), address_(address), port_(port), bytes_per_stream_(bytes_per_stream), verify_(verify),
      options_(options), streams_(streams) {}

Status PerfSender::start() {
  for (PerfStream& stream : streams_) {
    auto connected = sockets_.connect(address_, port_, options_);
    if (!connected) return connected.error();
    stream.socket = connected.value();
    stream.staged.resize(kChunk);
    fill_pattern(0, stream.staged);
  }
  return {};
}

bool PerfSender::pump() {
  bool progress = false;
  for (PerfStream& stream : streams_) {
    if (stream.done || stream.shut) continue;
    if (const int error = sockets_.error(stream.socket); error != 0) {
      if (may_retry(stream, error)) {
        const std::uint64_t now = monotonic_ns();
        if (stream.retry_at_ns == 0) stream.retry_at_ns = now + 100'000'000;
        if (now < stream.retry_at_ns) continue;
        (void)sockets_.close(stream.socket);
        auto again = sockets_.connect(address_, port_, options_);
        stream.retry_at_ns = 0;
        if (again) {
          stream.socket = again.value();
          progress = true;
          continue;
        }
      }
      stream.error = error;
      stream.done = true;
      progress = true;
      continue;
    }
    while (bytes_per_stream_ == 0 || stream.bytes < bytes_per_stream_) {
      const std::uint64_t staged_end = stream.staged_from + stream.staged.size();
      if (stream.bytes >= staged_end || stream.bytes < stream.staged_from) {
        stream.staged_from = stream.bytes;
        fill_pattern(stream.staged_from, stream.staged);
      }
      std::size_t offset = static_cast<std::size_t>(stream.bytes - stream.staged_from);
      std::size_t length = stream.staged.size() - offset;
      if (bytes_per_stream_ != 0) length = static_cast<std::size_t>(std::min<std::uint64_t>(length, bytes_per_stream_ - stream.bytes));
      const auto piece = std::span<const std::byte>(stream.staged).subspan(offset, length);
      auto sent = sockets_.send(stream.socket, piece);
      if (!sent) {
        if (sent.error().code != Errc::would_block) {
          stream.error = sent.error().sys_errno != 0 ? sent.error().sys_errno : EIO;
          stream.done = true;
          progress = true;
        }
        break;
      }
      if (verify_) stream.hash.update(piece.first(sent.value()));
      stream.bytes += sent.value();
      progress = true;
      if (sent.value() < piece.size()) break;  // the ring is full
    }
    if (bytes_per_stream_ != 0 && stream.bytes >= bytes_per_stream_ && !stream.done) {
      (void)sockets_.shutdown_write(stream.socket);
      stream.shut = true;
      progress = true;
    }
  }
  return progress;
}

void PerfSender::stop() {
  for (PerfStream& stream : streams_) {
    if (stream.shut || stream.done) continue;
    (void)sockets_.shutdown_write(stream.socket);
    stream.shut = true;
  }
}

bool PerfSender::may_retry(const PerfStream& stream, int error) const {
  return error == ECONNREFUSED && stream.bytes == 0 && monotonic_ns() < retry_until_ns_;
}

bool PerfSender::finished() {
  bool all = true;
  for (PerfStream& stream : streams_) {
    if (stream.done) continue;
    if (const int error = sockets_.error(stream.socket); error != 0) {
      if (may_retry(stream, error)) {
        all = false;
        continue;
      }
      stream.error = error;
      stream.done = true;
      continue;
    }
    // Done once the peer acknowledged everything, closed its side, or the connection is over.
    if (stream.shut && (sockets_.unacknowledged(stream.socket) == 0 || sockets_.eof(stream.socket) ||
                        !sockets_.connected(stream.socket))) {
      stream.done = true;
      continue;
    }
    all = false;
  }
  return all;
}

void PerfSender::close() {
  for (PerfStream& stream : streams_) {
    if (stream.socket >= 0) {
      stream.retransmits = sockets_.info(stream.socket).retransmits;
      note_replica(sockets_, stream);
      (void)sockets_.close(stream.socket);
    }
    stream.socket = -1;
  }
}

std::uint64_t PerfSender::bytes() const {
  std::uint64_t total = 0;
  for (const PerfStream& stream : streams_) total += stream.bytes;
  return total;
}

PerfReport PerfSender::report(double seconds) {
  return make_report("send", streams_, streams_.size(), verify_, seconds, sockets_.placement_stats());
}

// ---- the receiver -----------------------------------------------------------------------------

PerfReceiver::PerfReceiver(sockets::TcpSockets& sockets, std::uint16_t port, std::size_t streams, bool verify)
    : sockets_(sockets), port_(port), expected_(streams), verify_(verify), chunk_(kChunk) {
  streams_.reserve(streams);
}

Status PerfReceiver::start() {
  const auto backlog = static_cast<std::uint16_t>(std::clamp<std::size_t>(expected_, 16, 4096));
  auto listening = sockets_.listen(0, port_, backlog);
  if (!listening) return listening.error();
  listener_ = listening.value();
  return {};
}

int PerfReceiver::listen_error() const { return listener_ >= 0 ? sockets_.error(listener_) : 0; }

bool PerfReceiver::pump() {
  if (listener_ < 0) return false;
  bool progress = false;
  while (streams_.size() < expected_) {
    auto accepted = sockets_.accept(listener_);
    if (!accepted) break;
    streams_.emplace_back().socket = accepted.value();
    progress = true;
  }
  for (PerfStream& stream : streams_) {
    std::size_t budget = kReadBudget;
    while (!stream.done && budget > 0) {
      auto received = sockets_.recv(stream.socket, chunk_);
      if (!received) {
        if (received.error().code == Errc::would_block) break;
        stream.error = received.error().sys_errno != 0 ? received.error().sys_errno : EIO;
      }
      if (!received || received.value() == 0) {  // failed, or the end of the stream
        stream.done = true;
        if (verify_) stream.digest = stream.hash.finish();
        (void)sockets_.close(stream.socket);
        stream.socket = -1;
        progress = true;
        break;
      }
      const auto bytes = std::span<const std::byte>(chunk_).first(received.value());
      if (verify_) {
        std::uint64_t first = 0;
        const std::uint64_t wrong = count_pattern_mismatches(stream.bytes, bytes, &first);
        if (wrong != 0 && stream.mismatches == 0) stream.first_mismatch = stream.bytes + first;
        stream.mismatches += wrong;
        stream.hash.update(bytes);
      }
      stream.bytes += bytes.size();
      budget -= std::min(budget, bytes.size());
      progress = true;
    }
  }
  return progress;
}

bool PerfReceiver::finished() const {
  return streams_.size() == expected_ &&
         std::all_of(streams_.begin(), streams_.end(), [](const PerfStream& stream) { return stream.done; });
}

void PerfReceiver::close() {
  for (PerfStream& stream : streams_) {
    if (stream.socket >= 0) {
      note_replica(sockets_, stream);
      (void)sockets_.close(stream.socket);
    }
    stream.socket = -1;
  }
  if (listener_ >= 0) (void)sockets_.close(listener_);
  listener_ = -1;
}

std::uint64_t PerfReceiver::bytes() const {
  std::uint64_t total = 0;
  for (const PerfStream& stream : streams_) total += stream.bytes;
  return total;
}

PerfReport PerfReceiver::report(double seconds) {
  return make_report("receive", streams_, expected_, verify_, seconds, sockets_.placement_stats());
}

}  // namespace flotilla::apps
