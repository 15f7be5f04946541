// Changes the tests submit, built in one place.
#pragma once

#include <string>

#include "components/name/name_message.hpp"
#include "components/name/name_table.hpp"

namespace flotilla::name::testing {

// A direct registration whose endpoint is (owner, 1, incarnation).
inline Change register_change(std::string name, ComponentId owner, std::uint64_t incarnation = 1) {
  Change change;
  change.op = ChangeOp::register_direct;
  change.name = std::move(name);
  change.owner = owner;
  change.endpoint = Endpoint{owner, 1, incarnation};
  return change;
}

inline Change owner_change(ChangeOp op, std::string name, ComponentId owner,
                           std::string member = "", std::uint32_t weight = 1) {
  Change change;
  change.op = op;
  change.name = std::move(name);
  change.owner = owner;
  change.member = std::move(member);
  change.weight = weight;
  return change;
}

// A prepare whose two names are both long, so it takes the most chunks (four).
inline NameMessage long_prepare() {
  NameMessage message;
  message.kind = NameMsgKind::prepare;
  message.from = 2;
  message.txn = TxnId{77, 5, 2, 1};
  Change change;
  change.op = ChangeOp::add_member;
  change.name = "/" + std::string(47, 'g');
  change.member = "/net/tcp/" + std::string(38, '0');
  change.owner = 9;
  change.weight = 3;
  put_change(message, change);
  return message;
}

}  // namespace flotilla::name::testing
