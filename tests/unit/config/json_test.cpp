#include "config/json.h"

#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "config/loader.h"
#include "config_test_support.h"
#include "json_syntax.h"

namespace bulwark::config {
namespace {

using testing::JsonSyntax;
using testing::load;

std::string json_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

TEST_CASE("the JSON syntax check used below tells good from bad") {
  CHECK(JsonSyntax::valid(R"({"a":[1,true,null,"x\n"],"b":{}})"));
  CHECK_FALSE(JsonSyntax::valid(R"({"a":1,})"));
  CHECK_FALSE(JsonSyntax::valid(R"({"a":1}x)"));
  CHECK_FALSE(JsonSyntax::valid("\"\x01\""));
  CHECK_FALSE(JsonSyntax::valid(R"("\x")"));
  CHECK(JsonSyntax::valid(R"([0,-1,0.25,12.5,1e+21,2E-3])"));
  CHECK_FALSE(JsonSyntax::valid(R"([1.])"));
  CHECK_FALSE(JsonSyntax::valid(R"([.5])"));
  CHECK_FALSE(JsonSyntax::valid(R"([01])"));
  CHECK_FALSE(JsonSyntax::valid(R"([1e])"));
}

TEST_CASE("append_json_string escapes quotes, backslashes and control characters") {
  CHECK(json_string("") == R"("")");
  CHECK(json_string("plain /path?q=1") == R"("plain /path?q=1")");
  CHECK(json_string("say \"hi\"") == R"("say \"hi\"")");
  CHECK(json_string("C:\\dir") == R"("C:\\dir")");
  CHECK(json_string("a\nb") == R"("a\u000ab")");
  CHECK(json_string("\r\t\b\f") == R"("\u000d\u0009\u0008\u000c")");
  CHECK(json_string(std::string_view("\0", 1)) == R"("\u0000")");
  CHECK(json_string("\x01\x1f") == R"("\u0001\u001f")");
  CHECK(json_string("\x7f") == R"("\u007f")");
  CHECK(json_string(" ~") == R"(" ~")");

  std::string appended = "prefix:";
  append_json_string(appended, "x");
  CHECK(appended == R"(prefix:"x")");
}

TEST_CASE("append_json_string passes valid UTF-8 and replaces invalid bytes") {
  CHECK(json_string("caf\xc3\xa9") == "\"caf\xc3\xa9\"");            // é
  CHECK(json_string("\xe2\x82\xac") == "\"\xe2\x82\xac\"");          // €
  CHECK(json_string("\xf0\x9f\x98\x80") == "\"\xf0\x9f\x98\x80\"");  // 😀
  CHECK(json_string("\xf4\x8f\xbf\xbf") == "\"\xf4\x8f\xbf\xbf\"");  // U+10FFFF
  CHECK(json_string("a\xff"
                    "b") == R"("a\ufffdb")");                                 // never valid
  CHECK(json_string("\x80") == R"("\ufffd")");                                // stray continuation
  CHECK(json_string("\xe2\x82") == R"("\ufffd\ufffd")");                      // truncated
  CHECK(json_string("\xc0\xaf") == R"("\ufffd\ufffd")");                      // overlong '/'
  CHECK(json_string("\xe0\x80\xaf") == R"("\ufffd\ufffd\ufffd")");            // overlong
  CHECK(json_string("\xed\xa0\x80") == R"("\ufffd\ufffd\ufffd")");            // surrogate
  CHECK(json_string("\xf4\x90\x80\x80") == R"("\ufffd\ufffd\ufffd\ufffd")");  // beyond U+10FFFF
  CHECK(json_string("\xc3") == R"("\ufffd")");                                // cut at the end
  for (std::string_view s : {"\xff\xfe", "\xc3\xa9\x80", "\x01\"\\\xe2\x82"}) {
    CHECK(JsonSyntax::valid(json_string(s)));
  }
}

// Loads `yaml` and checks that its to_json is valid JSON on one line containing each of `parts`;
// returns the JSON.
std::string check_json(std::string_view yaml, std::initializer_list<std::string_view> parts) {
  LoadResult result = load(yaml);
  CHECK_LOADS(result);
  std::string json = to_json(*result.config);
  INFO(json);
  CHECK(JsonSyntax::valid(json));
  CHECK(json.find('\n') == std::string::npos);
  for (std::string_view part : parts) {
    CAPTURE(part);
    CHECK(json.find(part) != std::string::npos);
  }
  return json;
}

constexpr std::string_view kFullConfig = R"(
workers: 3
drain_delay: 1500ms
drain_timeout: 0s
admin:
  address: "[::1]:9902"
listeners:
  - name: in
    address: 0.0.0.0:8080
    request_headers_timeout: 5s
    idle_timeout: 300s
    max_request_headers_size: 64KiB
    routes:
      - name: 'say "hi"'
        match:
          prefix: /api/
          host: "*.Example.com"
          headers: {X-Canary: "a\tb"}
          methods: [get, POST]
        cluster: app
        timeout: 0s
        prefix_rewrite: /
      - name: exact
        match: {path: /healthz}
        cluster: app
      - name: pattern
        match: {regex: "^/x/\\d+$"}
        cluster: app
clusters:
  - name: app
    endpoints:
      - 127.0.0.1:9000
      - {address: app.internal:9001, weight: 7}
    dns_refresh: 2m
    lb: least_request
    connect_timeout: 250ms
    pool: {max_connections: 8, idle_timeout: 90s, max_requests_per_connection: 100, max_pending: 0, pending_timeout: 3s}
)";

TEST_CASE("to_json writes every field of the effective config as one line of valid JSON") {
  const std::string json = check_json(
      kFullConfig,
      {
          R"({"source_file":"test.yaml","workers":3,"max_connections":0,)",
          R"("admin":{"address":"[::1]:9902"})",
          R"("drain_delay":"1500ms","drain_timeout":"0s")",
          R"("name":"in","address":"0.0.0.0:8080","direction":"inbound",)",
          R"("request_headers_timeout":"5s",)",
          R"("idle_timeout":"5m","stream_idle_timeout":"5m","max_request_headers_size":"64KiB")",
          R"("name":"say \"hi\"")",
          R"("match":{"prefix":"/api/","host":"*.example.com","headers":{"x-canary":"a\u0009b"},"methods":["GET","POST"]})",
          R"("cluster":"app","timeout":"0s","prefix_rewrite":"/")",
          R"("match":{"path":"/healthz","host":null,"headers":{},"methods":[]})",
          R"("timeout":"15s","prefix_rewrite":null,"host_rewrite":null)",
          R"("match":{"regex":"^/x/\\d+$")",
          R"("endpoints":[{"address":"127.0.0.1:9000","weight":1,"priority":0},)"
          R"({"address":"app.internal:9001","weight":7,"priority":0}])",
          R"("dns_refresh":"2m","lb":"least_request","connect_timeout":"250ms")",
          R"("pool":{"max_connections":8,"idle_timeout":"90s","max_requests_per_connection":100,"max_pending":0,"pending_timeout":"3s"})",
      });
  INFO(json);
  CHECK(json.find(' ') == json.find(R"(say \"hi\")") + 3);  // the only space is inside a name
}

