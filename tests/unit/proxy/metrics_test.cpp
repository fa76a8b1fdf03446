#include "proxy/metrics.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "config/loader.h"

namespace bulwark {
namespace {

size_t bucket_of(uint64_t micros) {
  LocalHistogram h;
  h.observe_us(micros);
  size_t found = SIZE_MAX;
  for (size_t i = 0; i <= LocalHistogram::kBounds.size(); ++i) {
    if (h.bucket(i) == 1) {
      CHECK(found == SIZE_MAX);
      found = i;
    } else {
      CHECK(h.bucket(i) == 0);
    }
  }
  CHECK(h.sum_us() == micros);
  return found;
}

TEST_CASE("metrics: a duration lands in the first bucket whose bound is not below it") {
  CHECK(bucket_of(0) == 0);
  CHECK(bucket_of(500) == 0);  // le=0.0005 includes 0.0005 itself
  CHECK(bucket_of(501) == 1);
  CHECK(bucket_of(1000) == 1);
  CHECK(bucket_of(1001) == 2);
  CHECK(bucket_of(2500) == 2);
  CHECK(bucket_of(2501) == 3);
  CHECK(bucket_of(100'000) == 7);      // 0.1 s
  CHECK(bucket_of(1'000'000) == 10);   // 1 s
  CHECK(bucket_of(30'000'000) == 14);  // 30 s, the last finite bound
  CHECK(bucket_of(30'000'001) == 15);  // +Inf
  CHECK(bucket_of(UINT64_MAX / 2) == 15);
}

TEST_CASE("metrics: every bound is hit exactly by its own value in microseconds") {
  for (size_t i = 0; i < LocalHistogram::kBounds.size(); ++i) {
    auto us = static_cast<uint64_t>(std::llround(LocalHistogram::kBounds[i] * 1e6));
    INFO("bound " << LocalHistogram::kBounds[i]);
    CHECK(bucket_of(us) == i);
    CHECK(bucket_of(us + 1) == i + 1);
  }
}

TEST_CASE("metrics: the histogram sums and counts what it observes") {
  LocalHistogram h;
  h.observe_us(100);
  h.observe_us(200);
  h.observe_us(5'000'000);
  CHECK(h.sum_us() == 5'000'300);
  CHECK(h.bucket(0) == 2);
  CHECK(h.bucket(12) == 1);  // le=5
}

TEST_CASE("metrics: StatusCounters counts by exact code, out-of-range codes as none") {
  StatusCounters s;
  s.inc(200);
  s.inc(200);
  s.inc(599);
  s.inc(0);
  s.inc(99);
  s.inc(600);
  s.inc(-1);
  CHECK(s.codes[200].value() == 2);
  CHECK(s.codes[599].value() == 1);
  CHECK(s.codes[0].value() == 4);
  CHECK(s.codes[100].value() == 0);
}

// One sample of the Prometheus text format: name, labels and value.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the text exposition format strictly enough to catch malformed output: every sample
// line is `name{label="value",...} value`, after a # TYPE line for its family.
std::vector<Sample> parse_prometheus(const std::string& text) {
  std::vector<Sample> out;
  std::map<std::string, std::string> types;
  std::istringstream lines(text);
  std::string line;
  auto is_name_char = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
  };
  while (std::getline(lines, line)) {
    INFO("line: " << line);
    if (line.empty()) continue;
    if (line.starts_with("# ")) {
      std::istringstream words(line.substr(2));
      std::string kind, name, type;
      words >> kind >> name;
      REQUIRE((kind == "HELP" || kind == "TYPE"));
      if (kind == "TYPE") {
        words >> type;
        REQUIRE((type == "counter" || type == "gauge" || type == "histogram"));
        types[name] = type;
      }
      continue;
    }
    Sample s;
    size_t i = 0;
    while (i < line.size() && is_name_char(line[i], i == 0)) ++i;
    REQUIRE(i > 0);
    s.name = line.substr(0, i);
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        size_t start = i;
        while (i < line.size() && is_name_char(line[i], i == start)) ++i;
        REQUIRE(i > start);
        std::string label = line.substr(start, i - start);
        REQUIRE(line.substr(i, 2) == "=\"");
        i += 2;
        std::string value;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\') ++i;
          REQUIRE(i < line.size());
          value.push_back(line[i++]);
        }
        REQUIRE(i < line.size());
        ++i;                                             // closing quote
        REQUIRE(s.labels.emplace(label, value).second);  // no label twice
        if (i < line.size() && line[i] == ',') ++i;
      }
      REQUIRE(i < line.size());
      ++i;  // '}'
    }
    REQUIRE(i < line.size());
    REQUIRE(line[i] == ' ');
    std::string value = line.substr(i + 1);
    REQUIRE(value.find(' ') == std::string::npos);  // no timestamp
    if (value == "+Inf") {
      s.value = std::numeric_limits<double>::infinity();
    } else {
      char* end = nullptr;
      s.value = std::strtod(value.c_str(), &end);
      REQUIRE(end == value.c_str() + value.size());
    }
    // The family is declared before its samples.
    std::string family = s.name;
    auto type = types.find(family);
    if (type == types.end()) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        std::string sfx = suffix;
        if (family.size() > sfx.size() &&
            family.compare(family.size() - sfx.size(), sfx.size(), sfx) == 0) {
          type = types.find(family.substr(0, family.size() - sfx.size()));
          if (type != types.end()) {
            CHECK(type->second == "histogram");
            break;
          }
        }
      }
    }
    REQUIRE(type != types.end());
    out.push_back(std::move(s));
  }
  return out;
}

