// SYN cookies (see syn_cookies.hpp for the layout).
#include "components/tcp/algorithms/syn_cookies.hpp"

#include "components/tcp/algorithms/siphash.hpp"

namespace flotilla::tcp {

namespace {

constexpr unsigned kCounterShift = 27;
constexpr unsigned kMssShift = 24;
constexpr std::uint32_t kCounterMask = 0x1f;
constexpr std::uint32_t kMssIndexMask = 0x7;
constexpr std::uint32_t kMacMask = 0x00ffffff;

static_assert(kSynCookieMssTable.size() == kMssIndexMask + 1);

std::uint32_t period_of(std::uint64_t now_ns) {
  return static_cast<std::uint32_t>(now_ns / kSynCookiePeriodNs);
}

std::uint32_t cookie_offset(const FourTuple& tuple, std::uint32_t peer_isn,
                            const std::uint64_t secret[2]) {
  return static_cast<std::uint32_t>(
      siphash24_tuple(secret, tuple, TupleHashPurpose::cookie_offset, peer_isn));
}

std::uint32_t cookie_mac(const FourTuple& tuple, std::uint32_t peer_isn, std::uint32_t period,
                         std::uint32_t mss_index, const std::uint64_t secret[2]) {
  // The full period (not its 5 bits) is hashed: a cookie 32 periods old fails the MAC.
  const std::uint32_t context = (period << 3) | mss_index;
  return static_cast<std::uint32_t>(
             siphash24_tuple(secret, tuple, TupleHashPurpose::cookie_check, peer_isn, context)) &
         kMacMask;
}

std::uint32_t mss_index_for(std::uint16_t mss) {
  std::uint32_t index = 0;
  for (std::uint32_t i = 0; i < kSynCookieMssTable.size(); ++i) {
    if (kSynCookieMssTable[i] <= mss) index = i;
  }
  return index;
}

}  // namespace

std::uint32_t make_syn_cookie(const FourTuple& tuple, std::uint32_t peer_isn, std::uint16_t mss,
                              const std::uint64_t secret[2], std::uint64_t now_ns) {
  const std::uint32_t period = period_of(now_ns);
  const std::uint32_t mss_index = mss_index_for(mss);
  const std::uint32_t coded = ((period & kCounterMask) << kCounterShift) |
                              (mss_index << kMssShift) |
                              cookie_mac(tuple, peer_isn, period, mss_index, secret);
  return cookie_offset(tuple, peer_isn, secret) + coded;
}

std::optional<std::uint16_t> check_syn_cookie(const FourTuple& tuple, std::uint32_t peer_isn,
                                              std::uint32_t cookie, const std::uint64_t secret[2],
                                              std::uint64_t now_ns) {
  const std::uint32_t coded = cookie - cookie_offset(tuple, peer_isn, secret);
  const std::uint32_t now_period = period_of(now_ns);
  const std::uint32_t age = (now_period - (coded >> kCounterShift)) & kCounterMask;
  if (age > kSynCookieMaxAgePeriods || age > now_period) return std::nullopt;
  const std::uint32_t period = now_period - age;
  const std::uint32_t mss_index = (coded >> kMssShift) & kMssIndexMask;
  if ((coded & kMacMask) != cookie_mac(tuple, peer_isn, period, mss_index, secret)) {
    return std::nullopt;
  }
  return kSynCookieMssTable[mss_index];
}

}  // namespace flotilla::tcp
