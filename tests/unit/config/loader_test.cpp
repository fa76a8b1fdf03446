// Loading configs that are valid: every key, the defaults, the shipped examples, files.
// The error paths are in loader_errors_test.cpp.

#include "config/loader.h"

#include <doctest/doctest.h>
#include <re2/re2.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "config_test_support.h"

namespace bulwark::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using testing::load;

// Every key in the schema, each set to something other than its default.
constexpr std::string_view kEveryKey = R"(
workers: 3
drain_delay: 2s
drain_timeout: 1m
admin:
  address: 127.0.0.2:0
listeners:
  - name: inbound
    address: 0.0.0.0:8080
    request_headers_timeout: 5s
    idle_timeout: 2m
    stream_idle_timeout: 30s
    max_request_headers_size: 32KiB
    max_request_headers: 50
    trusted_hops: 2
    max_connections: 300
    routes:
      - name: api
        match:
          prefix: /api/
          host: API.Example.com
          headers: {X-Canary: "1", x-tenant: acme}
          methods: [get, POST, Purge]
        cluster: batch
        timeout: 0s
        prefix_rewrite: /v1/
        upgrades: [WebSocket, my-proto]
      - name: health
        match:
          path: /healthz
          host: "*.Example.COM"
        cluster: app
        timeout: 1500ms
      - name: reports
        match: {regex: "^/reports/[0-9]+$"}
        cluster: app
  - name: v6
    address: "[::]:0"
    request_headers_timeout: 1h
    max_request_headers_size: 1MiB
    routes:
      - name: api
        match: {host: "[::1]"}
        cluster: app
clusters:
  - name: app
    endpoints:
      - 127.0.0.1:9000
      - {address: app.internal:9001, weight: 2}
      - address: "[::1]:9002"
        weight: 10000
    dns_refresh: 10s
    lb: random
    connect_timeout: 100ms
    pool:
      max_connections: 64
      idle_timeout: 5s
      max_requests_per_connection: 1000
      max_pending: 0
      pending_timeout: 250ms
  - name: batch
    endpoints: ["localhost:1"]
    lb: least_request
)";

TEST_CASE("a config with every key loads into the structs exactly") {
  LoadResult result = load(kEveryKey);
  CHECK_LOADS(result);
  const Config& c = *result.config;

  CHECK(c.source_file == "test.yaml");
  CHECK(c.workers == 3);
  CHECK(c.drain_delay == seconds(2));
  CHECK(c.drain_timeout == minutes(1));
  CHECK(c.admin.address.text() == "127.0.0.2:0");
  CHECK(c.admin.address.is_ip);

  REQUIRE(c.listeners.size() == 2);
  const ListenerConfig& in = c.listeners[0];
  CHECK(in.name == "inbound");
  CHECK(in.address.host == "0.0.0.0");
  CHECK(in.address.port == 8080);
  CHECK(in.address.is_ip);
  CHECK(in.request_headers_timeout == seconds(5));
  CHECK(in.idle_timeout == minutes(2));
  CHECK(in.max_request_headers_size == 32 * 1024);
  CHECK(in.stream_idle_timeout == seconds(30));
  CHECK(in.max_request_headers == 50);
  CHECK(in.trusted_hops == 2);
  CHECK(in.max_connections == 300);
  CHECK(in.routes.at(0).upgrades == std::vector<std::string>{"websocket", "my-proto"});
  CHECK(in.location.file == "test.yaml");
  CHECK(in.location.line == 7);
  CHECK(in.location.column == 5);

  REQUIRE(in.routes.size() == 3);
  const RouteConfig& api = in.routes[0];
  CHECK(api.name == "api");
  CHECK(api.match.path.kind == PathMatch::Kind::kPrefix);
  CHECK(api.match.path.value == "/api/");
  CHECK(api.match.path.regex == nullptr);
  CHECK(api.match.host.value == "api.example.com");
  CHECK_FALSE(api.match.host.wildcard);
  REQUIRE(api.match.headers.size() == 2);
  CHECK(api.match.headers[0].name == "x-canary");
  CHECK(api.match.headers[0].value == "1");
  CHECK(api.match.headers[1].name == "x-tenant");
  CHECK(api.match.headers[1].value == "acme");
  CHECK(api.match.methods == std::vector<std::string>{"GET", "POST", "PURGE"});
  CHECK(api.cluster == "batch");
  CHECK(api.cluster_index == 1);
  CHECK(api.timeout == Duration{0});
  CHECK(api.prefix_rewrite == "/v1/");
  CHECK(api.location.line == 17);
  CHECK(api.location.column == 9);

  const RouteConfig& health = in.routes[1];
  CHECK(health.match.path.kind == PathMatch::Kind::kExact);
  CHECK(health.match.path.value == "/healthz");
  CHECK(health.match.host.value == ".example.com");
  CHECK(health.match.host.wildcard);
  CHECK(health.match.headers.empty());
  CHECK(health.match.methods.empty());
  CHECK(health.cluster_index == 0);
  CHECK(health.timeout == milliseconds(1500));
  CHECK_FALSE(health.prefix_rewrite.has_value());
  CHECK(health.location.line == 27);

  const RouteConfig& reports = in.routes[2];
  CHECK(reports.match.path.kind == PathMatch::Kind::kRegex);
  CHECK(reports.match.path.value == "^/reports/[0-9]+$");
  REQUIRE(reports.match.path.regex != nullptr);
  CHECK(RE2::FullMatch("/reports/42", *reports.match.path.regex));
  CHECK_FALSE(RE2::FullMatch("/reports/x", *reports.match.path.regex));
  CHECK(reports.match.host.empty());
  CHECK(reports.location.line == 33);

  const ListenerConfig& v6 = c.listeners[1];
  CHECK(v6.name == "v6");
  CHECK(v6.address.host == "::");
  CHECK(v6.address.port == 0);
  CHECK(v6.address.is_ip);
  CHECK(v6.request_headers_timeout == hours(1));
  CHECK(v6.idle_timeout == seconds(300));  // default
  CHECK(v6.max_request_headers_size == 1024 * 1024);
  REQUIRE(v6.routes.size() == 1);
  CHECK(v6.routes[0].name == "api");  // route names are unique per listener only
  CHECK(v6.routes[0].match.host.value == "[::1]");
  CHECK(v6.routes[0].match.path.kind == PathMatch::Kind::kPrefix);
  CHECK(v6.routes[0].match.path.value == "/");

  REQUIRE(c.clusters.size() == 2);
  const ClusterConfig& app = c.clusters[0];
  CHECK(app.name == "app");
  CHECK(app.location.line == 45);
  CHECK(app.location.column == 5);
  REQUIRE(app.endpoints.size() == 3);
  CHECK(app.endpoints[0].address.text() == "127.0.0.1:9000");
  CHECK(app.endpoints[0].address.is_ip);
  CHECK(app.endpoints[0].weight == 1);
  CHECK(app.endpoints[0].location.line == 47);
  CHECK(app.endpoints[0].location.column == 9);
  CHECK(app.endpoints[1].address.host == "app.internal");
  CHECK(app.endpoints[1].address.port == 9001);
  CHECK_FALSE(app.endpoints[1].address.is_ip);
  CHECK(app.endpoints[1].weight == 2);
  CHECK(app.endpoints[1].location.line == 48);
  CHECK(app.endpoints[1].location.column == 9);
  CHECK(app.endpoints[2].address.host == "::1");
  CHECK(app.endpoints[2].address.port == 9002);
  CHECK(app.endpoints[2].weight == 10000);
  CHECK(app.endpoints[2].location.line == 49);
  CHECK(app.dns_refresh == seconds(10));
  CHECK(app.lb == LbPolicy::kRandom);
  CHECK(app.connect_timeout == milliseconds(100));
  CHECK(app.pool.max_connections == 64);
  CHECK(app.pool.idle_timeout == seconds(5));
  CHECK(app.pool.max_requests_per_connection == 1000);
  CHECK(app.pool.max_pending == 0);
  CHECK(app.pool.pending_timeout == milliseconds(250));

  const ClusterConfig& batch = c.clusters[1];
  CHECK(batch.name == "batch");
  CHECK(batch.lb == LbPolicy::kLeastRequest);
  REQUIRE(batch.endpoints.size() == 1);
  CHECK(batch.endpoints[0].address.host == "localhost");
  CHECK(batch.endpoints[0].address.port == 1);

  CHECK(c.find_cluster("batch") == &c.clusters[1]);
}

