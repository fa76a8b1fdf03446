#include "config/units.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <system_error>

namespace bulwark::config {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Splits "123unit" into its leading run of digits and the rest. Returns false when there is no
// digit at the start or the number does not fit in uint64_t.
bool split_number(std::string_view text, uint64_t* number, std::string_view* unit) {
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && is_digit(text[i])) {
    const uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) return false;
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0) return false;
  *number = value;
  *unit = text.substr(i);
  return true;
}

// Multiplies without overflowing; returns false when the product does not fit in `limit`.
bool checked_multiply(uint64_t a, uint64_t b, uint64_t limit, uint64_t* out) {
  if (b != 0 && a > limit / b) return false;
  *out = a * b;
  return true;
}

void set_why(std::string* why, std::string reason) {
  if (why != nullptr) *why = std::move(reason);
}

// A DNS name as used for upstream endpoints: dot-separated labels of letters, digits, '-' and '_'
// (container runtimes hand out names with underscores), each 1..63 characters and not starting or
// ending with '-'; at most 253 characters in all. A name made only of digits and dots is a
// mistyped IPv4 address, not a name, so it is refused.
bool valid_dns_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  bool all_numeric = true;
  size_t label_start = 0;
  for (size_t i = 0; i <= host.size(); ++i) {
    if (i == host.size() || host[i] == '.') {
      const size_t length = i - label_start;
      if (length == 0 || length > 63) return false;
      if (host[label_start] == '-' || host[i - 1] == '-') return false;
      label_start = i + 1;
      continue;
    }
    const char c = host[i];
    if (!is_alnum(c) && c != '-' && c != '_') return false;
    if (!is_digit(c)) all_numeric = false;
  }
  return !all_numeric;
}

}  // namespace

std::optional<Duration> parse_duration(std::string_view text) {
  uint64_t number = 0;
  std::string_view unit;
  if (!split_number(text, &number, &unit)) return std::nullopt;
  uint64_t millis_per_unit = 0;
  if (unit == "ms") {
    millis_per_unit = 1;
  } else if (unit == "s") {
    millis_per_unit = 1000;
  } else if (unit == "m") {
    millis_per_unit = 60 * 1000;
  } else if (unit == "h") {
    millis_per_unit = 60 * 60 * 1000;
  } else {
    return std::nullopt;
  }
  const auto limit = static_cast<uint64_t>(std::numeric_limits<Duration::rep>::max());
  uint64_t millis = 0;
  if (!checked_multiply(number, millis_per_unit, limit, &millis)) return std::nullopt;
  return Duration{static_cast<Duration::rep>(millis)};
}

std::optional<uint64_t> parse_size(std::string_view text) {
  uint64_t number = 0;
  std::string_view unit;
  if (!split_number(text, &number, &unit)) return std::nullopt;
  uint64_t multiplier = 0;
  if (unit.empty() || unit == "B") {
    multiplier = 1;
  } else if (unit == "KiB") {
    multiplier = uint64_t{1} << 10;
  } else if (unit == "MiB") {
    multiplier = uint64_t{1} << 20;
  } else if (unit == "GiB") {
    multiplier = uint64_t{1} << 30;
  } else {
    return std::nullopt;
  }
  uint64_t bytes = 0;
  if (!checked_multiply(number, multiplier, std::numeric_limits<uint64_t>::max(), &bytes)) {
    return std::nullopt;
  }
  return bytes;
}

std::optional<double> parse_decimal(std::string_view text) {
  const size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  const std::string_view fraction =
      dot == std::string_view::npos ? std::string_view("0") : text.substr(dot + 1);
  const auto all_digits = [](std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), is_digit);
  };
  if (!all_digits(whole) || !all_digits(fraction)) return std::nullopt;
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<double> parse_percent(std::string_view text) {
  if (text.empty() || text.back() != '%') return std::nullopt;
  return parse_decimal(text.substr(0, text.size() - 1));
}

std::optional<StatusRange> parse_status_range(std::string_view text) {
  // Statuses have three digits; more than four is never a status, and keeps the int from
  // overflowing.
  const auto parse_status = [](std::string_view digits) -> std::optional<int> {
    if (digits.empty() || digits.size() > 4 ||
        !std::all_of(digits.begin(), digits.end(), is_digit)) {
      return std::nullopt;
    }
    int value = 0;
    for (char c : digits) value = value * 10 + (c - '0');
    return value;
  };
  const size_t dash = text.find('-');
  const auto min = parse_status(text.substr(0, dash));
  const auto max = dash == std::string_view::npos ? min : parse_status(text.substr(dash + 1));
  if (!min || !max) return std::nullopt;
  return StatusRange{*min, *max};
}

