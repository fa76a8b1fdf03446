// The cluster circuit breaker as a client and an operator see it: it opens on failures or slow
// calls, answers 503 circuit_open without touching the upstream while open, lets exactly
// half_open_calls probes through after open_duration, and closes or opens again (for longer).

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

bool is_circuit_open(const std::optional<Response>& response) {
  return response && response->status == 503 && response->get("x-bulwark-reason") == "circuit_open";
}

double circuit_state(const BulwarkProcess& bulwark) {
  return scrape_metric(bulwark, "bulwark_circuit_state", {{"cluster", "app"}}).value_or(-1);
}

double transitions(const BulwarkProcess& bulwark, const std::string& to) {
  return scrape_metric(bulwark, "bulwark_circuit_transitions_total",
                       {{"cluster", "app"}, {"to", to}})
      .value_or(-1);
}

// The warn line of a circuit transition, as substrings of its JSON.
std::vector<std::string> transition_log(const std::string& from, const std::string& to) {
  return {"circuit breaker changed state", "\"cluster\":\"app\"", "\"from\":\"" + from + "\"",
          "\"to\":\"" + to + "\""};
}

// How the test upstream answers: 500, 200, or 200 once a Gate lets it.
enum class Mode { kFail, kHealthy, kHeld };

TestUpstream::Handler switchable(std::atomic<Mode>& mode, Gate& gate) {
  return [&mode, &gate](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      Mode now = mode.load();
      if (now == Mode::kHeld && !gate.pass()) return;
      bool ok = now == Mode::kFail ? conn.write_response(500, "broken\n")
                                   : conn.write_response(200, "fine\n");
      if (!ok) return;
    }
  };
}

// Route "api" without retries, so that each request is one call of the circuit breaker.
ProxyOptions breaker_options(const std::string& circuit_breaker) {
  ProxyOptions options;
  options.route = "retry: {attempts: 1}";
  options.cluster = "circuit_breaker: " + circuit_breaker;
  return options;
}

}  // namespace

TEST_CASE("an always-failing upstream opens the circuit and it closes through half-open") {
  std::atomic<Mode> mode{Mode::kFail};
  Gate gate;
  ProxyFixture proxy(switchable(mode, gate),
                     breaker_options("{failure_rate_percent: 50, minimum_calls: 4, window: 10s,\n"
                                     "  open_duration: 400ms, half_open_calls: 2}"));
  CHECK(circuit_state(proxy.bulwark) == 0);
  for (int i = 0; i < 4; ++i) {
    auto response = http_get(proxy.port(), "/broken");
    REQUIRE(response);
    CHECK(response->status == 500);  // the upstream's own answer, while the circuit is closed
  }
  auto opened = Clock::now();

  // Open: answered at once, and nothing reaches the upstream.
  for (int i = 0; i < 5; ++i)
    check_local_reply(http_get(proxy.port(), "/broken"), 503, "circuit_open");
  CHECK(proxy.upstream.requests() == 4);
  CHECK(circuit_state(proxy.bulwark) == 1);
  CHECK(transitions(proxy.bulwark, "open") == 1);
  CHECK(scrape_metric(proxy.bulwark, "bulwark_local_replies_total", {{"reason", "circuit_open"}}) ==
        5);
  CHECK(wait_for_log_lines(proxy.bulwark, transition_log("closed", "open")));
  auto clusters = http_get(proxy.bulwark.admin_port(), "/clusters");
  REQUIRE(clusters);
  CHECK(clusters->body.find("\"circuit\":{\"state\":\"open\",\"open_duration_ms\":400}") !=
        std::string::npos);

  // The upstream recovers; after open_duration the probes find out and the circuit closes.
  mode = Mode::kHealthy;
  std::optional<Response> probe;
  REQUIRE(eventually(
      [&] {
        probe = http_get(proxy.port(), "/recovered");
        return !is_circuit_open(probe);
      },
      Millis{5000}));
  CHECK(Clock::now() - opened >= Millis{300});
  REQUIRE(probe);
  CHECK(probe->status == 200);
  auto second_probe = http_get(proxy.port(), "/recovered");
  REQUIRE(second_probe);
  CHECK(second_probe->status == 200);
  CHECK(eventually([&] { return circuit_state(proxy.bulwark) == 0; }));
  CHECK(transitions(proxy.bulwark, "half_open") == 1);
  CHECK(transitions(proxy.bulwark, "closed") == 1);
  CHECK(wait_for_log_lines(proxy.bulwark, transition_log("open", "half_open")));
  CHECK(wait_for_log_lines(proxy.bulwark, transition_log("half_open", "closed")));

  // Closed again: requests flow.
  size_t before = proxy.upstream.requests();
  for (int i = 0; i < 5; ++i) {
    auto response = http_get(proxy.port(), "/flowing");
    REQUIRE(response);
    CHECK(response->status == 200);
  }
  CHECK(proxy.upstream.requests() == before + 5);
}