TEST_CASE("resilience policies: every key loads into the structs exactly") {
  LoadResult result = load(R"(
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes:
      - name: api
        cluster: app
        retry:
          attempts: 3
          per_try_timeout: 1s
          retry_on: [connect-failure, reset, gateway-error, 5xx, retriable-status-codes, per-try-timeout]
          retriable_status_codes: [409, 429]
          backoff: {base: 10ms, max: 2s}
          retry_non_idempotent: true
          max_body_bytes: 1MiB
          budget: {ratio: 0.5, min_retries_per_second: 3, window: 1m, enabled: false}
        bulkhead: {max_concurrent: 7, max_queued: 50, queue_timeout: 500ms}
        rate_limit: {requests_per_second: 12.5, burst: 40}
        fault:
          delay: {percent: 10, duration: 2s}
          abort: {percent: 0.5, status: 429}
          header_control: true
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
    circuit_breaker:
      failure_rate_percent: 25
      slow_call_duration: 500ms
      slow_call_rate_percent: 80
      window: 30s
      minimum_calls: 5
      open_duration: 10s
      max_open_duration: 1m
      half_open_calls: 2
)");
  CHECK_LOADS(result);
  const RouteConfig& route = result.config->listeners.at(0).routes.at(0);

  const RetryConfig& retry = route.retry;
  CHECK(retry.attempts == 3);
  CHECK(retry.per_try_timeout == seconds(1));
  CHECK(retry.retry_on == (kRetryOnConnectFailure | kRetryOnReset | kRetryOnGatewayError |
                           kRetryOn5xx | kRetryOnRetriableStatusCodes | kRetryOnPerTryTimeout));
  CHECK(retry.retriable_status_codes == std::vector<int>{409, 429});
  CHECK(retry.backoff_base == milliseconds(10));
  CHECK(retry.backoff_max == seconds(2));
  CHECK(retry.retry_non_idempotent);
  CHECK(retry.max_body_bytes == 1024 * 1024);
  CHECK_FALSE(retry.budget.enabled);
  CHECK(retry.budget.ratio == 0.5);
  CHECK(retry.budget.min_retries_per_second == 3);
  CHECK(retry.budget.window == minutes(1));

  REQUIRE(route.bulkhead.has_value());
  CHECK(route.bulkhead->max_concurrent == 7);
  CHECK(route.bulkhead->max_queued == 50);
  CHECK(route.bulkhead->queue_timeout == milliseconds(500));

  REQUIRE(route.rate_limit.has_value());
  CHECK(route.rate_limit->requests_per_second == 12.5);
  CHECK(route.rate_limit->burst == 40);

  REQUIRE(route.fault.has_value());
  REQUIRE(route.fault->delay.has_value());
  CHECK(route.fault->delay->percent == 10.0);
  CHECK(route.fault->delay->duration == seconds(2));
  REQUIRE(route.fault->abort.has_value());
  CHECK(route.fault->abort->percent == 0.5);
  CHECK(route.fault->abort->status == 429);
  CHECK(route.fault->header_control);

  const ClusterConfig& app = result.config->clusters.at(0);
  REQUIRE(app.circuit_breaker.has_value());
  const CircuitBreakerConfig& breaker = *app.circuit_breaker;
  CHECK(breaker.failure_rate_percent == 25);
  CHECK(breaker.slow_call_duration == milliseconds(500));
  CHECK(breaker.slow_call_rate_percent == 80);
  CHECK(breaker.window == seconds(30));
  CHECK(breaker.minimum_calls == 5);
  CHECK(breaker.open_duration == seconds(10));
  CHECK(breaker.max_open_duration == minutes(1));
  CHECK(breaker.half_open_calls == 2);
}

