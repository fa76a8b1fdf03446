// bulwark's /metrics as Prometheus sees it, and the alert rules in deploy/prometheus/: a live
// scrape with every metric family present must pass `promtool check metrics` (its parser and
// lint) with no output, and keep the naming a user's queries rely on (HELP on every family,
// counters end in _total, histograms in _seconds with the documented buckets); the rule file
// must pass `promtool check rules`, its unit tests `promtool test rules`, and name only metrics
// bulwark exports.
//
// promtool comes from the Debian package `prometheus` (scripts/install-deps.sh installs it).
// The tests fail, not skip, without it: CI must run them.

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/tls_kit.h"

#ifndef BULWARK_SOURCE_DIR
#error "BULWARK_SOURCE_DIR must name the repository root (tests/CMakeLists.txt defines it)"
#endif

using namespace bulwark::test;

namespace {

const std::string kRulesDir = std::string(BULWARK_SOURCE_DIR) + "/deploy/prometheus";

// The path of `promtool` on $PATH, or "" when there is none.
std::string find_promtool() {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "";
  while (true) {
    size_t colon = dirs.find(':');
    std::string dir(dirs.substr(0, colon));
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/promtool";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) return "";
    dirs.remove_prefix(colon + 1);
  }
}

std::string promtool_missing() {
  const char* path = std::getenv("PATH");
  return "promtool is not on PATH (" + std::string(path != nullptr ? path : "") +
         "): run scripts/install-deps.sh, which installs the Debian package prometheus (it "
         "provides /usr/bin/promtool)";
}

// Fails the test, with what to do, when there is no promtool.
#define REQUIRE_PROMTOOL(var)              \
  const std::string var = find_promtool(); \
  REQUIRE_MESSAGE(!var.empty(), promtool_missing())

struct ToolResult {
  int exit_code = -1;  // -1: still running after the timeout (then killed)
  std::string out;
  std::string err;
};

ToolResult run_tool(const std::vector<std::string>& argv) {
  Subprocess process;
  process.start(argv);
  ToolResult result;
  result.exit_code = process.wait_exit(Millis{60000}).value_or(-1);
  process.wait_streams_closed(Millis{2000});
  result.out = process.text(Subprocess::Stream::kStdout);
  result.err = process.text(Subprocess::Stream::kStderr);
  return result;
}

std::string describe_run(const ToolResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\n--- stdout ---\n" + r.out +
         "\n--- stderr ---\n" + r.err;
}

// ---------------------------------------------------------------------------------------------
// A small reader of the Prometheus text format, enough for the checks below.

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;
};

struct Family {
  std::string help;
  bool has_help = false;
  std::string type;
  std::vector<Sample> samples;
};

struct Scrape {
  std::map<std::string, Family> families;  // by family name (declared by # HELP / # TYPE)
  std::vector<std::string> errors;         // lines this reader could not place
};

// Splits `name{a="x",b="y"} value`; false when the line is not a sample.
bool parse_sample(std::string_view line, Sample& sample) {
  size_t i = 0;
  while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
  sample.name = std::string(line.substr(0, i));
  if (sample.name.empty() || i == line.size()) return false;
  if (line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      size_t eq = line.find('=', i);
      if (eq == std::string_view::npos || eq + 1 >= line.size() || line[eq + 1] != '"')
        return false;
      std::string key(line.substr(i, eq - i));
      std::string value;
      size_t j = eq + 2;
      for (; j < line.size() && line[j] != '"'; ++j) {
        if (line[j] == '\\' && j + 1 < line.size()) {
          ++j;
          value += line[j] == 'n' ? '\n' : line[j];
        } else {
          value += line[j];
        }
      }
      if (j >= line.size()) return false;
      sample.labels[key] = value;
      i = j + 1;
      if (i < line.size() && line[i] == ',') ++i;
    }
    if (i >= line.size()) return false;
    ++i;  // '}'
  }
  if (i >= line.size() || line[i] != ' ') return false;
  sample.value = std::string(line.substr(i + 1));
  return !sample.value.empty();
}