TEST_CASE("a failure rate under the threshold keeps the circuit closed") {
  std::atomic<int> counter{0};
  ProxyOptions options = breaker_options(
      "{failure_rate_percent: 50, minimum_calls: 4, window: 10s, open_duration: 10s}");
  // One request in four fails: 25 %.
  ProxyFixture proxy(
      [&counter](UpstreamConn& conn) {
        while (conn.read_request()) {
          bool ok = ++counter % 4 == 0 ? conn.write_response(500, "broken\n")
                                       : conn.write_response(200, "fine\n");
          if (!ok) return;
        }
      },
      options);
  for (int i = 0; i < 40; ++i) {
    auto response = http_get(proxy.port(), "/mostly-fine");
    REQUIRE(response);
    CHECK_FALSE(is_circuit_open(response));
  }
  CHECK(proxy.upstream.requests() == 40);
  CHECK(circuit_state(proxy.bulwark) == 0);
  CHECK(transitions(proxy.bulwark, "open") == 0);
}

TEST_CASE("client errors and bulwark's own refusals do not open the circuit") {
  ProxyOptions options = breaker_options(
      "{failure_rate_percent: 50, minimum_calls: 2, window: 10s, open_duration: 10s}");
  options.route += "\nrate_limit: {requests_per_second: 1, burst: 4}";
  ProxyFixture proxy(
      [](UpstreamConn& conn) {
        while (conn.read_request()) {
          if (!conn.write_response(404, "no such thing\n")) return;
        }
      },
      options);
  int not_found = 0, limited = 0;
  for (int i = 0; i < 12; ++i) {
    auto response = http_get(proxy.port(), "/missing");
    REQUIRE(response);
    INFO(describe(response));
    CHECK_FALSE(is_circuit_open(response));
    if (response->status == 404) ++not_found;
    if (response->get("x-bulwark-reason") == "rate_limited") ++limited;
  }
  CHECK(not_found >= 4);
  CHECK(limited >= 6);
  CHECK(circuit_state(proxy.bulwark) == 0);
  CHECK(transitions(proxy.bulwark, "open") == 0);
}

TEST_CASE("a half-open circuit lets exactly half_open_calls probes through") {
  std::atomic<Mode> mode{Mode::kFail};
  Gate gate;
  ProxyFixture proxy(switchable(mode, gate),
                     breaker_options("{failure_rate_percent: 50, minimum_calls: 4, window: 10s,\n"
                                     "  open_duration: 300ms, half_open_calls: 2}"));
  Gate::Opener open_at_end(gate);
  for (int i = 0; i < 4; ++i) REQUIRE(http_get(proxy.port(), "/broken"));
  check_local_reply(http_get(proxy.port(), "/broken"), 503, "circuit_open");

  // The probes reach the upstream and are held there.
  mode = Mode::kHeld;
  REQUIRE(eventually([&] { return circuit_state(proxy.bulwark) == 2; }, Millis{5000}));
  std::vector<std::optional<Response>> probes(2);
  std::vector<std::thread> clients;
  for (auto& probe : probes) {
    clients.emplace_back([&probe, port = proxy.port()] { probe = http_get(port, "/probe"); });
  }
  REQUIRE(proxy.upstream.wait_for_requests(6));

  // While they are out, every other request is refused at once, on any worker.
  for (int i = 0; i < 6; ++i)
    check_local_reply(http_get(proxy.port(), "/more"), 503, "circuit_open");
  CHECK(proxy.upstream.requests() == 6);

  gate.open();
  for (auto& client : clients) client.join();
  for (const auto& probe : probes) {
    REQUIRE(probe);
    CHECK(probe->status == 200);
  }
  CHECK(eventually([&] { return circuit_state(proxy.bulwark) == 0; }));
  auto after = http_get(proxy.port(), "/closed");
  REQUIRE(after);
  CHECK(after->status == 200);
}

