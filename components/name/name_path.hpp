// Hierarchical names such as "/net/tcp/0": validation, the 64-bit name id that travels in message
// headers, and the component-wise prefix relations reservations and arbiter locks rely on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "components/name/name_errors.hpp"

namespace flotilla::name {

// A name must fit a fixed field of a wire message, so its length is bounded.
inline constexpr std::size_t kMaxNameBytes = 48;

// ok when `name` is absolute ("/a/b"), has at least one component, no empty component, only
// [A-Za-z0-9_.-] in components and at most kMaxNameBytes bytes; bad_name otherwise.
NameErrc validate_name(std::string_view name);

// FNV-1a over the bytes: stable across processes and builds, so sender and receiver agree.
std::uint64_t name_id(std::string_view name);

// True when `name` lies strictly beneath `prefix` component-wise ("/net/tcp" is beneath "/net",
// "/network" is not).
bool is_beneath(std::string_view name, std::string_view prefix);

// Equal, or one beneath the other: two changes on such names must not commit concurrently.
bool names_overlap(std::string_view a, std::string_view b);

// The first component ("net" for "/net/tcp/0"). Its hash picks the arbiter, so a reservation
// and every name beneath it share one arbiter, which can serialise them.
std::string_view top_component(std::string_view name);

}  // namespace flotilla::name
