// The rule language: what parses into what, every error with its line and column, and random text.
#include <gtest/gtest.h>

#include <random>

#include "components/pf/rules.hpp"

namespace flotilla::pf {
namespace {

constexpr std::uint32_t ip(std::uint32_t a, std::uint32_t b, std::uint32_t c, std::uint32_t d) {
  return (a << 24) | (b << 16) | (c << 8) | d;
}

RuleSet parse_ok(std::string_view text) {
  auto parsed = parse_rules(text, "test.rules");
  if (auto* error = std::get_if<RuleError>(&parsed)) {
    ADD_FAILURE() << "unexpected error: " << error->message;
    return RuleSet{};
  }
  return std::get<RuleSet>(std::move(parsed));
}

RuleError parse_error(std::string_view text) {
  auto parsed = parse_rules(text, "test.rules");
  if (auto* error = std::get_if<RuleError>(&parsed)) return *error;
  ADD_FAILURE() << "parsed, but should not have: " << text;
  return RuleError{};
}

TEST(RuleParser, ExamplesParse) {
  const RuleSet rules = parse_ok(
      "block in proto udp to port 9999\n"
      "pass in proto tcp from 10.77.0.0/24 to port 5201 keep state\n"
      "block out proto icmp to 10.77.0.1\n"
      "pass all\n"
      "block in quick proto tcp from any port 1:1023 to 10.77.0.2 port 22\n");
  ASSERT_EQ(rules.size(), 5u);

  const Rule& udp = rules.rule(0);
  EXPECT_EQ(udp.action, Action::block);
  EXPECT_EQ(udp.direction, RuleDirection::in);
  EXPECT_FALSE(udp.quick);
  EXPECT_FALSE(udp.any_protocol);
  EXPECT_EQ(udp.protocol, kProtocolUdp);
  EXPECT_TRUE(udp.from.is_any());
  EXPECT_EQ(udp.to.prefix_length, 0);
  EXPECT_TRUE(udp.to.has_ports);
  EXPECT_EQ(udp.to.port_min, 9999);
  EXPECT_EQ(udp.to.port_max, 9999);
  EXPECT_EQ(udp.line, 1u);

  const Rule& tcp = rules.rule(1);
  EXPECT_EQ(tcp.action, Action::pass);
  EXPECT_EQ(tcp.protocol, kProtocolTcp);
  EXPECT_EQ(tcp.from.address, ip(10, 77, 0, 0));
  EXPECT_EQ(tcp.from.prefix_length, 24);
  EXPECT_FALSE(tcp.from.has_ports);
  EXPECT_EQ(tcp.to.port_min, 5201);
  EXPECT_TRUE(tcp.keep_state);

  const Rule& icmp = rules.rule(2);
  EXPECT_EQ(icmp.direction, RuleDirection::out);
  EXPECT_EQ(icmp.protocol, kProtocolIcmp);
  EXPECT_EQ(icmp.to.address, ip(10, 77, 0, 1));
  EXPECT_EQ(icmp.to.prefix_length, 32);

  const Rule& all = rules.rule(3);
  EXPECT_EQ(all.direction, RuleDirection::both);
  EXPECT_TRUE(all.any_protocol);
  EXPECT_TRUE(all.from.is_any());
  EXPECT_TRUE(all.to.is_any());

  const Rule& ssh = rules.rule(4);
  EXPECT_TRUE(ssh.quick);
  EXPECT_EQ(ssh.from.prefix_length, 0);
  EXPECT_TRUE(ssh.from.has_ports);
  EXPECT_EQ(ssh.from.port_min, 1);
  EXPECT_EQ(ssh.from.port_max, 1023);
  EXPECT_EQ(ssh.to.address, ip(10, 77, 0, 2));
  EXPECT_EQ(ssh.to.port_min, 22);
  EXPECT_EQ(ssh.line, 5u);
}

TEST(RuleParser, CommentsBlankLinesAndLineEndings) {
  const RuleSet rules = parse_ok(
      "# a comment\r\n"
      "\n"
      "   \t\n"
      "  pass   in\tproto tcp   # trailing comment\r\n"
      "block#right after\n"
      "pass out proto 47");  // no final newline
  ASSERT_EQ(rules.size(), 3u);
  EXPECT_EQ(rules.rule(0).line, 4u);
  EXPECT_EQ(rules.rule(1).action, Action::block);
  EXPECT_TRUE(rules.rule(1).any_protocol);
  EXPECT_EQ(rules.rule(2).protocol, 47);
  EXPECT_EQ(rules.rule(2).line, 6u);
  EXPECT_EQ(parse_ok("").size(), 0u);
  EXPECT_EQ(parse_ok("# only\n\n").size(), 0u);
}

TEST(RuleParser, CidrHostBitsAreCleared) {
  const RuleSet rules = parse_ok("pass from 10.77.0.9/24 to 0.0.0.0/0\n");
  EXPECT_EQ(rules.rule(0).from.address, ip(10, 77, 0, 0));
  EXPECT_TRUE(rules.rule(0).to.is_any());
  EXPECT_EQ(rules.describe_rule(0), "pass from 10.77.0.0/24");
}

TEST(RuleParser, DescribeReadsBackAsTheSameRule) {
  const char* texts[] = {
      "block in proto udp to port 9999",
      "pass in proto tcp from 10.77.0.0/24 to port 5201 keep state",
      "block out proto icmp to 10.77.0.1",
      "pass all",
      "block in quick proto tcp from any port 1:1023 to 10.77.0.2 port 22",
      "pass out quick proto 132 from 192.168.0.0/16",
      "pass all keep state",
      "block proto udp from port 53",
  };
  for (const char* text : texts) {
    const RuleSet first = parse_ok(text);
    ASSERT_EQ(first.size(), 1u) << text;
    const std::string described = first.describe_rule(0);
    const RuleSet second = parse_ok(described);
    ASSERT_EQ(second.size(), 1u) << described;
    EXPECT_TRUE(first.rule(0).same_filter(second.rule(0))) << text << " -> " << described;
  }
  EXPECT_EQ(parse_ok("block in quick proto tcp from any port 1:1023 to 10.77.0.2 port 22")
                .describe_rule(0),
            "block in quick proto tcp from port 1:1023 to 10.77.0.2 port 22");
  EXPECT_EQ(parse_ok("block proto udp from port 53").describe_rule(0),
            "block proto udp from port 53");
}

struct ErrorCase {
  const char* text;
  std::size_t line;
  std::size_t column;
  const char* message;  // the whole "source:line:col: what"
};

TEST(RuleParser, ErrorsSayWhereAndWhatWasExpected) {
  const ErrorCase cases[] = {
      {"block foo", 1, 7,
       "test.rules:1:7: unknown word 'foo': expected 'in', 'out', 'quick', 'all', 'proto', 'from' "
       "or 'to'"},
      {"pass foo", 1, 6,
       "test.rules:1:6: unknown word 'foo': expected 'in', 'out', 'quick', 'all', 'proto', 'from', "
       "'to' or 'keep state'"},
      {"allow in", 1, 1, "test.rules:1:1: unknown word 'allow': expected 'pass' or 'block'"},
      {"  42", 1, 3, "test.rules:1:3: unexpected '42': expected 'pass' or 'block'"},
      {"block in in", 1, 10,
       "test.rules:1:10: unexpected 'in': expected 'quick', 'all', 'proto', 'from' or 'to'"},
      {"block in quick quick", 1, 16,
       "test.rules:1:16: unexpected 'quick': expected 'all', 'proto', 'from' or 'to'"},
      {"block all proto tcp", 1, 11, "test.rules:1:11: unexpected 'proto': expected the end of the rule"},
      {"pass proto tcp proto udp", 1, 16,
       "test.rules:1:16: unexpected 'proto': expected 'from', 'to' or 'keep state'"},
      {"block proto tcp from any to any from any", 1, 33,
       "test.rules:1:33: unexpected 'from': expected 'port'"},
      {"block proto tcp to any port 1 from any", 1, 31,
       "test.rules:1:31: unexpected 'from': expected the end of the rule"},
      {"pass proto tcp from any port 2 port 3", 1, 32,
       "test.rules:1:32: unexpected 'port': expected 'to' or 'keep state'"},
      {"pass all keep state extra", 1, 21,
       "test.rules:1:21: unknown word 'extra': expected the end of the rule"},
      {"block proto", 1, 12,
       "test.rules:1:12: unexpected end of line: expected 'tcp', 'udp', 'icmp' or a protocol "
       "number after 'proto'"},
      {"block proto tcpx", 1, 13,
       "test.rules:1:13: unknown word 'tcpx': expected 'tcp', 'udp', 'icmp' or a protocol number "
       "after 'proto'"},
      {"block proto 256", 1, 13, "test.rules:1:13: protocol 256 is out of range (0..255)"},
      {"block from", 1, 11,
       "test.rules:1:11: unexpected end of line: expected 'any', an address, a CIDR or 'port' "
       "after 'from'"},
      {"block to 10.0.0", 1, 10,
       "test.rules:1:10: unexpected '10.0.0': expected 'any', an address, a CIDR or 'port' after "
       "'to'"},
      {"block to 10.0.300.1", 1, 15, "test.rules:1:15: address octet 300 is out of range (0..255)"},
      {"block to 10.0.0.0/33", 1, 19, "test.rules:1:19: CIDR prefix /33 is out of range (0..32)"},
      {"block to 10.0.0.0/", 1, 19,
       "test.rules:1:19: unexpected end of line: expected a prefix length after '/'"},
      {"block proto udp to port 70000", 1, 25, "test.rules:1:25: port 70000 is out of range (0..65535)"},
      {"block proto udp to port 10:70000", 1, 28,
       "test.rules:1:28: port 70000 is out of range (0..65535)"},
      {"block proto udp to port 99999999999999999999999", 1, 25,
       "test.rules:1:25: port 99999999999999999999999 is out of range (0..65535)"},
      {"block proto udp to port 2000:1000", 1, 25,
       "test.rules:1:25: port range 2000:1000 runs backwards (low above high)"},
      {"block proto udp to port 1:", 1, 27,
       "test.rules:1:27: unexpected end of line: expected the upper port of the range after ':'"},
      {"block proto udp to port http", 1, 25,
       "test.rules:1:25: unknown word 'http': expected a port or a port range (low:high) after "
       "'port'"},
      {"block to port 9999", 1, 10, "test.rules:1:10: a port needs proto tcp or udp"},
      {"block proto icmp from any port 1", 1, 27, "test.rules:1:27: a port needs proto tcp or udp"},
      {"block in proto udp keep state", 1, 20, "test.rules:1:20: 'keep state' on a block rule"},
      {"pass keep", 1, 10, "test.rules:1:10: unexpected end of line: expected 'state' after 'keep'"},
      {"pass keep states", 1, 11,
       "test.rules:1:11: unknown word 'states': expected 'state' after 'keep'"},
      {"pass\x01", 1, 1, "test.rules:1:1: unexpected 'pass\\x01': expected 'pass' or 'block'"},
      {"pass \x01", 1, 6, "test.rules:1:6: unexpected '\\x01': expected 'in', 'out', 'quick', "
                          "'all', 'proto', 'from', 'to' or 'keep state'"},
  };
  for (const ErrorCase& c : cases) {
    const RuleError error = parse_error(c.text);
    EXPECT_EQ(error.line, c.line) << c.text;
    EXPECT_EQ(error.column, c.column) << c.text;
    EXPECT_EQ(error.message, c.message) << c.text;
  }
}

TEST(RuleParser, ErrorOnLineThreeReportsLineThree) {
  const RuleError error = parse_error(
      "pass all\n"
      "# fine so far\n"
      "block in proto tcp to port 99999\n"
      "pass all\n");
  EXPECT_EQ(error.line, 3u);
  EXPECT_EQ(error.column, 28u);
  EXPECT_EQ(error.message, "test.rules:3:28: port 99999 is out of range (0..65535)");

  const RuleError crlf = parse_error("pass all\r\n\r\n  bogus\r\n");
  EXPECT_EQ(crlf.line, 3u);
  EXPECT_EQ(crlf.column, 3u);
}

TEST(RuleParser, SourceNameIsInTheMessage) {
  auto parsed = parse_rules("nope", "/etc/flotilla/pf.rules");
  ASSERT_TRUE(std::holds_alternative<RuleError>(parsed));
  EXPECT_EQ(std::get<RuleError>(parsed).message.rfind("/etc/flotilla/pf.rules:1:1: ", 0), 0u);
}

// Random text never crashes the parser, and whatever parses describes and re-parses to the same
// rules. Half the inputs are made of rule words so that many get deep into the grammar.
TEST(RuleParser, FuzzRandomText) {
  std::mt19937 random(20240611);
  const char* words[] = {"pass", "block", "in", "out", "quick", "all", "proto", "tcp", "udp",
                         "icmp", "from", "to", "any", "port", "keep", "state", "10.77.0.1",
                         "10.0.0.0/8", "1:1023", "80", "300", "#", "\n", "\r\n", ":", "/", "65536",
                         "0.0.0.0/0", "255.255.255.255/32", " ", "\t", "17", "."};
  std::size_t parsed_count = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string text;
    const int length = static_cast<int>(random() % 24);
    for (int i = 0; i < length; ++i) {
      if (round % 2 == 0) {
        text += static_cast<char>(random() % 256);
      } else {
        text += words[random() % std::size(words)];
        if (random() % 4 != 0) text += ' ';
      }
    }
    auto result = parse_rules(text, "fuzz");
    if (auto* rules = std::get_if<RuleSet>(&result)) {
      ++parsed_count;
      for (std::size_t i = 0; i < rules->size(); ++i) {
        auto again = parse_rules(rules->describe_rule(i), "again");
        ASSERT_TRUE(std::holds_alternative<RuleSet>(again)) << rules->describe_rule(i);
        ASSERT_EQ(std::get<RuleSet>(again).size(), 1u);
        EXPECT_TRUE(std::get<RuleSet>(again).rule(0).same_filter(rules->rule(i)));
      }
    } else {
      const RuleError& error = std::get<RuleError>(result);
      EXPECT_GE(error.line, 1u);
      EXPECT_GE(error.column, 1u);
      EXPECT_EQ(error.message.rfind("fuzz:" + std::to_string(error.line) + ":" +
                                        std::to_string(error.column) + ": ",
                                    0),
                0u)
          << error.message;
    }
  }
  EXPECT_GT(parsed_count, 100u);  // the word half reaches valid rules often
}

// Valid rule files with random bytes changed, inserted or removed: errors deep inside rules.
TEST(RuleParser, FuzzMutatedRuleFiles) {
  std::mt19937 random(99);
  const std::string valid =
      "# rules\n"
      "block in proto udp to port 9999\n"
      "pass in proto tcp from 10.77.0.0/24 to port 5201 keep state\n"
      "block out proto icmp to 10.77.0.1\n"
      "pass all\n"
      "block in quick proto tcp from any port 1:1023 to 10.77.0.2 port 22\n";
  ASSERT_TRUE(std::holds_alternative<RuleSet>(parse_rules(valid, "valid")));
  std::size_t errors = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string text = valid;
    const int edits = 1 + static_cast<int>(random() % 3);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const std::size_t at = random() % text.size();
      switch (random() % 3) {
        case 0: text[at] = static_cast<char>(random() % 256); break;
        case 1: text.insert(at, 1, static_cast<char>(random() % 256)); break;
        default: text.erase(at, 1); break;
      }
    }
    auto result = parse_rules(text, "mutated");
    if (auto* error = std::get_if<RuleError>(&result)) {
      ++errors;
      EXPECT_LE(error->line, 9u);  // six lines, plus up to three inserted newlines
      EXPECT_GE(error->column, 1u);
    }
  }
  EXPECT_GT(errors, 5000u);
}

}  // namespace
}  // namespace flotilla::pf