TEST_CASE("to_json fills in defaults for absent keys") {
  LoadResult result = load(R"(
listeners:
  - name: in
    address: 127.0.0.1:0
    routes: [{name: all, cluster: app}]
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
)");
  CHECK_LOADS(result);
  const std::string json = to_json(*result.config);
  INFO(json);
  CHECK(JsonSyntax::valid(json));
  CHECK(
      json ==
      R"({"source_file":"test.yaml","workers":0,"max_connections":0,"admin":{"address":"127.0.0.1:9901"},)"
      R"("watchdog":"10s",)"
      R"("drain_delay":"5s","drain_timeout":"20s","listeners":[{"name":"in","address":"127.0.0.1:0",)"
      R"("direction":"inbound","original_destination":false,)"
      R"("request_headers_timeout":"10s","idle_timeout":"5m","stream_idle_timeout":"5m",)"
      R"("max_request_headers_size":"60KiB","max_request_headers":100,"trusted_hops":0,)"
      R"("max_connections":0,"tls":null,)"
      R"("routes":[{"name":"all","match":{"prefix":"/","host":null,"headers":{},"methods":[]},)"
      R"("cluster":"app","timeout":"15s","prefix_rewrite":null,"host_rewrite":null,)"
      R"("upgrades":["websocket"],)"
      R"("retry":{"attempts":2,"per_try_timeout":"0s",)"
      R"("retry_on":["connect-failure","reset","gateway-error"],"retriable_status_codes":[],)"
      R"("backoff":{"base":"25ms","max":"250ms"},"retry_non_idempotent":false,)"
      R"("max_body_bytes":"64KiB","budget":{"enabled":true,"ratio":0.2,)"
      R"("min_retries_per_second":10,"window":"10s"},"hedge":null},)"
      R"("bulkhead":null,"rate_limit":null,"fault":null}]}],"clusters":[{"name":"app","type":"static",)"
      R"("endpoints":[{"address":"127.0.0.1:9000","weight":1,"priority":0}],"dns_refresh":"30s",)"
      R"("lb":"round_robin","connect_timeout":"1s","pool":{"max_connections":1024,)"
      R"("idle_timeout":"1m","max_requests_per_connection":0,"max_pending":1024,)"
      R"("pending_timeout":"1s"},"circuit_breaker":null,"health_check":null,)"
      R"("outlier_detection":null,"adaptive_concurrency":null,"slow_start":null,"panic_threshold_percent":50,"max_response_headers":100,)"
      R"("tls":null}],)"
      R"("readiness":{"require_healthy":[]},"watch_config":false})");
}

