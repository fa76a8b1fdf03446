#include "config/units.h"

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <utility>

#include "config/config.h"

namespace bulwark::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

TEST_CASE("parse_duration accepts an integer and one of ms, s, m, h") {
  CHECK(parse_duration("0s") == Duration{0});
  CHECK(parse_duration("0ms") == Duration{0});
  CHECK(parse_duration("250ms") == milliseconds(250));
  CHECK(parse_duration("1s") == seconds(1));
  CHECK(parse_duration("90s") == seconds(90));
  CHECK(parse_duration("2m") == minutes(2));
  CHECK(parse_duration("1h") == hours(1));
  CHECK(parse_duration("007s") == seconds(7));
  CHECK(parse_duration("9223372036854775807ms") == Duration{9223372036854775807});
  CHECK(parse_duration("2562047788015h") == hours(2562047788015));  // the largest whole hour
}

TEST_CASE("parse_duration refuses every other form") {
  for (std::string_view text : {"",
                                "1",
                                "250",
                                "s",
                                "ms",
                                "-1s",
                                "+1s",
                                "1.5s",
                                ".5s",
                                "1 s",
                                " 1s",
                                "1s ",
                                "1S",
                                "1MS",
                                "1sec",
                                "1d",
                                "1us",
                                "abc",
                                "1h1m",
                                "1s1",
                                "0x10s",
                                "1e3ms",
                                "١s",
                                "9223372036854775808ms",  // one past the largest millisecond count
                                "2562047788016h",  // overflows when converted to milliseconds
                                "99999999999999999999999s"}) {  // does not even fit the integer
    CAPTURE(text);
    CHECK_FALSE(parse_duration(text).has_value());
  }
}

TEST_CASE("parse_size accepts bytes and the binary units B, KiB, MiB, GiB") {
  CHECK(parse_size("0") == 0u);
  CHECK(parse_size("512") == 512u);
  CHECK(parse_size("512B") == 512u);
  CHECK(parse_size("64KiB") == 64u * 1024);
  CHECK(parse_size("60KiB") == 61440u);
  CHECK(parse_size("1MiB") == 1024u * 1024);
  CHECK(parse_size("1GiB") == 1024u * 1024 * 1024);
  CHECK(parse_size("18446744073709551615") == 18446744073709551615u);
  CHECK(parse_size("17179869183GiB") == 17179869183ull << 30);
}

TEST_CASE("parse_size refuses decimal units, other spellings and overflow") {
  for (std::string_view text : {"",
                                "B",
                                "KiB",
                                "1KB",
                                "1MB",
                                "1GB",
                                "1K",
                                "1k",
                                "1kib",
                                "1KIB",
                                "1Kib",
                                "1TiB",
                                "-1",
                                "+1",
                                "1.5KiB",
                                "1 KiB",
                                " 1",
                                "1 ",
                                "0x10",
                                "1e3",
                                "12abc",
                                "18446744073709551616",  // 2^64
                                "17179869184GiB"}) {     // 2^34 GiB = 2^64 bytes
    CAPTURE(text);
    CHECK_FALSE(parse_size(text).has_value());
  }
}

TEST_CASE("parse_decimal accepts digits with an optional fraction") {
  CHECK(parse_decimal("0") == 0.0);
  CHECK(parse_decimal("10") == 10.0);
  CHECK(parse_decimal("0.5") == 0.5);
  CHECK(parse_decimal("0.2") == 0.2);
  CHECK(parse_decimal("99.25") == 99.25);
  CHECK(parse_decimal("100.0") == 100.0);
  CHECK(parse_decimal("007.50") == 7.5);
  CHECK(parse_decimal("1000000000") == 1e9);
}

TEST_CASE("parse_decimal refuses signs, exponents, bare dots and other forms") {
  for (std::string_view text : {"", ".", ".5", "5.", "-1", "+1", "1e3", "1E3", "0x1", "inf", "nan",
                                "1,5", "1.2.3", " 1", "1 ", "10%", "abc", "1..2", "١"}) {
    CAPTURE(text);
    CHECK_FALSE(parse_decimal(text).has_value());
  }
  CHECK_FALSE(parse_decimal("1" + std::string(400, '0')).has_value());  // does not fit a double
}

TEST_CASE("format_decimal writes the shortest form that reads back the same") {
  CHECK(format_decimal(0) == "0");
  CHECK(format_decimal(1) == "1");
  CHECK(format_decimal(100) == "100");
  CHECK(format_decimal(0.2) == "0.2");
  CHECK(format_decimal(0.5) == "0.5");
  CHECK(format_decimal(12.5) == "12.5");
  CHECK(format_decimal(1e9) == "1000000000");
  for (double d : {0.0, 0.1, 0.2, 0.5, 1.0, 33.3, 99.99, 1e9}) {
    CAPTURE(d);
    CHECK(parse_decimal(format_decimal(d)) == d);
  }
}

