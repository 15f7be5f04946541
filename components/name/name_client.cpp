#include "components/name/name_client.hpp"

namespace flotilla::name {

Delivery check_intended(const IntendedHeader& header, std::span<const Registration> mine) {
  for (const Registration& registration : mine) {
    if (registration.name_id == header.name_id &&
        registration.incarnation == header.incarnation) {
      return Delivery::accepted;
    }
  }
  return Delivery::stale;
}

const CachedName* NameCache::find(std::uint64_t id, std::uint64_t now_ms) const {
  auto it = entries_.find(id);
  if (it == entries_.end() || now_ms >= it->second.expires_ms) return nullptr;
  return &it->second;
}

Resolved NameClient::resolve(std::string_view name, std::uint64_t now_ms) {
  if (validate_name(name) != NameErrc::ok) return Resolved{NameErrc::bad_name, {}};
  const std::uint64_t id = name_id(name);
  if (const CachedName* cached = cache_.find(id, now_ms)) {
    return Resolved{NameErrc::ok, cached->endpoint};
  }
  ++fleet_lookups_;
  const LookupResult found = lookup_(name);
  if (found.status != NameErrc::ok) {
    cache_.drop(id);
    return Resolved{found.status, {}};
  }
  cache_.put(id, CachedName{found.endpoint, found.expires_ms});
  return Resolved{NameErrc::ok, found.endpoint};
}

NameErrc NameClient::send(std::string_view name, std::uint64_t now_ms, const SendFn& deliver) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const Resolved target = resolve(name, now_ms);
    if (target.status != NameErrc::ok) return target.status;
    const IntendedHeader header{name_id(name), target.endpoint.incarnation};
    if (deliver(target.endpoint, header) == Delivery::accepted) return NameErrc::ok;
    cache_.drop(header.name_id);  // the holder moved on: the next resolve asks the fleet
    if (attempt == 0) ++stale_retries_;
  }
  return NameErrc::stale;
}

NameMessage NameClient::lookup_request(ComponentId client, std::uint64_t cookie,
                                       std::string_view name) {
  NameMessage message;
  message.kind = NameMsgKind::lookup;
  message.from = kClientSource;
  message.client = client;
  message.cookie = cookie;
  set_name(message.name, name);
  return message;
}

NameMessage NameClient::change_request(ComponentId client, std::uint64_t cookie,
                                       const Change& change) {
  NameMessage message = lookup_request(client, cookie, change.name);
  message.kind = NameMsgKind::request;
  put_change(message, change);
  return message;
}

}  // namespace flotilla::name