TEST_CASE("to_json writes the resilience policies, and null for those left out") {
  const std::string_view yaml = R"(
listeners:
  - name: in
    address: 127.0.0.1:0
    routes:
      - name: all
        cluster: app
        retry:
          attempts: 3
          per_try_timeout: 1500ms
          retry_on: [retriable-status-codes, 5xx, connect-failure, per-try-timeout]
          retriable_status_codes: [429, 409]
          backoff: {base: 10ms, max: 2s}
          retry_non_idempotent: true
          max_body_bytes: 0
          budget: {enabled: false, ratio: 0.5, min_retries_per_second: 3, window: 1m}
          hedge: {delay: 40ms, max_hedges: 2}
        bulkhead: {max_concurrent: 7, max_queued: 50, queue_timeout: 500ms}
        rate_limit: {requests_per_second: 0.5}
        fault:
          delay: {percent: 12.5, duration: 2s}
          header_control: true
      - name: abort
        cluster: app
        retry: {attempts: 2, hedge: {delay: auto}}
        fault: {abort: {percent: 100, status: 429}}
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
)";
  check_json(
      yaml,
      {
          // retry_on in bit order, whatever the order in the YAML; codes as written.
          R"("retry":{"attempts":3,"per_try_timeout":"1500ms",)"
          R"("retry_on":["connect-failure","5xx","retriable-status-codes","per-try-timeout"],)"
          R"("retriable_status_codes":[429,409],"backoff":{"base":"10ms","max":"2s"},)"
          R"("retry_non_idempotent":true,"max_body_bytes":"0B",)"
          R"("budget":{"enabled":false,"ratio":0.5,"min_retries_per_second":3,"window":"1m"},)"
          R"("hedge":{"delay":"40ms","max_hedges":2}},)",
          R"("bulkhead":{"max_concurrent":7,"max_queued":50,"queue_timeout":"500ms"},)",
          R"("rate_limit":{"requests_per_second":0.5,"burst":1},)",
          R"("fault":{"delay":{"percent":12.5,"duration":"2s"},"abort":null,"header_control":true}})",
          R"("name":"abort",)",
          R"("hedge":{"delay":"auto","max_hedges":1}},)",
          R"("bulkhead":null,"rate_limit":null,)"
          R"("fault":{"delay":null,"abort":{"percent":100,"status":429},"header_control":false}})",
          R"("circuit_breaker":{"failure_rate_percent":25,"slow_call_duration":"500ms",)"
          R"("slow_call_rate_percent":80,"window":"30s","minimum_calls":5,"open_duration":"10s",)"
          R"("max_open_duration":"1m","half_open_calls":2},)",
      });
}

