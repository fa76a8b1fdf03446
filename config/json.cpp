#include "config/json.h"

#include <optional>
#include <string>
#include <vector>

#include "config/json_writer.h"
#include "config/units.h"

namespace bulwark::config {

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not valid
// UTF-8 (stray continuation byte, overlong form, surrogate, beyond U+10FFFF, or truncated).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char lead = byte(i);
  size_t length = 0;
  unsigned char min_second = 0x80;
  unsigned char max_second = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) min_second = 0xA0;  // overlong
    if (lead == 0xED) max_second = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) min_second = 0x90;  // overlong
    if (lead == 0xF4) max_second = 0x8F;  // beyond U+10FFFF
  } else {
    return 0;
  }
  if (i + length > s.size()) return 0;
  if (byte(i + 1) < min_second || byte(i + 1) > max_second) return 0;
  for (size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return length;
}

// Writes `key`: the string, or null when it is empty (a default such as "any host").
void string_or_null(JsonWriter& w, std::string_view key, std::string_view value) {
  w.key(key);
  if (value.empty()) {
    w.null();
  } else {
    w.string(value);
  }
}

// Writes `key`: the object `write` writes for a present value, or null.
template <typename T, typename WriteFn>
void member_or_null(JsonWriter& w, std::string_view key, const std::optional<T>& value,
                    WriteFn write) {
  w.key(key);
  if (!value) {
    w.null();
    return;
  }
  w.begin_object();
  write(*value);
  w.end_object();
}

void write_retry(JsonWriter& w, const RetryConfig& retry) {
  w.begin_object();
  w.member("attempts", uint64_t{retry.attempts});
  w.member("per_try_timeout", format_duration(retry.per_try_timeout));
  w.key("retry_on");
  w.begin_array();
  for (const RetryOnName& name : kRetryOnNames) {
    if ((retry.retry_on & name.bit) != 0) w.string(name.name);
  }
  w.end_array();
  w.key("retriable_status_codes");
  w.begin_array();
  for (int code : retry.retriable_status_codes) w.number(static_cast<uint64_t>(code));
  w.end_array();
  w.key("backoff");
  w.begin_object();
  w.member("base", format_duration(retry.backoff_base));
  w.member("max", format_duration(retry.backoff_max));
  w.end_object();
  w.member("retry_non_idempotent", retry.retry_non_idempotent);
  w.member("max_body_bytes", format_size(retry.max_body_bytes));
  w.key("budget");
  w.begin_object();
  w.member("enabled", retry.budget.enabled);
  w.member("ratio", retry.budget.ratio);
  w.member("min_retries_per_second", uint64_t{retry.budget.min_retries_per_second});
  w.member("window", format_duration(retry.budget.window));
  w.end_object();
  w.key("hedge");
  if (!retry.hedge) {
    w.null();
  } else {
    w.begin_object();
    w.member("delay", retry.hedge->auto_delay ? std::string("auto")
                                              : format_duration(retry.hedge->delay));
    w.member("max_hedges", uint64_t{retry.hedge->max_hedges});
    w.end_object();
  }
  w.end_object();
}

void write_route_policies(JsonWriter& w, const RouteConfig& route) {
  w.key("retry");
  write_retry(w, route.retry);
  member_or_null(w, "bulkhead", route.bulkhead, [&](const BulkheadConfig& bulkhead) {
    w.member("max_concurrent", uint64_t{bulkhead.max_concurrent});
    w.member("max_queued", uint64_t{bulkhead.max_queued});
    w.member("queue_timeout", format_duration(bulkhead.queue_timeout));
  });
  member_or_null(w, "rate_limit", route.rate_limit, [&](const RateLimitConfig& limit) {
    w.member("requests_per_second", limit.requests_per_second);
    w.member("burst", uint64_t{limit.burst});
  });
  member_or_null(w, "fault", route.fault, [&](const FaultConfig& fault) {
    member_or_null(w, "delay", fault.delay, [&](const FaultDelayConfig& delay) {
      w.member("percent", delay.percent);
      w.member("duration", format_duration(delay.duration));
    });
    member_or_null(w, "abort", fault.abort, [&](const FaultAbortConfig& abort) {
      w.member("percent", abort.percent);
      w.member("status", static_cast<uint64_t>(abort.status));
    });
    w.member("header_control", fault.header_control);
  });
}