TEST_CASE("retry_on replaces the default conditions, in any order") {
  LoadResult result = load(R"(
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes:
      - {name: a, cluster: app, retry: {retry_on: [5xx]}}
      - {name: b, cluster: app, retry: {retry_on: [reset, connect-failure]}}
clusters:
  - {name: app, endpoints: [127.0.0.1:9000]}
)");
  CHECK_LOADS(result);
  const auto& routes = result.config->listeners.at(0).routes;
  CHECK(routes.at(0).retry.retry_on == kRetryOn5xx);
  CHECK(routes.at(1).retry.retry_on == (kRetryOnConnectFailure | kRetryOnReset));
  CHECK(routes.at(1).retry.attempts == 2);  // the rest keeps its defaults
}

TEST_CASE("absent keys take their documented defaults") {
  LoadResult result = load(R"(
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes:
      - name: all
        cluster: app
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
)");
  CHECK_LOADS(result);
  const Config& c = *result.config;
  CHECK(c.workers == 0);
  CHECK(c.drain_delay == seconds(5));
  CHECK(c.drain_timeout == seconds(20));
  CHECK(c.admin.address.text() == "127.0.0.1:9901");
  CHECK(c.admin.address.is_ip);
  CHECK(c.admin.token_file.empty());
  CHECK_FALSE(c.probes.has_value());
  CHECK(c.watchdog == seconds(10));

  const ListenerConfig& in = c.listeners.at(0);
  CHECK(in.request_headers_timeout == seconds(10));
  CHECK(in.idle_timeout == seconds(300));
  CHECK(in.max_request_headers_size == 60 * 1024);
  CHECK(in.stream_idle_timeout == minutes(5));
  CHECK(in.max_request_headers == 100);
  CHECK(in.trusted_hops == 0);
  CHECK(in.max_connections == 0);
  CHECK(c.max_connections == 0);
  CHECK_FALSE(in.tls.has_value());  // plain HTTP

  const RouteConfig& route = in.routes.at(0);
  CHECK(route.upgrades == std::vector<std::string>{"websocket"});
  CHECK(route.match.path.kind == PathMatch::Kind::kPrefix);
  CHECK(route.match.path.value == "/");
  CHECK(route.match.path.regex == nullptr);
  CHECK(route.match.host.empty());
  CHECK(route.match.headers.empty());
  CHECK(route.match.methods.empty());
  CHECK(route.cluster_index == 0);
  CHECK(route.timeout == seconds(15));
  CHECK_FALSE(route.prefix_rewrite.has_value());
  CHECK(route.location.line == 5);
  CHECK(route.location.column == 9);

  // Every route retries, with these defaults; the other policies are off.
  CHECK(route.retry.attempts == 2);
  CHECK(route.retry.per_try_timeout == Duration{0});
  CHECK(route.retry.retry_on == (kRetryOnConnectFailure | kRetryOnReset | kRetryOnGatewayError));
  CHECK(route.retry.retriable_status_codes.empty());
  CHECK(route.retry.backoff_base == milliseconds(25));
  CHECK(route.retry.backoff_max == milliseconds(250));
  CHECK_FALSE(route.retry.retry_non_idempotent);
  CHECK(route.retry.max_body_bytes == 64 * 1024);
  CHECK(route.retry.budget.enabled);
  CHECK(route.retry.budget.ratio == 0.2);
  CHECK(route.retry.budget.min_retries_per_second == 10);
  CHECK(route.retry.budget.window == seconds(10));
  CHECK_FALSE(route.bulkhead.has_value());
  CHECK_FALSE(route.rate_limit.has_value());
  CHECK_FALSE(route.fault.has_value());

  const ClusterConfig& app = c.clusters.at(0);
  CHECK(app.endpoints.at(0).weight == 1);
  CHECK(app.endpoints.at(0).location.line == 9);
  CHECK(app.endpoints.at(0).location.column == 17);
  CHECK(app.dns_refresh == seconds(30));
  CHECK(app.lb == LbPolicy::kRoundRobin);
  CHECK(app.connect_timeout == seconds(1));
  CHECK(app.pool.max_connections == 1024);
  CHECK(app.pool.idle_timeout == seconds(60));
  CHECK(app.pool.max_requests_per_connection == 0);
  CHECK(app.pool.max_pending == 1024);
  CHECK(app.pool.pending_timeout == seconds(1));
  CHECK_FALSE(app.circuit_breaker.has_value());
  CHECK(app.max_response_headers == 100);
  CHECK_FALSE(app.tls.has_value());  // plain TCP
}

TEST_CASE("optional sections may be present but empty") {
  LoadResult result = load(R"(
admin: {}
probes: {}
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes:
      - name: all
        match: {headers: {}}
        cluster: app
        prefix_rewrite: /root/
        retry: {backoff: {}, budget: {}}
        bulkhead: {}
        rate_limit: {}
        fault: {}
      - name: faults
        cluster: app
        fault: {delay: {}, abort: {}}
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
    pool: {}
    circuit_breaker: {}
)");
  CHECK_LOADS(result);
  const RouteConfig& route = result.config->listeners.at(0).routes.at(0);
  CHECK(route.match.path.value == "/");
  CHECK(route.prefix_rewrite == "/root/");  // allowed: the default match is a prefix
  CHECK(result.config->admin.address.text() == "127.0.0.1:9901");
  REQUIRE(result.config->probes.has_value());
  CHECK(result.config->probes->address.text() == "0.0.0.0:9902");  // public: for the kubelet
  CHECK(result.config->clusters.at(0).pool.max_connections == 1024);

  // An empty policy block turns the policy on with its defaults.
  CHECK(route.retry.attempts == 2);
  CHECK(route.retry.retry_on == kDefaultRetryOn);
  CHECK(route.retry.backoff_max == milliseconds(250));
  CHECK(route.retry.budget.ratio == 0.2);
  REQUIRE(route.bulkhead.has_value());
  CHECK(route.bulkhead->max_concurrent == 100);
  CHECK(route.bulkhead->max_queued == 0);
  CHECK(route.bulkhead->queue_timeout == seconds(1));
  REQUIRE(route.rate_limit.has_value());
  CHECK(route.rate_limit->requests_per_second == 100.0);
  CHECK(route.rate_limit->burst == 100);
  REQUIRE(route.fault.has_value());
  CHECK_FALSE(route.fault->delay.has_value());
  CHECK_FALSE(route.fault->abort.has_value());
  CHECK_FALSE(route.fault->header_control);

  const FaultConfig& faults = result.config->listeners.at(0).routes.at(1).fault.value();
  REQUIRE(faults.delay.has_value());
  CHECK(faults.delay->percent == 0.0);
  CHECK(faults.delay->duration == seconds(1));
  REQUIRE(faults.abort.has_value());
  CHECK(faults.abort->percent == 0.0);
  CHECK(faults.abort->status == 503);

  REQUIRE(result.config->clusters.at(0).circuit_breaker.has_value());
  const CircuitBreakerConfig& breaker = *result.config->clusters.at(0).circuit_breaker;
  CHECK(breaker.failure_rate_percent == 50);
  CHECK(breaker.slow_call_duration == seconds(2));
  CHECK(breaker.slow_call_rate_percent == 100);
  CHECK(breaker.window == seconds(10));
  CHECK(breaker.minimum_calls == 20);
  CHECK(breaker.open_duration == seconds(30));
  CHECK(breaker.max_open_duration == minutes(5));
  CHECK(breaker.half_open_calls == 5);
}

