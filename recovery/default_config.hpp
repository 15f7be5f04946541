// The configuration `flotilla up` uses when given none. Until the network stack exists it runs
// the echo chain: a client streaming requests through a middle component to a server.
#pragma once

namespace flotilla::recovery {

inline constexpr const char* kDefaultConfig = R"(# flotilla default configuration
[supervisor]
heartbeat_timeout_ms = 50
crash_limit = 5
crash_window_ms = 10000

[[component]]
name = "client"
binary = "flotilla-echo"
args = ["--role", "client", "--rate", "20000"]

[[component]]
name = "middle"
binary = "flotilla-echo"
args = ["--role", "middle"]

[[component]]
name = "server"
binary = "flotilla-echo"
args = ["--role", "server"]

[[channel]]
name = "client-middle"
a = "client"
b = "middle"
capacity = 256

[[channel]]
name = "middle-server"
a = "middle"
b = "server"
capacity = 256
)";

}  // namespace flotilla::recovery