// The family a sample belongs to: its own name, or for a histogram the name without
// _bucket / _sum / _count.
std::string family_of(const Scrape& scrape, const std::string& sample_name) {
  if (scrape.families.count(sample_name) != 0) return sample_name;
  for (std::string_view suffix : {"_bucket", "_sum", "_count"}) {
    if (sample_name.size() > suffix.size() &&
        sample_name.compare(sample_name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      std::string base = sample_name.substr(0, sample_name.size() - suffix.size());
      auto it = scrape.families.find(base);
      if (it != scrape.families.end() && it->second.type == "histogram") return base;
    }
  }
  return "";
}

Scrape parse_scrape(const std::string& text) {
  Scrape scrape;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      std::string rest = line.substr(7);
      size_t space = rest.find(' ');
      std::string name = rest.substr(0, space);
      std::string text_part = space == std::string::npos ? "" : rest.substr(space + 1);
      Family& f = scrape.families[name];
      if (line[2] == 'H') {
        f.has_help = true;
        f.help = text_part;
      } else {
        f.type = text_part;
      }
      continue;
    }
    if (line[0] == '#') continue;
    Sample sample;
    if (!parse_sample(line, sample)) {
      scrape.errors.push_back("not a sample: " + line);
      continue;
    }
    std::string family = family_of(scrape, sample.name);
    if (family.empty()) {
      scrape.errors.push_back("sample of no declared family: " + line);
      continue;
    }
    scrape.families[family].samples.push_back(std::move(sample));
  }
  return scrape;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::set<std::string> label_names(const Sample& s) {
  std::set<std::string> names;
  for (const auto& [k, v] : s.labels) names.insert(k);
  return names;
}

// Every family README.md documents, with its type and labels ("le" left out of histograms).
struct Documented {
  const char* name;
  const char* type;
  std::set<std::string> labels;
};

const std::vector<Documented>& documented_families() {
  static const std::vector<Documented> families = {
      {"bulwark_requests_total", "counter", {"listener", "route", "code"}},
      {"bulwark_request_duration_seconds", "histogram", {"listener", "route"}},
      {"bulwark_upstream_requests_total", "counter", {"cluster", "code"}},
      {"bulwark_upstream_connections", "gauge", {"cluster", "state"}},
      {"bulwark_upstream_active_requests", "gauge", {"cluster"}},
      {"bulwark_upstream_connect_failures_total", "counter", {"cluster"}},
      {"bulwark_local_replies_total", "counter", {"reason"}},
      {"bulwark_downstream_connections", "gauge", {"listener"}},
      {"bulwark_downstream_connection_limit", "gauge", {"listener"}},
      {"bulwark_downstream_connection_limit_reached_total", "counter", {"listener", "limit"}},
      {"bulwark_downstream_accept_errors_total", "counter", {"listener"}},
      {"bulwark_retries_total", "counter", {"listener", "route", "reason"}},
      {"bulwark_retry_budget_exhausted_total", "counter", {"listener", "route"}},
      {"bulwark_hedges_total", "counter", {"listener", "route", "outcome"}},
      {"bulwark_circuit_state", "gauge", {"cluster"}},
      {"bulwark_circuit_transitions_total", "counter", {"cluster", "to"}},
      {"bulwark_bulkhead_rejections_total", "counter", {"listener", "route", "reason"}},
      {"bulwark_bulkhead_queued", "gauge", {"listener", "route"}},
      {"bulwark_rate_limited_total", "counter", {"listener", "route"}},
      {"bulwark_faults_injected_total", "counter", {"listener", "route", "kind"}},
      {"bulwark_cluster_routable_endpoints", "gauge", {"cluster"}},
      {"bulwark_cluster_panic", "gauge", {"cluster"}},
      {"bulwark_endpoint_healthy", "gauge", {"cluster", "endpoint"}},
      {"bulwark_health_checks_total", "counter", {"cluster", "endpoint", "result"}},
      {"bulwark_endpoint_ejected", "gauge", {"cluster", "endpoint"}},
      {"bulwark_outlier_ejections_total", "counter", {"cluster", "endpoint"}},
      {"bulwark_build_info", "gauge", {"version"}},
      {"bulwark_config_reloads_total", "counter", {"result"}},
      {"bulwark_config_generation", "gauge", {}},
      {"bulwark_config_last_reload_success_timestamp_seconds", "gauge", {}},
      {"process_cpu_seconds_total", "counter", {}},
      {"process_resident_memory_bytes", "gauge", {}},
      {"process_virtual_memory_bytes", "gauge", {}},
      {"process_open_fds", "gauge", {}},
      {"process_max_fds", "gauge", {}},
      {"process_start_time_seconds", "gauge", {}},
      {"bulwark_tls_handshakes_total", "counter", {"side", "name", "version", "resumed"}},
      {"bulwark_tls_handshake_errors_total", "counter", {"side", "name", "reason"}},
      {"bulwark_tls_certificate_expiry_timestamp_seconds", "gauge", {"side", "name", "path"}},
      {"bulwark_tls_certificate_reload_errors_total", "counter", {"side", "name"}},
  };
  return families;
}