TEST_CASE("rate_limit burst defaults to requests_per_second rounded, and at least 1") {
  struct Case {
    const char* rate;
    uint32_t burst;
  };
  for (const Case& c :
       {Case{"0.1", 1}, Case{"0.5", 1}, Case{"1", 1}, Case{"1.4", 1}, Case{"1.5", 2},
        Case{"2.5", 3}, Case{"200", 200}, Case{"1000000000", 1000000000}}) {
    CAPTURE(c.rate);
    LoadResult result = load(
        "listeners:\n  - name: in\n    address: 127.0.0.1:8080\n    routes:\n"
        "      - {name: all, cluster: app, rate_limit: {requests_per_second: " +
        std::string(c.rate) + "}}\nclusters:\n  - {name: app, endpoints: [127.0.0.1:9000]}\n");
    CHECK_LOADS(result);
    const RateLimitConfig& limit = result.config->listeners.at(0).routes.at(0).rate_limit.value();
    CHECK(limit.requests_per_second == std::stod(c.rate));
    CHECK(limit.burst == c.burst);
  }
}

TEST_CASE("boundary values of the resilience policies are accepted") {
  LoadResult result = load(R"(
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes:
      - name: low
        cluster: app
        retry:
          attempts: 1
          retry_on: [retriable-status-codes]
          retriable_status_codes: [100, 599]
          backoff: {base: 1ms, max: 1ms}
          max_body_bytes: 0
          budget: {ratio: 0, min_retries_per_second: 0, window: 1ms}
        bulkhead: {max_concurrent: 1, max_queued: 0, queue_timeout: 1ms}
        rate_limit: {requests_per_second: 0.001, burst: 1}
        fault: {delay: {percent: 0, duration: 1ms}, abort: {percent: 0.0, status: 200}}
      - name: high
        cluster: app
        retry:
          attempts: 10
          max_body_bytes: 64MiB
          budget: {ratio: 1, min_retries_per_second: 4294967295}
        bulkhead: {max_concurrent: 4294967295, max_queued: 4294967295}
        rate_limit: {requests_per_second: 1000000000, burst: 4294967295}
        fault: {delay: {percent: 100}, abort: {percent: 100.0, status: 599}}
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
    circuit_breaker:
      failure_rate_percent: 1
      slow_call_rate_percent: 1
      minimum_calls: 1
      open_duration: 1ms
      max_open_duration: 1ms
      half_open_calls: 1
  - name: other
    endpoints: [127.0.0.1:9001]
    circuit_breaker: {failure_rate_percent: 100, slow_call_rate_percent: 100}
)");
  CHECK_LOADS(result);
  const RouteConfig& low = result.config->listeners.at(0).routes.at(0);
  CHECK(low.retry.attempts == 1);
  CHECK(low.retry.retry_on == kRetryOnRetriableStatusCodes);
  CHECK(low.retry.retriable_status_codes == std::vector<int>{100, 599});
  CHECK(low.retry.max_body_bytes == 0);
  CHECK(low.retry.budget.ratio == 0.0);
  CHECK(low.rate_limit->requests_per_second == 0.001);
  CHECK(low.fault->abort->status == 200);
  const RouteConfig& high = result.config->listeners.at(0).routes.at(1);
  CHECK(high.retry.attempts == 10);
  CHECK(high.retry.max_body_bytes == 64 * 1024 * 1024);
  CHECK(high.retry.budget.ratio == 1.0);
  CHECK(high.bulkhead->max_queued == 4294967295u);
  CHECK(high.rate_limit->burst == 4294967295u);
  CHECK(high.fault->delay->percent == 100.0);
  CHECK(high.fault->abort->status == 599);
  CHECK(result.config->clusters.at(0).circuit_breaker->max_open_duration == milliseconds(1));
  CHECK(result.config->clusters.at(1).circuit_breaker->failure_rate_percent == 100);
}

// Checks every field of a health check, so a failure names the field that differs.
void check_health_check(const HealthCheckConfig& got, const HealthCheckConfig& want) {
  CHECK(got.path == want.path);
  CHECK(got.tcp == want.tcp);
  CHECK(got.host == want.host);
  CHECK(got.interval == want.interval);
  CHECK(got.interval_jitter_percent == want.interval_jitter_percent);
  CHECK(got.timeout == want.timeout);
  CHECK(got.healthy_threshold == want.healthy_threshold);
  CHECK(got.unhealthy_threshold == want.unhealthy_threshold);
  CHECK(got.unhealthy_interval == want.unhealthy_interval);
  REQUIRE(got.expected_statuses.size() == want.expected_statuses.size());
  for (size_t i = 0; i < want.expected_statuses.size(); ++i) {
    CAPTURE(i);
    CHECK(got.expected_statuses[i].min == want.expected_statuses[i].min);
    CHECK(got.expected_statuses[i].max == want.expected_statuses[i].max);
  }
}