TEST_CASE("parse_percent accepts a decimal followed by a percent sign") {
  CHECK(parse_percent("0%") == 0.0);
  CHECK(parse_percent("10%") == 10.0);
  CHECK(parse_percent("12.5%") == 12.5);
  CHECK(parse_percent("100%") == 100.0);
  CHECK(parse_percent("100.0%") == 100.0);
  CHECK(parse_percent("250%") == 250.0);  // the range is the caller's to check
}

TEST_CASE("parse_percent refuses a missing sign and every form parse_decimal refuses") {
  for (std::string_view text : {"", "%", "10", "0.5", "10 %", " 10%", "-5%", "+5%", "1e2%", "10%%",
                                "%10", ".5%", "5.%", "ten%", "10%x"}) {
    CAPTURE(text);
    CHECK_FALSE(parse_percent(text).has_value());
  }
}

TEST_CASE("parse_status_range reads one status or two joined by a dash") {
  const auto range = [](std::string_view text) {
    auto parsed = parse_status_range(text);
    REQUIRE(parsed.has_value());
    return std::pair{parsed->min, parsed->max};
  };
  CHECK(range("200-399") == std::pair{200, 399});
  CHECK(range("204") == std::pair{204, 204});
  CHECK(range("100-599") == std::pair{100, 599});
  CHECK(range("399-200") == std::pair{399, 200});  // syntax only: order and range are checked later
  CHECK(range("0") == std::pair{0, 0});
  CHECK(range("9999") == std::pair{9999, 9999});
}

TEST_CASE("parse_status_range refuses other forms") {
  for (std::string_view text : {"", "-", "200-", "-399", "2xx", "200 - 399", " 200", "200-399-500",
                                "200..399", "+200", "20000", "200-20000", "200,399", "2.5"}) {
    CAPTURE(text);
    CHECK_FALSE(parse_status_range(text).has_value());
  }
}

TEST_CASE("format_status_range writes a range, or one status when both ends are equal") {
  CHECK(format_status_range({200, 399}) == "200-399");
  CHECK(format_status_range({204, 204}) == "204");
  CHECK(format_status_range(StatusRange{}) == "200-399");
}

TEST_CASE("kRetryOnNames names each RetryOn bit once, in bit order") {
  uint32_t all = 0;
  for (size_t i = 0; i < kRetryOnNames.size(); ++i) {
    CAPTURE(kRetryOnNames[i].name);
    CHECK(kRetryOnNames[i].bit == (1u << i));
    CHECK((all & kRetryOnNames[i].bit) == 0);
    all |= kRetryOnNames[i].bit;
    for (size_t j = 0; j < i; ++j) CHECK(kRetryOnNames[j].name != kRetryOnNames[i].name);
  }
  CHECK(all == (kRetryOnConnectFailure | kRetryOnReset | kRetryOnGatewayError | kRetryOn5xx |
                kRetryOnRetriableStatusCodes | kRetryOnPerTryTimeout));
  CHECK(kRetryOnNames[0].name == "connect-failure");
  CHECK(kRetryOnNames[3].name == "5xx");
  CHECK(kRetryOnNames[5].name == "per-try-timeout");
}

TEST_CASE("parse_address reads IPv4, bracketed IPv6 and DNS names") {
  SUBCASE("IPv4") {
    auto a = parse_address("127.0.0.1:8080");
    REQUIRE(a);
    CHECK(a->host == "127.0.0.1");
    CHECK(a->port == 8080);
    CHECK(a->is_ip);
  }
  SUBCASE("IPv4 with port 0 and 65535") {
    CHECK(parse_address("0.0.0.0:0")->port == 0);
    CHECK(parse_address("10.1.2.3:65535")->port == 65535);
  }
  SUBCASE("IPv6") {
    auto a = parse_address("[::1]:80");
    REQUIRE(a);
    CHECK(a->host == "::1");
    CHECK(a->port == 80);
    CHECK(a->is_ip);
    auto b = parse_address("[2001:db8::42]:9000");
    REQUIRE(b);
    CHECK(b->host == "2001:db8::42");
    CHECK(b->is_ip);
    CHECK(parse_address("[::]:0")->host == "::");
    CHECK(parse_address("[::ffff:10.0.0.1]:1")->is_ip);
  }
  SUBCASE("DNS names") {
    auto a = parse_address("app.internal:9001");
    REQUIRE(a);
    CHECK(a->host == "app.internal");
    CHECK(a->port == 9001);
    CHECK_FALSE(a->is_ip);
    CHECK(parse_address("localhost:1"));
    CHECK(parse_address("my_service:80"));  // container runtimes name services like this
    CHECK(parse_address("a-b.c-d.example:80"));
    CHECK(parse_address("1password.com:443"));  // a leading digit is fine in a name
    CHECK(parse_address(std::string(63, 'a') + ".example:80"));
  }
}