void write_route(JsonWriter& w, const RouteConfig& route);

void write_strings(JsonWriter& w, std::string_view key, const std::vector<std::string>& values) {
  w.key(key);
  w.begin_array();
  for (const std::string& value : values) w.string(value);
  w.end_array();
}

// As written in the YAML: a prefix match with its trailing '*'.
void write_sans(JsonWriter& w, std::string_view key, const std::vector<SanMatch>& sans) {
  w.key(key);
  w.begin_array();
  for (const SanMatch& san : sans) w.string(san.prefix ? san.value + "*" : san.value);
  w.end_array();
}

// The paths of the PEM files, not their contents.
void write_listener_tls(JsonWriter& w, const ListenerTlsConfig& tls) {
  w.key("certificates");
  w.begin_array();
  for (const TlsCertificateConfig& certificate : tls.certificates) {
    w.begin_object();
    w.member("cert", certificate.cert);
    w.member("key", certificate.key);
    w.end_object();
  }
  w.end_array();
  w.member("min_version", to_string(tls.min_version));
  string_or_null(w, "ciphers", tls.ciphers);  // null: OpenSSL's default
  write_strings(w, "alpn", tls.alpn);
  string_or_null(w, "client_ca", tls.client_ca);
  w.member("require_client_certificate", tls.require_client_certificate);
  write_sans(w, "allowed_client_sans", tls.allowed_client_sans);
  w.member("forward_client_cert", to_string(tls.forward_client_cert));
}

void write_cluster_tls(JsonWriter& w, const ClusterTlsConfig& tls) {
  if (!tls.verify)
    w.member("warning", "TLS verification is off: any server certificate is accepted");
  string_or_null(w, "sni", tls.sni);  // null: each endpoint's DNS name
  string_or_null(w, "ca", tls.ca);    // null: the system trust store
  w.member("verify", tls.verify);
  w.member("verify_hostname", tls.verify_hostname);
  write_sans(w, "allowed_server_sans", tls.allowed_server_sans);
  string_or_null(w, "cert", tls.cert);
  string_or_null(w, "key", tls.key);
  w.member("min_version", to_string(tls.min_version));
  write_strings(w, "alpn", tls.alpn);
}

void write_listener(JsonWriter& w, const ListenerConfig& listener) {
  w.begin_object();
  w.member("name", listener.name);
  w.member("address", listener.address.text());
  w.member("direction", to_string(listener.direction));
  w.member("original_destination", listener.original_destination);
  w.member("request_headers_timeout", format_duration(listener.request_headers_timeout));
  w.member("idle_timeout", format_duration(listener.idle_timeout));
  w.member("stream_idle_timeout", format_duration(listener.stream_idle_timeout));
  w.member("max_request_headers_size", format_size(listener.max_request_headers_size));
  w.member("max_request_headers", uint64_t{listener.max_request_headers});
  w.member("trusted_hops", uint64_t{listener.trusted_hops});
  w.member("max_connections", uint64_t{listener.max_connections});
  member_or_null(w, "tls", listener.tls,
                 [&](const ListenerTlsConfig& tls) { write_listener_tls(w, tls); });
  w.key("routes");
  w.begin_array();
  for (const RouteConfig& route : listener.routes) write_route(w, route);
  w.end_array();
  w.end_object();
}

void write_route(JsonWriter& w, const RouteConfig& route) {
  w.begin_object();
  w.member("name", route.name);
  w.key("match");
  w.begin_object();
  switch (route.match.path.kind) {
    case PathMatch::Kind::kPrefix:
      w.member("prefix", route.match.path.value);
      break;
    case PathMatch::Kind::kExact:
      w.member("path", route.match.path.value);
      break;
    case PathMatch::Kind::kRegex:
      w.member("regex", route.match.path.value);
      break;
  }
  string_or_null(w, "host", (route.match.host.wildcard ? "*" : "") + route.match.host.value);
  w.key("headers");
  w.begin_object();
  for (const HeaderMatch& header : route.match.headers) w.member(header.name, header.value);
  w.end_object();
  w.key("methods");
  w.begin_array();
  for (const std::string& method : route.match.methods) w.string(method);
  w.end_array();
  w.end_object();
  w.member("cluster", route.cluster);
  w.member("timeout", format_duration(route.timeout));
  string_or_null(w, "prefix_rewrite", route.prefix_rewrite.value_or(""));  // never "" when set
  string_or_null(w, "host_rewrite",
                 route.host_rewrite_mode == RouteConfig::HostRewrite::kAuto ? std::string("auto")
                                                                            : route.host_rewrite);
  w.key("upgrades");
  w.begin_array();
  for (const std::string& protocol : route.upgrades) w.string(protocol);
  w.end_array();
  write_route_policies(w, route);
  w.end_object();
}