class Scrape {
 public:
  explicit Scrape(const std::string& text) : samples_(parse_prometheus(text)) {}

  // The samples with this name whose labels include `labels`.
  std::vector<const Sample*> find(const std::string& name,
                                  const std::map<std::string, std::string>& labels) const {
    std::vector<const Sample*> out;
    for (const Sample& s : samples_) {
      if (s.name != name) continue;
      bool all = true;
      for (const auto& [k, v] : labels) {
        auto it = s.labels.find(k);
        all = all && it != s.labels.end() && it->second == v;
      }
      if (all) out.push_back(&s);
    }
    return out;
  }
  // The value of exactly one sample with exactly these labels; NaN if there is none.
  double value(const std::string& name, const std::map<std::string, std::string>& labels) const {
    double v = std::numeric_limits<double>::quiet_NaN();
    int n = 0;
    for (const Sample& s : samples_) {
      if (s.name == name && s.labels == labels) {
        v = s.value;
        ++n;
      }
    }
    CHECK(n <= 1);
    return v;
  }
  const std::vector<Sample>& samples() const { return samples_; }

 private:
  std::vector<Sample> samples_;
};

constexpr std::string_view kMetricsYaml = R"(
listeners:
  - name: inbound
    address: 127.0.0.1:0
    routes:
      - name: api
        match: {prefix: /api/}
        cluster: app
      - name: fallback
        cluster: batch
  - name: internal
    address: 127.0.0.1:0
    routes:
      - name: all
        cluster: batch
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
  - name: batch
    endpoints: [127.0.0.1:9001]
)";

std::shared_ptr<const config::Config> metrics_config() {
  config::LoadResult loaded = config::load_config_string(kMetricsYaml, "metrics.yaml");
  for (const auto& e : loaded.errors) FAIL_CHECK(e.to_string());
  REQUIRE(loaded.ok());
  return loaded.config;
}

TEST_CASE("metrics: WorkerStats is shaped like the config") {
  auto config = metrics_config();
  WorkerStats w(*config);
  REQUIRE(w.listeners.size() == 2);
  CHECK(w.listeners[0]->routes.size() == 2);
  CHECK(w.listeners[1]->routes.size() == 1);
  CHECK(w.clusters.size() == 2);
}

