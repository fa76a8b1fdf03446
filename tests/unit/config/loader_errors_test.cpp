// Every way a config can be wrong, each checked for the exact line:column and the message.
//
// Most cases start from one small valid config and add a few lines at a known place, so the line
// numbers below can be read off the helpers:
//
//   1  listeners:
//   2    - name: in
//   3      address: 127.0.0.1:8080       <- in_listener() inserts after this line (at line 4)
//   4      routes:
//   5        - name: all
//   6          cluster: app               <- in_route() inserts after this line (at line 7)
//   7  clusters:                          <- with_clusters() replaces the cluster section from here
//   8    - name: app
//   9      endpoints: [127.0.0.1:9000]    <- in_cluster() appends after this line (at line 10)
//
// For the resilience policies, in_retry() puts its lines under "        retry:" (line 7), so they
// start at line 8 with 10 spaces, and in_breaker() puts them under "    circuit_breaker:" (line
// 10), so they start at line 11 with 6 spaces. in_health_check() and in_outlier() do the same as
// in_breaker() for "    health_check:" and "    outlier_detection:".

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "config/loader.h"
#include "config_test_support.h"

namespace bulwark::config {
namespace {

using testing::describe;
using testing::has_error;
using testing::load;

const std::string kHead = "listeners:\n  - name: in\n    address: 127.0.0.1:8080\n";
const std::string kRoutes = "    routes:\n      - name: all\n        cluster: app\n";
const std::string kClusters = "clusters:\n  - name: app\n    endpoints: [127.0.0.1:9000]\n";

std::string at_top(std::string_view lines) {
  return std::string(lines) + kHead + kRoutes + kClusters;
}
std::string in_listener(std::string_view lines) {
  return kHead + std::string(lines) + kRoutes + kClusters;
}
std::string in_route(std::string_view lines) {
  return kHead + kRoutes + std::string(lines) + kClusters;
}
std::string in_cluster(std::string_view lines) {
  return kHead + kRoutes + kClusters + std::string(lines);
}
std::string with_clusters(std::string_view section) {
  return kHead + kRoutes + std::string(section);
}
std::string in_retry(std::string_view lines) {
  return in_route("        retry:\n" + std::string(lines));
}
std::string in_breaker(std::string_view lines) {
  return in_cluster("    circuit_breaker:\n" + std::string(lines));
}
std::string in_health_check(std::string_view lines) {
  return in_cluster("    health_check:\n" + std::string(lines));
}
std::string in_outlier(std::string_view lines) {
  return in_cluster("    outlier_detection:\n" + std::string(lines));
}
// One endpoint, in map form, with `KEY: VALUE` on line 11: the value is at column len(KEY) + 11.
std::string with_endpoint_key(std::string_view key, std::string_view value) {
  return with_clusters(
      "clusters:\n  - name: app\n    endpoints:\n      - address: 127.0.0.1:1\n        " +
      std::string(key) + ": " + std::string(value) + "\n");
}
// The listener's address (line 3, column 14) replaced by `address`.
std::string with_listener_address(std::string_view address) {
  return "listeners:\n  - name: in\n    address: " + std::string(address) + "\n" + kRoutes +
         kClusters;
}

struct Case {
  const char* what;
  std::string yaml;
  int line;
  int column;
  const char* message;
};

void check_only_errors(std::initializer_list<Case> cases) {
  for (const Case& c : cases) {
    CAPTURE(c.what);
    CAPTURE(c.yaml);
    CHECK_ONLY_ERROR(load(c.yaml), c.line, c.column, c.message);
  }
}

TEST_CASE("the base config of these tests is valid") {
  CHECK_LOADS(load(at_top("")));
  CHECK_LOADS(load(with_listener_address("'[::1]:8080'")));
}

TEST_CASE("unknown keys are errors at every level, listing the keys allowed there") {
  check_only_errors({
      {"top level", at_top("foo: 1\n"), 1, 1,
       "unknown key 'foo' at top level; expected one of: workers, max_connections, drain_delay, "
       "drain_timeout, admin, probes, watchdog, listeners, clusters"},
      {"near miss at top level", at_top("worker: 2\n"), 1, 1,
       "unknown key 'worker' at top level (did you mean 'workers'?); expected one of: workers,"},
      {"admin", at_top("admin:\n  port: 9901\n"), 2, 3,
       "admin: unknown key 'port' in admin; expected one of: address, token_file"},
      {"probes", at_top("probes:\n  port: 9902\n"), 2, 3,
       "probes: unknown key 'port' in probes; expected one of: address"},
      {"listener", in_listener("    max_headers: 1\n"), 4, 5,
       "listeners[0]: unknown key 'max_headers' in listener; expected one of: name, address, "
       "direction, original_destination, request_headers_timeout, idle_timeout, stream_idle_timeout, max_request_headers_size, "
       "max_request_headers, trusted_hops, max_connections, tls, routes"},
      {"route", in_route("        retries: 3\n"), 7, 9,
       "listeners[0].routes[0]: unknown key 'retries' in route; expected one of: name, match, "
       "cluster, timeout, prefix_rewrite, host_rewrite, retry, bulkhead, rate_limit, fault, "
       "upgrades"},
      {"upgrades: h2c", in_route("        upgrades: [websocket, h2c]\n"), 7, 31,
       "listeners[0].routes[0].upgrades[1]: h2c cannot be forwarded"},
      {"upgrades: not a token", in_route("        upgrades: [\"web socket\"]\n"), 7, 20,
       "listeners[0].routes[0].upgrades[0]: invalid protocol"},
      {"upgrades: duplicate", in_route("        upgrades: [websocket, WebSocket]\n"), 7, 31,
       "listeners[0].routes[0].upgrades[1]: duplicate protocol 'websocket'"},
      {"max_request_headers: 0", in_listener("    max_request_headers: 0\n"), 4, 26,
       "listeners[0].max_request_headers"},
      {"trusted_hops: too many", in_listener("    trusted_hops: 65\n"), 4, 19,
       "listeners[0].trusted_hops"},
      {"near miss in route", in_route("        retyr: {}\n"), 7, 9,
       "listeners[0].routes[0]: unknown key 'retyr' in route (did you mean 'retry'?)"},
      {"route match", in_route("        match:\n          pathh: /x\n"), 8, 11,
       "listeners[0].routes[0].match: unknown key 'pathh' in route match (did you mean 'path'?); "
       "expected one of: prefix, path, regex, host, headers, methods"},
      {"cluster", in_cluster("    lb_policy: random\n"), 10, 5,
       "clusters[0]: unknown key 'lb_policy' in cluster; expected one of: name, type, endpoints, "
       "dns_refresh, lb, connect_timeout, pool, circuit_breaker"},
      {"endpoint", with_endpoint_key("wieght", "2"), 11, 9,
       "clusters[0].endpoints[0]: unknown key 'wieght' in endpoint (did you mean 'weight'?); "
       "expected one of: address, weight"},
      {"pool", in_cluster("    pool:\n      max_conns: 1\n"), 11, 7,
       "clusters[0].pool: unknown key 'max_conns' in pool; expected one of: max_connections, "
       "idle_timeout, max_requests_per_connection, max_pending, pending_timeout"},
      {"a key that is not a string", at_top("? [a, b]\n: 1\n"), 1, 3,
       "keys must be plain strings, got a list"},
  });
}

TEST_CASE("unknown keys in the resilience policies, listing the keys allowed there") {
  check_only_errors({
      {"retry", in_retry("          attemps: 3\n"), 8, 11,
       "listeners[0].routes[0].retry: unknown key 'attemps' in retry (did you mean 'attempts'?); "
       "expected one of: attempts, per_try_timeout, retry_on, retriable_status_codes, backoff, "
       "retry_non_idempotent, max_body_bytes, budget, hedge"},
      {"retry backoff", in_retry("          backoff: {base: 1s, maximum: 2s}\n"), 8, 31,
       "listeners[0].routes[0].retry.backoff: unknown key 'maximum' in retry backoff; expected "
       "one of: base, max"},
      {"retry budget", in_retry("          budget:\n            ration: 0.1\n"), 9, 13,
       "listeners[0].routes[0].retry.budget: unknown key 'ration' in retry budget (did you mean "
       "'ratio'?); expected one of: enabled, ratio, min_retries_per_second, window"},
      {"bulkhead", in_route("        bulkhead:\n          max_concurrency: 1\n"), 8, 11,
       "listeners[0].routes[0].bulkhead: unknown key 'max_concurrency' in bulkhead (did you mean "
       "'max_concurrent'?); expected one of: max_concurrent, max_queued, queue_timeout"},
      {"rate_limit", in_route("        rate_limit:\n          rps: 10\n"), 8, 11,
       "listeners[0].routes[0].rate_limit: unknown key 'rps' in rate limit; expected one of: "
       "requests_per_second, burst"},
      {"fault", in_route("        fault:\n          delays: {}\n"), 8, 11,
       "listeners[0].routes[0].fault: unknown key 'delays' in fault (did you mean 'delay'?); "
       "expected one of: delay, abort, header_control"},
      {"fault delay", in_route("        fault:\n          delay:\n            percentage: 5\n"), 9,
       13,
       "listeners[0].routes[0].fault.delay: unknown key 'percentage' in fault delay; expected one "
       "of: percent, duration"},
      {"fault abort", in_route("        fault:\n          abort:\n            code: 503\n"), 9, 13,
       "listeners[0].routes[0].fault.abort: unknown key 'code' in fault abort; expected one of: "
       "percent, status"},
      {"circuit_breaker", in_breaker("      failure_rate: 50\n"), 11, 7,
       "clusters[0].circuit_breaker: unknown key 'failure_rate' in circuit breaker; expected one "
       "of: failure_rate_percent, slow_call_duration, slow_call_rate_percent, window, "
       "minimum_calls, open_duration, max_open_duration, half_open_calls"},
      {"duplicate", in_retry("          attempts: 2\n          attempts: 3\n"), 9, 11,
       "listeners[0].routes[0].retry: duplicate key 'attempts' in retry (first set on line 8)"},
  });
}

TEST_CASE("resilience policies must be maps") {
  check_only_errors({
      {"retry a number", in_route("        retry: 3\n"), 7, 16,
       "listeners[0].routes[0].retry: expected a map (retry), got a string"},
      {"bulkhead empty points at the key", in_route("        bulkhead:\n"), 7, 9,
       "listeners[0].routes[0].bulkhead: expected a map (bulkhead), got nothing"},
      {"rate_limit a list", in_route("        rate_limit: [100]\n"), 7, 21,
       "listeners[0].routes[0].rate_limit: expected a map (rate limit), got a list"},
      {"fault a string", in_route("        fault: abort\n"), 7, 16,
       "listeners[0].routes[0].fault: expected a map (fault), got a string"},
      {"fault delay a number", in_route("        fault: {delay: 10}\n"), 7, 24,
       "listeners[0].routes[0].fault.delay: expected a map (fault delay), got a string"},
      {"fault abort a list", in_route("        fault: {abort: [503]}\n"), 7, 24,
       "listeners[0].routes[0].fault.abort: expected a map (fault abort), got a list"},
      {"backoff a duration", in_retry("          backoff: 1s\n"), 8, 20,
       "listeners[0].routes[0].retry.backoff: expected a map (retry backoff), got a string"},
      {"budget a boolean", in_retry("          budget: false\n"), 8, 19,
       "listeners[0].routes[0].retry.budget: expected a map (retry budget), got a string"},
      {"circuit_breaker a list", in_cluster("    circuit_breaker: []\n"), 10, 22,
       "clusters[0].circuit_breaker: expected a map (circuit breaker), got a list"},
  });
}

TEST_CASE("retry: integers, durations, sizes and booleans are range-checked") {
  check_only_errors({
      {"attempts 0", in_retry("          attempts: 0\n"), 8, 21,
       "listeners[0].routes[0].retry.attempts: must be an integer from 1 to 10, got '0'"},
      {"attempts 11", in_retry("          attempts: 11\n"), 8, 21,
       "must be an integer from 1 to 10, got '11'"},
      {"attempts fraction", in_retry("          attempts: 2.5\n"), 8, 21, "got '2.5'"},
      {"per_try_timeout 0", in_retry("          per_try_timeout: 0s\n"), 8, 28,
       "listeners[0].routes[0].retry.per_try_timeout: must be greater than 0s"},
      {"per_try_timeout without unit", in_retry("          per_try_timeout: 100\n"), 8, 28,
       "invalid duration '100'"},
      {"backoff base 0", in_retry("          backoff:\n            base: 0ms\n"), 9, 19,
       "listeners[0].routes[0].retry.backoff.base: must be greater than 0s"},
      {"backoff max 0", in_retry("          backoff: {max: 0s}\n"), 8, 26,
       "listeners[0].routes[0].retry.backoff.max: must be greater than 0s"},
      {"retry_non_idempotent yes", in_retry("          retry_non_idempotent: yes\n"), 8, 33,
       "listeners[0].routes[0].retry.retry_non_idempotent: must be true or false, got 'yes'"},
      {"retry_non_idempotent a list", in_retry("          retry_non_idempotent: [true]\n"), 8, 33,
       "listeners[0].routes[0].retry.retry_non_idempotent: expected true or false, got a list"},
      {"max_body_bytes too big", in_retry("          max_body_bytes: 65MiB\n"), 8, 27,
       "listeners[0].routes[0].retry.max_body_bytes: must be between 0B and 64MiB, got '65MiB'"},
      {"max_body_bytes negative", in_retry("          max_body_bytes: -1\n"), 8, 27,
       "invalid size '-1'"},
      {"budget ratio above 1", in_retry("          budget:\n            ratio: 1.5\n"), 9, 20,
       "listeners[0].routes[0].retry.budget.ratio: must be a number from 0 to 1, got '1.5'"},
      {"budget ratio negative", in_retry("          budget: {ratio: -0.1}\n"), 8, 27,
       "must be a number from 0 to 1, got '-0.1'"},
      {"budget ratio percent", in_retry("          budget: {ratio: 20%}\n"), 8, 27,
       "must be a number from 0 to 1, got '20%'"},
      {"budget min_retries_per_second negative",
       in_retry("          budget: {min_retries_per_second: -1}\n"), 8, 44,
       "listeners[0].routes[0].retry.budget.min_retries_per_second: must be an integer from 0 to "
       "4294967295, got '-1'"},
      {"budget window 0", in_retry("          budget: {window: 0s}\n"), 8, 28,
       "listeners[0].routes[0].retry.budget.window: must be greater than 0s"},
      {"budget enabled 1", in_retry("          budget: {enabled: 1}\n"), 8, 29,
       "listeners[0].routes[0].retry.budget.enabled: must be true or false, got '1'"},
  });
}

TEST_CASE("retry.hedge: its delay, its number, and how they fit the retry policy") {
  check_only_errors({
      {"hedge a duration", in_retry("          hedge: 50ms\n"), 8, 18,
       "listeners[0].routes[0].retry.hedge: expected a map (hedge), got a string"},
      {"delay 0", in_retry("          hedge: {delay: 0s}\n"), 8, 26,
       "listeners[0].routes[0].retry.hedge.delay: must be greater than 0s"},
      {"delay a word", in_retry("          hedge: {delay: soon}\n"), 8, 26,
       "listeners[0].routes[0].retry.hedge.delay: invalid duration 'soon'"},
      {"max_hedges 4", in_retry("          hedge: {max_hedges: 4}\n"), 8, 31,
       "listeners[0].routes[0].retry.hedge.max_hedges: must be an integer from 1 to 3, got '4'"},
      {"max_hedges 0", in_retry("          hedge: {max_hedges: 0}\n"), 8, 31,
       "must be an integer from 1 to 3, got '0'"},
      {"as many hedges as attempts",
       in_retry("          attempts: 2\n          hedge: {max_hedges: 2}\n"), 9, 31,
       "listeners[0].routes[0].retry.hedge.max_hedges: each hedge is a try: max_hedges (2) must "
       "be less than this retry policy's attempts (2)"},
      {"one attempt, the default max_hedges", in_retry("          attempts: 1\n          hedge: {}\n"),
       9, 18, "max_hedges (1) must be less than this retry policy's attempts (1)"},
      {"delay not below per_try_timeout",
       in_retry("          per_try_timeout: 100ms\n          hedge: {delay: 100ms}\n"), 9, 26,
       "listeners[0].routes[0].retry.hedge.delay: the hedge delay must be shorter than "
       "per_try_timeout (100ms), or no hedge would ever start"},
      {"unknown key", in_retry("          hedge: {delay: 50ms, max: 2}\n"), 8, 32,
       "unknown key 'max' in hedge"},
  });
}

TEST_CASE("retry: backoff base must not exceed max, with the error on the key that was set") {
  check_only_errors({
      {"both set", in_retry("          backoff: {base: 500ms, max: 250ms}\n"), 8, 39,
       "listeners[0].routes[0].retry.backoff.max: must not be less than base (500ms), got 250ms"},
      {"base above the default max", in_retry("          backoff: {base: 1s}\n"), 8, 27,
       "listeners[0].routes[0].retry.backoff.base: must not be greater than max (250ms, its "
       "default), got 1s"},
      {"max below the default base", in_retry("          backoff: {max: 10ms}\n"), 8, 26,
       "listeners[0].routes[0].retry.backoff.max: must not be less than base (25ms, its default), "
       "got 10ms"},
      {"an invalid base is not compared too", in_retry("          backoff: {base: x, max: 1ms}\n"),
       8, 27, "listeners[0].routes[0].retry.backoff.base: invalid duration 'x'"},
  });
  CHECK_LOADS(load(in_retry("          backoff: {base: 250ms, max: 250ms}\n")));
}

TEST_CASE("retry: retry_on lists known conditions, each once") {
  // "          retry_on: [" is 21 characters, so the first condition is at 8:22.
  check_only_errors({
      {"unknown", in_retry("          retry_on: [gateway]\n"), 8, 22,
       "listeners[0].routes[0].retry.retry_on[0]: unknown retry condition 'gateway'; expected one "
       "of: connect-failure, reset, gateway-error, 5xx, retriable-status-codes, per-try-timeout"},
      {"near miss", in_retry("          retry_on: [reset, connect-failures]\n"), 8, 29,
       "listeners[0].routes[0].retry.retry_on[1]: unknown retry condition 'connect-failures' (did "
       "you mean 'connect-failure'?); expected one of: connect-failure, reset,"},
      {"case matters", in_retry("          retry_on: [5XX]\n"), 8, 22,
       "unknown retry condition '5XX' (did you mean '5xx'?)"},
      {"Envoy's underscore spelling", in_retry("          retry_on: [connect_failure]\n"), 8, 22,
       "unknown retry condition 'connect_failure' (did you mean 'connect-failure'?)"},
      {"duplicate", in_retry("          retry_on: [5xx, reset, 5xx]\n"), 8, 34,
       "listeners[0].routes[0].retry.retry_on[2]: duplicate retry condition '5xx'"},
      {"empty", in_retry("          retry_on: []\n"), 8, 21,
       "listeners[0].routes[0].retry.retry_on: must list at least one retry condition"},
      {"a string", in_retry("          retry_on: 5xx\n"), 8, 21,
       "listeners[0].routes[0].retry.retry_on: expected a list of retry conditions, got a string"},
      {"a list inside", in_retry("          retry_on: [[5xx]]\n"), 8, 22,
       "listeners[0].routes[0].retry.retry_on[0]: expected a retry condition such as 5xx, got a "
       "list"},
  });
}

TEST_CASE("retry: status codes and the conditions that need them go together") {
  check_only_errors({
      {"code too small",
       in_retry("          retry_on: [retriable-status-codes]\n"
                "          retriable_status_codes: [99]\n"),
       9, 36,
       "listeners[0].routes[0].retry.retriable_status_codes[0]: must be an integer from 100 to "
       "599, got '99'"},
      {"code too big",
       in_retry("          retry_on: [retriable-status-codes]\n"
                "          retriable_status_codes: [409, 600]\n"),
       9, 41,
       "listeners[0].routes[0].retry.retriable_status_codes[1]: must be an integer from 100 to "
       "599, got '600'"},
      {"duplicate code",
       in_retry("          retry_on: [retriable-status-codes]\n"
                "          retriable_status_codes: [409, 409]\n"),
       9, 41, "listeners[0].routes[0].retry.retriable_status_codes[1]: duplicate status code 409"},
      {"empty list",
       in_retry("          retry_on: [retriable-status-codes]\n"
                "          retriable_status_codes: []\n"),
       9, 35,
       "listeners[0].routes[0].retry.retriable_status_codes: must list at least one status code"},
      {"the condition without codes",
       in_retry("          retry_on: [5xx, retriable-status-codes]\n"), 8, 27,
       "listeners[0].routes[0].retry.retry_on[1]: 'retriable-status-codes' needs a non-empty "
       "retriable_status_codes list in this retry policy"},
      {"codes without the condition",
       in_retry("          retry_on: [5xx]\n          retriable_status_codes: [409]\n"), 9, 35,
       "listeners[0].routes[0].retry.retriable_status_codes: these codes are only retried when "
       "retry_on lists 'retriable-status-codes'; add it to retry_on"},
      {"codes with the default retry_on", in_retry("          retriable_status_codes: [409]\n"), 8,
       35,
       "these codes are only retried when retry_on lists 'retriable-status-codes' (the default "
       "retry_on does not); add it to retry_on"},
      {"a misspelt condition is the only error",
       in_retry("          retry_on: [retriable-status-code]\n"
                "          retriable_status_codes: [409]\n"),
       8, 22,
       "unknown retry condition 'retriable-status-code' (did you mean 'retriable-status-codes'?)"},
      {"a misspelt retry_on is the only error",
       in_retry("          retry_onn: [retriable-status-codes]\n"
                "          retriable_status_codes: [409]\n"),
       8, 11, "unknown key 'retry_onn' in retry (did you mean 'retry_on'?)"},
      {"per-try-timeout without per_try_timeout",
       in_retry("          retry_on: [per-try-timeout]\n"), 8, 22,
       "listeners[0].routes[0].retry.retry_on[0]: 'per-try-timeout' needs a per_try_timeout in "
       "this retry policy"},
      {"an invalid per_try_timeout is the only error",
       in_retry("          per_try_timeout: 0s\n          retry_on: [per-try-timeout]\n"), 8, 28,
       "listeners[0].routes[0].retry.per_try_timeout: must be greater than 0s"},
  });
  CHECK_LOADS(
      load(in_retry("          per_try_timeout: 1s\n          retry_on: [per-try-timeout]\n")));
  CHECK_LOADS(load(in_retry("          per_try_timeout: 1s\n")));  // a limit without retrying it
}

TEST_CASE("bulkhead and rate_limit are range-checked") {
  check_only_errors({
      {"max_concurrent 0", in_route("        bulkhead: {max_concurrent: 0}\n"), 7, 36,
       "listeners[0].routes[0].bulkhead.max_concurrent: must be an integer from 1 to 4294967295, "
       "got '0'"},
      {"max_queued negative", in_route("        bulkhead:\n          max_queued: -1\n"), 8, 23,
       "listeners[0].routes[0].bulkhead.max_queued: must be an integer from 0 to 4294967295, got "
       "'-1'"},
      {"queue_timeout 0", in_route("        bulkhead:\n          queue_timeout: 0s\n"), 8, 26,
       "listeners[0].routes[0].bulkhead.queue_timeout: must be greater than 0s"},
      {"requests_per_second 0", in_route("        rate_limit:\n          requests_per_second: 0\n"),
       8, 32,
       "listeners[0].routes[0].rate_limit.requests_per_second: must be a number greater than 0 and "
       "at most 1000000000, got '0'"},
      {"requests_per_second 0.0",
       in_route("        rate_limit:\n          requests_per_second: 0.0\n"), 8, 32, "got '0.0'"},
      {"requests_per_second exponent",
       in_route("        rate_limit:\n          requests_per_second: 1e3\n"), 8, 32,
       "must be a number greater than 0 and at most 1000000000, got '1e3'"},
      {"requests_per_second too many",
       in_route("        rate_limit:\n          requests_per_second: 1000000000.5\n"), 8, 32,
       "got '1000000000.5'"},
      {"requests_per_second a map",
       in_route("        rate_limit:\n          requests_per_second: {n: 1}\n"), 8, 32,
       "listeners[0].routes[0].rate_limit.requests_per_second: expected a number greater than 0 "
       "and at most 1000000000, got a map"},
      {"burst 0", in_route("        rate_limit:\n          burst: 0\n"), 8, 18,
       "listeners[0].routes[0].rate_limit.burst: must be an integer from 1 to 4294967295, got "
       "'0'"},
  });
}

TEST_CASE("fault percentages, durations and statuses are range-checked") {
  check_only_errors({
      {"delay percent above 100", in_route("        fault:\n          delay: {percent: 100.5}\n"),
       8, 28,
       "listeners[0].routes[0].fault.delay.percent: must be a number from 0 to 100, got '100.5'"},
      {"delay percent with a sign", in_route("        fault:\n          delay: {percent: '10%'}\n"),
       8, 28, "must be a number from 0 to 100, got '10%'"},
      {"delay duration 0", in_route("        fault:\n          delay: {duration: 0s}\n"), 8, 29,
       "listeners[0].routes[0].fault.delay.duration: must be greater than 0s"},
      {"abort percent negative", in_route("        fault:\n          abort: {percent: -5}\n"), 8,
       28, "listeners[0].routes[0].fault.abort.percent: must be a number from 0 to 100, got '-5'"},
      {"abort percent a list", in_route("        fault:\n          abort: {percent: [5]}\n"), 8, 28,
       "listeners[0].routes[0].fault.abort.percent: expected a number from 0 to 100, got a list"},
      {"abort status 199", in_route("        fault:\n          abort: {status: 199}\n"), 8, 27,
       "listeners[0].routes[0].fault.abort.status: must be an integer from 200 to 599, got '199'"},
      {"abort status 600", in_route("        fault:\n          abort: {status: 600}\n"), 8, 27,
       "must be an integer from 200 to 599, got '600'"},
      {"header_control on", in_route("        fault:\n          header_control: on\n"), 8, 27,
       "listeners[0].routes[0].fault.header_control: must be true or false, got 'on'"},
  });
}

TEST_CASE("circuit_breaker values are range-checked") {
  // "      KEY: " puts each value at column len(KEY) + 9 of line 11.
  check_only_errors({
      {"failure_rate_percent 0", in_breaker("      failure_rate_percent: 0\n"), 11, 29,
       "clusters[0].circuit_breaker.failure_rate_percent: must be an integer from 1 to 100, got "
       "'0'"},
      {"failure_rate_percent 101", in_breaker("      failure_rate_percent: 101\n"), 11, 29,
       "must be an integer from 1 to 100, got '101'"},
      {"failure_rate_percent fraction", in_breaker("      failure_rate_percent: 50.5\n"), 11, 29,
       "must be an integer from 1 to 100, got '50.5'"},
      {"slow_call_duration 0", in_breaker("      slow_call_duration: 0s\n"), 11, 27,
       "clusters[0].circuit_breaker.slow_call_duration: must be greater than 0s"},
      {"slow_call_rate_percent 0", in_breaker("      slow_call_rate_percent: 0\n"), 11, 31,
       "clusters[0].circuit_breaker.slow_call_rate_percent: must be an integer from 1 to 100, got "
       "'0'"},
      {"window 0", in_breaker("      window: 0s\n"), 11, 15,
       "clusters[0].circuit_breaker.window: must be greater than 0s"},
      {"minimum_calls 0", in_breaker("      minimum_calls: 0\n"), 11, 22,
       "clusters[0].circuit_breaker.minimum_calls: must be an integer from 1 to 4294967295, got "
       "'0'"},
      {"open_duration 0", in_breaker("      open_duration: 0s\n"), 11, 22,
       "clusters[0].circuit_breaker.open_duration: must be greater than 0s"},
      {"max_open_duration garbage", in_breaker("      max_open_duration: forever\n"), 11, 26,
       "clusters[0].circuit_breaker.max_open_duration: invalid duration 'forever'"},
      {"half_open_calls 0", in_breaker("      half_open_calls: 0\n"), 11, 24,
       "clusters[0].circuit_breaker.half_open_calls: must be an integer from 1 to 4294967295, got "
       "'0'"},
  });
}

TEST_CASE("circuit_breaker: max_open_duration must not be less than open_duration") {
  check_only_errors({
      {"both set", in_breaker("      open_duration: 1m\n      max_open_duration: 30s\n"), 12, 26,
       "clusters[0].circuit_breaker.max_open_duration: must not be less than open_duration (1m), "
       "got 30s"},
      {"open_duration above the default max", in_breaker("      open_duration: 10m\n"), 11, 22,
       "clusters[0].circuit_breaker.open_duration: must not be greater than max_open_duration (5m, "
       "its default), got 10m"},
      {"max_open_duration below the default open_duration",
       in_breaker("      max_open_duration: 10s\n"), 11, 26,
       "clusters[0].circuit_breaker.max_open_duration: must not be less than open_duration (30s, "
       "its default), got 10s"},
  });
  CHECK_ONLY_ERROR(load(in_breaker("      open_duration: 10m\n      max_open_duraton: 1h\n")), 12,
                   7, "unknown key 'max_open_duraton' in circuit breaker (did you mean");
  CHECK_LOADS(load(in_breaker("      open_duration: 1m\n      max_open_duration: 1m\n")));
}

TEST_CASE("every mistake in one policy block is reported, each at its place") {
  LoadResult result =
      load(in_retry("          attempts: 0\n"
                    "          backoff: {base: 0s}\n"
                    "          budget: {ratio: 2, window: 0s}\n"));
  INFO(describe(result));
  CHECK(result.config == nullptr);
  REQUIRE(result.errors.size() == 4);
  CHECK(has_error(result, 8, 21, "retry.attempts: must be an integer from 1 to 10, got '0'"));
  CHECK(has_error(result, 9, 27, "retry.backoff.base: must be greater than 0s"));
  CHECK(has_error(result, 10, 27, "retry.budget.ratio: must be a number from 0 to 1, got '2'"));
  CHECK(has_error(result, 10, 38, "retry.budget.window: must be greater than 0s"));
}

TEST_CASE("duplicate YAML keys are errors, not silently dropped") {
  check_only_errors({
      {"top level", at_top("workers: 1\nworkers: 2\n"), 2, 1,
       "duplicate key 'workers' at top level (first set on line 1)"},
      {"listener", in_listener("    address: 127.0.0.1:9090\n"), 4, 5,
       "listeners[0]: duplicate key 'address' in listener (first set on line 3)"},
      {"flow map", in_cluster("    pool: {max_pending: 1, max_pending: 2}\n"), 10, 28,
       "clusters[0].pool: duplicate key 'max_pending' in pool (first set on line 10)"},
  });
}

TEST_CASE("integers are checked for type and range") {
  check_only_errors({
      {"word", at_top("workers: abc\n"), 1, 10,
       "workers: must be an integer from 1 to 1024, got 'abc'"},
      {"zero", at_top("workers: 0\n"), 1, 10,
       "workers: must be an integer from 1 to 1024, got '0'"},
      {"negative", at_top("workers: -1\n"), 1, 10, "got '-1'"},
      {"too many", at_top("workers: 1025\n"), 1, 10, "got '1025'"},
      {"huge", at_top("workers: 99999999999999999999999\n"), 1, 10,
       "got '99999999999999999999999'"},
      {"fraction", at_top("workers: 2.5\n"), 1, 10, "got '2.5'"},
      {"hex", at_top("workers: 0x10\n"), 1, 10, "got '0x10'"},
      {"list", at_top("workers: [1]\n"), 1, 10,
       "workers: expected an integer from 1 to 1024, got a list"},
      {"nothing", at_top("workers:\n"), 1, 1,
       "workers: expected an integer from 1 to 1024, got nothing"},
      {"max_connections 0", in_cluster("    pool:\n      max_connections: 0\n"), 11, 24,
       "clusters[0].pool.max_connections: must be an integer from 1 to 4294967295, got '0'"},
      {"max_pending negative", in_cluster("    pool:\n      max_pending: -1\n"), 11, 20,
       "clusters[0].pool.max_pending: must be an integer from 0 to 4294967295, got '-1'"},
      {"max_requests_per_connection too big",
       in_cluster("    pool:\n      max_requests_per_connection: 4294967296\n"), 11, 36,
       "clusters[0].pool.max_requests_per_connection: must be an integer from 0 to 4294967295"},
  });
}

TEST_CASE("durations are checked for syntax and, where zero makes no sense, for zero") {
  check_only_errors({
      {"garbage", in_route("        timeout: abc\n"), 7, 18,
       "listeners[0].routes[0].timeout: invalid duration 'abc' (expected e.g. 250ms, 1s, 2m, 1h)"},
      {"negative", in_route("        timeout: -1s\n"), 7, 18, "invalid duration '-1s'"},
      {"no unit", in_route("        timeout: 15\n"), 7, 18, "invalid duration '15'"},
      {"fraction", in_route("        timeout: 1.5s\n"), 7, 18, "invalid duration '1.5s'"},
      {"overflow", in_route("        timeout: 9999999999999999h\n"), 7, 18,
       "invalid duration '9999999999999999h'"},
      {"nothing points at the key", in_route("        timeout:\n"), 7, 9,
       "listeners[0].routes[0].timeout: expected a duration (e.g. 250ms, 1s, 2m, 1h), got nothing"},
      {"a map", in_route("        timeout: {s: 1}\n"), 7, 18,
       "expected a duration (e.g. 250ms, 1s, 2m, 1h), got a map"},
      {"space", at_top("drain_delay: 5 s\n"), 1, 14, "drain_delay: invalid duration '5 s'"},
      {"unknown unit", at_top("drain_timeout: 1d\n"), 1, 16,
       "drain_timeout: invalid duration '1d'"},
      {"request_headers_timeout 0", in_listener("    request_headers_timeout: 0s\n"), 4, 30,
       "listeners[0].request_headers_timeout: must be greater than 0s"},
      {"idle_timeout 0", in_listener("    idle_timeout: 0ms\n"), 4, 19,
       "listeners[0].idle_timeout: must be greater than 0s"},
      {"connect_timeout 0", in_cluster("    connect_timeout: 0s\n"), 10, 22,
       "clusters[0].connect_timeout: must be greater than 0s"},
      {"dns_refresh 0", in_cluster("    dns_refresh: 0s\n"), 10, 18,
       "clusters[0].dns_refresh: must be greater than 0s"},
      {"pool idle_timeout 0", in_cluster("    pool:\n      idle_timeout: 0s\n"), 11, 21,
       "clusters[0].pool.idle_timeout: must be greater than 0s"},
      {"pool pending_timeout 0", in_cluster("    pool:\n      pending_timeout: 0s\n"), 11, 24,
       "clusters[0].pool.pending_timeout: must be greater than 0s"},
  });
}

TEST_CASE("sizes are checked for syntax and range") {
  check_only_errors({
      {"decimal unit", in_listener("    max_request_headers_size: 12KB\n"), 4, 31,
       "listeners[0].max_request_headers_size: invalid size '12KB' (expected e.g. 512B, 64KiB, "
       "1MiB, or a number of bytes)"},
      {"fraction", in_listener("    max_request_headers_size: 1.5KiB\n"), 4, 31,
       "invalid size '1.5KiB'"},
      {"too small", in_listener("    max_request_headers_size: 1023\n"), 4, 31,
       "listeners[0].max_request_headers_size: must be between 1KiB and 1MiB, got '1023'"},
      {"too large", in_listener("    max_request_headers_size: 2MiB\n"), 4, 31,
       "must be between 1KiB and 1MiB, got '2MiB'"},
      {"a list", in_listener("    max_request_headers_size: [1]\n"), 4, 31,
       "expected a size (e.g. 512B, 64KiB, 1MiB, or a number of bytes), got a list"},
  });
}

TEST_CASE("listener and admin addresses must be IP literals with a port") {
  check_only_errors({
      {"DNS name", with_listener_address("localhost:8080"), 3, 14,
       "listeners[0].address: must be an IP address to listen on, not a DNS name: "
       "'localhost:8080'"},
      {"no port", with_listener_address("127.0.0.1"), 3, 14,
       "listeners[0].address: invalid address '127.0.0.1': missing port (expected e.g. "
       "0.0.0.0:8080 or [::]:8080)"},
      {"IPv6 without brackets", with_listener_address("'::1:8080'"), 3, 14,
       "an IPv6 address must be in brackets"},
      {"bad IPv6", with_listener_address("'[::g]:8080'"), 3, 14,
       "'::g' is not a valid IPv6 address"},
      {"port out of range", with_listener_address("127.0.0.1:70000"), 3, 14,
       "port '70000' is out of range 0..65535"},
      {"named port", with_listener_address("0.0.0.0:http"), 3, 14, "port 'http' is not a number"},
      {"bad IPv4", with_listener_address("127.0.0.256:80"), 3, 14,
       "'127.0.0.256' is neither an IPv4 address nor a valid DNS name"},
      {"a list", with_listener_address("[127.0.0.1:8080]"), 3, 14,
       "listeners[0].address: expected an address such as 0.0.0.0:8080 or [::]:8080, got a list"},
      {"admin DNS name", at_top("admin:\n  address: localhost:9901\n"), 2, 12,
       "admin.address: must be an IP address to listen on, not a DNS name"},
      {"admin no port", at_top("admin:\n  address: 127.0.0.1\n"), 2, 12,
       "admin.address: invalid address"},
      {"admin not a map", at_top("admin: 127.0.0.1:9901\n"), 1, 8,
       "admin: expected a map (admin), got a string"},
  });
}

TEST_CASE("endpoint addresses may be DNS names but need a port from 1 to 65535") {
  const auto endpoints = [](std::string_view list) {
    return with_clusters("clusters:\n  - name: app\n    endpoints: " + std::string(list) + "\n");
  };
  // "    endpoints: [" is 16 characters, so the first endpoint is at 9:17.
  check_only_errors({
      {"port 0", endpoints("[127.0.0.1:0]"), 9, 17,
       "clusters[0].endpoints[0]: port must be 1..65535, got '127.0.0.1:0'"},
      {"port 0 in a map", endpoints("[{address: 'app.internal:0'}]"), 9, 27,
       "clusters[0].endpoints[0].address: port must be 1..65535"},
      {"IPv6 without brackets", endpoints("['::1:80']"), 9, 17,
       "clusters[0].endpoints[0]: invalid address '::1:80': an IPv6 address must be in brackets"},
      {"bad DNS name", endpoints("['bad_host!:80']"), 9, 17,
       "'bad_host!' is neither an IPv4 address nor a valid DNS name (expected e.g. 10.0.0.5:9000, "
       "[::1]:9000 or app.internal:9000)"},
      {"no port", endpoints("[127.0.0.1:9000, app.internal]"), 9, 33,
       "clusters[0].endpoints[1]: invalid address 'app.internal': missing port"},
      {"a list", endpoints("[[127.0.0.1:9000]]"), 9, 17,
       "clusters[0].endpoints[0]: expected \"host:port\" or a map with 'address' and optional "
       "'weight' and 'priority', got a list"},
      {"map without address", endpoints("[{weight: 2}]"), 9, 17,
       "clusters[0].endpoints[0]: missing required key 'address' in endpoint"},
      {"not a list", endpoints("127.0.0.1:9000"), 9, 16,
       "clusters[0].endpoints: expected a list of endpoints, got a string"},
      {"empty", endpoints("[]"), 9, 16, "clusters[0].endpoints: must list at least one endpoint"},
  });
}

TEST_CASE("endpoint weights are 1..10000") {
  const auto weight = [](std::string_view value) { return with_endpoint_key("weight", value); };
  check_only_errors({
      {"zero", weight("0"), 11, 17,
       "clusters[0].endpoints[0].weight: must be an integer from 1 to 10000, got '0'"},
      {"too big", weight("10001"), 11, 17, "must be an integer from 1 to 10000, got '10001'"},
      {"negative", weight("-1"), 11, 17, "got '-1'"},
      {"word", weight("heavy"), 11, 17, "got 'heavy'"},
      {"fraction", weight("1.5"), 11, 17, "got '1.5'"},
  });
  CHECK_LOADS(load(weight("10000")));
  CHECK_LOADS(load(weight("1")));
}

TEST_CASE("required keys are reported missing at the map that lacks them") {
  check_only_errors({
      {"listeners", kClusters, 1, 1, "missing required key 'listeners' at top level"},
      {"clusters", kHead + kRoutes, 1, 1, "missing required key 'clusters' at top level"},
      {"listener name", "listeners:\n  - address: 127.0.0.1:8080\n" + kRoutes + kClusters, 2, 5,
       "listeners[0]: missing required key 'name' in listener"},
      {"listener address", "listeners:\n  - name: in\n" + kRoutes + kClusters, 2, 5,
       "listeners[0]: missing required key 'address' in listener"},
      {"listener routes", kHead + kClusters, 2, 5,
       "listeners[0]: missing required key 'routes' in listener"},
      {"route name", kHead + "    routes:\n      - cluster: app\n" + kClusters, 5, 9,
       "listeners[0].routes[0]: missing required key 'name' in route"},
      {"route cluster", kHead + "    routes:\n      - name: all\n        timeout: 1s\n" + kClusters,
       5, 9, "listeners[0].routes[0]: missing required key 'cluster' in route"},
      {"cluster name", with_clusters("clusters:\n  - endpoints: [127.0.0.1:9000]\n"), 8, 5,
       "clusters[0]: missing required key 'name' in cluster"},
      {"cluster endpoints", with_clusters("clusters:\n  - name: app\n"), 8, 5,
       "clusters[0]: missing required key 'endpoints' in cluster"},
      {"in a flow map", with_clusters("clusters: [{endpoints: ['127.0.0.1:1']}]\n"), 7, 12,
       "clusters[0]: missing required key 'name' in cluster"},
  });
}

TEST_CASE("lists that must not be empty, and lists that are not lists") {
  check_only_errors({
      {"listeners empty", "listeners: []\n" + kClusters, 1, 12,
       "listeners: must list at least one listener"},
      {"routes empty", kHead + "    routes: []\n" + kClusters, 4, 13,
       "listeners[0].routes: must list at least one route"},
      {"clusters empty", kHead + kRoutes + "clusters: []\n", 7, 11,
       "clusters: must list at least one cluster"},
      {"methods empty", in_route("        match: {methods: []}\n"), 7, 26,
       "listeners[0].routes[0].match.methods: must list at least one method"},
      {"listeners a map", "listeners: {}\n" + kClusters, 1, 12,
       "listeners: expected a list of listeners, got a map"},
      {"listeners nothing", "listeners:\n" + kClusters, 1, 1,
       "listeners: expected a list of listeners, got nothing"},
      {"routes a string", kHead + "    routes: all\n" + kClusters, 4, 13,
       "listeners[0].routes: expected a list of routes, got a string"},
      {"listener a string", "listeners: [inbound]\n" + kClusters, 1, 13,
       "listeners[0]: expected a map (listener), got a string"},
      {"route a list", kHead + "    routes: [[all]]\n" + kClusters, 4, 14,
       "listeners[0].routes[0]: expected a map (route), got a list"},
  });
}

TEST_CASE("names are strings, not empty, and unique where they must be") {
  check_only_errors({
      {"listener name empty",
       "listeners:\n  - name: ''\n    address: 127.0.0.1:8080\n" + kRoutes + kClusters, 2, 11,
       "listeners[0].name: must not be empty"},
      {"route name a list",
       kHead + "    routes:\n      - name: [a]\n        cluster: app\n" + kClusters, 5, 15,
       "listeners[0].routes[0].name: expected a name, got a list"},
      {"cluster reference a map",
       kHead + "    routes:\n      - name: all\n        cluster: {app: 1}\n" + kClusters, 6, 18,
       "listeners[0].routes[0].cluster: expected a name, got a map"},
      {"duplicate listener",
       kHead + kRoutes + "  - name: in\n    address: 127.0.0.1:8081\n" + kRoutes + kClusters, 7, 11,
       "listeners[1].name: duplicate listener name 'in' (first defined on line 2)"},
      {"duplicate route", in_route("      - name: all\n        cluster: app\n"), 7, 15,
       "listeners[0].routes[1].name: duplicate route name 'all' (first defined on line 5)"},
      {"duplicate cluster", in_cluster("  - name: app\n    endpoints: [127.0.0.1:9001]\n"), 10, 11,
       "clusters[1].name: duplicate cluster name 'app' (first defined on line 8)"},
  });
}

TEST_CASE("a route must name a defined cluster, and the error points at the name") {
  check_only_errors({
      {"unknown cluster",
       "listeners:\n  - name: in\n    address: 127.0.0.1:8080\n    routes:\n      - name: api\n"
       "        cluster: app\n"
       "clusters:\n  - name: web\n    endpoints: [127.0.0.1:9000]\n  - name: db\n"
       "    endpoints: [127.0.0.1:9001]\n",
       6, 18,
       "listeners[0].routes[0].cluster: route 'api' names unknown cluster 'app' (defined clusters: "
       "db, web)"},
      {"case matters", kHead + "    routes:\n      - name: all\n        cluster: App\n" + kClusters,
       6, 18, "route 'all' names unknown cluster 'App'"},
  });
}

TEST_CASE("route matches: path matchers") {
  check_only_errors({
      {"prefix and path", in_route("        match:\n          prefix: /a\n          path: /b\n"), 9,
       11,
       "listeners[0].routes[0].match: only one of 'prefix', 'path' or 'regex' may be set, found "
       "'prefix' and 'path'"},
      {"in file order", in_route("        match:\n          regex: x\n          prefix: /a\n"), 9,
       11, "found 'regex' and 'prefix'"},
      {"prefix without slash", in_route("        match: {prefix: api}\n"), 7, 25,
       "listeners[0].routes[0].match.prefix: must start with '/', got 'api'"},
      {"empty path", in_route("        match: {path: ''}\n"), 7, 23,
       "listeners[0].routes[0].match.path: must start with '/', got ''"},
      {"path a list", in_route("        match: {path: [/a]}\n"), 7, 23,
       "listeners[0].routes[0].match.path: expected a path starting with '/', got a list"},
      {"invalid regex", in_route("        match: {regex: '('}\n"), 7, 24,
       "listeners[0].routes[0].match.regex: invalid regex '(': "},
      {"invalid bracket regex", in_route("        match: {regex: '/[a-'}\n"), 7, 24,
       "invalid regex '/[a-': "},
      // ECMAScript (std::regex before issue 12) allowed these; RE2, which never backtracks, not.
      {"backreference", in_route("        match: {regex: '(a)\\1'}\n"), 7, 24,
       "listeners[0].routes[0].match.regex: invalid regex '(a)\\1': invalid escape sequence: \\1 "
       "(expected RE2 syntax: https://github.com/google/re2/wiki/Syntax)"},
      {"lookahead", in_route("        match: {regex: '^/a(?=b)'}\n"), 7, 24,
       "listeners[0].routes[0].match.regex: invalid regex '^/a(?=b)': invalid perl operator: (?="},
      {"repeated repetition", in_route("        match: {regex: 'a{1000}{1000}'}\n"), 7, 24,
       "invalid regex 'a{1000}{1000}': bad repetition operator: {1000}{1000}"},
      {"program over the cap", in_route("        match: {regex: '^/[a-z]{997}'}\n"), 7, 24,
       "listeners[0].routes[0].match.regex: regex '^/[a-z]{997}' compiles to a program of size "
       "1001, more than the cap of 1000"},
      {"match a list", in_route("        match: [/x]\n"), 7, 16,
       "listeners[0].routes[0].match: expected a map (route match), got a list"},
  });

  SUBCASE("all three matchers: two errors") {
    LoadResult result = load(
        in_route("        match:\n          prefix: /a\n          path: /b\n          regex: c\n"));
    INFO(describe(result));
    CHECK(result.errors.size() == 2);
    CHECK(has_error(result, 9, 11, "found 'prefix' and 'path'"));
    CHECK(has_error(result, 10, 11, "found 'prefix' and 'regex'"));
  }
  SUBCASE("the regex error carries RE2's explanation") {
    CHECK_ONLY_ERROR(load(in_route("        match: {regex: '('}\n")), 7, 24,
                     "listeners[0].routes[0].match.regex: invalid regex '(': missing ): (");
  }
  SUBCASE("a long alternation is over the cap too") {
    // 200 words of 9 or 10 letters that share few prefixes, so RE2 cannot factor them much.
    std::string words;
    for (uint64_t i = 1; i <= 200; ++i) {
      if (i > 1) words += '|';
      for (char digit : std::to_string(i * 2654435761u % 1000000007u)) words += 'a' + (digit - '0');
    }
    CHECK_ONLY_ERROR(load(in_route("        match: {regex: '^/(" + words + ")/'}\n")), 7, 24,
                     "compiles to a program of size 1780, more than the cap of 1000");
  }
  SUBCASE("a program of exactly the cap loads") {
    CHECK_LOADS(load(in_route("        match: {regex: '^/[a-z]{996}'}\n")));
  }
  SUBCASE("a pattern over RE2's memory budget names the budget and the cap") {
    const std::string literal(100000, 'a');
    CHECK_ONLY_ERROR(load(in_route("        match: {regex: '" + literal + "'}\n")), 7, 24,
                     "pattern too large - compile failed (a pattern may use at most 1024 KiB "
                     "compiled, and its program size may be at most 1000)");
  }
}

TEST_CASE("route matches: prefix_rewrite needs a prefix match") {
  check_only_errors({
      {"with path", in_route("        match: {path: /a}\n        prefix_rewrite: /b\n"), 8, 25,
       "listeners[0].routes[0].prefix_rewrite: only allowed when the route matches a 'prefix' "
       "(this route matches a 'path')"},
      {"with regex", in_route("        prefix_rewrite: /b\n        match: {regex: ^/a}\n"), 7, 25,
       "only allowed when the route matches a 'prefix' (this route matches a 'regex')"},
      {"without slash", in_route("        match: {prefix: /a/}\n        prefix_rewrite: b/\n"), 8,
       25, "listeners[0].routes[0].prefix_rewrite: must start with '/', got 'b/'"},
      {"a list", in_route("        prefix_rewrite: [/]\n"), 7, 25,
       "listeners[0].routes[0].prefix_rewrite: expected a path starting with '/', got a list"},
  });
}

TEST_CASE("host_rewrite is auto or a host with an optional port") {
  // "        host_rewrite: " is 22 characters, so the value is at 7:23.
  const auto rewrite = [](std::string_view value) {
    return in_route("        host_rewrite: " + std::string(value) + "\n");
  };
  CHECK_LOADS(load(rewrite("auto")));
  CHECK_LOADS(load(rewrite("payments.internal")));
  CHECK_LOADS(load(rewrite("payments.internal:8443")));
  CHECK_LOADS(load(rewrite("10.0.0.5")));
  CHECK_LOADS(load(rewrite("'[fd00::1]:8080'")));
  const std::string expected =
      "listeners[0].routes[0].host_rewrite: expected auto or a host name with an optional port "
      "(e.g. payments.internal or payments.internal:8443), got ";
  const std::string space = expected + "'pay ments'", port = expected + "'payments:http'",
                    scheme = expected + "'http://payments'", empty = expected + "''",
                    bare = expected + "'fd00::1'";
  check_only_errors({
      {"space", rewrite("'pay ments'"), 7, 23, space.c_str()},
      {"bad port", rewrite("'payments:http'"), 7, 23, port.c_str()},
      {"scheme", rewrite("'http://payments'"), 7, 23, scheme.c_str()},
      {"empty", rewrite("''"), 7, 23, empty.c_str()},
      {"bare IPv6", rewrite("'fd00::1'"), 7, 23, bare.c_str()},
      {"a list", rewrite("[a]"), 7, 23,
       "listeners[0].routes[0].host_rewrite: expected a host name, host:port, or auto, got a "
       "list"},
  });
}

TEST_CASE("route matches: hosts") {
  // "        match: {host: " is 22 characters, so the host is at 7:23.
  const auto host = [](std::string_view value) {
    return in_route("        match: {host: " + std::string(value) + "}\n");
  };
  for (std::string_view bad :
       {"'api.*.com'", "'*'", "'*.'", "'*example.com'", "'**.example.com'", "'api.example.com:443'",
        "'a b'", "'api/v1'", "''", "'[::1'", "'[nope]'", "'*.[::1]'"}) {
    CAPTURE(bad);
    CHECK_ONLY_ERROR(load(host(bad)), 7, 23, "listeners[0].routes[0].match.host: invalid host '");
  }
  CHECK_ONLY_ERROR(load(host("'*.example.com:80'")), 7, 23,
                   "invalid host '*.example.com:80' (expected an exact name such as "
                   "api.example.com, or a leading wildcard such as *.example.com; no port)");
  CHECK_ONLY_ERROR(load(host("[a]")), 7, 23,
                   "listeners[0].routes[0].match.host: expected a host name such as "
                   "api.example.com or *.example.com, got a list");
}

TEST_CASE("route matches: headers") {
  check_only_errors({
      {"a list", in_route("        match: {headers: [x-a]}\n"), 7, 26,
       "listeners[0].routes[0].match.headers: expected a map of header name to value, got a list"},
      {"invalid name", in_route("        match:\n          headers:\n            bad name: x\n"), 9,
       13,
       "listeners[0].routes[0].match.headers: invalid header name 'bad name' (expected a token "
       "such as x-canary)"},
      {"value a list", in_route("        match:\n          headers:\n            x-a: [1]\n"), 9,
       18, "listeners[0].routes[0].match.headers.x-a: expected a header value, got a list"},
      {"value missing", in_route("        match:\n          headers:\n            x-a:\n"), 9, 13,
       "listeners[0].routes[0].match.headers.x-a: expected a header value, got nothing"},
      {"control character",
       in_route("        match:\n          headers:\n            x-a: \"a\\nb\"\n"), 9, 18,
       "listeners[0].routes[0].match.headers.x-a: header value must not contain control "
       "characters"},
      {"same name, other case",
       in_route("        match:\n          headers:\n            X-A: 1\n            x-a: 2\n"), 10,
       13,
       "listeners[0].routes[0].match.headers: duplicate header 'x-a' (first set on line 9; header "
       "names are case-insensitive)"},
  });
}

TEST_CASE("route matches: methods") {
  check_only_errors({
      {"a string", in_route("        match: {methods: GET}\n"), 7, 26,
       "listeners[0].routes[0].match.methods: expected a list of methods, got a string"},
      {"not a token", in_route("        match:\n          methods: [GET, 'PO ST']\n"), 8, 26,
       "listeners[0].routes[0].match.methods[1]: invalid method 'PO ST' (expected a token such as "
       "GET)"},
      {"a list inside", in_route("        match:\n          methods: [[GET]]\n"), 8, 21,
       "listeners[0].routes[0].match.methods[0]: expected an HTTP method such as GET, got a list"},
      {"duplicate after uppercasing", in_route("        match:\n          methods: [GET, get]\n"),
       8, 26, "listeners[0].routes[0].match.methods[1]: duplicate method 'GET'"},
  });
}

TEST_CASE("load-balancing policy and pool") {
  check_only_errors({
      {"unknown policy", in_cluster("    lb: fastest\n"), 10, 9,
       "clusters[0].lb: unknown policy 'fastest'; expected one of: round_robin, least_request, "
       "random"},
      {"policy a list", in_cluster("    lb: [random]\n"), 10, 9,
       "clusters[0].lb: expected a load-balancing policy, got a list"},
      {"pool a string", in_cluster("    pool: 10\n"), 10, 11,
       "clusters[0].pool: expected a map (pool), got a string"},
  });
}

TEST_CASE("listening addresses must not collide") {
  const auto two = [](std::string_view a, std::string_view b) {
    return "listeners:\n  - name: a\n    address: " + std::string(a) + "\n" + kRoutes +
           "  - name: b\n    address: " + std::string(b) + "\n" + kRoutes + kClusters;
  };
  // IPv6 listeners are IPv6 only: the same port in both families is two listeners (dual-stack
  // transparent capture redirects both to one port).
  CHECK_LOADS(load(two("0.0.0.0:8080", "'[::]:8080'")));
  // Listener b's address is at 8:14.
  check_only_errors({
      {"same address", two("127.0.0.1:8080", "127.0.0.1:8080"), 8, 14,
       "listeners[1].address: address 127.0.0.1:8080 collides with 127.0.0.1:8080 of listener 'a'"},
      {"wildcard first", two("0.0.0.0:8080", "127.0.0.1:8080"), 8, 14,
       "address 127.0.0.1:8080 collides with 0.0.0.0:8080 of listener 'a'"},
      {"wildcard second", two("'[::1]:8080'", "'[::]:8080'"), 8, 14,
       "address [::]:8080 collides with [::1]:8080 of listener 'a'"},
      {"admin", at_top("admin: {address: '127.0.0.1:8080'}\n"), 4, 14,
       "listeners[0].address: address 127.0.0.1:8080 collides with 127.0.0.1:8080 of the admin "
       "listener"},
      {"admin by default", with_listener_address("0.0.0.0:9901"), 3, 14,
       "listeners[0].address: address 0.0.0.0:9901 collides with 127.0.0.1:9901 of the admin "
       "listener (its default; set admin.address to move it)"},
      {"probes", at_top("probes: {address: '0.0.0.0:8080'}\n"), 4, 14,
       "listeners[0].address: address 127.0.0.1:8080 collides with 0.0.0.0:8080 of the probes "
       "listener"},
      {"probes and admin", at_top("probes: {address: '0.0.0.0:9901'}\n"), 1, 19,
       "probes.address: address 0.0.0.0:9901 collides with 127.0.0.1:9901 of the admin listener"},
      {"probes by default", with_listener_address("0.0.0.0:9902").insert(0, "probes: {}\n"), 4,
       14,
       "listeners[0].address: address 0.0.0.0:9902 collides with 0.0.0.0:9902 of the probes "
       "listener"},
  });
}

TEST_CASE("a listener's direction is inbound or outbound") {
  CHECK_LOADS(load(in_listener("    direction: outbound\n")));
  CHECK_LOADS(load(in_listener("    direction: inbound\n")));
  check_only_errors({
      {"unknown", in_listener("    direction: out\n"), 4, 16,
       "listeners[0].direction: unknown direction 'out'; expected one of: inbound, outbound"},
  });
}

TEST_CASE("a cluster of type original_destination takes no endpoints and needs its listener") {
  // Line 1-3: the listener; 4: original_destination or not; 5-7: routes; 8-9: cluster.
  const auto transparent = [](bool original, std::string_view cluster_lines) {
    return kHead + (original ? "    original_destination: true\n" : "    direction: outbound\n") +
           kRoutes + "clusters:\n  - name: app\n" + std::string(cluster_lines);
  };
  CHECK_LOADS(load(transparent(true, "    type: original_destination\n")));
  CHECK_LOADS(load(transparent(true, "    type: original_destination\n    connect_timeout: 2s\n"
                                     "    pool: {max_connections: 8}\n")));
  CHECK_LOADS(load(transparent(false, "    type: static\n    endpoints: [127.0.0.1:9000]\n")));
  check_only_errors({
      {"endpoints", transparent(true, "    type: original_destination\n    endpoints: [10.0.0.1:80]\n"),
       11, 16,
       "clusters[0].endpoints: a cluster of type original_destination takes no endpoints: each "
       "request goes to the address its client connected to"},
      {"tls", transparent(true, "    type: original_destination\n    tls: {}\n"), 11, 10,
       "a cluster of type original_destination takes no tls"},
      {"health_check", transparent(true, "    type: original_destination\n    health_check: {}\n"),
       11, 19, "a cluster of type original_destination takes no health_check"},
      {"slow_start", transparent(true, "    type: original_destination\n    slow_start: {}\n"),
       11, 17, "a cluster of type original_destination takes no slow_start"},
      {"adaptive_concurrency",
       transparent(true, "    type: original_destination\n    adaptive_concurrency: {}\n"), 11,
       27, "a cluster of type original_destination takes no adaptive_concurrency"},
      {"circuit_breaker",
       transparent(true, "    type: original_destination\n    circuit_breaker: {}\n"), 11, 22,
       "clusters[0].circuit_breaker: a cluster of type original_destination takes no "
       "circuit_breaker: it would judge every destination by the failures of any one"},
      {"outlier_detection",
       transparent(true, "    type: original_destination\n    outlier_detection: {}\n"), 11, 24,
       "a cluster of type original_destination takes no outlier_detection"},
      {"unknown type", transparent(true, "    type: dynamic\n    endpoints: [10.0.0.1:80]\n"), 10,
       11,
       "clusters[0].type: unknown type 'dynamic'; expected one of: static, original_destination"},
      {"listener without original_destination",
       transparent(false, "    type: original_destination\n"), 7, 18,
       "listeners[0].routes[0].cluster: cluster 'app' is of type original_destination, which "
       "needs the address each client connected to: set original_destination: true on listener "
       "'in'"},
      {"readiness", "readiness: {require_healthy: [app]}\n" +
                        transparent(true, "    type: original_destination\n"), 1, 31,
       "readiness.require_healthy[0]: cluster 'app' is of type original_destination: it has no "
       "endpoints to be healthy"},
  });
}

TEST_CASE("probes, watchdog and the admin token file are checked") {
  check_only_errors({
      {"probes DNS name", at_top("probes:\n  address: localhost:9902\n"), 2, 12,
       "probes.address: must be an IP address to listen on, not a DNS name"},
      {"probes not a map", at_top("probes: 0.0.0.0:9902\n"), 1, 9,
       "probes: expected a map (probes), got a string"},
      {"watchdog too short", at_top("watchdog: 50ms\n"), 1, 11,
       "watchdog: must be 0s (off) or at least 100ms"},
      {"watchdog not a duration", at_top("watchdog: soon\n"), 1, 11,
       "watchdog: invalid duration 'soon'"},
      {"empty token file", at_top("admin: {token_file: ''}\n"), 1, 21,
       "admin.token_file: token_file must not be empty"},
  });
}

TEST_CASE("YAML syntax errors carry yaml-cpp's position, 1-based") {
  check_only_errors({
      {"map value in a plain scalar", "workers: 1\nlisteners: a: b\n", 2, 13,
       "YAML syntax error: illegal map value"},
      {"unclosed flow list", "workers: 1\nlisteners: [a, b\n", 3, 1,
       "YAML syntax error: end of sequence flow not found"},
      {"unclosed flow map", "admin: {address: 1\n", 2, 1,
       "YAML syntax error: end of map flow not found"},
      {"tab indentation", "listeners:\n\t- name: a\n", 2, 2,
       "YAML syntax error: illegal block entry (YAML does not allow tabs for indentation)"},
      {"unknown alias", "workers: *nope\n", 1, 10, "YAML syntax error: "},
  });
}

TEST_CASE("the document itself must be one map") {
  check_only_errors({
      {"empty", "", 1, 1,
       "the config is empty; expected a map with at least 'listeners' and 'clusters'"},
      {"only comments", "# nothing here\n\n", 1, 1, "the config is empty"},
      {"only a document marker", "---\n", 1, 1, "the config is empty"},
      {"a list", "- a\n- b\n", 1, 1,
       "the top level must be a map with at least 'listeners' and 'clusters', got a list"},
      {"a string", "hello\n", 1, 1, "got a string"},
      {"two documents", at_top("") + "---\nworkers: 1\n", 10, 1,
       "only one YAML document is allowed; found another one here"},
      // yaml-cpp 0.7's LoadAll never returned on these (fuzz_config found them).
      {"a leading comma", ",", 1, 1, "the config is empty"},
      {"a leading comma, then text", ",istenenull\t- namg2 a\n", 1, 1, "the config is empty"},
  });
}

TEST_CASE("every error is reported, in file order, and no config is returned") {
  LoadResult result = load(R"(
workers: none
listeners:
  - name: in
    address: localhost:80
    routes:
      - name: r
        cluster: missing
        timeout: soon
clusters:
  - name: app
    endpoints: ["127.0.0.1:0"]
    lb: fair
)");
  INFO(describe(result));
  CHECK(result.config == nullptr);
  REQUIRE(result.errors.size() == 6);
  CHECK(result.errors[0].to_string() ==
        "test.yaml:1:10: workers: must be an integer from 1 to 1024, got 'none'");
  CHECK(has_error(result, 4, 14, "listeners[0].address: must be an IP address"));
  CHECK(has_error(result, 7, 18,
                  "route 'r' names unknown cluster 'missing' (defined clusters: app)"));
  CHECK(has_error(result, 8, 18, "listeners[0].routes[0].timeout: invalid duration 'soon'"));
  CHECK(has_error(result, 11, 17, "clusters[0].endpoints[0]: port must be 1..65535"));
  CHECK(has_error(result, 12, 9, "clusters[0].lb: unknown policy 'fair'"));
  for (size_t i = 1; i < result.errors.size(); ++i) {
    CHECK(result.errors[i - 1].line <= result.errors[i].line);
  }
  for (const ConfigError& e : result.errors) CHECK(e.file == "test.yaml");
}

TEST_CASE("a broken cluster does not also make its routes report an unknown cluster") {
  SUBCASE("cluster without a name") {
    CHECK_ONLY_ERROR(load(with_clusters("clusters:\n  - endpoints: [127.0.0.1:9000]\n")), 8, 5,
                     "missing required key 'name'");
  }
  SUBCASE("cluster that is not a map") {
    CHECK_ONLY_ERROR(load(with_clusters("clusters: [app]\n")), 7, 12,
                     "clusters[0]: expected a map (cluster), got a string");
  }
  SUBCASE("clusters not a list") {
    CHECK_ONLY_ERROR(load(with_clusters("clusters: {app: {}}\n")), 7, 11,
                     "clusters: expected a list of clusters, got a map");
  }
}

// ---- Upstream health (issue 4) ----

TEST_CASE("unknown keys in the upstream health settings, listing the keys allowed there") {
  check_only_errors({
      {"health_check", in_health_check("      interval_jiter: 5%\n"), 11, 7,
       "clusters[0].health_check: unknown key 'interval_jiter' in health check (did you mean "
       "'interval_jitter'?); expected one of: path, tcp, host, interval, interval_jitter, timeout, "
       "healthy_threshold, unhealthy_threshold, unhealthy_interval, expected_statuses"},
      {"health_check near miss", in_health_check("      expected_status: [200]\n"), 11, 7,
       "unknown key 'expected_status' in health check (did you mean 'expected_statuses'?)"},
      {"Envoy's spelling", in_health_check("      http_health_check: {}\n"), 11, 7,
       "unknown key 'http_health_check' in health check; expected one of: path, tcp,"},
      {"outlier_detection", in_outlier("      consecutive_5xxs: 3\n"), 11, 7,
       "clusters[0].outlier_detection: unknown key 'consecutive_5xxs' in outlier detection (did "
       "you mean 'consecutive_5xx'?); expected one of: consecutive_5xx, "
       "consecutive_gateway_failure, consecutive_local_origin_failure, "
       "uneject_on_health_check_pass, base_ejection_time, max_ejection_time, "
       "max_ejection_percent, failure_percent, failure_percent_minimum_requests, interval, "
       "success_rate"},
      {"cluster", in_cluster("    panic_treshold: 10%\n"), 10, 5,
       "clusters[0]: unknown key 'panic_treshold' in cluster (did you mean 'panic_threshold'?); "
       "expected one of: name, type, endpoints, dns_refresh, lb, connect_timeout, pool, "
       "circuit_breaker, health_check, outlier_detection, panic_threshold"},
      {"adaptive_concurrency max below min",
       in_cluster("    adaptive_concurrency: {min_limit: 10, max_limit: 5}\n"), 10, 54,
       "clusters[0].adaptive_concurrency.max_limit: max_limit 5 is below min_limit 10"},
      {"adaptive_concurrency min_limit 0", in_cluster("    adaptive_concurrency: {min_limit: 0}\n"),
       10, 39,
       "clusters[0].adaptive_concurrency.min_limit: must be an integer from 1 to 4294967295, got "
       "'0'"},
      {"adaptive_concurrency jitter", in_cluster("    adaptive_concurrency: {jitter: 10}\n"), 10,
       36, "clusters[0].adaptive_concurrency.jitter: must be a percentage"},
      {"adaptive_concurrency jitter 100%", in_cluster("    adaptive_concurrency: {jitter: 100%}\n"),
       10, 36, "clusters[0].adaptive_concurrency.jitter: must be below 100%"},
      {"adaptive_concurrency min_rtt_interval short",
       in_cluster("    adaptive_concurrency: {sample_window: 1s, min_rtt_interval: 2s}\n"), 10, 65,
       "clusters[0].adaptive_concurrency.min_rtt_interval: min_rtt_interval (2s) must be at least 5 "
       "sample windows (5s)"},
      {"slow_start window 0", in_cluster("    slow_start: {window: 0s}\n"), 10, 26,
       "clusters[0].slow_start.window: must be greater than 0s"},
      {"slow_start min_weight_percent 0", in_cluster("    slow_start: {min_weight_percent: 0}\n"),
       10, 38,
       "clusters[0].slow_start.min_weight_percent: must be an integer from 1 to 100, got '0'"},
      {"slow_start aggression 0", in_cluster("    slow_start: {aggression: 0}\n"), 10, 30,
       "clusters[0].slow_start.aggression: must be a number greater than 0 and at most 100"},
      {"cluster near miss", in_cluster("    healthcheck: {}\n"), 10, 5,
       "clusters[0]: unknown key 'healthcheck' in cluster (did you mean 'health_check'?)"},
      {"endpoint", with_endpoint_key("priorty", "1"), 11, 9,
       "clusters[0].endpoints[0]: unknown key 'priorty' in endpoint (did you mean 'priority'?); "
       "expected one of: address, weight, priority"},
      {"readiness", at_top("readiness:\n  require: [app]\n"), 2, 3,
       "readiness: unknown key 'require' in readiness; expected one of: require_healthy"},
      {"top level", at_top("readyness: {}\n"), 1, 1,
       "unknown key 'readyness' at top level (did you mean 'readiness'?); expected one of: "
       "workers, max_connections, drain_delay, drain_timeout, admin, probes, watchdog, "
       "listeners, clusters, readiness"},
      {"duplicate", in_health_check("      interval: 1s\n      interval: 2s\n"), 12, 7,
       "clusters[0].health_check: duplicate key 'interval' in health check (first set on line "
       "11)"},
  });
}

TEST_CASE("upstream health blocks must be maps") {
  check_only_errors({
      {"health_check a boolean", in_cluster("    health_check: true\n"), 10, 19,
       "clusters[0].health_check: expected a map (health check), got a string"},
      {"health_check empty points at the key", in_cluster("    health_check:\n"), 10, 5,
       "clusters[0].health_check: expected a map (health check), got nothing"},
      {"outlier_detection a list", in_cluster("    outlier_detection: []\n"), 10, 24,
       "clusters[0].outlier_detection: expected a map (outlier detection), got a list"},
      {"readiness a list", at_top("readiness: [app]\n"), 1, 12,
       "readiness: expected a map (readiness), got a list"},
  });
}

TEST_CASE("endpoint priorities are 0..127") {
  const auto priority = [](std::string_view value) { return with_endpoint_key("priority", value); };
  check_only_errors({
      {"too big", priority("128"), 11, 19,
       "clusters[0].endpoints[0].priority: must be an integer from 0 to 127, got '128'"},
      {"negative", priority("-1"), 11, 19, "must be an integer from 0 to 127, got '-1'"},
      {"fraction", priority("0.5"), 11, 19, "got '0.5'"},
      {"a list", priority("[1]"), 11, 19,
       "clusters[0].endpoints[0].priority: expected an integer from 0 to 127, got a list"},
  });
  CHECK_LOADS(load(priority("0")));
  CHECK_LOADS(load(priority("127")));
}

TEST_CASE("health_check values are range-checked") {
  // "      KEY: " puts each value at column len(KEY) + 9 of line 11.
  check_only_errors({
      {"tcp yes", in_health_check("      tcp: yes\n"), 11, 12,
       "clusters[0].health_check.tcp: must be true or false, got 'yes'"},
      {"interval 0", in_health_check("      interval: 0s\n"), 11, 17,
       "clusters[0].health_check.interval: must be greater than 0s"},
      {"interval without unit", in_health_check("      interval: 5\n"), 11, 17,
       "clusters[0].health_check.interval: invalid duration '5'"},
      {"timeout 0", in_health_check("      timeout: 0s\n"), 11, 16,
       "clusters[0].health_check.timeout: must be greater than 0s"},
      {"unhealthy_interval 0", in_health_check("      unhealthy_interval: 0s\n"), 11, 27,
       "clusters[0].health_check.unhealthy_interval: must be greater than 0s"},
      {"healthy_threshold 0", in_health_check("      healthy_threshold: 0\n"), 11, 26,
       "clusters[0].health_check.healthy_threshold: must be an integer from 1 to 4294967295, got "
       "'0'"},
      {"unhealthy_threshold 0", in_health_check("      unhealthy_threshold: 0\n"), 11, 28,
       "clusters[0].health_check.unhealthy_threshold: must be an integer from 1 to 4294967295, "
       "got '0'"},
      {"unhealthy_threshold negative", in_health_check("      unhealthy_threshold: -3\n"), 11, 28,
       "got '-3'"},
  });
}

TEST_CASE("health_check path and host go into requests as they are") {
  check_only_errors({
      {"path without a slash", in_health_check("      path: healthz\n"), 11, 13,
       "clusters[0].health_check.path: must start with '/', got 'healthz'"},
      {"path with a space", in_health_check("      path: \"/health z\"\n"), 11, 13,
       "clusters[0].health_check.path: must not contain spaces or control characters"},
      {"path with a tab", in_health_check("      path: \"/health\\tz\"\n"), 11, 13,
       "must not contain spaces or control characters"},
      {"path with a DEL", in_health_check("      path: \"/health\\x7f\"\n"), 11, 13,
       "must not contain spaces or control characters"},
      {"path empty", in_health_check("      path: ''\n"), 11, 13,
       "clusters[0].health_check.path: must not be empty (expected a path starting with '/')"},
      {"path a list", in_health_check("      path: [/healthz]\n"), 11, 13,
       "clusters[0].health_check.path: expected a path starting with '/', got a list"},
      {"host with a space", in_health_check("      host: app local\n"), 11, 13,
       "clusters[0].health_check.host: must not contain spaces or control characters"},
      {"host with a newline", in_health_check("      host: \"app\\nlocal\"\n"), 11, 13,
       "must not contain spaces or control characters"},
      {"host empty", in_health_check("      host: \"\"\n"), 11, 13,
       "clusters[0].health_check.host: must not be empty (expected a Host header value such as "
       "app.local)"},
      {"host a map", in_health_check("      host: {name: a}\n"), 11, 13,
       "clusters[0].health_check.host: expected a Host header value such as app.local, got a map"},
  });
}

TEST_CASE("health_check: a TCP check refuses the keys that only apply to HTTP checks") {
  check_only_errors({
      {"path", in_health_check("      tcp: true\n      path: /healthz\n"), 12, 13,
       "clusters[0].health_check.path: only applies to HTTP checks, and this check has tcp: true; "
       "remove it or set tcp: false"},
      {"host", in_health_check("      host: app.local\n      tcp: true\n"), 11, 13,
       "clusters[0].health_check.host: only applies to HTTP checks, and this check has tcp: true"},
      {"expected_statuses", in_health_check("      tcp: true\n      expected_statuses: [200]\n"),
       12, 26,
       "clusters[0].health_check.expected_statuses: only applies to HTTP checks, and this check "
       "has tcp: true"},
      {"an invalid path is not also read", in_health_check("      tcp: true\n      path: x y\n"),
       12, 13, "clusters[0].health_check.path: only applies to HTTP checks"},
      {"a misspelt tcp is the only error", in_health_check("      tpc: true\n      path: /x\n"), 11,
       7, "unknown key 'tpc' in health check (did you mean 'tcp'?)"},
  });
  LoadResult all = load(in_health_check(
      "      tcp: true\n      path: /x\n      host: a\n      expected_statuses: [200]\n"));
  INFO(describe(all));
  CHECK(all.errors.size() == 3);
  CHECK(has_error(all, 12, 13, "health_check.path: only applies to HTTP checks"));
  CHECK(has_error(all, 13, 13, "health_check.host: only applies to HTTP checks"));
  CHECK(has_error(all, 14, 26, "health_check.expected_statuses: only applies to HTTP checks"));

  CHECK_LOADS(load(in_health_check("      tcp: false\n      path: /x\n      host: a\n")));
  CHECK_LOADS(load(in_health_check("      tcp: true\n      interval: 1s\n      timeout: 2s\n")));
}

TEST_CASE("health_check: expected_statuses lists statuses and ranges from 100 to 599") {
  // "      expected_statuses: [" is 26 characters, so the first item is at 11:27.
  const auto statuses = [](std::string_view list) {
    return in_health_check("      expected_statuses: " + std::string(list) + "\n");
  };
  check_only_errors({
      {"a word", statuses("[ok]"), 11, 27,
       "clusters[0].health_check.expected_statuses[0]: must be a status from 100 to 599 or a "
       "range such as 200-399, got 'ok'"},
      {"Envoy's class", statuses("[2xx]"), 11, 27, "got '2xx'"},
      {"status too small", statuses("[99]"), 11, 27, "got '99'"},
      {"status too big", statuses("[200, 600]"), 11, 32,
       "clusters[0].health_check.expected_statuses[1]: must be a status from 100 to 599 or a "
       "range such as 200-399, got '600'"},
      {"range end too big", statuses("[200-600]"), 11, 27, "got '200-600'"},
      {"range start too small", statuses("[0-299]"), 11, 27, "got '0-299'"},
      {"range with spaces", statuses("['200 - 399']"), 11, 27, "got '200 - 399'"},
      {"range with three ends", statuses("[200-300-400]"), 11, 27, "got '200-300-400'"},
      {"range open at one end", statuses("[200-]"), 11, 27, "got '200-'"},
      {"reversed range", statuses("[399-200]"), 11, 27,
       "clusters[0].health_check.expected_statuses[0]: the range '399-200' is reversed; write the "
       "lower status first: 200-399"},
      {"an item that is a list", statuses("[[200]]"), 11, 27,
       "clusters[0].health_check.expected_statuses[0]: expected a status from 100 to 599 or a "
       "range such as 200-399, got a list"},
      {"empty", statuses("[]"), 11, 26,
       "clusters[0].health_check.expected_statuses: must list at least one status code"},
      {"not a list", statuses("200-399"), 11, 26,
       "clusters[0].health_check.expected_statuses: expected a list of status codes, got a "
       "string"},
  });
  LoadResult two = load(statuses("[99, 200, 500-400]"));
  INFO(describe(two));
  CHECK(two.errors.size() == 2);
  CHECK(has_error(two, 11, 27, "expected_statuses[0]: must be a status from 100 to 599"));
  CHECK(has_error(two, 11, 36, "expected_statuses[2]: the range '500-400' is reversed"));
}

TEST_CASE("percentages need their % sign and are 0% to 100%") {
  // "      interval_jitter: " puts the value at 11:24; "    panic_threshold: " at 10:22.
  const auto jitter = [](std::string_view value) {
    return in_health_check("      interval_jitter: " + std::string(value) + "\n");
  };
  const auto panic = [](std::string_view value) {
    return in_cluster("    panic_threshold: " + std::string(value) + "\n");
  };
  check_only_errors({
      {"jitter without a sign", jitter("10"), 11, 24,
       "clusters[0].health_check.interval_jitter: must be a percentage from 0% to 100%, such as "
       "10% or 2.5%, got '10' (the % sign is required: 10%)"},
      {"jitter fraction without a sign", jitter("0.5"), 11, 24,
       "got '0.5' (the % sign is required: 0.5%)"},
      {"jitter above 100", jitter("150%"), 11, 24, "got '150%'"},
      {"jitter negative", jitter("-5%"), 11, 24, "got '-5%'"},
      {"jitter with a space", jitter("10 %"), 11, 24, "got '10 %'"},
      {"jitter as a fraction of 1", jitter("0.1"), 11, 24, "got '0.1'"},
      {"jitter a word", jitter("ten%"), 11, 24, "got 'ten%'"},
      {"jitter a list", jitter("[10%]"), 11, 24,
       "clusters[0].health_check.interval_jitter: expected a percentage from 0% to 100%, such as "
       "10% or 2.5%, got a list"},
      {"panic with a fraction", panic("50.5%"), 10, 22,
       "clusters[0].panic_threshold: must be a whole percentage from 0% to 100%, such as 50%, got "
       "'50.5%'"},
      {"panic with a zero fraction", panic("50.0%"), 10, 22, "got '50.0%'"},
      {"panic without a sign", panic("50"), 10, 22, "got '50' (the % sign is required: 50%)"},
      {"panic above 100", panic("101%"), 10, 22, "got '101%'"},
      {"panic a map", panic("{percent: 50}"), 10, 22,
       "clusters[0].panic_threshold: expected a whole percentage from 0% to 100%, such as 50%, got "
       "a map"},
  });
  // No hint where adding the sign would not help either.
  for (const std::string& yaml : {jitter("150"), panic("50.5"), panic("-1")}) {
    LoadResult result = load(yaml);
    INFO(describe(result));
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].message.find("% sign") == std::string::npos);
  }
}