void write_cluster(JsonWriter& w, const ClusterConfig& cluster) {
  w.begin_object();
  w.member("name", cluster.name);
  w.member("type", to_string(cluster.type));
  w.key("endpoints");
  w.begin_array();
  for (const EndpointConfig& endpoint : cluster.endpoints) {
    w.begin_object();
    w.member("address", endpoint.address.text());
    w.member("weight", uint64_t{endpoint.weight});
    w.member("priority", uint64_t{endpoint.priority});
    w.end_object();
  }
  w.end_array();
  w.member("dns_refresh", format_duration(cluster.dns_refresh));
  w.member("lb", to_string(cluster.lb));
  w.member("connect_timeout", format_duration(cluster.connect_timeout));
  w.key("pool");
  w.begin_object();
  w.member("max_connections", uint64_t{cluster.pool.max_connections});
  w.member("idle_timeout", format_duration(cluster.pool.idle_timeout));
  w.member("max_requests_per_connection", uint64_t{cluster.pool.max_requests_per_connection});
  w.member("max_pending", uint64_t{cluster.pool.max_pending});
  w.member("pending_timeout", format_duration(cluster.pool.pending_timeout));
  w.end_object();
  member_or_null(w, "circuit_breaker", cluster.circuit_breaker,
                 [&](const CircuitBreakerConfig& breaker) {
                   w.member("failure_rate_percent", uint64_t{breaker.failure_rate_percent});
                   w.member("slow_call_duration", format_duration(breaker.slow_call_duration));
                   w.member("slow_call_rate_percent", uint64_t{breaker.slow_call_rate_percent});
                   w.member("window", format_duration(breaker.window));
                   w.member("minimum_calls", uint64_t{breaker.minimum_calls});
                   w.member("open_duration", format_duration(breaker.open_duration));
                   w.member("max_open_duration", format_duration(breaker.max_open_duration));
                   w.member("half_open_calls", uint64_t{breaker.half_open_calls});
                 });
  member_or_null(w, "health_check", cluster.health_check, [&](const HealthCheckConfig& check) {
    w.member("path", check.path);
    w.member("tcp", check.tcp);
    string_or_null(w, "host", check.host);
    w.member("interval", format_duration(check.interval));
    w.member("interval_jitter_percent", check.interval_jitter_percent);
    w.member("timeout", format_duration(check.timeout));
    w.member("healthy_threshold", uint64_t{check.healthy_threshold});
    w.member("unhealthy_threshold", uint64_t{check.unhealthy_threshold});
    // 0 (null) means the same as interval.
    string_or_null(
        w, "unhealthy_interval",
        check.unhealthy_interval.count() == 0 ? "" : format_duration(check.unhealthy_interval));
    w.key("expected_statuses");
    w.begin_array();
    for (const StatusRange& range : check.expected_statuses) w.string(format_status_range(range));
    w.end_array();
    w.key("tls");  // null: as the cluster's traffic
    if (check.tls) {
      w.boolean(*check.tls);
    } else {
      w.null();
    }
  });
  member_or_null(w, "outlier_detection", cluster.outlier_detection,
                 [&](const OutlierDetectionConfig& outlier) {
                   w.member("consecutive_5xx", uint64_t{outlier.consecutive_5xx});
                   w.member("consecutive_gateway_failure",
                            uint64_t{outlier.consecutive_gateway_failure});
                   w.member("consecutive_local_origin_failure",
                            uint64_t{outlier.consecutive_local_origin_failure});
                   w.member("uneject_on_health_check_pass", outlier.uneject_on_health_check_pass);
                   w.member("base_ejection_time", format_duration(outlier.base_ejection_time));
                   w.member("max_ejection_time", format_duration(outlier.max_ejection_time));
                   w.member("max_ejection_percent", uint64_t{outlier.max_ejection_percent});
                   w.member("failure_percent", uint64_t{outlier.failure_percent});
                   w.member("failure_percent_minimum_requests",
                            uint64_t{outlier.failure_percent_minimum_requests});
                   w.member("interval", format_duration(outlier.interval));
                   member_or_null(w, "success_rate", outlier.success_rate,
                                  [&](const OutlierDetectionConfig::SuccessRate& sr) {
                                    w.member("minimum_hosts", uint64_t{sr.minimum_hosts});
                                    w.member("request_volume", uint64_t{sr.request_volume});
                                    w.member("stdev_factor", sr.stdev_factor);
                                  });
                 });
  member_or_null(w, "adaptive_concurrency", cluster.adaptive_concurrency,
                 [&](const AdaptiveConcurrencyConfig& ac) {
                   w.member("min_limit", uint64_t{ac.min_limit});
                   w.member("max_limit", uint64_t{ac.max_limit});
                   w.member("sample_window", format_duration(ac.sample_window));
                   w.member("min_rtt_interval", format_duration(ac.min_rtt_interval));
                   w.member("jitter_percent", ac.jitter_percent);
                   w.member("min_rtt_samples", uint64_t{ac.min_rtt_samples});
                   w.member("buffer_percent", ac.buffer_percent);
                 });
  member_or_null(w, "slow_start", cluster.slow_start, [&](const SlowStartConfig& slow) {
    w.member("window", format_duration(slow.window));
    w.member("aggression", slow.aggression);
    w.member("min_weight_percent", uint64_t{slow.min_weight_percent});
  });
  w.member("panic_threshold_percent", uint64_t{cluster.panic_threshold_percent});
  w.member("max_response_headers", uint64_t{cluster.max_response_headers});
  member_or_null(w, "tls", cluster.tls,
                 [&](const ClusterTlsConfig& tls) { write_cluster_tls(w, tls); });
  w.end_object();
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t length = utf8_sequence_length(s, i);
      if (length == 0) {
        out += "\\ufffd";  // one replacement character per invalid byte keeps the output valid
        ++i;
      } else {
        out.append(s.substr(i, length));
        i += length;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xf];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

std::string to_json(const RouteConfig& route) {
  JsonWriter w;
  write_route(w, route);
  return w.take();
}

std::string to_json(const ClusterConfig& cluster) {
  JsonWriter w;
  write_cluster(w, cluster);
  return w.take();
}

std::string to_json(const Config& config) {
  JsonWriter w;
  w.begin_object();
  w.member("source_file", config.source_file);
  w.member("workers", uint64_t{config.workers});
  w.member("max_connections", uint64_t{config.max_connections});
  w.key("admin");
  w.begin_object();
  w.member("address", config.admin.address.text());
  if (!config.admin.token_file.empty()) w.member("token_file", config.admin.token_file);
  w.end_object();
  if (config.probes) {
    w.key("probes");
    w.begin_object();
    w.member("address", config.probes->address.text());
    w.end_object();
  }
  w.member("watchdog", format_duration(config.watchdog));
  w.member("drain_delay", format_duration(config.drain_delay));
  w.member("drain_timeout", format_duration(config.drain_timeout));
  w.key("listeners");
  w.begin_array();
  for (const ListenerConfig& listener : config.listeners) write_listener(w, listener);
  w.end_array();
  w.key("clusters");
  w.begin_array();
  for (const ClusterConfig& cluster : config.clusters) write_cluster(w, cluster);
  w.end_array();
  w.key("readiness");
  w.begin_object();
  w.key("require_healthy");
  w.begin_array();
  for (const std::string& name : config.readiness.require_healthy) w.string(name);
  w.end_array();
  w.end_object();
  w.member("watch_config", config.watch_config);
  if (config.access_log) {
    w.key("access_log");
    w.begin_object();
    w.member("path", config.access_log->path);
    w.member("format", to_string(config.access_log->format));
    w.member("sample_percent", config.access_log->sample_percent);
    w.end_object();
  }
  w.end_object();
  return w.take();
}

}  // namespace bulwark::config
