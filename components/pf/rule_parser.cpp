// The rule language's grammar (PEGTL) and the actions that build Rules from it. The grammar is in
// rules.hpp. Every place where the input may go wrong raises a parse_error naming what was
// expected there; parse_rules turns it into a RuleError, so no input escapes as an exception.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <tao/pegtl.hpp>

#include "components/pf/rules.hpp"

namespace flotilla::pf {
namespace {

namespace pg = tao::pegtl;

constexpr std::size_t kMaxRules = 65535;  // Decision::rule is 16 bits

// ---------------------------------------------------------------------------------------------
// Parse state: the rule being built and how far it got, so errors can list what may come next.

enum class Stage { action, direction, quick, all, proto, from, from_port, to, to_port, keep };

struct Builder {
  std::vector<Rule> rules;
  Rule rule;
  Stage stage = Stage::action;
  Endpoint* endpoint = nullptr;  // the side 'from' or 'to' is filling in

  void start(Action action, std::size_t line) {
    rule = Rule{};
    rule.action = action;
    rule.line = line;
    stage = Stage::action;
    endpoint = nullptr;
  }
};

// What to say about the text at the current position when it is not what we wanted.
template <class ParseInput>
std::string describe_unexpected(const ParseInput& in) {
  static constexpr std::string_view kKeywords[] = {"pass", "block", "in",  "out",  "quick",
                                                   "all",  "proto", "tcp", "udp",  "icmp",
                                                   "from", "to",    "any", "port", "keep", "state"};
  std::size_t length = 0;
  const std::size_t available = in.size(64);
  const char* at = in.current();
  while (length < available && length < 40) {
    const char c = at[length];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '#') break;
    ++length;
  }
  if (length == 0) {
    if (available == 0 || at[0] == '\r' || at[0] == '\n') return "unexpected end of line: ";
    return std::string("unexpected '") + at[0] + "': ";
  }
  const std::string_view token(at, length);
  std::string shown;
  for (const char c : token) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte < 0x7f) {
      shown += c;
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", byte);
      shown += escaped;
    }
  }
  const bool is_word = std::all_of(token.begin(), token.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  });
  const bool is_keyword = std::find(std::begin(kKeywords), std::end(kKeywords), token) !=
                          std::end(kKeywords);
  if (is_word && !is_keyword) return "unknown word '" + shown + "': ";
  return "unexpected '" + shown + "': ";
}

std::string join_expected(const std::vector<std::string_view>& items) {
  if (items.empty()) return "expected the end of the rule";
  std::string text = "expected ";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i != 0) text += i + 1 == items.size() ? " or " : ", ";
    text += items[i];
  }
  return text;
}

// What may follow the part of a rule parsed so far.
std::string expected_after(const Builder& builder) {
  std::vector<std::string_view> items;
  switch (builder.stage) {
    case Stage::action: items = {"'in'", "'out'", "'quick'", "'all'", "'proto'", "'from'", "'to'"}; break;
    case Stage::direction: items = {"'quick'", "'all'", "'proto'", "'from'", "'to'"}; break;
    case Stage::quick: items = {"'all'", "'proto'", "'from'", "'to'"}; break;
    case Stage::proto: items = {"'from'", "'to'"}; break;
    case Stage::from: items = {"'port'", "'to'"}; break;
    case Stage::from_port: items = {"'to'"}; break;
    case Stage::to: items = {"'port'"}; break;
    case Stage::all:
    case Stage::to_port:
    case Stage::keep: break;
  }
  if (builder.rule.action == Action::pass && builder.stage != Stage::keep) {
    items.push_back("'keep state'");
  }
  return join_expected(items);
}

// A position `offset` bytes further along the same line (the inputs are single-line tokens).
pg::position shifted(pg::position position, std::size_t offset) {
  position.byte += offset;
  position.column += offset;
  return position;
}

// Digits to a number; anything too long to fit reads as "too large" without overflowing.
std::uint64_t to_number(std::string_view digits) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (error != std::errc{} || end != digits.data() + digits.size()) return UINT64_MAX;
  return value;
}

