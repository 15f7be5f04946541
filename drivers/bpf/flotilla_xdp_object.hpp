// The af_xdp driver's XDP program (drivers/bpf/flotilla_xdp.bpf.c) as a BPF ELF object, compiled
// by clang at build time and embedded in the binary (see drivers/bpf/meson.build).
#pragma once

#include <cstddef>
#include <span>

namespace flotilla::drivers {

std::span<const std::byte> flotilla_xdp_object();

}  // namespace flotilla::drivers