// The upstream of route "api": /api/fail answers 500, /healthz and everything else 200.
void api_upstream(UpstreamConn& conn) {
  while (auto request = conn.read_request()) {
    bool fail = request->target.rfind("/api/fail", 0) == 0;
    bool ok = fail ? conn.write_response(500, "broken\n") : conn.write_response(200, "fine\n");
    if (!ok || iequals(request->get("connection"), "close")) return;
  }
}

// Three listeners; route "api" with every route policy, cluster "app" with every cluster policy,
// cluster "dead" on a port where nothing listens, listener "secure" with TLS.
std::string every_family_config(const std::string& app, const std::string& dead,
                                const TestPki& pki) {
  return "workers: 2\n"
         "drain_delay: 0s\n"
         "drain_timeout: 5s\n"
         "admin: {address: 127.0.0.1:0}\n"
         "listeners:\n"
         "  - name: inbound\n"
         "    address: 127.0.0.1:0\n"
         "    routes:\n"
         "      - name: api\n"
         "        match: {prefix: /api/}\n"
         "        cluster: app\n"
         "        retry: {attempts: 2, retry_on: [connect-failure, reset, 5xx],\n"
         "                backoff: {base: 1ms, max: 5ms}, hedge: {delay: 2s}}\n"
         "        bulkhead: {max_concurrent: 50, max_queued: 10, queue_timeout: 500ms}\n"
         "        rate_limit: {requests_per_second: 1000, burst: 1000}\n"
         "        fault: {abort: {percent: 0, status: 503}, header_control: true}\n"
         "      - name: limited\n"
         "        match: {prefix: /limited/}\n"
         "        cluster: app\n"
         "        rate_limit: {requests_per_second: 0.01, burst: 1}\n"
         "  - name: internal\n"
         "    address: 127.0.0.1:0\n"
         "    routes:\n"
         "      - name: dead\n"
         "        cluster: dead\n"
         "  - name: secure\n"
         "    address: 127.0.0.1:0\n"
         "    tls: {certificates: [{cert: " +
         pki.server.cert_file + ", key: " + pki.server.key_file +
         "}]}\n"
         "    routes:\n"
         "      - name: tls\n"
         "        cluster: app\n"
         "clusters:\n"
         "  - name: app\n"
         "    endpoints: [" +
         app +
         "]\n"
         "    circuit_breaker: {failure_rate_percent: 100, minimum_calls: 1000}\n"
         "    health_check: {path: /healthz, interval: 200ms}\n"
         "    outlier_detection: {consecutive_5xx: 100, consecutive_gateway_failure: 100}\n"
         "    adaptive_concurrency: {min_limit: 100, max_limit: 1000}\n"
         "  - name: dead\n"
         "    endpoints: [" +
         dead +
         "]\n"
         "    connect_timeout: 250ms\n";
}

}  // namespace