// ---------------------------------------------------------------------------------------------
// Grammar.
namespace grammar {

// A token ends at a blank, the end of the line, a comment or the end of the text.
struct token_end : pg::not_at<pg::not_one<' ', '\t', '\r', '\n', '#'>> {};
template <class Word>
struct kw : pg::seq<Word, token_end> {};

struct ws : pg::star<pg::blank> {};
struct comment : pg::seq<pg::one<'#'>, pg::star<pg::not_one<'\r', '\n'>>> {};
struct line_rest : pg::seq<ws, pg::opt<comment>, pg::eolf> {};

// Match Rule, or fail the whole parse with "<what is here>: <Message>".
template <const char* Message, class Rule>
struct expect {
  using rule_t = expect;
  using subs_t = pg::type_list<Rule>;

  template <pg::apply_mode A, pg::rewind_mode, template <typename...> class Action,
            template <typename...> class Control, typename ParseInput, typename... States>
  static bool match(ParseInput& in, States&&... st) {
    if (Control<Rule>::template match<A, pg::rewind_mode::required, Action, Control>(in, st...)) {
      return true;
    }
    throw pg::parse_error(describe_unexpected(in) + Message, in);
  }
};

inline constexpr char kExpectAction[] = "expected 'pass' or 'block'";
inline constexpr char kExpectProto[] =
    "expected 'tcp', 'udp', 'icmp' or a protocol number after 'proto'";
inline constexpr char kExpectFrom[] = "expected 'any', an address, a CIDR or 'port' after 'from'";
inline constexpr char kExpectTo[] = "expected 'any', an address, a CIDR or 'port' after 'to'";
inline constexpr char kExpectPort[] = "expected a port or a port range (low:high) after 'port'";
inline constexpr char kExpectHighPort[] = "expected the upper port of the range after ':'";
inline constexpr char kExpectPrefix[] = "expected a prefix length after '/'";
inline constexpr char kExpectState[] = "expected 'state' after 'keep'";

struct kw_pass : kw<TAO_PEGTL_STRING("pass")> {};
struct kw_block : kw<TAO_PEGTL_STRING("block")> {};
struct kw_in : kw<TAO_PEGTL_STRING("in")> {};
struct kw_out : kw<TAO_PEGTL_STRING("out")> {};
struct kw_quick : kw<TAO_PEGTL_STRING("quick")> {};
struct kw_all : kw<TAO_PEGTL_STRING("all")> {};
struct kw_proto : kw<TAO_PEGTL_STRING("proto")> {};
struct kw_tcp : kw<TAO_PEGTL_STRING("tcp")> {};
struct kw_udp : kw<TAO_PEGTL_STRING("udp")> {};
struct kw_icmp : kw<TAO_PEGTL_STRING("icmp")> {};
struct kw_from : kw<TAO_PEGTL_STRING("from")> {};
struct kw_to : kw<TAO_PEGTL_STRING("to")> {};
struct kw_any : kw<TAO_PEGTL_STRING("any")> {};
struct kw_port : kw<TAO_PEGTL_STRING("port")> {};
struct kw_keep : kw<TAO_PEGTL_STRING("keep")> {};
struct kw_state : kw<TAO_PEGTL_STRING("state")> {};

struct number : pg::plus<pg::digit> {};

struct action_word : pg::sor<kw_pass, kw_block> {};
struct direction_word : pg::sor<kw_in, kw_out> {};

struct proto_number : pg::seq<number, token_end> {};
struct proto_value : pg::sor<kw_tcp, kw_udp, kw_icmp, proto_number> {};
struct proto_clause : pg::seq<kw_proto, ws, expect<kExpectProto, proto_value>> {};

struct dotted_quad : pg::seq<number, pg::one<'.'>, number, pg::one<'.'>, number, pg::one<'.'>, number> {};
struct cidr : pg::seq<dotted_quad, pg::opt<pg::one<'/'>, expect<kExpectPrefix, number>>, token_end> {};

struct port_spec : pg::seq<number, pg::opt<pg::one<':'>, expect<kExpectHighPort, number>>, token_end> {};
struct port_clause : pg::seq<kw_port, ws, expect<kExpectPort, port_spec>> {};

struct endpoint
    : pg::sor<pg::seq<pg::sor<kw_any, cidr>, pg::opt<ws, port_clause>>, port_clause> {};
struct from_clause : pg::seq<kw_from, ws, expect<kExpectFrom, endpoint>> {};
struct to_clause : pg::seq<kw_to, ws, expect<kExpectTo, endpoint>> {};
struct keep_clause : pg::seq<kw_keep, ws, expect<kExpectState, kw_state>> {};

// The end of a rule: only blanks and a comment may follow. Anything else is reported with the list
// of words that could have come next at this point of the rule.
struct rule_end {
  using rule_t = rule_end;
  using subs_t = pg::type_list<line_rest>;

