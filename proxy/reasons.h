#pragma once
// Why bulwark answered a request itself. Every local reply carries its status, the token in an
// `x-bulwark-reason` header, and the same token in logs and in bulwark_local_replies_total.
// Tokens are a stable interface: add new ones, never rename.

#include <cstddef>
#include <string_view>

namespace bulwark {

enum class LocalReason : unsigned char {
  kNoRoute,
  kBadRequest,
  kHeadersTooLarge,
  kRequestHeadersTimeout,
  kUpstreamConnectFailure,
  kUpstreamReset,
  kUpstreamProtocolError,
  kUpstreamTimeout,
  kNoEndpoints,
  kPoolExhausted,
  kPoolTimeout,
  kNotImplemented,
  kCircuitOpen,
  kBulkheadFull,
  kQueueTimeout,
  kRateLimited,
  kFaultAbort,
  kNoHealthyEndpoints,
  kCount,
};

struct LocalReasonInfo {
  std::string_view token;
  int status;
};

inline constexpr LocalReasonInfo kLocalReasons[] = {
    {"no_route", 404},
    {"bad_request", 400},
    {"headers_too_large", 431},
    {"request_headers_timeout", 408},
    {"upstream_connect_failure", 503},
    {"upstream_reset", 502},
    {"upstream_protocol_error", 502},
    {"upstream_timeout", 504},
    {"no_endpoints", 503},
    {"pool_exhausted", 503},
    {"pool_timeout", 503},
    {"not_implemented", 501},
    {"circuit_open", 503},
    {"bulkhead_full", 503},
    {"queue_timeout", 503},
    {"rate_limited", 429},
    {"fault_abort", 503},           // the status is the configured (or requested) one
    {"no_healthy_endpoints", 503},  // the cluster has endpoints, but none is routable
};
static_assert(std::size(kLocalReasons) == static_cast<size_t>(LocalReason::kCount));

inline const LocalReasonInfo& info(LocalReason r) { return kLocalReasons[static_cast<size_t>(r)]; }

}  // namespace bulwark