TEST_CASE("outlier_detection values are range-checked") {
  // "      KEY: " puts each value at column len(KEY) + 9 of line 11.
  check_only_errors({
      {"consecutive_5xx negative", in_outlier("      consecutive_5xx: -1\n"), 11, 24,
       "clusters[0].outlier_detection.consecutive_5xx: must be an integer from 0 to 4294967295, "
       "got '-1'"},
      {"consecutive_gateway_failure fraction",
       in_outlier("      consecutive_gateway_failure: 1.5\n"), 11, 36,
       "clusters[0].outlier_detection.consecutive_gateway_failure: must be an integer from 0 to "
       "4294967295, got '1.5'"},
      {"consecutive_local_origin_failure negative",
       in_outlier("      consecutive_local_origin_failure: -2\n"), 11, 41,
       "clusters[0].outlier_detection.consecutive_local_origin_failure: must be an integer from 0 "
       "to 4294967295, got '-2'"},
      {"uneject_on_health_check_pass yes", in_outlier("      uneject_on_health_check_pass: yes\n"),
       11, 37,
       "clusters[0].outlier_detection.uneject_on_health_check_pass: must be true or false, got "
       "'yes'"},
      {"base_ejection_time 0", in_outlier("      base_ejection_time: 0s\n"), 11, 27,
       "clusters[0].outlier_detection.base_ejection_time: must be greater than 0s"},
      {"max_ejection_time 0", in_outlier("      max_ejection_time: 0ms\n"), 11, 26,
       "clusters[0].outlier_detection.max_ejection_time: must be greater than 0s"},
      {"max_ejection_percent 101", in_outlier("      max_ejection_percent: 101\n"), 11, 29,
       "clusters[0].outlier_detection.max_ejection_percent: must be an integer from 0 to 100, got "
       "'101'"},
      {"max_ejection_percent with a sign", in_outlier("      max_ejection_percent: 50%\n"), 11, 29,
       "must be an integer from 0 to 100, got '50%'"},
      {"failure_percent 101", in_outlier("      failure_percent: 101\n"), 11, 24,
       "clusters[0].outlier_detection.failure_percent: must be an integer from 0 to 100, got "
       "'101'"},
      {"failure_percent_minimum_requests 0",
       in_outlier("      failure_percent_minimum_requests: 0\n"), 11, 41,
       "clusters[0].outlier_detection.failure_percent_minimum_requests: must be an integer from 1 "
       "to 4294967295, got '0'"},
      {"interval 0", in_outlier("      interval: 0s\n"), 11, 17,
       "clusters[0].outlier_detection.interval: must be greater than 0s"},
      {"success_rate minimum_hosts 1", in_outlier("      success_rate: {minimum_hosts: 1}\n"), 11,
       37,
       "clusters[0].outlier_detection.success_rate.minimum_hosts: must be an integer from 2 to "
       "4294967295, got '1'"},
      {"success_rate stdev_factor 0", in_outlier("      success_rate: {stdev_factor: 0}\n"), 11,
       36,
       "clusters[0].outlier_detection.success_rate.stdev_factor: must be a number greater than 0 "
       "and at most 100, got '0'"},
      {"success_rate unknown key", in_outlier("      success_rate: {stdev: 2}\n"), 11, 22,
       "clusters[0].outlier_detection.success_rate: unknown key 'stdev' in success rate"},
  });
}