void check_outlier_detection(const OutlierDetectionConfig& got,
                             const OutlierDetectionConfig& want) {
  CHECK(got.consecutive_5xx == want.consecutive_5xx);
  CHECK(got.consecutive_gateway_failure == want.consecutive_gateway_failure);
  CHECK(got.consecutive_local_origin_failure == want.consecutive_local_origin_failure);
  CHECK(got.uneject_on_health_check_pass == want.uneject_on_health_check_pass);
  CHECK(got.base_ejection_time == want.base_ejection_time);
  CHECK(got.max_ejection_time == want.max_ejection_time);
  CHECK(got.max_ejection_percent == want.max_ejection_percent);
}

TEST_CASE("upstream health: every key loads into the structs exactly") {
  LoadResult result = load(R"(
readiness:
  require_healthy: [batch, app]
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes: [{name: all, cluster: app}]
clusters:
  - name: app
    endpoints:
      - 127.0.0.1:9000
      - {address: 127.0.0.1:9100, priority: 1, weight: 3}
      - address: app.internal:9200
        priority: 127
    health_check:
      path: /ready?full=1
      tcp: false
      host: app.local:8080
      interval: 2s
      interval_jitter: 12.5%
      timeout: 3s
      healthy_threshold: 1
      unhealthy_threshold: 5
      unhealthy_interval: 500ms
      expected_statuses: [204, 200-299, "300-302", 418]
    outlier_detection:
      consecutive_5xx: 0
      consecutive_gateway_failure: 7
      consecutive_local_origin_failure: 1
      uneject_on_health_check_pass: false
      base_ejection_time: 10s
      max_ejection_time: 10s
      max_ejection_percent: 100
    panic_threshold: 0%
  - name: batch
    endpoints: [127.0.0.1:9300]
    health_check: {tcp: true, interval: 1s}
    panic_threshold: 100%
)");
  CHECK_LOADS(result);
  const Config& c = *result.config;

  CHECK(c.readiness.require_healthy == std::vector<std::string>{"batch", "app"});
  CHECK(c.readiness.cluster_indexes == std::vector<size_t>{1, 0});

  const ClusterConfig& app = c.clusters.at(0);
  REQUIRE(app.endpoints.size() == 3);
  CHECK(app.endpoints[0].priority == 0);  // the short form keeps the default
  CHECK(app.endpoints[1].priority == 1);
  CHECK(app.endpoints[1].weight == 3);
  CHECK(app.endpoints[2].priority == 127);

  REQUIRE(app.health_check.has_value());
  check_health_check(*app.health_check,
                     {.path = "/ready?full=1",
                      .tcp = false,
                      .host = "app.local:8080",
                      .interval = seconds(2),
                      .interval_jitter_percent = 12.5,
                      .timeout = seconds(3),  // longer than the interval: allowed, as in Envoy
                      .healthy_threshold = 1,
                      .unhealthy_threshold = 5,
                      .unhealthy_interval = milliseconds(500),
                      .expected_statuses = {{204, 204}, {200, 299}, {300, 302}, {418, 418}}});
  REQUIRE(app.outlier_detection.has_value());
  check_outlier_detection(*app.outlier_detection, {.consecutive_5xx = 0,
                                                   .consecutive_gateway_failure = 7,
                                                   .consecutive_local_origin_failure = 1,
                                                   .uneject_on_health_check_pass = false,
                                                   .base_ejection_time = seconds(10),
                                                   .max_ejection_time = seconds(10),
                                                   .max_ejection_percent = 100});
  CHECK(app.panic_threshold_percent == 0);

  const ClusterConfig& batch = c.clusters.at(1);
  REQUIRE(batch.health_check.has_value());
  HealthCheckConfig tcp_check;  // the defaults, but for these two
  tcp_check.tcp = true;
  tcp_check.interval = seconds(1);
  check_health_check(*batch.health_check, tcp_check);
  CHECK_FALSE(batch.outlier_detection.has_value());
  CHECK(batch.panic_threshold_percent == 100);
}

TEST_CASE("upstream health: absent blocks are off, and empty blocks take the defaults") {
  LoadResult result = load(R"(
readiness: {}
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes: [{name: all, cluster: bare}]
clusters:
  - name: bare
    endpoints: [127.0.0.1:9000]
  - name: defaults
    endpoints: [{address: 127.0.0.1:9001}]
    health_check: {}
    outlier_detection: {}
)");
  CHECK_LOADS(result);
  const Config& c = *result.config;
  CHECK(c.readiness.require_healthy.empty());
  CHECK(c.readiness.cluster_indexes.empty());
  CHECK_FALSE(c.access_log.has_value());  // absent: no access log

  const ClusterConfig& bare = c.clusters.at(0);
  CHECK(bare.endpoints.at(0).priority == 0);
  CHECK_FALSE(bare.health_check.has_value());
  CHECK_FALSE(bare.outlier_detection.has_value());
  CHECK(bare.panic_threshold_percent == 50);
  // Without the section a cluster still gets the implicit detection: local-origin failures only,
  // and a strict max_ejection_percent.
  const OutlierDetectionConfig& implicit = implicit_outlier_detection();
  check_outlier_detection(implicit, {.consecutive_5xx = 0,
                                     .consecutive_gateway_failure = 0,
                                     .consecutive_local_origin_failure = 3,
                                     .uneject_on_health_check_pass = true,
                                     .base_ejection_time = seconds(30),
                                     .max_ejection_time = minutes(5),
                                     .max_ejection_percent = 50});
  CHECK(implicit.failure_percent == 0);
  CHECK(implicit.implicit);

  const ClusterConfig& defaults = c.clusters.at(1);
  CHECK(defaults.endpoints.at(0).priority == 0);
  // The documented defaults, spelt out here so a changed default in config.h fails this test.
  REQUIRE(defaults.health_check.has_value());
  check_health_check(*defaults.health_check,
                     {.path = "/healthz",
                      .tcp = false,
                      .host = "",  // the endpoint's address
                      .interval = seconds(5),
                      .interval_jitter_percent = 10,
                      .timeout = seconds(1),
                      .healthy_threshold = 2,
                      .unhealthy_threshold = 3,
                      .unhealthy_interval = Duration{0},  // the same as interval
                      .expected_statuses = {{200, 399}}});
  REQUIRE(defaults.outlier_detection.has_value());
  check_outlier_detection(*defaults.outlier_detection, {.consecutive_5xx = 5,
                                                        .consecutive_gateway_failure = 3,
                                                        .consecutive_local_origin_failure = 3,
                                                        .uneject_on_health_check_pass = true,
                                                        .base_ejection_time = seconds(30),
                                                        .max_ejection_time = minutes(5),
                                                        .max_ejection_percent = 50});
  CHECK_FALSE(defaults.outlier_detection->implicit);  // one endpoint can always be ejected
  CHECK(defaults.panic_threshold_percent == 50);
}