TEST_CASE("a live /metrics scrape passes promtool check metrics and keeps the naming rules") {
  REQUIRE_PROMTOOL(promtool);

  TestUpstream upstream(api_upstream);
  TempDir certs;
  TestPki pki(certs.path());
  RefusingPort refused;
  BulwarkProcess bulwark;
  bulwark.start(every_family_config(upstream.address(), refused.address(), pki));
  uint16_t inbound = bulwark.port("inbound");
  uint16_t internal = bulwark.port("internal");
  uint16_t secure = bulwark.port("secure");

  // Health checks ran, so their counters are not all zero.
  REQUIRE(eventually([&] {
    return scrape_metric(bulwark, "bulwark_health_checks_total",
                         {{"cluster", "app"}, {"result", "success"}})
               .value_or(0) >= 1;
  }));

  // Traffic: successes, an upstream 500 (retried once), an injected 503, a 429, a 404 and a
  // connect failure.
  for (int i = 0; i < 5; ++i) {
    auto response = http_get(inbound, "/api/ok");
    REQUIRE(response);
    CHECK(response->status == 200);
  }
  auto failed = http_get(inbound, "/api/fail");
  REQUIRE(failed);
  CHECK(failed->status == 500);
  CHECK(failed->get("x-bulwark-attempts") == "2");
  check_local_reply(http_get(inbound, "/api/x", {{"x-bulwark-fault-abort", "503"}}), 503,
                    "fault_abort");
  auto first = http_get(inbound, "/limited/a");
  REQUIRE(first);
  CHECK(first->status == 200);
  check_local_reply(http_get(inbound, "/limited/b"), 429, "rate_limited");
  check_local_reply(http_get(inbound, "/nowhere"), 404, "no_route");
  check_local_reply(http_get(internal, "/anything"), 503, "upstream_connect_failure");
  // TLS: a handshake, and one that fails (plaintext on the TLS port).
  TlsClientOptions tls;
  tls.ca_file = pki.ca.cert_file();
  auto over_tls = https_get(secure, tls, "/api/ok");
  REQUIRE(over_tls);
  CHECK(over_tls->status == 200);
  check_local_reply(http_get(secure, "/api/ok"), 400, "http_request_on_tls_port");

  // Every request that had a route is counted (11: api 7, limited 2, dead 1, tls 1).
  std::string text;
  bool counted = eventually([&] {
    auto metrics = http_get(bulwark.admin_port(), "/metrics");
    text = metrics && metrics->status == 200 ? metrics->body : "";
    return metric_value(text, "bulwark_requests_total", {}).value_or(0) == 11;
  });
  INFO("scrape:\n" << text);
  REQUIRE(counted);
  CHECK(metric_value(text, "bulwark_requests_total",
                     {{"listener", "inbound"}, {"route", "api"}, {"code", "500"}}) == 1);
  CHECK(metric_value(text, "bulwark_requests_total",
                     {{"listener", "inbound"}, {"route", "api"}, {"code", "503"}}) == 1);
  CHECK(metric_value(text, "bulwark_requests_total",
                     {{"listener", "inbound"}, {"route", "limited"}, {"code", "429"}}) == 1);
  CHECK(metric_value(text, "bulwark_requests_total",
                     {{"listener", "internal"}, {"route", "dead"}, {"code", "503"}}) == 1);
  CHECK(metric_value(text, "bulwark_retries_total", {{"route", "api"}, {"reason", "5xx"}}) == 1);
  CHECK(metric_value(text, "bulwark_local_replies_total", {{"reason", "no_route"}}) == 1);
  CHECK(metric_value(text, "bulwark_rate_limited_total", {{"route", "limited"}}) == 1);
  CHECK(metric_value(text, "bulwark_faults_injected_total",
                     {{"route", "api"}, {"kind", "abort"}}) == 1);
  CHECK(metric_value(text, "bulwark_upstream_requests_total",
                     {{"cluster", "app"}, {"code", "500"}}) == 2);
  CHECK(
      metric_value(text, "bulwark_upstream_requests_total", {{"cluster", "dead"}, {"code", "none"}})
          .value_or(0) >= 1);
  CHECK(metric_value(text, "bulwark_upstream_connect_failures_total", {{"cluster", "dead"}})
            .value_or(0) >= 1);

  // promtool: parses the text format and lints it. Problems go to stderr, with exit 3 for lint
  // problems and 1 for a parse error; a clean scrape gives exit 0 and no output at all.
  // It reads only stdin; the harness gives children /dev/null, so a shell redirects the file.
  TempDir dir;
  std::string scrape_file = dir.file("metrics.txt");
  write_file(scrape_file, text);
  ToolResult lint =
      run_tool({"/bin/sh", "-c", "exec \"$0\" check metrics < \"$1\"", promtool, scrape_file});
  INFO("promtool check metrics: " << describe_run(lint));
  CHECK(lint.exit_code == 0);
  CHECK(lint.out.empty());
  CHECK(lint.err.empty());

  // The naming rules, on our own reading of the same text.
  Scrape scrape = parse_scrape(text);
  CHECK_MESSAGE(scrape.errors.empty(), [&] {
    std::string all;
    for (const auto& e : scrape.errors) all += e + "\n";
    return all;
  }());
  for (const auto& entry : scrape.families) {
    // Not a structured binding: INFO captures by reference, which clang before 16 refuses.
    const auto& name = entry.first;
    const auto& family = entry.second;
    INFO("family " << name << " (" << family.type << ")");
    // Ours, or the standard process_* metrics every Prometheus client library exports.
    CHECK((name.rfind("bulwark_", 0) == 0 || name.rfind("process_", 0) == 0));
    CHECK(family.has_help);
    CHECK_FALSE(family.help.empty());
    CHECK((family.type == "counter" || family.type == "gauge" || family.type == "histogram"));
    CHECK_MESSAGE(!family.samples.empty(), "a family with HELP and TYPE but no sample");
    // A counter's name ends in _total; nothing else's does.
    CHECK(ends_with(name, "_total") == (family.type == "counter"));
    for (const Sample& s : family.samples) {
      INFO(s.name << " = " << s.value);
      char* end = nullptr;
      double v = std::strtod(s.value.c_str(), &end);
      CHECK(end != s.value.c_str());
      // Counters, and the gauges (counts of connections, requests, endpoints; states), are
      // never negative.
      CHECK(v >= 0);
    }
    if (family.type == "histogram") {
      CHECK(ends_with(name, "_seconds"));
      // Per series: buckets 0.0005 .. 30 as documented, then +Inf, cumulative, +Inf == _count.
      std::map<std::map<std::string, std::string>, std::vector<std::pair<std::string, double>>>
          buckets;
      std::map<std::map<std::string, std::string>, double> counts;
      for (const Sample& s : family.samples) {
        auto labels = s.labels;
        if (s.name == name + "_bucket") {
          std::string le = labels["le"];
          labels.erase("le");
          buckets[labels].emplace_back(le, std::strtod(s.value.c_str(), nullptr));
        } else if (s.name == name + "_count") {
          counts[labels] = std::strtod(s.value.c_str(), nullptr);
        }
      }
      CHECK_FALSE(buckets.empty());
      for (const auto& [labels, series] : buckets) {
        std::vector<std::string> les;
        for (const auto& b : series) les.push_back(b.first);
        CHECK(les == std::vector<std::string>{"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
                                              "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
                                              "30", "+Inf"});
        CHECK(std::is_sorted(series.begin(), series.end(),
                             [](const auto& a, const auto& b) { return a.second < b.second; }));
        CHECK(counts.count(labels) == 1);
        if (!series.empty()) CHECK(series.back().second == counts[labels]);
      }
    }
  }

  // Every documented family is there, with its type and labels.
  for (const Documented& d : documented_families()) {
    INFO("documented family " << d.name);
    auto it = scrape.families.find(d.name);
    REQUIRE(it != scrape.families.end());
    CHECK(it->second.type == d.type);
    for (const Sample& s : it->second.samples) {
      auto names = label_names(s);
      names.erase("le");
      CHECK(names == d.labels);
    }
  }
}