TEST_CASE("metrics: render_metrics sums the workers into labelled series") {
  auto config = metrics_config();
  WorkerStats w1(*config), w2(*config);

  w1.listeners[0]->routes[0]->requests.inc(200);
  w1.listeners[0]->routes[0]->requests.inc(200);
  w2.listeners[0]->routes[0]->requests.inc(200);
  w2.listeners[0]->routes[0]->requests.inc(503);
  w1.listeners[0]->routes[0]->requests.inc(0);
  w2.listeners[1]->routes[0]->requests.inc(404);

  w1.listeners[0]->routes[0]->duration.observe_us(500);
  w2.listeners[0]->routes[0]->duration.observe_us(501);
  w2.listeners[0]->routes[0]->duration.observe_us(30'000'001);

  w1.listeners[0]->connections->add(3);
  w2.listeners[0]->connections->add(2);
  w2.listeners[0]->connections->add(-1);

  w1.clusters[0]->upstream_requests.inc(200);
  w2.clusters[0]->upstream_requests.inc(200);
  w2.clusters[1]->upstream_requests.inc(0);
  w1.clusters[0]->active_connections.add(4);
  w2.clusters[0]->active_connections.add(1);
  w1.clusters[0]->idle_connections.add(2);
  w1.clusters[1]->active_requests.add(7);
  w2.clusters[1]->connect_failures.inc(3);

  w1.local_replies[static_cast<size_t>(LocalReason::kNoRoute)].inc();
  w2.local_replies[static_cast<size_t>(LocalReason::kNoRoute)].inc(2);
  w2.local_replies[static_cast<size_t>(LocalReason::kUpstreamTimeout)].inc();

  std::string text = render_metrics(*config, {&w1, &w2});
  INFO(text);
  Scrape scrape(text);

  SUBCASE("requests by listener, route and code; codes never seen are left out") {
    CHECK(scrape.value("bulwark_requests_total",
                       {{"listener", "inbound"}, {"route", "api"}, {"code", "200"}}) == 3);
    CHECK(scrape.value("bulwark_requests_total",
                       {{"listener", "inbound"}, {"route", "api"}, {"code", "503"}}) == 1);
    CHECK(scrape.value("bulwark_requests_total",
                       {{"listener", "inbound"}, {"route", "api"}, {"code", "none"}}) == 1);
    CHECK(scrape.value("bulwark_requests_total",
                       {{"listener", "internal"}, {"route", "all"}, {"code", "404"}}) == 1);
    CHECK(scrape.find("bulwark_requests_total", {}).size() == 4);
    CHECK(scrape.find("bulwark_requests_total", {{"route", "fallback"}}).empty());
  }

  SUBCASE("the duration histogram is cumulative, in seconds") {
    std::map<std::string, std::string> api = {{"listener", "inbound"}, {"route", "api"}};
    auto buckets = scrape.find("bulwark_request_duration_seconds_bucket", api);
    REQUIRE(buckets.size() == LocalHistogram::kBounds.size() + 1);
    std::map<double, double> by_bound;
    for (const Sample* s : buckets) {
      REQUIRE(s->labels.size() == 3);
      const std::string& le = s->labels.at("le");
      double bound = le == "+Inf" ? std::numeric_limits<double>::infinity() : std::stod(le);
      by_bound[bound] = s->value;
    }
    REQUIRE(by_bound.size() == LocalHistogram::kBounds.size() + 1);
    CHECK(by_bound[0.0005] == 1);
    CHECK(by_bound[0.001] == 2);
    CHECK(by_bound[10] == 2);
    CHECK(by_bound[30] == 2);
    CHECK(by_bound[std::numeric_limits<double>::infinity()] == 3);
    double previous = 0;
    for (const auto& [bound, count] : by_bound) {
      CHECK(count >= previous);
      previous = count;
    }
    CHECK(scrape.value("bulwark_request_duration_seconds_count", api) == 3);
    CHECK(scrape.value("bulwark_request_duration_seconds_sum", api) ==
          doctest::Approx(30.001002).epsilon(1e-9));
    // A route with no traffic still has its (empty) histogram.
    std::map<std::string, std::string> fallback = {{"listener", "inbound"}, {"route", "fallback"}};
    CHECK(scrape.value("bulwark_request_duration_seconds_count", fallback) == 0);
    CHECK(scrape.find("bulwark_request_duration_seconds_bucket", fallback).size() ==
          LocalHistogram::kBounds.size() + 1);
  }

  SUBCASE("downstream connections by listener") {
    CHECK(scrape.value("bulwark_downstream_connections", {{"listener", "inbound"}}) == 4);
    CHECK(scrape.value("bulwark_downstream_connections", {{"listener", "internal"}}) == 0);
  }

  SUBCASE("upstream series by cluster") {
    CHECK(scrape.value("bulwark_upstream_requests_total", {{"cluster", "app"}, {"code", "200"}}) ==
          2);
    CHECK(scrape.value("bulwark_upstream_requests_total",
                       {{"cluster", "batch"}, {"code", "none"}}) == 1);
    CHECK(scrape.find("bulwark_upstream_requests_total", {}).size() == 2);
    CHECK(scrape.value("bulwark_upstream_connections", {{"cluster", "app"}, {"state", "active"}}) ==
          5);
    CHECK(scrape.value("bulwark_upstream_connections", {{"cluster", "app"}, {"state", "idle"}}) ==
          2);
    CHECK(scrape.value("bulwark_upstream_connections",
                       {{"cluster", "batch"}, {"state", "active"}}) == 0);
    CHECK(scrape.value("bulwark_upstream_active_requests", {{"cluster", "batch"}}) == 7);
    CHECK(scrape.value("bulwark_upstream_active_requests", {{"cluster", "app"}}) == 0);
    CHECK(scrape.value("bulwark_upstream_connect_failures_total", {{"cluster", "batch"}}) == 3);
    CHECK(scrape.value("bulwark_upstream_connect_failures_total", {{"cluster", "app"}}) == 0);
  }

  SUBCASE("local replies by reason token, every token present") {
    CHECK(scrape.value("bulwark_local_replies_total", {{"reason", "no_route"}}) == 3);
    CHECK(scrape.value("bulwark_local_replies_total", {{"reason", "upstream_timeout"}}) == 1);
    CHECK(scrape.value("bulwark_local_replies_total", {{"reason", "pool_timeout"}}) == 0);
    std::set<std::string> reasons;
    for (const Sample* s : scrape.find("bulwark_local_replies_total", {})) {
      reasons.insert(s->labels.at("reason"));
    }
    CHECK(reasons.size() == static_cast<size_t>(LocalReason::kCount));
    for (const LocalReasonInfo& r : kLocalReasons) CHECK(reasons.count(std::string(r.token)) == 1);
  }

  SUBCASE("every series is unique") {
    std::set<std::string> keys;
    for (const Sample& s : scrape.samples()) {
      std::string key = s.name;
      for (const auto& [k, v] : s.labels) key += "|" + k + "=" + v;
      CHECK_MESSAGE(keys.insert(key).second, key);
    }
  }
}