TEST_CASE("a failing half-open probe opens the circuit again for twice as long") {
  std::atomic<Mode> mode{Mode::kFail};
  Gate gate;
  ProxyFixture proxy(switchable(mode, gate),
                     breaker_options("{failure_rate_percent: 50, minimum_calls: 4, window: 10s,\n"
                                     "  open_duration: 200ms, max_open_duration: 10s,\n"
                                     "  half_open_calls: 1}"));
  for (int i = 0; i < 4; ++i) REQUIRE(http_get(proxy.port(), "/broken"));
  auto opened = Clock::now();

  // The first probe still fails: the upstream's 500 reaches the client, the circuit re-opens.
  std::optional<Response> probe;
  REQUIRE(eventually(
      [&] {
        probe = http_get(proxy.port(), "/probe");
        return !is_circuit_open(probe);
      },
      Millis{5000}));
  auto reopened = Clock::now();
  CHECK(reopened - opened >= Millis{150});
  REQUIRE(probe);
  CHECK(probe->status == 500);
  check_local_reply(http_get(proxy.port(), "/after-probe"), 503, "circuit_open");
  CHECK(transitions(proxy.bulwark, "open") == 2);
  CHECK(wait_for_log_lines(proxy.bulwark, transition_log("half_open", "open")));

  // The second open period is 400 ms, not 200 ms.
  mode = Mode::kHealthy;
  REQUIRE(eventually(
      [&] {
        probe = http_get(proxy.port(), "/probe");
        return !is_circuit_open(probe);
      },
      Millis{5000}));
  CHECK(Clock::now() - reopened >= Millis{300});
  REQUIRE(probe);
  CHECK(probe->status == 200);
  CHECK(eventually([&] { return circuit_state(proxy.bulwark) == 0; }));
  CHECK(transitions(proxy.bulwark, "closed") == 1);
}

TEST_CASE("slow calls open the circuit even when they succeed") {
  ProxyOptions options = breaker_options(
      "{slow_call_duration: 100ms, slow_call_rate_percent: 50, minimum_calls: 2,\n"
      "  window: 10s, open_duration: 10s}");
  ProxyFixture proxy(
      [](UpstreamConn& conn) {
        while (conn.read_request()) {
          if (!conn.pause(Millis{150}) || !conn.write_response(200, "slow\n")) return;
        }
      },
      options);
  for (int i = 0; i < 2; ++i) {
    auto response = http_get(proxy.port(), "/slow");
    REQUIRE(response);
    CHECK(response->status == 200);
  }
  check_local_reply(http_get(proxy.port(), "/slow"), 503, "circuit_open");
  CHECK(proxy.upstream.requests() == 2);
  CHECK(circuit_state(proxy.bulwark) == 1);
}

TEST_CASE("each try counts as a call, so retries against a dead endpoint open the circuit") {
  BulwarkProcess bulwark;
  ProxyOptions options;
  options.route = "retry: {attempts: 2, backoff: {base: 1ms, max: 2ms}}";
  options.cluster =
      "circuit_breaker: {failure_rate_percent: 100, minimum_calls: 4, window: 10s,\n"
      "                  open_duration: 10s}";
  RefusingPort refused;
  bulwark.start(proxy_config(refused.address(), options));
  // Two requests, two tries each: four failed calls.
  for (int i = 0; i < 2; ++i) {
    check_local_reply(http_get(bulwark.port("inbound"), "/dead"), 503, "upstream_connect_failure");
  }
  check_local_reply(http_get(bulwark.port("inbound"), "/dead"), 503, "circuit_open");
  CHECK(scrape_metric(bulwark, "bulwark_upstream_connect_failures_total", {{"cluster", "app"}}) ==
        4);
}