TEST_CASE("the Prometheus alert rules pass promtool check rules and their unit tests") {
  REQUIRE_PROMTOOL(promtool);
  const std::string rules = kRulesDir + "/bulwark-rules.yaml";
  const std::string tests = kRulesDir + "/bulwark-rules.test.yaml";

  ToolResult check = run_tool({promtool, "check", "rules", rules});
  INFO("promtool check rules: " << describe_run(check));
  CHECK(check.exit_code == 0);
  CHECK(check.out.find("SUCCESS") != std::string::npos);

  // Run from the test's working directory, not deploy/prometheus: the test file's rule_files
  // must resolve relative to the test file.
  ToolResult unit = run_tool({promtool, "test", "rules", tests});
  INFO("promtool test rules: " << describe_run(unit));
  CHECK(unit.exit_code == 0);
  CHECK(unit.out.find("SUCCESS") != std::string::npos);
  CHECK(unit.out.find("FAILED") == std::string::npos);

  // Each alert of the rule file has unit tests.
  std::string rules_text = read_file(rules);
  std::string tests_text = read_file(tests);
  std::regex alert_re(R"(- alert: (\w+))");
  std::set<std::string> alerts;
  for (std::sregex_iterator it(rules_text.begin(), rules_text.end(), alert_re), end; it != end;
       ++it) {
    alerts.insert((*it)[1]);
  }
  CHECK(alerts.size() >= 6);
  for (const std::string& alert : alerts) {
    INFO("alert " << alert);
    CHECK(tests_text.find("alertname: " + alert + "\n") != std::string::npos);
  }

  // Every bulwark metric the rules name (in expressions and in the hints of their annotations)
  // is one bulwark exports.
  std::set<std::string> documented;
  for (const Documented& d : documented_families()) documented.insert(d.name);
  std::regex metric_re(R"(\bbulwark_[a-z_]+)");
  for (std::sregex_iterator it(rules_text.begin(), rules_text.end(), metric_re), end; it != end;
       ++it) {
    std::string name = (*it)[0];
    INFO("the rules name " << name);
    CHECK(documented.count(name) == 1);
  }
}