TEST_CASE("metrics: render_metrics with no workers reports zeros") {
  auto config = metrics_config();
  Scrape scrape(render_metrics(*config, {}));
  CHECK(scrape.find("bulwark_requests_total", {}).empty());
  CHECK(scrape.value("bulwark_downstream_connections", {{"listener", "inbound"}}) == 0);
  CHECK(scrape.value("bulwark_request_duration_seconds_count",
                     {{"listener", "internal"}, {"route", "all"}}) == 0);
}

// Routes with and without policies; a route name used in two listeners; clusters with and
// without a circuit breaker.
constexpr std::string_view kPolicyYaml = R"(
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - name: guarded
        match: {prefix: /g/}
        cluster: app
        bulkhead: {max_concurrent: 10, max_queued: 5, queue_timeout: 100ms}
        rate_limit: {requests_per_second: 50, burst: 10}
        fault: {delay: {percent: 10, duration: 20ms}, abort: {percent: 5, status: 503}}
      - name: plain
        cluster: plain
  - name: side
    address: 127.0.0.1:0
    routes:
      - name: guarded
        match: {prefix: /b/}
        cluster: db
        bulkhead: {max_concurrent: 1}
      - name: limited
        cluster: plain
        rate_limit: {requests_per_second: 1}
        fault: {abort: {percent: 1}}
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
    circuit_breaker: {failure_rate_percent: 50, minimum_calls: 5}
  - name: plain
    endpoints: [127.0.0.1:9001]
  - name: db
    endpoints: [127.0.0.1:9002]
    circuit_breaker: {failure_rate_percent: 20}
)";