TEST_CASE("to_json writes the upstream health settings, and null for those left out") {
  const std::string_view yaml = R"(
readiness:
  require_healthy: [db, app]
listeners:
  - name: in
    address: 127.0.0.1:0
    routes: [{name: all, cluster: app}]
clusters:
  - name: app
    endpoints: [127.0.0.1:9000, {address: 127.0.0.1:9100, priority: 1}]
    health_check:
      path: /ready
      host: app.local
      interval: 10s
      interval_jitter: 2.5%
      timeout: 500ms
      healthy_threshold: 1
      unhealthy_threshold: 4
      unhealthy_interval: 1s
      expected_statuses: [200-299, 418]
    outlier_detection:
      consecutive_5xx: 0
      consecutive_gateway_failure: 2
      consecutive_local_origin_failure: 5
      uneject_on_health_check_pass: false
      base_ejection_time: 1s
      max_ejection_time: 90s
      max_ejection_percent: 100
      failure_percent: 15
      interval: 2s
    panic_threshold: 25%
  - name: db
    endpoints: [127.0.0.1:5432]
    health_check: {tcp: true}
)";
  check_json(
      yaml,
      {
          R"("endpoints":[{"address":"127.0.0.1:9000","weight":1,"priority":0},)"
          R"({"address":"127.0.0.1:9100","weight":1,"priority":1}])",
          R"("circuit_breaker":null,"health_check":{"path":"/ready","tcp":false,"host":"app.local",)"
          R"("interval":"10s","interval_jitter_percent":2.5,"timeout":"500ms","healthy_threshold":1,)"
          R"("unhealthy_threshold":4,"unhealthy_interval":"1s","expected_statuses":["200-299","418"],)"
          R"("tls":null},)"
          R"("outlier_detection":{"consecutive_5xx":0,"consecutive_gateway_failure":2,)"
          R"("consecutive_local_origin_failure":5,"uneject_on_health_check_pass":false,)"
          R"("base_ejection_time":"1s","max_ejection_time":"90s","max_ejection_percent":100,)"
          R"("failure_percent":15,"failure_percent_minimum_requests":20,"interval":"2s","success_rate":null},"adaptive_concurrency":null,"slow_start":null,)"
          R"("panic_threshold_percent":25,"max_response_headers":100,"tls":null})",
          // A host and unhealthy_interval left out are null: the endpoint's address, the interval.
          R"("health_check":{"path":"/healthz","tcp":true,"host":null,"interval":"5s",)"
          R"("interval_jitter_percent":10,"timeout":"1s","healthy_threshold":2,)"
          R"("unhealthy_threshold":3,"unhealthy_interval":null,"expected_statuses":["200-399"],)"
          R"("tls":null},)"
          R"("outlier_detection":null,"adaptive_concurrency":null,"slow_start":null,"panic_threshold_percent":50,"max_response_headers":100,)"
          R"("tls":null}])",
          R"("readiness":{"require_healthy":["db","app"]},"watch_config":false})",
      });
}