TEST_CASE(
    "a try that timed out waiting for a pool connection is no circuit breaker failure: local "
    "saturation does not open the circuit of a healthy cluster") {
  Gate gate;
  TestUpstream upstream([&gate](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (request->target == "/hold" && !gate.pass(Millis{10000})) return;
      if (!conn.write_response(200, request->target + "\n")) return;
    }
  });
  // One connection for the whole cluster: while /hold has it, every other request waits for it
  // and gives up at its per_try_timeout (200 ms), long before pending_timeout (5 s). Two such
  // failures would open the circuit if they counted.
  std::string yaml =
      "workers: 1\n"
      "drain_delay: 0s\n"
      "admin: {address: 127.0.0.1:0}\n"
      "listeners:\n"
      "  - name: inbound\n"
      "    address: 127.0.0.1:0\n"
      "    routes:\n"
      "      - name: hold\n"
      "        match: {prefix: /hold}\n"
      "        cluster: app\n"
      "        timeout: 10s\n"
      "        retry: {attempts: 1}\n"
      "      - name: api\n"
      "        match: {prefix: /}\n"
      "        cluster: app\n"
      "        retry: {attempts: 1, per_try_timeout: 200ms}\n"
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [" +
      upstream.address() +
      "]\n"
      "    pool: {max_connections: 1, max_pending: 10, pending_timeout: 5s}\n"
      "    circuit_breaker: {failure_rate_percent: 50, minimum_calls: 2, window: 10s,\n"
      "                      open_duration: 10s}\n";
  BulwarkProcess bulwark;
  bulwark.start(yaml);
  Gate::Opener open_at_end(gate);
  INFO(bulwark.logs_text());
  const uint16_t port = bulwark.port("inbound");

  ClientConn holder(port);
  REQUIRE(holder.send(make_request("GET", "/hold")));
  REQUIRE(upstream.wait_for_requests(1));
  for (int i = 0; i < 4; ++i) {
    auto started = Clock::now();
    auto waited = http_get(port, "/waits");
    check_local_reply(waited, 504, "upstream_timeout");
    CHECK(Clock::now() - started >= Millis{190});
    CHECK(Clock::now() - started < Millis{2000});  // its per-try timeout, not pending_timeout
  }
  CHECK(upstream.requests() == 1);  // none of them reached the upstream
  CHECK(circuit_state(bulwark) == 0);
  CHECK(transitions(bulwark, "open") == 0);
  // Nor were they upstream requests.
  const auto upstream_requests =
      scrape_metric(bulwark, "bulwark_upstream_requests_total", {{"cluster", "app"}});
  CHECK(upstream_requests.value_or(0) == 0);

  // The held request ends well, and the next one goes through: the circuit never opened.
  gate.open();
  auto held = holder.read_response();
  REQUIRE(held);
  CHECK(held->status == 200);
  auto after = http_get(port, "/after");
  REQUIRE(after);
  CHECK(after->status == 200);
  CHECK(circuit_state(bulwark) == 0);
  CHECK(transitions(bulwark, "open") == 0);
}

TEST_CASE("at the cluster's connection limit an idle connection to another endpoint gives its slot") {
  // Three endpoints, two connection slots, one worker. After two requests each leave an idle
  // keep-alive connection, a request for the third endpoint gets the slot of the longest idle
  // one at once, rather than waiting pending_timeout (5 s) for a slot nobody uses.
  TestUpstream a({}, "a"), b({}, "b"), c({}, "c");
  ProxyOptions options;
  options.workers = 1;
  options.cluster = "pool: {max_connections: 2, pending_timeout: 5s}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address() + ", " + c.address(), options));
  const uint16_t port = bulwark.port("inbound");
  std::vector<std::string> served;
  for (int i = 0; i < 4; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto response = http_get(port, "/x");
    REQUIRE(response);
    CHECK(response->status == 200);
    CHECK(std::chrono::steady_clock::now() - start < Millis{2000});
    served.push_back(response->get("x-upstream") + " " + response->get("x-upstream-connection"));
  }
  // More connections were opened than there are slots: idle ones gave theirs up. (Whichever
  // endpoint a freed slot's request then goes to is round robin's choice.)
  std::set<std::string> connections(served.begin(), served.end());
  INFO(served[0] << " / " << served[1] << " / " << served[2] << " / " << served[3]);
  CHECK(connections.size() >= 3);
}