TEST_CASE("outlier_detection: max_ejection_time must not be less than base_ejection_time") {
  check_only_errors({
      {"both set", in_outlier("      base_ejection_time: 1m\n      max_ejection_time: 30s\n"), 12,
       26,
       "clusters[0].outlier_detection.max_ejection_time: must not be less than base_ejection_time "
       "(1m), got 30s"},
      {"base above the default max", in_outlier("      base_ejection_time: 10m\n"), 11, 27,
       "clusters[0].outlier_detection.base_ejection_time: must not be greater than "
       "max_ejection_time (5m, its default), got 10m"},
      {"max below the default base", in_outlier("      max_ejection_time: 10s\n"), 11, 26,
       "clusters[0].outlier_detection.max_ejection_time: must not be less than base_ejection_time "
       "(30s, its default), got 10s"},
      {"a misspelt max is the only error",
       in_outlier("      base_ejection_time: 10m\n      max_ejection_tim: 1h\n"), 12, 7,
       "unknown key 'max_ejection_tim' in outlier detection (did you mean 'max_ejection_time'?)"},
      {"an invalid base is not compared too",
       in_outlier("      base_ejection_time: soon\n      max_ejection_time: 1s\n"), 11, 27,
       "clusters[0].outlier_detection.base_ejection_time: invalid duration 'soon'"},
  });
  CHECK_LOADS(load(in_outlier("      base_ejection_time: 1m\n      max_ejection_time: 1m\n")));
}