TEST_CASE("boundary values of the upstream health settings are accepted") {
  LoadResult result = load(R"(
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes: [{name: all, cluster: low}]
clusters:
  - name: low
    endpoints: [{address: 127.0.0.1:9000, priority: 0}]
    health_check:
      path: /
      interval: 1ms
      interval_jitter: 0%
      timeout: 1ms
      healthy_threshold: 1
      unhealthy_threshold: 1
      unhealthy_interval: 1ms
      expected_statuses: [100, 599, 100-599, 204-204]
    outlier_detection:
      consecutive_5xx: 0
      consecutive_gateway_failure: 0
      consecutive_local_origin_failure: 0
      base_ejection_time: 1ms
      max_ejection_time: 1ms
      max_ejection_percent: 0
    panic_threshold: 0%
  - name: high
    endpoints: [{address: 127.0.0.1:9001, priority: 127}]
    health_check:
      interval_jitter: 100.0%
      healthy_threshold: 4294967295
      unhealthy_threshold: 4294967295
    outlier_detection:
      consecutive_5xx: 4294967295
      consecutive_gateway_failure: 4294967295
      consecutive_local_origin_failure: 4294967295
      max_ejection_percent: 100
    panic_threshold: 100%
)");
  CHECK_LOADS(result);
  const ClusterConfig& low = result.config->clusters.at(0);
  CHECK(low.health_check->path == "/");
  CHECK(low.health_check->interval_jitter_percent == 0.0);
  REQUIRE(low.health_check->expected_statuses.size() == 4);
  CHECK(low.health_check->expected_statuses[1].min == 599);
  CHECK(low.health_check->expected_statuses[2].min == 100);
  CHECK(low.health_check->expected_statuses[2].max == 599);
  CHECK(low.health_check->expected_statuses[3].min == 204);
  CHECK(low.health_check->expected_statuses[3].max == 204);
  CHECK(low.outlier_detection->max_ejection_percent == 0);
  CHECK(low.panic_threshold_percent == 0);
  const ClusterConfig& high = result.config->clusters.at(1);
  CHECK(high.endpoints.at(0).priority == 127);
  CHECK(high.health_check->interval_jitter_percent == 100.0);
  CHECK(high.health_check->healthy_threshold == 4294967295u);
  CHECK(high.outlier_detection->consecutive_5xx == 4294967295u);
  CHECK(high.outlier_detection->consecutive_local_origin_failure == 4294967295u);
  CHECK(low.outlier_detection->consecutive_local_origin_failure == 0);
  CHECK(high.panic_threshold_percent == 100);
}

TEST_CASE("boundary values are accepted") {
  LoadResult result = load(R"(
workers: 1024
drain_delay: 0s
drain_timeout: 0ms
listeners:
  - name: in
    address: 0.0.0.0:65535
    max_request_headers_size: 1KiB
    routes: [{name: all, cluster: app, timeout: 0s}]
clusters:
  - name: app
    endpoints: ["10.0.0.1:1", {address: "10.0.0.2:65535", weight: 1}, {address: "10.0.0.3:2", weight: 10000}]
    pool: {max_connections: 1, max_pending: 4294967295, max_requests_per_connection: 4294967295}
)");
  CHECK_LOADS(result);
  CHECK(result.config->workers == 1024);
  CHECK(result.config->drain_delay == Duration{0});
  CHECK(result.config->listeners.at(0).max_request_headers_size == 1024);
  CHECK(result.config->clusters.at(0).pool.max_pending == 4294967295u);
}

TEST_CASE("listeners may share a port on different hosts, and port 0 any number of times") {
  LoadResult result = load(R"(
admin: {address: "127.0.0.1:0"}
listeners:
  - {name: a, address: "127.0.0.1:8080", routes: [{name: r, cluster: app}]}
  - {name: b, address: "127.0.0.2:8080", routes: [{name: r, cluster: app}]}
  - {name: c, address: "127.0.0.1:0", routes: [{name: r, cluster: app}]}
  - {name: d, address: "0.0.0.0:0", routes: [{name: r, cluster: app}]}
clusters:
  - {name: app, endpoints: ["127.0.0.1:9000"]}
)");
  CHECK_LOADS(result);
  CHECK(result.config->listeners.size() == 4);
}

TEST_CASE("quoted and plain scalars read the same, and YAML anchors work") {
  LoadResult result = load(R"(
workers: "2"
listeners:
  - name: "in"
    address: '127.0.0.1:8080'
    routes:
      - &route {name: all, cluster: app, timeout: "3s"}
  - name: second
    address: 127.0.0.1:8081
    routes: [*route]
clusters:
  - name: app
    endpoints: ["127.0.0.1:9000"]
)");
  CHECK_LOADS(result);
  CHECK(result.config->workers == 2);
  CHECK(result.config->listeners.at(1).routes.at(0).timeout == seconds(3));
}

TEST_CASE("the example configs load without errors") {
  for (const char* name : {"demo.yaml", "full.yaml", "container.yaml"}) {
    const std::string path = std::string(BULWARK_SOURCE_DIR) + "/config/examples/" + name;
    CAPTURE(path);
    LoadResult result = load_config_file(path);
    CHECK_LOADS(result);
    CHECK(result.config->source_file == path);
  }
}

