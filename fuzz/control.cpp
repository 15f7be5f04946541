// The control-socket protocol's parsing that runs on text from the other side: the client's
// reading of a `counters` answer (recovery::parse_counters) and the fault names of `inject`.
// (The supervisor's own request handling needs a running supervisor and is not reached here.)
#include <string>
#include <string_view>

#include "dataplane/control_block.hpp"
#include "fuzz/fuzz_input.hpp"
#include "recovery/control_socket.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace flotilla;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const recovery::CounterTable table = recovery::parse_counters(text);
  for (const auto& [component, counters] : table) {
    fuzz::require(!component.empty());
    for (const auto& [name, value] : counters) fuzz::require(!name.empty());
  }
  Fault fault = Fault::none;
  if (parse_fault(text, &fault)) fuzz::require(fault_name(fault) == std::string_view(text));
  return 0;
}
