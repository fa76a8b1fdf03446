#pragma once
// The effective config as JSON, for the admin listener's GET /config.

#include <string>
#include <string_view>

#include "config/config.h"

namespace bulwark::config {

// The whole effective config, defaults applied, as one line of compact JSON. Durations and sizes
// are written the way the YAML accepts them ("1s", "60KiB"), retry conditions as their YAML names;
// an absent optional value or policy (bulkhead, rate_limit, fault, circuit_breaker, health_check,
// outlier_detection) is null, and so is a health check's unhealthy_interval when it is the
// interval. A null outlier_detection still means implicit_outlier_detection() is in force.
std::string to_json(const Config& config);
// One route or cluster as it appears in to_json(Config): also how a reload tells whether a route
// or cluster changed (same JSON: unchanged, so its state carries over).
std::string to_json(const RouteConfig& route);
std::string to_json(const ClusterConfig& cluster);

// Appends `s` to `out` as a JSON string literal, with quotes and escapes. Shared by every JSON
// writer in bulwark (logs, admin) so escaping lives in one place. '"' and '\\' get a backslash;
// control characters (below 0x20, and 0x7f) are written as \u00XX; valid UTF-8 passes through
// unchanged, and each byte that is not part of valid UTF-8 becomes \ufffd, so the output is always
// valid JSON whatever bytes a client sent.
void append_json_string(std::string& out, std::string_view s);

}  // namespace bulwark::config