TEST_CASE("the full example shows each resilience policy") {
  LoadResult result =
      load_config_file(std::string(BULWARK_SOURCE_DIR) + "/config/examples/full.yaml");
  CHECK_LOADS(result);
  const Config& c = *result.config;
  const ListenerConfig& inbound = c.listeners.at(0);
  const auto route = [&](std::string_view name) -> const RouteConfig& {
    for (const RouteConfig& r : inbound.routes) {
      if (r.name == name) return r;
    }
    FAIL("no route " << name);
    return inbound.routes.at(0);
  };

  // Route "api" and cluster "app" spell out the defaults.
  const RouteConfig& api = route("api");
  const RetryConfig defaults;
  CHECK(api.retry.attempts == defaults.attempts);
  CHECK(api.retry.retry_on == defaults.retry_on);
  CHECK(api.retry.backoff_base == defaults.backoff_base);
  CHECK(api.retry.backoff_max == defaults.backoff_max);
  CHECK(api.retry.max_body_bytes == defaults.max_body_bytes);
  CHECK(api.retry.budget.ratio == defaults.budget.ratio);
  CHECK(api.retry.budget.window == defaults.budget.window);
  REQUIRE(api.bulkhead.has_value());
  CHECK(api.bulkhead->max_concurrent == BulkheadConfig{}.max_concurrent);
  CHECK(api.bulkhead->queue_timeout == BulkheadConfig{}.queue_timeout);
  REQUIRE(api.rate_limit.has_value());
  CHECK(api.rate_limit->burst == 100);
  REQUIRE(c.clusters.at(0).circuit_breaker.has_value());
  CHECK(c.clusters.at(0).circuit_breaker->max_open_duration ==
        CircuitBreakerConfig{}.max_open_duration);
  CHECK(c.clusters.at(0).circuit_breaker->half_open_calls ==
        CircuitBreakerConfig{}.half_open_calls);
  CHECK_FALSE(c.clusters.at(1).circuit_breaker.has_value());

  CHECK(route("health").retry.attempts == 1);
  const RouteConfig& reports = route("reports");
  CHECK(reports.retry.per_try_timeout == seconds(5));
  CHECK((reports.retry.retry_on & kRetryOnPerTryTimeout) != 0);
  CHECK(reports.retry.retriable_status_codes == std::vector<int>{409, 429});
  REQUIRE(reports.rate_limit.has_value());
  CHECK(reports.rate_limit->requests_per_second == 0.5);
  CHECK(reports.rate_limit->burst == 1);
  const RouteConfig& chaos = route("chaos");
  REQUIRE(chaos.fault.has_value());
  CHECK(chaos.fault->delay.value().percent == 10.0);
  CHECK(chaos.fault->abort.value().status == 503);
  CHECK_FALSE(route("fallback").fault.has_value());
}

TEST_CASE("the full example shows the upstream health settings") {
  LoadResult result =
      load_config_file(std::string(BULWARK_SOURCE_DIR) + "/config/examples/full.yaml");
  CHECK_LOADS(result);
  const Config& c = *result.config;
  CHECK(c.readiness.require_healthy == std::vector<std::string>{"app"});
  CHECK(c.readiness.cluster_indexes == std::vector<size_t>{0});

  // Cluster "app" spells out the defaults, and has a failover endpoint.
  const ClusterConfig& app = c.clusters.at(0);
  CHECK(app.name == "app");
  CHECK(app.endpoints.at(0).priority == 0);
  CHECK(app.endpoints.at(2).priority == 1);
  REQUIRE(app.health_check.has_value());
  check_health_check(*app.health_check, HealthCheckConfig{});
  REQUIRE(app.outlier_detection.has_value());
  check_outlier_detection(*app.outlier_detection, OutlierDetectionConfig{});
  CHECK(app.panic_threshold_percent == ClusterConfig{}.panic_threshold_percent);

  // The other clusters show the keys that have no value to show in "app".
  const ClusterConfig& batch = c.clusters.at(1);
  REQUIRE(batch.health_check.has_value());
  CHECK(batch.health_check->host == "batch.internal");
  CHECK(batch.health_check->unhealthy_interval == seconds(2));
  CHECK(batch.health_check->interval_jitter_percent == 2.5);
  CHECK(batch.health_check->expected_statuses.size() == 2);
  CHECK(batch.panic_threshold_percent == 0);
  const ClusterConfig& cache = c.clusters.at(2);
  REQUIRE(cache.health_check.has_value());
  CHECK(cache.health_check->tcp);
  CHECK_FALSE(cache.outlier_detection.has_value());
}

TEST_CASE("the full example shows the TLS settings") {
  LoadResult result =
      load_config_file(std::string(BULWARK_SOURCE_DIR) + "/config/examples/full.yaml");
  CHECK_LOADS(result);
  const Config& c = *result.config;
  // The listeners and clusters that show everything else stay plain.
  for (const ListenerConfig& listener : c.listeners) {
    CAPTURE(listener.name);
    CHECK(listener.tls.has_value() == (listener.name == "secure"));
  }
  for (const ClusterConfig& cluster : c.clusters) {
    CAPTURE(cluster.name);
    CHECK(cluster.tls.has_value() == (cluster.name == "payments"));
  }

  const ListenerConfig& secure = c.listeners.at(2);
  REQUIRE(secure.name == "secure");
  REQUIRE(secure.tls.has_value());
  const ListenerTlsConfig& in = *secure.tls;
  REQUIRE(in.certificates.size() == 2);
  CHECK(in.certificates[0].cert == "/etc/bulwark/tls/tls.crt");
  CHECK(in.certificates[0].key == "/etc/bulwark/tls/tls.key");
  CHECK(in.certificates[0].location.file == result.config->source_file);
  CHECK(in.certificates[0].location.line > 0);
  CHECK(in.min_version == TlsVersion::k1_2);
  CHECK_FALSE(in.ciphers.empty());
  CHECK(in.alpn == ListenerTlsConfig{}.alpn);
  CHECK(in.client_ca == "/etc/bulwark/tls/ca.crt");
  CHECK(in.require_client_certificate);
  REQUIRE(in.allowed_client_sans.size() == 2);
  CHECK(in.allowed_client_sans[1].prefix);
  CHECK(in.forward_client_cert == ForwardClientCert::kSanitize);
  CHECK(secure.routes.at(0).cluster == "payments");

  const ClusterConfig& payments = c.clusters.at(3);
  REQUIRE(payments.name == "payments");
  REQUIRE(payments.tls.has_value());
  const ClusterTlsConfig& out = *payments.tls;
  CHECK(out.sni == "payments.internal");
  CHECK(out.ca == "/etc/ssl/certs/ca-certificates.crt");
  CHECK(out.verify);
  CHECK(out.verify_hostname);
  CHECK(out.allowed_server_sans.size() == 1);
  CHECK(out.cert == "/etc/bulwark/tls/client.crt");
  CHECK(out.key == "/etc/bulwark/tls/client.key");
  CHECK(out.min_version == TlsVersion::k1_2);
  CHECK(out.alpn == ClusterTlsConfig{}.alpn);
  REQUIRE(payments.health_check.has_value());
  CHECK(payments.health_check->tls == true);
}

