// The supervisor's configuration parser (recovery/config.cpp) on arbitrary text, with and without
// a `--set` override taken from the input's last line: any text yields a configuration or an
// error, never a crash or an exception.
#include <string>
#include <string_view>

#include "fuzz/fuzz_input.hpp"
#include "recovery/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace flotilla::recovery;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)parse_config(text, "fuzz");
  const std::size_t last_line = text.rfind('\n');
  if (last_line != std::string_view::npos) {
    const std::string overrides[] = {std::string(text.substr(last_line + 1))};
    (void)parse_config(text.substr(0, last_line), "fuzz", overrides);
  }
  return 0;
}
