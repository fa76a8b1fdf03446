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
  kTooManyHeaders,
  kHttpVersionNotSupported,
  kStreamIdleTimeout,
  kRequestTimeout,
  kUpstreamTlsFailure,
  kTlsOnPlaintextPort,
  kNoOriginalDestination,
  kAdaptiveConcurrencyLimited,
  kCount,
};

struct LocalReasonInfo {
  std::string_view token;
  int status;
  std::string_view flag;  // the access log's response flag
};

inline constexpr LocalReasonInfo kLocalReasons[] = {
    {"no_route", 404, "NR"},
    {"bad_request", 400, "DPE"},
    {"headers_too_large", 431, "DPE"},
    {"request_headers_timeout", 408, "RT"},
    {"upstream_connect_failure", 503, "UF"},
    {"upstream_reset", 502, "UR"},
    {"upstream_protocol_error", 502, "UPE"},
    {"upstream_timeout", 504, "UT"},
    {"no_endpoints", 503, "NE"},
    {"pool_exhausted", 503, "PO"},
    {"pool_timeout", 503, "PO"},
    {"not_implemented", 501, "DPE"},
    {"circuit_open", 503, "UO"},
    {"bulkhead_full", 503, "BH"},
    {"queue_timeout", 503, "BH"},
    {"rate_limited", 429, "RL"},
    {"fault_abort", 503, "FI"},                  // the status is the configured (or requested) one
    {"no_healthy_endpoints", 503, "NH"},         // the cluster has endpoints, but none is routable
    {"too_many_headers", 431, "DPE"},            // more header fields than max_request_headers
    {"http_version_not_supported", 505, "DPE"},  // a request line of HTTP/2 or later
    {"stream_idle_timeout", 408, "SI"},          // no byte moved for stream_idle_timeout (504 when
                                                 // the upstream, not the client, went quiet)
    {"request_timeout", 408, "RT"},              // the route or try timeout passed while the client
                                                 // was still sending its request
    {"upstream_tls_failure", 502, "UF"},         // the TLS handshake with the upstream failed
                                                 // (the access log's try says why: tls:REASON)
    {"tls_on_plaintext_port", 400, "DPE"},       // a TLS ClientHello on a plaintext listener
    {"no_original_destination", 503, "NE"},      // an original_destination cluster, and the
                                                 // connection was not redirected by iptables
    {"adaptive_concurrency_limited", 503, "AC"},  // the cluster's adaptive limit of requests in
                                                  // flight is reached
};
static_assert(std::size(kLocalReasons) == static_cast<size_t>(LocalReason::kCount));

inline const LocalReasonInfo& info(LocalReason r) { return kLocalReasons[static_cast<size_t>(r)]; }

}  // namespace bulwark
