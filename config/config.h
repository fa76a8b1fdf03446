#pragma once
// The effective configuration as plain, immutable structs.
//
// The loader (loader.h) builds a Config from YAML, checking every field once; the rest of bulwark
// only ever reads these structs and never touches YAML. A Config is shared as
// std::shared_ptr<const Config> so a reload can swap it while in-flight requests keep the one they
// started with.
//
// What a Config from the loader guarantees, so runtime code need not check again: every name is
// non-empty and unique in its scope; listener and admin addresses are IP literals, and no two of
// them (admin included) share a port on the same or an unspecified host unless the port is 0;
// endpoint ports are 1..65535; RouteConfig::cluster_index is a valid index; every Duration is
// greater than zero except Config::drain_delay, Config::drain_timeout, RouteConfig::timeout and
// RetryConfig::per_try_timeout, where 0 means "none"; a route without a path matcher has prefix
// "/". The resilience policies below are range-checked as their comments say.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace re2 {
class RE2;
}  // namespace re2

namespace bulwark::config {

using Duration = std::chrono::milliseconds;

// Where a value came from, for error messages (1-based line and column).
struct SourceLocation {
  std::string file;
  int line = 0;
  int column = 0;
};

// host:port as written. `host` has no brackets for IPv6 ("::1"). `is_ip` is true when host is a
// numeric IPv4/IPv6 literal; otherwise it is a DNS name resolved at run time, without blocking.
struct SocketAddress {
  std::string host;
  uint16_t port = 0;
  bool is_ip = false;
  std::string text() const;  // "127.0.0.1:80", "[::1]:80", "app.internal:9001"
};

// The admin listener: every admin endpoint. Those that change state (POST) answer only to a
// peer on loopback, or to a request carrying `Authorization: Bearer <token>` with the contents
// of token_file (read at each such request, so a rotated Secret takes effect at once).
struct AdminConfig {
  SocketAddress address{"127.0.0.1", 9901, true};
  std::string token_file;  // empty: no token; only loopback peers may change state
  SourceLocation token_location;
};

// The probes listener: GET /healthz, /ready and /metrics only, for the kubelet and Prometheus,
// so the admin listener can stay on loopback.
struct ProbesConfig {
  SocketAddress address{"0.0.0.0", 9902, true};
};

// How a route matches a request path. Exactly one of prefix / path / regex is set in YAML.
// A regex is RE2 syntax, searched anywhere in the path (RE2::PartialMatch): matching takes time
// linear in the path, and the loader rejects a pattern whose compiled program is bigger than its
// cap, so no path can make a worker backtrack or recurse.
struct PathMatch {
  enum class Kind { kPrefix, kExact, kRegex };
  Kind kind = Kind::kPrefix;
  std::string value;                      // the prefix, exact path or regex source
  std::shared_ptr<const re2::RE2> regex;  // compiled once, when kind == kRegex; thread-safe
};

// Host match: exact ("api.example.com") or a leading wildcard ("*.example.com", which matches
// "a.example.com" and "a.b.example.com" but not "example.com"). Compared case-insensitively,
// without the port. Empty means any host.
struct HostMatch {
  std::string value;  // lowercased; for a wildcard, the suffix including the dot: ".example.com"
  bool wildcard = false;
  bool empty() const { return value.empty(); }
};

struct HeaderMatch {
  std::string name;   // lowercased
  std::string value;  // exact
};

struct RouteMatch {
  PathMatch path;  // default: prefix "/"
  HostMatch host;
  std::vector<HeaderMatch> headers;  // all must match
  std::vector<std::string> methods;  // uppercased; empty = any
};

// ---- Resilience policies (filters/) ----

// When a failed try may be retried. YAML names in quotes.
enum RetryOn : uint32_t {
  kRetryOnConnectFailure = 1u << 0,  // "connect-failure": refused, unreachable, connect timeout
  kRetryOnReset = 1u << 1,           // "reset": connection lost before the full response head
  kRetryOnGatewayError = 1u << 2,    // "gateway-error": 502, 503, 504
  kRetryOn5xx = 1u << 3,             // "5xx": any 5xx (and everything gateway-error covers)
  kRetryOnRetriableStatusCodes = 1u << 4,  // "retriable-status-codes": the listed statuses
  kRetryOnPerTryTimeout = 1u << 5,  // "per-try-timeout": no response head within per_try_timeout
};
inline constexpr uint32_t kDefaultRetryOn =
    kRetryOnConnectFailure | kRetryOnReset | kRetryOnGatewayError;

// Retries may add at most `ratio` of the original requests over `window`, but always at least
// `min_retries_per_second` × window seconds.
struct RetryBudgetConfig {
  bool enabled = true;
  double ratio = 0.2;  // 0..1
  uint32_t min_retries_per_second = 10;
  Duration window{10000};
};

// A route's retry policy. A route without `retry:` gets these defaults (attempts 2).
// retry.hedge: when a re-sendable request has no response head after `delay`, another try starts
// on another endpoint; the first head wins and the other tries are cancelled. At namespace scope
// (not nested in RetryConfig): clang cannot default-construct a nested struct with member
// initializers inside its enclosing class's definition.
struct HedgeConfig {
  Duration delay{50};       // > 0; ignored with auto_delay
  bool auto_delay = false;  // `delay: auto`: the route's observed p95 time to a response head
  uint32_t max_hedges = 1;  // 1..3, and fewer than attempts: each hedge is a try
};

struct RetryConfig {
  uint32_t attempts = 2;                    // total tries including the first, 1..10; 1 = no retry
  Duration per_try_timeout{0};              // time to the response head of each try; 0 = none
  uint32_t retry_on = kDefaultRetryOn;      // RetryOn bits
  std::vector<int> retriable_status_codes;  // each 100..599
  Duration backoff_base{25};                // exponential backoff with full jitter, base <= max
  Duration backoff_max{250};
  bool retry_non_idempotent = false;  // re-send POST/PATCH/... after bytes went out
  size_t max_body_bytes = 64 * 1024;  // request bodies up to this are kept for re-sending
  RetryBudgetConfig budget;
  std::optional<HedgeConfig> hedge;  // none: no hedging
};

// Route bulkhead: at most max_concurrent requests in flight, max_queued more wait (FIFO) up to
// queue_timeout.
struct BulkheadConfig {
  uint32_t max_concurrent = 100;  // >= 1
  uint32_t max_queued = 0;        // 0 = no queue: reject at once
  Duration queue_timeout{1000};
};

// Token bucket over all workers: refills at requests_per_second, holds up to burst.
struct RateLimitConfig {
  double requests_per_second = 100;  // > 0
  uint32_t burst = 1;                // >= 1
};

struct FaultDelayConfig {
  double percent = 0;  // 0..100
  Duration duration{1000};
};
struct FaultAbortConfig {
  double percent = 0;  // 0..100
  int status = 503;    // 200..599
};
struct FaultConfig {
  std::optional<FaultDelayConfig> delay;
  std::optional<FaultAbortConfig> abort;
  bool header_control = false;  // x-bulwark-fault-delay-ms / x-bulwark-fault-abort
};

struct RouteConfig {
  std::string name;
  RouteMatch match;
  std::string cluster;       // name of the target cluster
  size_t cluster_index = 0;  // index into Config::clusters, resolved by the loader
  Duration timeout{15000};   // the whole request; 0 = none
  std::optional<std::string> prefix_rewrite;
  // The Host the upstream sees: the client's (kNone), `host_rewrite` as written (kLiteral), or
  // the chosen endpoint's name as configured, without the scheme's default port (kAuto), so a
  // dependency reached through an outbound listener on 127.0.0.1 sees its own name.
  enum class HostRewrite : uint8_t { kNone, kLiteral, kAuto };
  HostRewrite host_rewrite_mode = HostRewrite::kNone;
  std::string host_rewrite;  // kLiteral: a host, host:port, [v6] or [v6]:port
  RetryConfig retry;  // always present: the defaults apply without `retry:`
  std::optional<BulkheadConfig> bulkhead;
  std::optional<RateLimitConfig> rate_limit;
  std::optional<FaultConfig> fault;
  // Upgrade protocols (RFC 9110 7.8) passed through to the upstream, lowercased; any other
  // Upgrade (h2c above all) is removed and the request goes on as HTTP/1.1.
  std::vector<std::string> upgrades{"websocket"};
  SourceLocation location;
};

// ---- TLS (issue 14) ----

enum class TlsVersion { k1_2, k1_3 };  // YAML "1.2" | "1.3"

// A certificate chain (leaf first) and its private key, PEM files.
struct TlsCertificateConfig {
  std::string cert;
  std::string key;
  SourceLocation location;          // of the entry
  SourceLocation cert_at, key_at;  // of each path, for errors about that file
};

// What a listener does with an incoming X-Forwarded-Client-Cert (Envoy's names).
enum class ForwardClientCert {
  kSanitize,       // "sanitize": drop it; the app learns nothing of the client certificate
  kSanitizeSet,    // "sanitize_set": drop it, then set ours when the client sent a certificate
  kAppendForward,  // "append_forward": keep it and append ours (trust the peer's own header)
};

// A name a peer's certificate must carry: a URI or DNS SAN, exact, or with a trailing '*' a
// prefix ("spiffe://cluster.local/ns/ops/*").
struct SanMatch {
  std::string value;  // without the '*'
  bool prefix = false;
};

// TLS termination on a listener.
struct ListenerTlsConfig {
  // One or more; the handshake's SNI picks one (exact name, then *.wildcard, against each
  // certificate's DNS SANs), else the first.
  std::vector<TlsCertificateConfig> certificates;
  TlsVersion min_version = TlsVersion::k1_2;
  std::string ciphers;                       // OpenSSL cipher list for TLS 1.2; empty: default
  std::vector<std::string> alpn{"http/1.1"};  // protocols offered, in preference order
  std::string client_ca;                     // non-empty: ask for a client certificate, verify it
  bool require_client_certificate = true;    // with client_ca: no certificate = handshake fails
  std::vector<SanMatch> allowed_client_sans;  // empty: any certificate client_ca verifies
  ForwardClientCert forward_client_cert = ForwardClientCert::kSanitize;
  SourceLocation location;                // of the tls key
  SourceLocation client_ca_at, ciphers_at;  // of those values, for errors about them
};

// TLS origination to a cluster's endpoints.
struct ClusterTlsConfig {
  std::string sni;       // empty: the endpoint's DNS name (none for an IP endpoint)
  std::string ca;        // empty: the system trust store
  bool verify = true;    // false: no chain or name check (the loader warns)
  bool verify_hostname = true;  // check the name against sni (or the endpoint's DNS name)
  std::vector<SanMatch> allowed_server_sans;  // non-empty: instead of the hostname check
  std::string cert;  // client certificate (mTLS); cert and key are both set or both empty
  std::string key;
  TlsVersion min_version = TlsVersion::k1_2;
  std::vector<std::string> alpn{"http/1.1"};
  SourceLocation location;                  // of the tls key
  SourceLocation ca_at, cert_at, key_at;  // of each path, for errors about that file
};

// Which way a listener's traffic goes, for the shutdown in a pod: an inbound listener takes the
// service's callers and drains at once on SIGTERM; an outbound listener carries the app's own
// calls to its dependencies and keeps serving them while the app finishes its last requests,
// until POST /shutdown or drain_timeout.
enum class ListenerDirection : uint8_t { kInbound, kOutbound };

struct ListenerConfig {
  std::string name;
  SocketAddress address{"0.0.0.0", 8080, true};
  ListenerDirection direction = ListenerDirection::kInbound;
  // Transparent capture: the connections come redirected by iptables (bulwark iptables), and
  // each remembers where its client meant to go (SO_ORIGINAL_DST), for clusters of type
  // original_destination.
  bool original_destination = false;
  Duration request_headers_timeout{10000};
  Duration idle_timeout{300000};
  // An exchange under way in which no byte moved either way for this long ends (0 = never).
  Duration stream_idle_timeout{300000};
  size_t max_request_headers_size = 60 * 1024;
  uint32_t max_request_headers = 100;  // header fields in a request head; more: 431
  // Proxies in front of this listener whose forwarding headers are believed: with N > 0 the
  // incoming X-Forwarded-Proto and the last N addresses of X-Forwarded-For are kept (Envoy's
  // xff_num_trusted_hops); with 0 both are replaced by what this hop saw.
  uint32_t trusted_hops = 0;
  // Open client connections of this listener, all workers together; at the limit bulwark stops
  // accepting and new connections wait in the kernel's backlog. 0 = only the process limit.
  uint32_t max_connections = 0;
  std::optional<ListenerTlsConfig> tls;  // absent: plain HTTP
  std::vector<RouteConfig> routes;  // first match wins
  SourceLocation location;
};

struct EndpointConfig {
  SocketAddress address;
  uint32_t weight = 1;    // 1..10000
  uint32_t priority = 0;  // 0..127; traffic goes to the lowest group that can carry it
  SourceLocation location;
};

enum class LbPolicy { kRoundRobin, kLeastRequest, kRandom };

struct PoolConfig {
  uint32_t max_connections = 1024;  // upstream connections of the cluster, all workers together
  Duration idle_timeout{60000};     // an idle upstream connection is closed after this
  uint32_t max_requests_per_connection = 0;  // 0 = unlimited
  uint32_t max_pending = 1024;     // requests waiting for a connection, all workers together
  Duration pending_timeout{1000};  // how long a request may wait for a connection
};

// ---- Upstream health (issue 4) ----

// An inclusive range of HTTP statuses: "200-399", or one status "204" (min == max).
struct StatusRange {
  int min = 200;
  int max = 399;
};

// Active health checks, run off the worker loops on connections of their own.
struct HealthCheckConfig {
  std::string path = "/healthz";  // HTTP GET of this path (starts with '/')
  bool tcp = false;               // true: only check that a connection opens
  std::string host;               // Host header; empty: the endpoint's address
  Duration interval{5000};
  double interval_jitter_percent = 10;  // each wait is interval ± this share, 0..100
  Duration timeout{1000};
  uint32_t healthy_threshold = 2;    // consecutive successes to become healthy, >= 1
  uint32_t unhealthy_threshold = 3;  // consecutive failures to become unhealthy, >= 1
  Duration unhealthy_interval{0};    // the interval while unhealthy; 0 = `interval`
  std::vector<StatusRange> expected_statuses{{200, 399}};  // each within 100..599
  // Checks over TLS (the cluster's tls settings); absent: as the cluster's traffic. true on a
  // cluster without tls is a config error.
  std::optional<bool> tls;
};

// Passive outlier detection on real traffic (as Envoy's with split_external_local_origin_errors).
// Success rate (Envoy's success_rate), in outlier_detection: at the end of each `interval`, of
// the endpoints with at least request_volume tries in it (at least minimum_hosts of them, or
// nothing is judged), those whose share of successful tries is below mean - stdev_factor ×
// stdev of them all are ejected. Catches the replica that is merely worse than its peers.
struct SuccessRateConfig {
  uint32_t minimum_hosts = 5;     // >= 2
  uint32_t request_volume = 100;  // >= 1
  double stdev_factor = 1.9;      // > 0
};

struct OutlierDetectionConfig {
  uint32_t consecutive_5xx = 5;              // 0 = off
  uint32_t consecutive_gateway_failure = 3;  // try timeout, reset after bytes, 502/503/504; 0 = off
  // Local-origin failures in a row: the endpoint could not be reached (connect refused,
  // unreachable or timed out, or the connection closed before any response byte). Counted apart
  // from the two above; 0 = off, and then they count as gateway failures (and 5xx) instead.
  uint32_t consecutive_local_origin_failure = 3;
  // An ejected endpoint whose active health check passes comes back at once (as Envoy's
  // successful_active_health_check_uneject_host): at any passing check when it was ejected for
  // local-origin failures, at a passing check after a failed one otherwise.
  bool uneject_on_health_check_pass = true;
  Duration base_ejection_time{30000};  // × times ejected, up to max_ejection_time
  Duration max_ejection_time{300000};  // >= base_ejection_time
  uint32_t max_ejection_percent = 50;  // 0..100; one endpoint can always be ejected
  // Failure rate: eject an endpoint when at least failure_percent of its tries failed (5xx,
  // connect failure, reset, try timeout) over one `interval`, counting only intervals with at
  // least failure_percent_minimum_requests tries. Catches the replica that fails or stalls a
  // share of requests but never several in a row. 0 = off.
  uint32_t failure_percent = 0;                    // 0..100
  uint32_t failure_percent_minimum_requests = 20;  // >= 1
  Duration interval{10000};                        // > 0
  // Success rate (SuccessRateConfig, above). Present = on. (Declared outside: clang cannot
  // default-construct a nested struct with member initializers inside its enclosing class.)
  using SuccessRate = SuccessRateConfig;
  std::optional<SuccessRate> success_rate;
  // Not a key: true for the detection a cluster without an outlier_detection section gets
  // (implicit_outlier_detection()). Its max_ejection_percent is strict: unlike a configured one,
  // it never ejects a cluster's only endpoint.
  bool implicit = false;
};

// The outlier detection of a cluster without an outlier_detection section: local-origin
// failures only (consecutive_local_origin_failure 3, the other rules off), at most 50% of the
// endpoints and never the only one, and the other defaults above.
const OutlierDetectionConfig& implicit_outlier_detection();

// Closed / open / half-open over a sliding time window (as Resilience4j).
struct CircuitBreakerConfig {
  uint32_t failure_rate_percent = 50;     // 1..100
  Duration slow_call_duration{2000};      // a try whose response head takes longer is slow
  uint32_t slow_call_rate_percent = 100;  // 1..100
  Duration window{10000};
  uint32_t minimum_calls = 20;  // >= 1
  Duration open_duration{30000};
  Duration max_open_duration{300000};  // >= open_duration
  uint32_t half_open_calls = 5;        // >= 1
  bool operator==(const CircuitBreakerConfig&) const = default;
};

// static: the endpoints listed (IP addresses, or DNS names resolved in the background).
// original_destination: no list; each request goes to the address its client connected to
// before iptables redirected it (the route's listener needs original_destination: true).
enum class ClusterType : uint8_t { kStatic, kOriginalDestination };

// Adaptive concurrency (Envoy's gradient controller, Netflix concurrency-limits): a cluster's
// limit on requests in flight that follows its latency. See filters/adaptive_concurrency.h.
struct AdaptiveConcurrencyConfig {
  uint32_t min_limit = 4;               // >= 1
  uint32_t max_limit = 1000;            // >= min_limit
  Duration sample_window{250};          // > 0: the limit moves once per window
  Duration min_rtt_interval{30000};     // > 0: how often the minimum latency is measured again
  double jitter_percent = 10;           // 0..100: of min_rtt_interval, so replicas do not align
  uint32_t min_rtt_samples = 50;        // >= 1: latencies that make one minimum measurement
  double buffer_percent = 25;           // 0..100: latency above the minimum that is still fine
};

// Slow start (Envoy's slow_start_config, HAProxy's slowstart): an endpoint that becomes
// routable again (its checks pass again, its ejection ends, DNS adds it) has its load-balancing
// weight ramped from min_weight_percent to full over `window`:
// factor = max(min_weight_percent / 100, (elapsed / window) ^ (1 / aggression)).
struct SlowStartConfig {
  Duration window{30000};           // > 0
  double aggression = 1.0;          // > 0; above 1 the ramp is quicker at first
  uint32_t min_weight_percent = 10;  // 1..100
};

struct ClusterConfig {
  std::string name;
  ClusterType type = ClusterType::kStatic;
  std::vector<EndpointConfig> endpoints;  // empty for original_destination
  Duration dns_refresh{30000};
  LbPolicy lb = LbPolicy::kRoundRobin;
  Duration connect_timeout{1000};
  PoolConfig pool;
  std::optional<CircuitBreakerConfig> circuit_breaker;  // absent: no circuit breaker
  std::optional<HealthCheckConfig> health_check;        // absent: no active checks
  // Absent: implicit_outlier_detection() (only local-origin failures eject).
  std::optional<OutlierDetectionConfig> outlier_detection;
  std::optional<SlowStartConfig> slow_start;  // absent: full weight at once
  // Absent (or enabled: false): no adaptive limit.
  std::optional<AdaptiveConcurrencyConfig> adaptive_concurrency;
  // Below this share of routable endpoints (all groups together) traffic is spread over all
  // endpoints instead, rather than failing everything. 0..100; YAML "50%".
  uint32_t panic_threshold_percent = 50;
  uint32_t max_response_headers = 100;  // header fields in a response head; more: 502
  std::optional<ClusterTlsConfig> tls;  // absent: plain TCP to every endpoint
  SourceLocation location;
};

struct ReadinessConfig {
  std::vector<std::string>
      require_healthy;  // cluster names: /ready is 503 while any has no routable endpoint
  std::vector<size_t> cluster_indexes;  // the same, as indexes into Config::clusters (loader)
};

// One line per request, written off the worker loops (proxy/access_log.h).
enum class AccessLogFormat { kJson, kText };
struct AccessLogConfig {
  // A file (reopened on SIGUSR1), or the inherited stdout ("-", /dev/stdout) or /dev/stderr.
  std::string path = "/dev/stdout";
  SourceLocation location;  // of `path`, for `--check`; empty when left out
  AccessLogFormat format = AccessLogFormat::kJson;
  double sample_percent = 100;  // share of requests logged, 0..100
};

struct Config {
  std::string source_file;
  uint32_t workers = 0;  // 0 = number of CPUs
  // Open client connections of the whole process. 0 = from the file descriptor limit (raised to
  // its hard limit at start): half of it less a reserve, since a proxied connection takes two.
  uint32_t max_connections = 0;
  AdminConfig admin;
  std::optional<ProbesConfig> probes;  // absent: no probes listener
  // /healthz answers 503 once a worker loop has not turned for this long (0 = never).
  Duration watchdog{10000};
  Duration drain_delay{5000};  // after SIGTERM: /ready is 503 at once, listeners close after this
  Duration drain_timeout{20000};  // in-flight requests get this long to finish, then we exit
  std::vector<ListenerConfig> listeners;
  std::vector<ClusterConfig> clusters;
  ReadinessConfig readiness;
  std::optional<AccessLogConfig> access_log;  // none: no access log
  bool watch_config = false;  // reload when the config file changes (checked every second)

  const ClusterConfig* find_cluster(std::string_view name) const;
};

const char* to_string(LbPolicy lb);
const char* to_string(AccessLogFormat format);
const char* to_string(ListenerDirection direction);  // "inbound", "outbound"
const char* to_string(ClusterType type);              // "static", "original_destination"
const char* to_string(TlsVersion version);              // "1.2", "1.3"
const char* to_string(ForwardClientCert mode);          // the YAML names

}  // namespace bulwark::config