TEST_CASE("readiness names defined clusters, each once") {
  // "  require_healthy: [" is 20 characters, so the first name is at 2:21.
  const auto require = [](std::string_view list) {
    return at_top("readiness:\n  require_healthy: " + std::string(list) + "\n");
  };
  check_only_errors({
      {"near miss", require("[ap]"), 2, 21,
       "readiness.require_healthy[0]: unknown cluster 'ap' (did you mean 'app'?) (defined "
       "clusters: app)"},
      {"no near miss", require("[app, database]"), 2, 26,
       "readiness.require_healthy[1]: unknown cluster 'database' (defined clusters: app)"},
      {"duplicate", require("[app, app]"), 2, 26,
       "readiness.require_healthy[1]: duplicate cluster 'app'"},
      {"empty name", require("['']"), 2, 21, "readiness.require_healthy[0]: must not be empty"},
      {"a name that is a map", require("[{name: app}]"), 2, 21,
       "readiness.require_healthy[0]: expected a name, got a map"},
      {"empty", require("[]"), 2, 20, "readiness.require_healthy: must list at least one cluster"},
      {"one name, not a list", require("app"), 2, 20,
       "readiness.require_healthy: expected a list of clusters, got a string"},
  });
  LoadResult two = load(require("[bad, app, bad]"));
  INFO(describe(two));
  CHECK(two.errors.size() == 2);
  CHECK(has_error(two, 2, 21, "require_healthy[0]: unknown cluster 'bad'"));
  CHECK(has_error(two, 2, 31, "require_healthy[2]: unknown cluster 'bad'"));
  CHECK_LOADS(load(require("[app]")));
  CHECK_LOADS(load(at_top("readiness: {}\n")));
}

