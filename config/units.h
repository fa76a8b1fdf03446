#pragma once
// Parsing of the value syntaxes used in the config: durations, sizes, decimals, percentages,
// HTTP status ranges, socket addresses, and the names of retry conditions.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"

namespace bulwark::config {

// "250ms", "1s", "2m", "1h", "0s". Units: ms, s, m, h. Integers only; no sign.
std::optional<Duration> parse_duration(std::string_view text);

// "512B", "64KiB", "1MiB", "1GiB"; a bare integer means bytes.
std::optional<uint64_t> parse_size(std::string_view text);

// "127.0.0.1:8080", "[::1]:8080", "app.internal:9001", "0.0.0.0:0". Port 0..65535 (0 = pick one,
// only meaningful for listeners). On failure returns nullopt and sets *why to a short reason.
std::optional<SocketAddress> parse_address(std::string_view text, std::string* why = nullptr);

// "10", "0.5", "99.25": digits with an optional fraction after a dot. No sign, no exponent.
std::optional<double> parse_decimal(std::string_view text);

// "10%", "12.5%": a decimal as parse_decimal reads it, then a '%' sign (required). The number is
// returned without a range check: "250%" gives 250.
std::optional<double> parse_percent(std::string_view text);

// "200-399" or one status "204": one or two unsigned integers joined by '-', without spaces. Only
// the syntax is checked here, not whether the statuses are valid or in order.
std::optional<StatusRange> parse_status_range(std::string_view text);

// The YAML name of each RetryOn bit, in bit order.
struct RetryOnName {
  uint32_t bit;
  std::string_view name;
};
inline constexpr std::array<RetryOnName, 6> kRetryOnNames{{
    {kRetryOnConnectFailure, "connect-failure"},
    {kRetryOnReset, "reset"},
    {kRetryOnGatewayError, "gateway-error"},
    {kRetryOn5xx, "5xx"},
    {kRetryOnRetriableStatusCodes, "retriable-status-codes"},
    {kRetryOnPerTryTimeout, "per-try-timeout"},
}};

std::string format_duration(Duration d);   // "250ms", "1s", "2m" ... the shortest exact form
std::string format_size(uint64_t bytes);   // "60KiB" when exact, else "123B"
std::string format_decimal(double value);  // shortest exact, no exponent: "0.2", "100"
std::string format_status_range(const StatusRange& range);  // "200-399", or "204" when min == max

}  // namespace bulwark::config
