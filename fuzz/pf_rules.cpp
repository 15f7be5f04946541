// pf's rule parser (components/pf/rule_parser.cpp) on arbitrary text: it never throws or crashes,
// and every rule it accepts reads back from its own description as the same filter.
#include <string_view>
#include <variant>

#include "components/pf/rules.hpp"
#include "fuzz/fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace flotilla::pf;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto parsed = parse_rules(text, "fuzz");
  const auto* rules = std::get_if<RuleSet>(&parsed);
  if (rules == nullptr) return 0;
  for (const Rule& rule : rules->rules()) {
    const auto again = parse_rules(rule.describe(), "described");
    const auto* reread = std::get_if<RuleSet>(&again);
    flotilla::fuzz::require(reread != nullptr && reread->size() == 1 && reread->rule(0).same_filter(rule));
  }
  return 0;
}