std::optional<SocketAddress> parse_address(std::string_view text, std::string* why) {
  if (text.empty()) {
    set_why(why, "empty address");
    return std::nullopt;
  }
  SocketAddress address;
  std::string_view port_text;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) {
      set_why(why, "missing ']' after the IPv6 address");
      return std::nullopt;
    }
    address.host = std::string(text.substr(1, close - 1));
    in6_addr ip6{};
    if (inet_pton(AF_INET6, address.host.c_str(), &ip6) != 1) {
      set_why(why, "'" + address.host + "' is not a valid IPv6 address");
      return std::nullopt;
    }
    address.is_ip = true;
    const std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      set_why(why, "missing port after ']'");
      return std::nullopt;
    }
    port_text = rest.substr(1);
  } else {
    const size_t colon = text.rfind(':');
    const std::string_view host = text.substr(0, colon == std::string_view::npos ? 0 : colon);
    if (host.find(':') != std::string_view::npos) {
      in6_addr ip6{};
      if (inet_pton(AF_INET6, std::string(text).c_str(), &ip6) == 1 ||
          inet_pton(AF_INET6, std::string(host).c_str(), &ip6) == 1) {
        set_why(why, "an IPv6 address must be in brackets, e.g. [::1]:8080");
      } else {
        set_why(why, "'" + std::string(host) + "' is neither an IPv4 address nor a valid DNS name");
      }
      return std::nullopt;
    }
    if (colon == std::string_view::npos) {
      set_why(why, "missing port");
      return std::nullopt;
    }
    if (host.empty()) {
      set_why(why, "missing host");
      return std::nullopt;
    }
    address.host = std::string(host);
    in_addr ip4{};
    if (inet_pton(AF_INET, address.host.c_str(), &ip4) == 1) {
      address.is_ip = true;
    } else if (!valid_dns_name(host)) {
      set_why(why, "'" + address.host + "' is neither an IPv4 address nor a valid DNS name");
      return std::nullopt;
    }
    port_text = text.substr(colon + 1);
  }
  if (port_text.empty()) {
    set_why(why, "missing port");
    return std::nullopt;
  }
  uint32_t port = 0;
  for (char c : port_text) {
    if (!is_digit(c)) {
      set_why(why, "port '" + std::string(port_text) + "' is not a number");
      return std::nullopt;
    }
    port = port * 10 + static_cast<uint32_t>(c - '0');
    if (port > 65535) {
      set_why(why, "port '" + std::string(port_text) + "' is out of range 0..65535");
      return std::nullopt;
    }
  }
  address.port = static_cast<uint16_t>(port);
  return address;
}

std::string format_duration(Duration d) {
  const Duration::rep millis = d.count();
  if (millis == 0) return "0s";
  struct Unit {
    Duration::rep millis;
    const char* suffix;
  };
  static constexpr std::array<Unit, 3> kUnits{{{3600000, "h"}, {60000, "m"}, {1000, "s"}}};
  for (const Unit& unit : kUnits) {
    if (millis % unit.millis == 0) return std::to_string(millis / unit.millis) + unit.suffix;
  }
  return std::to_string(millis) + "ms";
}

std::string format_size(uint64_t bytes) {
  if (bytes == 0) return "0B";
  struct Unit {
    uint64_t bytes;
    const char* suffix;
  };
  static constexpr std::array<Unit, 3> kUnits{
      {{uint64_t{1} << 30, "GiB"}, {uint64_t{1} << 20, "MiB"}, {uint64_t{1} << 10, "KiB"}}};
  for (const Unit& unit : kUnits) {
    if (bytes % unit.bytes == 0) return std::to_string(bytes / unit.bytes) + unit.suffix;
  }
  return std::to_string(bytes) + "B";
}

std::string format_decimal(double value) {
  // Without an exponent, as parse_decimal reads it; a value too large for the buffer (none the
  // loader accepts) falls back to the shortest form with an exponent, which always fits.
  std::array<char, 64> buffer{};
  char* const first = buffer.data();
  char* const last = first + buffer.size();
  auto result = std::to_chars(first, last, value, std::chars_format::fixed);
  if (result.ec != std::errc()) result = std::to_chars(first, last, value);
  return std::string(first, result.ptr);
}

std::string format_status_range(const StatusRange& range) {
  if (range.min == range.max) return std::to_string(range.min);
  return std::to_string(range.min) + "-" + std::to_string(range.max);
}

}  // namespace bulwark::config