std::shared_ptr<const config::Config> policy_config() {
  config::LoadResult loaded = config::load_config_string(kPolicyYaml, "policy.yaml");
  for (const auto& e : loaded.errors) FAIL_CHECK(e.to_string());
  REQUIRE(loaded.ok());
  const config::Config& c = *loaded.config;
  // The shape the tests below rely on.
  REQUIRE(c.listeners.size() == 2);
  REQUIRE(c.listeners[0].routes.size() == 2);
  REQUIRE(c.listeners[1].routes.size() == 2);
  REQUIRE(c.listeners[0].routes[0].bulkhead);
  REQUIRE(c.listeners[0].routes[0].rate_limit);
  REQUIRE(c.listeners[0].routes[0].fault);
  REQUIRE_FALSE(c.listeners[0].routes[1].bulkhead);
  REQUIRE_FALSE(c.listeners[0].routes[1].rate_limit);
  REQUIRE_FALSE(c.listeners[0].routes[1].fault);
  REQUIRE(c.listeners[1].routes[0].bulkhead);
  REQUIRE_FALSE(c.listeners[1].routes[0].rate_limit);
  REQUIRE_FALSE(c.listeners[1].routes[0].fault);
  REQUIRE_FALSE(c.listeners[1].routes[1].bulkhead);
  REQUIRE(c.listeners[1].routes[1].rate_limit);
  REQUIRE(c.listeners[1].routes[1].fault);
  REQUIRE(c.clusters.size() == 3);
  REQUIRE(c.clusters[0].circuit_breaker);
  REQUIRE_FALSE(c.clusters[1].circuit_breaker);
  REQUIRE(c.clusters[2].circuit_breaker);
  return loaded.config;
}

// What the Server reports for policy_config(): circuits where configured, bulkhead queues
// where there is a bulkhead.
SharedGauges policy_gauges() {
  SharedGauges g;
  SharedGauges::Circuit app;
  app.enabled = true;
  app.state = 1;
  app.transitions = {3, 4, 2};
  SharedGauges::Circuit plain;  // enabled = false; values that must not show
  plain.state = 2;
  plain.transitions = {9, 9, 9};
  SharedGauges::Circuit db;
  db.enabled = true;
  db.state = 2;
  db.transitions = {0, 1, 1};
  g.circuits = {app, plain, db};
  g.bulkhead_queued = {{5, -1}, {0, -1}};
  return g;
}

void check_series_unique(const Scrape& scrape) {
  std::set<std::string> keys;
  for (const Sample& s : scrape.samples()) {
    std::string key = s.name;
    for (const auto& [k, v] : s.labels) key += "|" + k + "=" + v;
    CHECK_MESSAGE(keys.insert(key).second, key);
  }
}

TEST_CASE("metrics: circuit breaker series only for clusters that have one") {
  auto config = policy_config();
  WorkerStats w(*config);
  std::string text = render_metrics(*config, {&w}, policy_gauges());
  INFO(text);
  Scrape scrape(text);
  check_series_unique(scrape);

  CHECK(scrape.value("bulwark_circuit_state", {{"cluster", "app"}}) == 1);
  CHECK(scrape.value("bulwark_circuit_state", {{"cluster", "db"}}) == 2);
  CHECK(scrape.find("bulwark_circuit_state", {}).size() == 2);
  CHECK(scrape.find("bulwark_circuit_state", {{"cluster", "plain"}}).empty());

  CHECK(scrape.value("bulwark_circuit_transitions_total", {{"cluster", "app"}, {"to", "closed"}}) ==
        3);
  CHECK(scrape.value("bulwark_circuit_transitions_total", {{"cluster", "app"}, {"to", "open"}}) ==
        4);
  CHECK(scrape.value("bulwark_circuit_transitions_total",
                     {{"cluster", "app"}, {"to", "half_open"}}) == 2);
  CHECK(scrape.value("bulwark_circuit_transitions_total", {{"cluster", "db"}, {"to", "closed"}}) ==
        0);
  CHECK(scrape.value("bulwark_circuit_transitions_total", {{"cluster", "db"}, {"to", "open"}}) ==
        1);
  CHECK(scrape.value("bulwark_circuit_transitions_total",
                     {{"cluster", "db"}, {"to", "half_open"}}) == 1);
  CHECK(scrape.find("bulwark_circuit_transitions_total", {}).size() == 6);
  CHECK(scrape.find("bulwark_circuit_transitions_total", {{"cluster", "plain"}}).empty());
  for (const Sample* s : scrape.find("bulwark_circuit_transitions_total", {})) {
    CHECK(s->labels.size() == 2);
  }
}

TEST_CASE("metrics: without shared gauges there are no circuit or bulkhead queue series") {
  auto config = policy_config();
  WorkerStats w(*config);
  Scrape scrape(render_metrics(*config, {&w}));
  CHECK(scrape.find("bulwark_circuit_state", {}).empty());
  CHECK(scrape.find("bulwark_circuit_transitions_total", {}).empty());
  CHECK(scrape.find("bulwark_bulkhead_queued", {}).empty());
  // The per-worker policy counters do not depend on them.
  CHECK(scrape.value("bulwark_rate_limited_total", {{"listener", "edge"}, {"route", "guarded"}}) ==
        0);
}

