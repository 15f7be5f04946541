#include "components/name/name_path.hpp"

namespace flotilla::name {
namespace {

bool allowed_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

}  // namespace

NameErrc validate_name(std::string_view name) {
  if (name.size() < 2 || name.size() > kMaxNameBytes || name.front() != '/') {
    return NameErrc::bad_name;
  }
  bool component_empty = true;  // the leading '/' opens the first component
  for (std::size_t i = 1; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '/') {
      if (component_empty) return NameErrc::bad_name;
      component_empty = true;
    } else if (allowed_char(c)) {
      component_empty = false;
    } else {
      return NameErrc::bad_name;
    }
  }
  return component_empty ? NameErrc::bad_name : NameErrc::ok;  // no trailing '/'
}

std::uint64_t name_id(std::string_view name) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (char c : name) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

bool is_beneath(std::string_view name, std::string_view prefix) {
  return name.size() > prefix.size() && name.starts_with(prefix) && name[prefix.size()] == '/';
}

bool names_overlap(std::string_view a, std::string_view b) {
  return a == b || is_beneath(a, b) || is_beneath(b, a);
}

std::string_view top_component(std::string_view name) {
  const std::string_view rest = name.substr(1);
  return rest.substr(0, rest.find('/'));
}

}  // namespace flotilla::name