TEST_CASE("to_json writes the TLS settings as configured: paths, not file contents") {
  const std::string_view yaml = R"(
listeners:
  - name: in
    address: 127.0.0.1:0
    tls:
      certificates:
        - {cert: /tls/a.crt, key: /tls/a.key}
        - {cert: "/tls/\"b\".crt", key: /tls/b.key}
      min_version: 1.3
      ciphers: ECDHE+AESGCM
      alpn: [http/1.0, http/1.1]
      client_ca: /tls/ca.crt
      require_client_certificate: false
      allowed_client_sans: [spiffe://cluster.local/ns/shop/sa/web, "spiffe://cluster.local/ns/ops/*"]
      forward_client_cert: sanitize_set
    routes: [{name: all, cluster: app}]
  - name: defaults
    address: 127.0.0.1:0
    tls:
      certificates: [{cert: /tls/a.crt, key: /tls/a.key}]
    routes: [{name: all, cluster: app}]
clusters:
  - name: app
    endpoints: [10.0.0.5:443]
    health_check: {tls: true}
    tls:
      sni: app.internal
      ca: /tls/ca.crt
      verify_hostname: false
      allowed_server_sans: ["spiffe://cluster.local/ns/app/*"]
      cert: /tls/client.crt
      key: /tls/client.key
      min_version: "1.3"
      alpn: [http/1.1, http/1.0]
  - name: defaults
    endpoints: [app.internal:443]
    tls: {}
  - name: unverified
    endpoints: [10.0.0.6:443]
    health_check: {tls: false}
    tls: {verify: false}
)";
  check_json(
      yaml,
      {
          R"("max_connections":0,"tls":{"certificates":[{"cert":"/tls/a.crt","key":"/tls/a.key"},)"
          R"({"cert":"/tls/\"b\".crt","key":"/tls/b.key"}],"min_version":"1.3",)"
          R"("ciphers":"ECDHE+AESGCM","alpn":["http/1.0","http/1.1"],"client_ca":"/tls/ca.crt",)"
          R"("require_client_certificate":false,)"
          R"("allowed_client_sans":["spiffe://cluster.local/ns/shop/sa/web",)"
          R"("spiffe://cluster.local/ns/ops/*"],"forward_client_cert":"sanitize_set"},"routes":)",
          // The defaults: no ciphers and no client CA are null.
          R"("tls":{"certificates":[{"cert":"/tls/a.crt","key":"/tls/a.key"}],)"
          R"("min_version":"1.2","ciphers":null,"alpn":["http/1.1"],"client_ca":null,)"
          R"("require_client_certificate":true,"allowed_client_sans":[],)"
          R"("forward_client_cert":"sanitize"},"routes":)",
          R"("expected_statuses":["200-399"],"tls":true},)",
          R"("max_response_headers":100,"tls":{"sni":"app.internal","ca":"/tls/ca.crt",)"
          R"("verify":true,"verify_hostname":false,)"
          R"("allowed_server_sans":["spiffe://cluster.local/ns/app/*"],)"
          R"("cert":"/tls/client.crt","key":"/tls/client.key","min_version":"1.3",)"
          R"("alpn":["http/1.1","http/1.0"]}},)",
          // tls: {} is the defaults: no SNI (each endpoint's name), the system trust store.
          R"("max_response_headers":100,"tls":{"sni":null,"ca":null,"verify":true,)"
          R"("verify_hostname":true,"allowed_server_sans":[],"cert":null,"key":null,)"
          R"("min_version":"1.2","alpn":["http/1.1"]}},)",
          R"("expected_statuses":["200-399"],"tls":false},)",
          R"("max_response_headers":100,"tls":{)"
          R"("warning":"TLS verification is off: any server certificate is accepted",)"
          R"("sni":null,"ca":null,"verify":false,"verify_hostname":true,)"
          R"("allowed_server_sans":[],"cert":null,"key":null,"min_version":"1.2",)"
          R"("alpn":["http/1.1"]}}])",
      });
}

TEST_CASE("to_json of a cluster changes with its TLS settings") {
  // A reload keeps a cluster's state only when to_json(cluster) is the same.
  LoadResult plain = load(R"(
listeners: [{name: in, address: 127.0.0.1:0, routes: [{name: all, cluster: app}]}]
clusters: [{name: app, endpoints: [app.internal:443]}]
)");
  LoadResult tls = load(R"(
listeners: [{name: in, address: 127.0.0.1:0, routes: [{name: all, cluster: app}]}]
clusters: [{name: app, endpoints: [app.internal:443], tls: {}}]
)");
  LoadResult other_ca = load(R"(
listeners: [{name: in, address: 127.0.0.1:0, routes: [{name: all, cluster: app}]}]
clusters: [{name: app, endpoints: [app.internal:443], tls: {ca: /other.crt}}]
)");
  CHECK_LOADS(plain);
  CHECK_LOADS(tls);
  CHECK_LOADS(other_ca);
  const std::string a = to_json(plain.config->clusters.at(0));
  const std::string b = to_json(tls.config->clusters.at(0));
  const std::string c = to_json(other_ca.config->clusters.at(0));
  CHECK(a != b);
  CHECK(b != c);
  CHECK(a.find(R"("tls":null)") != std::string::npos);
}

TEST_CASE("to_json of an empty Config is still valid JSON") {
  const std::string json = to_json(Config{});
  CHECK(JsonSyntax::valid(json));
  CHECK(json.find(R"("listeners":[],"clusters":[],"readiness":{"require_healthy":[]})") !=
        std::string::npos);
}

}  // namespace
}  // namespace bulwark::config