  template <pg::apply_mode A, pg::rewind_mode, template <typename...> class Action,
            template <typename...> class Control, typename ParseInput>
  static bool match(ParseInput& in, Builder& builder) {
    if (Control<line_rest>::template match<A, pg::rewind_mode::required, Action, Control>(in, builder)) {
      return true;
    }
    (void)Control<ws>::template match<A, pg::rewind_mode::dontcare, Action, Control>(in, builder);
    throw pg::parse_error(describe_unexpected(in) + expected_after(builder), in);
  }
};

struct filters
    : pg::sor<pg::seq<ws, kw_all>,
              pg::seq<pg::opt<ws, proto_clause>, pg::opt<ws, from_clause>, pg::opt<ws, to_clause>>> {};

struct rule
    : pg::seq<action_word, pg::opt<ws, direction_word>, pg::opt<ws, kw_quick>, filters,
              pg::opt<ws, keep_clause>, rule_end> {};

struct line : pg::seq<ws, pg::sor<line_rest, expect<kExpectAction, rule>>> {};
struct file : pg::until<pg::eof, line> {};

}  // namespace grammar

// ---------------------------------------------------------------------------------------------
// Actions.

template <class Rule>
struct build : pg::nothing<Rule> {};

template <>
struct build<grammar::kw_pass> {
  template <class Input>
  static void apply(const Input& in, Builder& b) { b.start(Action::pass, in.position().line); }
};
template <>
struct build<grammar::kw_block> {
  template <class Input>
  static void apply(const Input& in, Builder& b) { b.start(Action::block, in.position().line); }
};
template <>
struct build<grammar::kw_in> {
  template <class Input>
  static void apply(const Input&, Builder& b) {
    b.rule.direction = RuleDirection::in;
    b.stage = Stage::direction;
  }
};
template <>
struct build<grammar::kw_out> {
  template <class Input>
  static void apply(const Input&, Builder& b) {
    b.rule.direction = RuleDirection::out;
    b.stage = Stage::direction;
  }
};
template <>
struct build<grammar::kw_quick> {
  template <class Input>
  static void apply(const Input&, Builder& b) {
    b.rule.quick = true;
    b.stage = Stage::quick;
  }
};
template <>
struct build<grammar::kw_all> {
  template <class Input>
  static void apply(const Input&, Builder& b) { b.stage = Stage::all; }
};

template <std::uint8_t Protocol>
struct set_protocol {
  template <class Input>
  static void apply(const Input&, Builder& b) {
    b.rule.any_protocol = false;
    b.rule.protocol = Protocol;
  }
};
template <>
struct build<grammar::kw_tcp> : set_protocol<kProtocolTcp> {};
template <>
struct build<grammar::kw_udp> : set_protocol<kProtocolUdp> {};
template <>
struct build<grammar::kw_icmp> : set_protocol<kProtocolIcmp> {};

template <>
struct build<grammar::proto_number> {
  template <class Input>
  static void apply(const Input& in, Builder& b) {
    const std::uint64_t value = to_number(in.string_view());
    if (value > 255) {
      throw pg::parse_error("protocol " + in.string() + " is out of range (0..255)", in);
    }
    b.rule.any_protocol = false;
    b.rule.protocol = static_cast<std::uint8_t>(value);
  }
};
template <>
struct build<grammar::proto_value> {
  template <class Input>
  static void apply(const Input&, Builder& b) { b.stage = Stage::proto; }
};

template <>
struct build<grammar::kw_from> {
  template <class Input>
  static void apply(const Input&, Builder& b) {
    b.endpoint = &b.rule.from;
    b.stage = Stage::from;
  }
};
template <>
struct build<grammar::kw_to> {
  template <class Input>
  static void apply(const Input&, Builder& b) {
    b.endpoint = &b.rule.to;
    b.stage = Stage::to;
  }
};

