#include "config/config.h"

namespace bulwark::config {

std::string SocketAddress::text() const {
  std::string out;
  // Only an IPv6 literal contains a colon; it needs brackets so the port stays unambiguous.
  const bool bracket = host.find(':') != std::string::npos;
  out.reserve(host.size() + 8);
  if (bracket) out += '[';
  out += host;
  if (bracket) out += ']';
  out += ':';
  out += std::to_string(port);
  return out;
}

const ClusterConfig* Config::find_cluster(std::string_view name) const {
  for (const ClusterConfig& cluster : clusters) {
    if (cluster.name == name) return &cluster;
  }
  return nullptr;
}

const OutlierDetectionConfig& implicit_outlier_detection() {
  static const OutlierDetectionConfig kImplicit = [] {
    OutlierDetectionConfig c;
    c.consecutive_5xx = 0;
    c.consecutive_gateway_failure = 0;
    c.failure_percent = 0;
    c.implicit = true;
    return c;
  }();
  return kImplicit;
}

const char* to_string(LbPolicy lb) {
  switch (lb) {
    case LbPolicy::kRoundRobin:
      return "round_robin";
    case LbPolicy::kLeastRequest:
      return "least_request";
    case LbPolicy::kRandom:
      return "random";
  }
  return "unknown";
}

const char* to_string(ClusterType type) {
  return type == ClusterType::kOriginalDestination ? "original_destination" : "static";
}

const char* to_string(ListenerDirection direction) {
  return direction == ListenerDirection::kOutbound ? "outbound" : "inbound";
}

const char* to_string(AccessLogFormat format) {
  return format == AccessLogFormat::kText ? "text" : "json";
}

const char* to_string(TlsVersion version) {
  switch (version) {
    case TlsVersion::k1_2:
      return "1.2";
    case TlsVersion::k1_3:
      return "1.3";
  }
  return "unknown";
}

const char* to_string(ForwardClientCert mode) {
  switch (mode) {
    case ForwardClientCert::kSanitize:
      return "sanitize";
    case ForwardClientCert::kSanitizeSet:
      return "sanitize_set";
    case ForwardClientCert::kAppendForward:
      return "append_forward";
  }
  return "unknown";
}

}  // namespace bulwark::config