TEST_CASE("a route naming an unknown cluster gets the same near-miss suggestion") {
  CHECK_ONLY_ERROR(
      load(kHead + "    routes:\n      - name: all\n        cluster: ap\n" + kClusters), 6, 18,
      "listeners[0].routes[0].cluster: route 'all' names unknown cluster 'ap' (did "
      "you mean 'app'?) (defined clusters: app)");
}

TEST_CASE("a broken cluster does not also make readiness report an unknown cluster") {
  const std::string readiness = "readiness: {require_healthy: [app]}\n";
  SUBCASE("cluster without a name") {
    CHECK_ONLY_ERROR(
        load(with_clusters("clusters:\n  - endpoints: [127.0.0.1:9000]\n") + readiness), 8, 5,
        "missing required key 'name'");
  }
  SUBCASE("clusters not a list") {
    CHECK_ONLY_ERROR(load(with_clusters("clusters: app\n") + readiness), 7, 11,
                     "clusters: expected a list of clusters, got a string");
  }
}

TEST_CASE("every mistake in the health settings of a cluster is reported, each at its place") {
  LoadResult result =
      load(in_cluster("    health_check:\n"
                      "      tcp: true\n"
                      "      path: /x\n"
                      "      interval: 0s\n"
                      "      interval_jitter: 10\n"
                      "    outlier_detection: {max_ejection_percent: 200, base_ejection_time: 1h}\n"
                      "    panic_threshold: 1.5%\n"));
  INFO(describe(result));
  CHECK(result.config == nullptr);
  REQUIRE(result.errors.size() == 5);
  CHECK(has_error(result, 12, 13, "health_check.path: only applies to HTTP checks"));
  CHECK(has_error(result, 13, 17, "health_check.interval: must be greater than 0s"));
  CHECK(has_error(result, 14, 24, "health_check.interval_jitter: must be a percentage"));
  CHECK(has_error(result, 15, 47, "outlier_detection.max_ejection_percent: must be an integer"));
  CHECK(has_error(result, 16, 22, "panic_threshold: must be a whole percentage"));
}

