// The configuration `flotilla up` uses when given none. Until the network stack exists it runs
// the echo chain (a client streaming requests through a middle component to a server) and a name
// fleet of two servers, in which the supervisor registers every component as /proc/<name>.
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

[[component]]
name = "name0"
binary = "flotilla-name-server"

[[component]]
name = "name1"
binary = "flotilla-name-server"

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

[[channel]]
name = "fleet-name0-name1"
a = "name0"
b = "name1"
capacity = 256
)";

}  // namespace flotilla::recovery
