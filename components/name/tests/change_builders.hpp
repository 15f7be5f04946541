// Changes the tests submit, built in one place.
#pragma once

#include <string>

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

}  // namespace flotilla::name::testing