TEST_CASE("access_log mistakes are reported at their place") {
  // "access_log: {format: " is 21 characters, so a value there starts at 1:22.
  check_only_errors({
      {"unknown format", at_top("access_log: {format: xml}\n"), 1, 22,
       "access_log.format: unknown format 'xml'; expected one of: json, text"},
      {"percent out of range", at_top("access_log: {sample_percent: 101}\n"), 1, 30,
       "access_log.sample_percent: must be"},
      {"empty path", at_top("access_log: {path: ''}\n"), 1, 20,
       "access_log.path: the access log path must not be empty"},
      {"unknown key", at_top("access_log: {file: /tmp/x}\n"), 1, 14,
       "access_log: unknown key 'file'"},
  });
  CHECK_LOADS(load(at_top("access_log: {}\n")));
  CHECK_LOADS(
      load(at_top("access_log: {path: /var/log/bulwark.log, format: text, "
                  "sample_percent: 12.5}\n")));
}

TEST_CASE("a file that cannot be read is an error without a position") {
  SUBCASE("missing") {
    LoadResult result = load_config_file("/nonexistent/bulwark.yaml");
    CHECK(result.config == nullptr);
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].file == "/nonexistent/bulwark.yaml");
    CHECK(result.errors[0].line == 0);
    CHECK(result.errors[0].column == 0);
    CHECK(result.errors[0].to_string() ==
          "/nonexistent/bulwark.yaml: cannot read the config file: No such file or directory");
  }
  SUBCASE("a directory") {
    LoadResult result = load_config_file("/tmp");
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].to_string() == "/tmp: cannot read the config file: Is a directory");
  }
}

}  // namespace
}  // namespace bulwark::config
