// DPDK's runtime directories (EAL writes one per process, under a file prefix, and never removes
// it). Flotilla's drivers use the prefix flo<pid>; a driver killed by the supervisor leaves its
// directory behind, so the next driver start and the supervisor's shutdown remove those of dead
// processes. No DPDK headers here: the supervisor uses this without linking DPDK.
#pragma once

#include <filesystem>

namespace flotilla::drivers {

// Where EAL puts runtime directories: /var/run/dpdk for root, else $XDG_RUNTIME_DIR/dpdk or
// /tmp/dpdk (the rule in eal_create_runtime_dir).
std::filesystem::path dpdk_runtime_parent();

// Removes flo<pid> runtime directories whose process is gone.
void remove_stale_dpdk_runtime_dirs();

}  // namespace flotilla::drivers