TEST_CASE("metrics: bulkhead queue gauge only for routes with a bulkhead") {
  auto config = policy_config();
  WorkerStats w(*config);
  std::string text = render_metrics(*config, {&w}, policy_gauges());
  INFO(text);
  Scrape scrape(text);
  CHECK(scrape.value("bulwark_bulkhead_queued", {{"listener", "edge"}, {"route", "guarded"}}) == 5);
  CHECK(scrape.value("bulwark_bulkhead_queued", {{"listener", "side"}, {"route", "guarded"}}) == 0);
  CHECK(scrape.find("bulwark_bulkhead_queued", {}).size() == 2);
  CHECK(scrape.find("bulwark_bulkhead_queued", {{"route", "plain"}}).empty());
  CHECK(scrape.find("bulwark_bulkhead_queued", {{"route", "limited"}}).empty());
}

TEST_CASE("metrics: route policy counters are summed over workers, by listener and route") {
  auto config = policy_config();
  WorkerStats w1(*config), w2(*config);
  auto reason = [](filters::RetryReason r) { return static_cast<size_t>(r); };
  constexpr size_t kReasons = static_cast<size_t>(filters::RetryReason::kCount);

  RouteStats& edge_guarded_1 = *w1.listeners[0]->routes[0];
  RouteStats& edge_guarded_2 = *w2.listeners[0]->routes[0];
  RouteStats& edge_plain_2 = *w2.listeners[0]->routes[1];
  RouteStats& side_guarded_1 = *w1.listeners[1]->routes[0];
  RouteStats& side_limited_2 = *w2.listeners[1]->routes[1];

  // Every reason of edge/guarded gets a distinct total: 1+10, 2+20, ...
  for (size_t k = 0; k < kReasons; ++k) {
    edge_guarded_1.retries[k].inc(k + 1);
    edge_guarded_2.retries[k].inc(10 * (k + 1));
  }
  edge_plain_2.retries[reason(filters::RetryReason::k5xx)].inc(7);
  edge_guarded_1.retry_budget_exhausted.inc(2);
  edge_guarded_2.retry_budget_exhausted.inc(3);
  edge_plain_2.retry_budget_exhausted.inc(1);
  edge_guarded_1.bulkhead_full.inc(4);
  edge_guarded_2.bulkhead_full.inc(1);
  edge_guarded_2.queue_timeout.inc(6);
  edge_guarded_1.rate_limited.inc(8);
  edge_guarded_2.rate_limited.inc(9);
  edge_guarded_1.fault_delays.inc(11);
  edge_guarded_2.fault_delays.inc(1);
  edge_guarded_2.fault_aborts.inc(13);
  side_guarded_1.bulkhead_full.inc(21);
  side_guarded_1.queue_timeout.inc(22);
  side_limited_2.rate_limited.inc(31);
  side_limited_2.fault_aborts.inc(32);
  // Counted by a route without that policy: must still not produce a series.
  edge_plain_2.bulkhead_full.inc(99);
  edge_plain_2.rate_limited.inc(99);
  edge_plain_2.fault_delays.inc(99);
  side_guarded_1.rate_limited.inc(99);
  side_guarded_1.fault_aborts.inc(99);

  std::string text = render_metrics(*config, {&w1, &w2}, policy_gauges());
  INFO(text);
  Scrape scrape(text);
  check_series_unique(scrape);
  using Labels = std::map<std::string, std::string>;
  const Labels edge_guarded = {{"listener", "edge"}, {"route", "guarded"}};
  const Labels edge_plain = {{"listener", "edge"}, {"route", "plain"}};
  const Labels side_guarded = {{"listener", "side"}, {"route", "guarded"}};
  const Labels side_limited = {{"listener", "side"}, {"route", "limited"}};
  auto with = [](Labels l, const std::string& k, const std::string& v) {
    l[k] = v;
    return l;
  };

  SUBCASE("retries by reason token, on every route") {
    for (size_t k = 0; k < kReasons; ++k) {
      std::string token(filters::to_string(static_cast<filters::RetryReason>(k)));
      INFO("reason " << token);
      CHECK(scrape.value("bulwark_retries_total", with(edge_guarded, "reason", token)) ==
            static_cast<double>(11 * (k + 1)));
      CHECK(scrape.value("bulwark_retries_total", with(side_guarded, "reason", token)) == 0);
      CHECK(scrape.value("bulwark_retries_total", with(side_limited, "reason", token)) == 0);
      double plain = k == reason(filters::RetryReason::k5xx) ? 7 : 0;
      CHECK(scrape.value("bulwark_retries_total", with(edge_plain, "reason", token)) == plain);
    }
    CHECK(scrape.value("bulwark_retries_total", with(edge_plain, "reason", "5xx")) == 7);
    CHECK(scrape.value("bulwark_retries_total", with(edge_guarded, "reason", "connect-failure")) ==
          11);
    CHECK(scrape.value("bulwark_retries_total", with(edge_guarded, "reason", "per-try-timeout")) ==
          66);
    CHECK(scrape.find("bulwark_retries_total", {}).size() == 4 * kReasons);
  }

  SUBCASE("retry budget exhaustion, on every route") {
    CHECK(scrape.value("bulwark_retry_budget_exhausted_total", edge_guarded) == 5);
    CHECK(scrape.value("bulwark_retry_budget_exhausted_total", edge_plain) == 1);
    CHECK(scrape.value("bulwark_retry_budget_exhausted_total", side_guarded) == 0);
    CHECK(scrape.value("bulwark_retry_budget_exhausted_total", side_limited) == 0);
    CHECK(scrape.find("bulwark_retry_budget_exhausted_total", {}).size() == 4);
  }

  SUBCASE("bulkhead rejections by reason, only where there is a bulkhead") {
    CHECK(scrape.value("bulwark_bulkhead_rejections_total",
                       with(edge_guarded, "reason", "bulkhead_full")) == 5);
    CHECK(scrape.value("bulwark_bulkhead_rejections_total",
                       with(edge_guarded, "reason", "queue_timeout")) == 6);
    CHECK(scrape.value("bulwark_bulkhead_rejections_total",
                       with(side_guarded, "reason", "bulkhead_full")) == 21);
    CHECK(scrape.value("bulwark_bulkhead_rejections_total",
                       with(side_guarded, "reason", "queue_timeout")) == 22);
    CHECK(scrape.find("bulwark_bulkhead_rejections_total", {}).size() == 4);
    CHECK(scrape.find("bulwark_bulkhead_rejections_total", edge_plain).empty());
    CHECK(scrape.find("bulwark_bulkhead_rejections_total", side_limited).empty());
  }

  SUBCASE("rate limited, only where there is a rate limit") {
    CHECK(scrape.value("bulwark_rate_limited_total", edge_guarded) == 17);
    CHECK(scrape.value("bulwark_rate_limited_total", side_limited) == 31);
    CHECK(scrape.find("bulwark_rate_limited_total", {}).size() == 2);
    CHECK(scrape.find("bulwark_rate_limited_total", edge_plain).empty());
    CHECK(scrape.find("bulwark_rate_limited_total", side_guarded).empty());
  }

  SUBCASE("injected faults by kind, only where there is fault injection") {
    CHECK(scrape.value("bulwark_faults_injected_total", with(edge_guarded, "kind", "delay")) == 12);
    CHECK(scrape.value("bulwark_faults_injected_total", with(edge_guarded, "kind", "abort")) == 13);
    CHECK(scrape.value("bulwark_faults_injected_total", with(side_limited, "kind", "delay")) == 0);
    CHECK(scrape.value("bulwark_faults_injected_total", with(side_limited, "kind", "abort")) == 32);
    CHECK(scrape.find("bulwark_faults_injected_total", {}).size() == 4);
    CHECK(scrape.find("bulwark_faults_injected_total", edge_plain).empty());
    CHECK(scrape.find("bulwark_faults_injected_total", side_guarded).empty());
  }

  SUBCASE("every policy series names its listener and route") {
    for (const char* name : {"bulwark_retries_total", "bulwark_retry_budget_exhausted_total",
                             "bulwark_bulkhead_rejections_total", "bulwark_bulkhead_queued",
                             "bulwark_rate_limited_total", "bulwark_faults_injected_total"}) {
      INFO(name);
      auto series = scrape.find(name, {});
      CHECK_FALSE(series.empty());
      for (const Sample* s : series) {
        CHECK(s->labels.count("listener") == 1);
        CHECK(s->labels.count("route") == 1);
      }
    }
  }
}

}  // namespace
}  // namespace bulwark