TEST_CASE("the demo example is what the quick start promises") {
  LoadResult result =
      load_config_file(std::string(BULWARK_SOURCE_DIR) + "/config/examples/demo.yaml");
  CHECK_LOADS(result);
  const Config& c = *result.config;
  CHECK(c.workers == 2);
  CHECK(c.drain_delay == seconds(1));
  CHECK(c.admin.address.text() == "127.0.0.1:9901");
  REQUIRE(c.listeners.size() == 1);
  CHECK(c.listeners[0].name == "inbound");
  CHECK(c.listeners[0].address.text() == "127.0.0.1:8080");
  REQUIRE(c.listeners[0].routes.size() == 1);
  CHECK(c.listeners[0].routes[0].name == "all");
  CHECK(c.listeners[0].routes[0].match.path.kind == PathMatch::Kind::kPrefix);
  CHECK(c.listeners[0].routes[0].match.path.value == "/");
  CHECK(c.listeners[0].routes[0].cluster == "demo");
  REQUIRE(c.clusters.size() == 1);
  CHECK(c.clusters[0].name == "demo");
  REQUIRE(c.clusters[0].endpoints.size() == 1);
  CHECK(c.clusters[0].endpoints[0].address.text() == "127.0.0.1:9000");
  REQUIRE(c.clusters[0].health_check.has_value());
  CHECK(c.clusters[0].health_check->path == "/healthz");
  CHECK(c.readiness.cluster_indexes == std::vector<size_t>{0});
}

TEST_CASE("the container example is the sidecar layout the image promises") {
  // The Dockerfile bakes it in; tests/integration/container_image_test.cpp runs it.
  LoadResult result =
      load_config_file(std::string(BULWARK_SOURCE_DIR) + "/config/examples/container.yaml");
  CHECK_LOADS(result);
  const Config& c = *result.config;
  CHECK(c.admin.address.text() == "127.0.0.1:9901");
  REQUIRE(c.probes.has_value());
  CHECK(c.probes->address.text() == "0.0.0.0:9902");
  REQUIRE(c.listeners.size() == 1);
  CHECK(c.listeners[0].address.text() == "0.0.0.0:8080");
  REQUIRE(c.clusters.size() == 1);
  REQUIRE(c.clusters[0].endpoints.size() == 1);
  CHECK(c.clusters[0].endpoints[0].address.text() == "127.0.0.1:8081");
  CHECK(c.readiness.cluster_indexes == std::vector<size_t>{0});
  REQUIRE(c.access_log.has_value());
  CHECK(c.access_log->path == "/dev/stdout");
}

// A file in the temporary directory, removed when the test ends.
class TempFile {
 public:
  explicit TempFile(std::string_view contents) {
    char pattern[] = "/tmp/bulwark_config_test_XXXXXX";
    const int fd = ::mkstemp(pattern);
    REQUIRE(fd >= 0);
    ::close(fd);
    path_ = pattern;
    std::ofstream(path_) << contents;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST_CASE("load_config_file reads a file and names it in the config and in errors") {
  SUBCASE("valid") {
    TempFile file(
        "listeners: [{name: in, address: '127.0.0.1:1', routes: [{name: r, cluster: c}]}]\n"
        "clusters: [{name: c, endpoints: ['127.0.0.1:2']}]\n");
    LoadResult result = load_config_file(file.path());
    CHECK_LOADS(result);
    CHECK(result.config->source_file == file.path());
  }
  SUBCASE("invalid") {
    TempFile file(
        "workers: many\n"
        "listeners: [{name: in, address: '127.0.0.1:1', routes: [{name: r, cluster: c}]}]\n"
        "clusters: [{name: c, endpoints: ['127.0.0.1:2']}]\n");
    LoadResult result = load_config_file(file.path());
    REQUIRE(result.errors.size() == 1);
    CHECK(result.config == nullptr);
    const ConfigError& first = result.errors.at(0);
    CHECK(first.file == file.path());
    CHECK(first.line == 1);
    CHECK(first.column == 10);
    CHECK(first.to_string().rfind(file.path() + ":1:10: workers: must be an integer", 0) == 0);
  }
}

TEST_CASE("ConfigError::to_string puts the place first") {
  CHECK(ConfigError{"a.yaml", 3, 7, "workers: bad"}.to_string() == "a.yaml:3:7: workers: bad");
  CHECK(ConfigError{"a.yaml", 0, 0, "cannot read"}.to_string() == "a.yaml: cannot read");
}

TEST_CASE("probes, watchdog and the admin token file load into the structs") {
  LoadResult result = load(R"(
admin: {address: 127.0.0.1:9901, token_file: /var/run/secrets/bulwark/admin-token}
probes: {address: '[::]:9902'}
watchdog: 2s
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes:
      - name: all
        cluster: app
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
)");
  CHECK_LOADS(result);
  const Config& c = *result.config;
  CHECK(c.admin.token_file == "/var/run/secrets/bulwark/admin-token");
  CHECK(c.admin.token_location.line == 1);
  CHECK(c.admin.token_location.column == 46);
  REQUIRE(c.probes.has_value());
  CHECK(c.probes->address.text() == "[::]:9902");
  CHECK(c.watchdog == seconds(2));

  LoadResult off = load(R"(
watchdog: 0s
listeners:
  - name: in
    address: 127.0.0.1:8080
    routes:
      - name: all
        cluster: app
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
)");
  CHECK_LOADS(off);
  CHECK(off.config->watchdog.count() == 0);
}

}  // namespace
}  // namespace bulwark::config
