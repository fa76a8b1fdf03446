#pragma once
// Parsing of the value syntaxes used in the config: durations, sizes, socket addresses.

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

std::string format_duration(Duration d);  // "250ms", "1s", "2m" ... the shortest exact form
std::string format_size(uint64_t bytes);  // "60KiB" when exact, else "123B"

}  // namespace bulwark::config
