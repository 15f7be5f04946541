#include "components/name/name_message.hpp"

#include <algorithm>
#include <cstring>
#include <tuple>

namespace flotilla::name {
namespace {

std::string_view field_view(const std::array<char, kMaxNameBytes>& field) {
  return std::string_view(field.data(), strnlen(field.data(), field.size()));
}

bool carries_name(NameMsgKind kind) {
  switch (kind) {
    case NameMsgKind::request:
    case NameMsgKind::lookup:
    case NameMsgKind::lock_request:
    case NameMsgKind::lock_release:
    case NameMsgKind::prepare:
    case NameMsgKind::commit:
    case NameMsgKind::abort:
    case NameMsgKind::outcome_query:
    case NameMsgKind::outcome_reply:
    case NameMsgKind::snapshot_entry:
    case NameMsgKind::snapshot_group:
    case NameMsgKind::snapshot_prepared:
      return true;
    default:
      return false;
  }
}

// Kinds only the initiator of the change may send.
bool sent_by_initiator(NameMsgKind kind) {
  return kind == NameMsgKind::lock_request || kind == NameMsgKind::lock_release ||
         kind == NameMsgKind::prepare || kind == NameMsgKind::commit ||
         kind == NameMsgKind::abort;
}

bool change_well_formed(const NameMessage& message) {
  switch (message.op) {
    case ChangeOp::none:
      return false;
    case ChangeOp::add_member:
      if (message.weight == 0 || message.weight > kMaxWeight) return false;
      [[fallthrough]];
    case ChangeOp::remove_member:
      return validate_name(member_of(message)) == NameErrc::ok;
    default:
      return true;
  }
}

}  // namespace

bool higher_priority(const TxnId& a, const TxnId& b) {
  return std::tie(a.stamp_ms, a.initiator, a.request) < std::tie(b.stamp_ms, b.initiator, b.request);
}

bool same_change(const TxnId& a, const TxnId& b) {
  return a.stamp_ms == b.stamp_ms && a.initiator == b.initiator && a.request == b.request;
}

std::string_view name_of(const NameMessage& message) { return field_view(message.name); }
std::string_view member_of(const NameMessage& message) { return field_view(message.member); }

void set_name(std::array<char, kMaxNameBytes>& field, std::string_view name) {
  field.fill('\0');
  std::memcpy(field.data(), name.data(), std::min(name.size(), field.size()));
}

Change change_of(const NameMessage& message) {
  Change change;
  change.op = message.op;
  change.name = std::string(name_of(message));
  change.owner = message.owner;
  change.endpoint = message.endpoint;
  change.member = std::string(member_of(message));
  change.weight = message.weight;
  return change;
}

void put_change(NameMessage& message, const Change& change) {
  message.op = change.op;
  set_name(message.name, change.name);
  message.owner = change.owner;
  message.endpoint = change.endpoint;
  set_name(message.member, change.member);
  message.weight = change.weight;
}

bool well_formed(const NameMessage& message) {
  const auto kind = static_cast<std::uint8_t>(message.kind);
  if (kind == 0 || kind > kLastNameMsgKind) return false;
  if (static_cast<std::uint8_t>(message.op) > kLastChangeOp) return false;
  if (static_cast<std::uint8_t>(message.status) > kLastNameErrc) return false;
  const bool from_client =
      message.kind == NameMsgKind::request || message.kind == NameMsgKind::lookup ||
      message.kind == NameMsgKind::dump;
  if (from_client != (message.from == kClientSource)) return false;
  if (carries_name(message.kind) && validate_name(name_of(message)) != NameErrc::ok) return false;
  if (sent_by_initiator(message.kind) && message.txn.initiator != message.from) return false;
  if (message.kind == NameMsgKind::request || message.kind == NameMsgKind::prepare ||
      message.kind == NameMsgKind::snapshot_prepared) {
    return change_well_formed(message);
  }
  return true;
}

std::size_t encode_chunks(const NameMessage& message, std::uint16_t sequence,
                          std::array<Message, kMaxChunks>& out) {
  std::array<std::byte, sizeof(NameMessage)> bytes{};
  std::memcpy(bytes.data(), &message, sizeof(message));
  std::size_t used = sizeof(message);
  while (used > 1 && bytes[used - 1] == std::byte{0}) --used;  // the receiver zero-fills
  return split_into_chunks(kNameChunkKind, sequence, std::span(bytes.data(), used), out);
}

std::optional<NameMessage> ChunkAssembler::push(const Message& raw) {
  if (chunks_.push(kNameChunkKind, raw) != ChunkReassembler<kMaxChunks>::Outcome::complete) return std::nullopt;
  NameMessage message;
  std::memcpy(&message, chunks_.record_padded().data(), sizeof(message));
  return message;
}

}  // namespace flotilla::name