template <>
struct build<grammar::cidr> {
  template <class Input>
  static void apply(const Input& in, Builder& b) {
    const std::string_view text = in.string_view();
    std::uint32_t address = 0;
    std::size_t at = 0;
    for (int octet = 0; octet < 4; ++octet) {
      const std::size_t end = std::min(text.find_first_of("./", at), text.size());
      const std::string_view digits = text.substr(at, end - at);
      const std::uint64_t value = to_number(digits);
      if (value > 255) {
        throw pg::parse_error("address octet " + std::string(digits) + " is out of range (0..255)",
                              shifted(in.position(), at));
      }
      address = (address << 8) | static_cast<std::uint32_t>(value);
      at = end + 1;
    }
    std::uint64_t prefix = 32;
    if (at < text.size()) {  // "/N" follows
      const std::string_view digits = text.substr(at);
      prefix = to_number(digits);
      if (prefix > 32) {
        throw pg::parse_error("CIDR prefix /" + std::string(digits) + " is out of range (0..32)",
                              shifted(in.position(), at));
      }
    }
    Endpoint& endpoint = *b.endpoint;
    endpoint.prefix_length = static_cast<std::uint8_t>(prefix);
    endpoint.address = address & endpoint.mask();  // 10.77.0.1/24 means 10.77.0.0/24, as in pf
  }
};

template <>
struct build<grammar::kw_port> {
  template <class Input>
  static void apply(const Input& in, Builder& b) {
    if (b.rule.any_protocol ||
        (b.rule.protocol != kProtocolTcp && b.rule.protocol != kProtocolUdp)) {
      throw pg::parse_error("a port needs proto tcp or udp", in);
    }
  }
};

template <>
struct build<grammar::port_spec> {
  template <class Input>
  static void apply(const Input& in, Builder& b) {
    const std::string_view text = in.string_view();
    const std::size_t colon = std::min(text.find(':'), text.size());
    const std::string_view low_text = text.substr(0, colon);
    const std::string_view high_text = colon < text.size() ? text.substr(colon + 1) : low_text;
    const std::uint64_t low = to_number(low_text);
    const std::uint64_t high = to_number(high_text);
    if (low > 65535) {
      throw pg::parse_error("port " + std::string(low_text) + " is out of range (0..65535)", in);
    }
    if (high > 65535) {
      throw pg::parse_error("port " + std::string(high_text) + " is out of range (0..65535)",
                            shifted(in.position(), colon + 1));
    }
    if (low > high) {
      throw pg::parse_error("port range " + std::string(text) + " runs backwards (low above high)",
                            in);
    }
    Endpoint& endpoint = *b.endpoint;
    endpoint.has_ports = true;
    endpoint.port_min = static_cast<std::uint16_t>(low);
    endpoint.port_max = static_cast<std::uint16_t>(high);
    b.stage = b.endpoint == &b.rule.from ? Stage::from_port : Stage::to_port;
  }
};

template <>
struct build<grammar::kw_keep> {
  template <class Input>
  static void apply(const Input& in, Builder& b) {
    if (b.rule.action == Action::block) throw pg::parse_error("'keep state' on a block rule", in);
  }
};
template <>
struct build<grammar::kw_state> {
  template <class Input>
  static void apply(const Input&, Builder& b) {
    b.rule.keep_state = true;
    b.stage = Stage::keep;
  }
};

template <>
struct build<grammar::rule> {
  template <class Input>
  static void apply(const Input& in, Builder& b) {
    if (b.rules.size() == kMaxRules) {
      throw pg::parse_error("too many rules (at most 65535)", in);
    }
    b.rules.push_back(b.rule);
  }
};

}  // namespace

std::variant<RuleSet, RuleError> parse_rules(std::string_view text, std::string_view source_name) {
  pg::memory_input<pg::tracking_mode::eager, pg::eol::lf_crlf> in(
      text.data(), text.data() + text.size(), std::string(source_name));
  Builder builder;
  try {
    if (pg::parse<grammar::file, build>(in, builder)) return RuleSet(std::move(builder.rules));
    // The grammar raises on every failure; this is only a backstop.
    const pg::position where = in.position();
    return RuleError{where.line, where.column,
                     std::string(source_name) + ":" + std::to_string(where.line) + ":" +
                         std::to_string(where.column) + ": cannot read this rule file"};
  } catch (const pg::parse_error& error) {
    const pg::position& where = error.positions().front();
    return RuleError{where.line, where.column,
                     std::string(source_name) + ":" + std::to_string(where.line) + ":" +
                         std::to_string(where.column) + ": " + std::string(error.message())};
  }
}

}  // namespace flotilla::pf