TEST_CASE("parse_address refuses malformed addresses and says why") {
  struct Case {
    std::string text;
    std::string_view why;
  };
  const Case cases[] = {
      {"", "empty address"},
      {"127.0.0.1", "missing port"},
      {"127.0.0.1:", "missing port"},
      {"localhost", "missing port"},
      {":80", "missing host"},
      {"::1:80", "must be in brackets"},
      {"::1", "must be in brackets"},
      {"[::1]", "missing port after ']'"},
      {"[::1]80", "missing port after ']'"},
      {"[::1]:", "missing port"},
      {"[::1:80", "missing ']'"},
      {"[1.2.3.4]:80", "not a valid IPv6 address"},
      {"[fe80::1%eth0]:80", "not a valid IPv6 address"},
      {"[]:80", "not a valid IPv6 address"},
      {"1.2.3.4:65536", "out of range"},
      {"1.2.3.4:99999999999", "out of range"},
      {"1.2.3.4:-1", "not a number"},
      {"1.2.3.4:8o", "not a number"},
      {"1.2.3.4: 80", "not a number"},
      {"256.1.1.1:80", "neither an IPv4 address nor a valid DNS name"},
      {"1.2.3:80", "neither an IPv4 address nor a valid DNS name"},
      {"01.2.3.4:80", "neither an IPv4 address nor a valid DNS name"},
      {"bad host:80", "neither"},
      {"-bad.com:80", "neither"},
      {"bad-.com:80", "neither"},
      {"a..b:80", "neither"},
      {".a:80", "neither"},
      {"a.:80", "neither"},
      {"host/x:80", "neither"},
      {"http://a:80", "neither"},
      {std::string(64, 'a') + ":80", "neither"},
      {std::string(254, 'a') + ":80", "neither"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    std::string why;
    CHECK_FALSE(parse_address(c.text, &why).has_value());
    CHECK(why.find(c.why) != std::string::npos);
  }
  CHECK_FALSE(parse_address("nope").has_value());  // the reason is optional
}

TEST_CASE("format_duration writes the shortest exact form") {
  CHECK(format_duration(Duration{0}) == "0s");
  CHECK(format_duration(milliseconds(1)) == "1ms");
  CHECK(format_duration(milliseconds(250)) == "250ms");
  CHECK(format_duration(milliseconds(1500)) == "1500ms");
  CHECK(format_duration(seconds(1)) == "1s");
  CHECK(format_duration(seconds(90)) == "90s");
  CHECK(format_duration(minutes(1)) == "1m");
  CHECK(format_duration(seconds(300)) == "5m");
  CHECK(format_duration(minutes(90)) == "90m");
  CHECK(format_duration(hours(1)) == "1h");
  CHECK(format_duration(hours(48)) == "48h");
  for (Duration d :
       {Duration{0}, Duration{7}, Duration{61000}, Duration{3600001}, Duration{86400000}}) {
    CAPTURE(d.count());
    CHECK(parse_duration(format_duration(d)) == d);
  }
}

TEST_CASE("format_size writes binary units when exact, else bytes") {
  CHECK(format_size(0) == "0B");
  CHECK(format_size(1) == "1B");
  CHECK(format_size(1000) == "1000B");
  CHECK(format_size(1024) == "1KiB");
  CHECK(format_size(1536) == "1536B");
  CHECK(format_size(61440) == "60KiB");
  CHECK(format_size(1024 * 1024) == "1MiB");
  CHECK(format_size(1025 * 1024) == "1025KiB");
  CHECK(format_size(uint64_t{3} << 30) == "3GiB");
  CHECK(format_size(uint64_t{4096} << 30) == "4096GiB");
  for (uint64_t n :
       {uint64_t{0}, uint64_t{1}, uint64_t{61440}, uint64_t{1} << 40, uint64_t{12345}}) {
    CAPTURE(n);
    CHECK(parse_size(format_size(n)) == n);
  }
}

}  // namespace
}  // namespace bulwark::config
