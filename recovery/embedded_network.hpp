// The network `flotilla up` builds when the configuration has a [network] table and no hardware
// is named: a namespace holding the Linux kernel's stack as the peer, joined to Flotilla by a veth
// pair. The peer end sits in the namespace with the peer address; the stack's end stays in the
// root namespace without an address, driven by Flotilla's driver.
//
// Checksums: a kernel veth hands over packets with unfinished checksums (CHECKSUM_PARTIAL) unless
// its offloads are off, so the peer end gets `tx off tso off gso off`. Flotilla's driver therefore
// never has to complete a checksum.
#pragma once

#include <string>
#include <vector>

#include "dataplane/result.hpp"
#include "recovery/config.hpp"

namespace flotilla::recovery {

// Why the network cannot be made here, for the user ("" when it can): not root, or a namespace or
// interface of the same name exists already.
std::string network_precondition(const NetworkConfig& network);

// Whether the namespace or the stack's interface already exists.
bool embedded_network_exists(const NetworkConfig& network);

// Creates the namespace, the veth pair, the peer's address and the offload settings. On failure
// it removes whatever it had made and says which step failed in `detail`.
Status create_embedded_network(const NetworkConfig& network, std::string* detail);

// Removes what create_embedded_network made; what is already gone is not an error.
void remove_embedded_network(const NetworkConfig& network);

// Runs a command (argv[0] looked up in PATH) with its output discarded unless `output` is given.
// Returns its exit status, or -1 when it could not be started.
int run_command(const std::vector<std::string>& argv, std::string* output = nullptr);

}  // namespace flotilla::recovery
