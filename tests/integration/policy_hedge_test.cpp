// Hedged requests as a client sees them: a slow replica's answer is not waited for, the first
// response head wins, the loser's connection is closed, and the hedges are bounded (only
// re-sendable requests, the retry budget, attempts), explained (access log, metrics) and kept
// out of the circuit breaker's and outlier detection's judgement.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

double hedges(const BulwarkProcess& bulwark, const std::string& outcome) {
  return scrape_metric(bulwark, "bulwark_hedges_total",
                       {{"listener", "inbound"}, {"route", "api"}, {"outcome", outcome}})
      .value_or(-1);
}

// Reads requests and never answers; sets `closed` when the proxy closes the connection.
TestUpstream::Handler never_answers(Event& closed, std::atomic<int>& requests) {
  return [&closed, &requests](UpstreamConn& conn) {
    if (!conn.read_request()) return;
    ++requests;
    if (conn.wait_peer_close(Millis{10000})) closed.set();
  };
}

// Answers every request after `delay`, with "x-upstream: NAME".
TestUpstream::Handler answers_after(Millis delay, std::string name) {
  return [delay, name](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (!conn.pause(delay)) return;
      if (!conn.write_response(200, name + "\n", {{"x-upstream", name}})) return;
    }
  };
}

std::string two_endpoints(const TestUpstream& a, const TestUpstream& b) {
  return a.address() + ", " + b.address();
}

// bulwark with one worker (so round robin alternates the endpoints for the requests of one
// connection) and route "api" with `route`'s keys.
void start_one_worker(BulwarkProcess& bulwark, const std::string& endpoints,
                      const std::string& route) {
  ProxyOptions options;
  options.workers = 1;
  options.route = route;
  bulwark.start(proxy_config(endpoints, options));
}

// Sends GET PATH/0 .. PATH/COUNT-1 on one connection: each must be answered 200 by `upstream`
// within `within`, after `attempts` tries when it is not empty.
void expect_answers(const BulwarkProcess& bulwark, const std::string& path, int count,
                    const std::string& upstream, const std::string& attempts, Millis within) {
  ClientConn client(bulwark.port("inbound"));
  for (int i = 0; i < count; ++i) {
    const auto started = Clock::now();
    REQUIRE(client.send(make_request("GET", path + "/" + std::to_string(i))));
    auto response = client.read_response(false, Millis{5000});
    const auto elapsed = Clock::now() - started;
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == upstream);
    if (!attempts.empty()) CHECK(response->get("x-bulwark-attempts") == attempts);
    CHECK(elapsed < within);
  }
}

}  // namespace

TEST_CASE("a hedge hides a replica that does not answer: the first head wins, the lead is "
          "cancelled and its connection closed") {
  Event slow_closed;
  std::atomic<int> slow_requests{0};
  TestUpstream slow(never_answers(slow_closed, slow_requests), "slow");
  TestUpstream fast({}, "fast");
  TempDir dir;
  const std::string log_path = dir.path() + "/access.log";
  ProxyOptions options;
  options.workers = 1;
  options.top = "access_log: {path: " + log_path + ", format: json}";
  options.route = "timeout: 5s\nretry: {attempts: 2, hedge: {delay: 50ms}}";
  // Were the cancelled try a failure, one of two tries failing would open the circuit, and one
  // gateway failure would eject the slow endpoint.
  options.cluster =
      "circuit_breaker: {failure_rate_percent: 50, minimum_calls: 2, window: 30s}\n"
      "outlier_detection: {consecutive_gateway_failure: 1, consecutive_local_origin_failure: 1}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(two_endpoints(slow, fast), options));

  // One client connection on one worker: round robin sends one of the two requests to the slow
  // endpoint first.
  ClientConn client(bulwark.port("inbound"));
  int hedged = 0;
  for (int i = 0; i < 2; ++i) {
    const auto started = Clock::now();
    REQUIRE(client.send(make_request("GET", "/items/" + std::to_string(i))));
    auto response = client.read_response();
    const auto elapsed = Clock::now() - started;
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "fast");
    if (response->get("x-bulwark-attempts") == "2") {
      ++hedged;
      CHECK(elapsed >= Millis{45});
      CHECK(elapsed < Millis{1000});  // not the route's 5 s
    }
  }
  CHECK(hedged == 1);
  CHECK(slow_requests == 1);
  CHECK(fast.requests() == 2);
  // The cancelled try's connection is closed, not returned to the pool with a request pending.
  CHECK(slow_closed.wait(Millis{2000}));
  CHECK(hedges(bulwark, "won") == 1);
  CHECK(hedges(bulwark, "lost") == 0);
  CHECK(hedges(bulwark, "failed") == 0);
  // Neither the circuit breaker nor outlier detection counted the cancelled try.
  CHECK(scrape_metric(bulwark, "bulwark_circuit_state", {{"cluster", "app"}}) == 0);
  CHECK(scrape_metric(bulwark, "bulwark_endpoint_ejected",
                      {{"cluster", "app"}, {"endpoint", slow.address()}}) == 0);
  // Each try is in the access log, the hedge marked.
  std::string log;
  CHECK(eventually([&] {
    log = read_file(log_path);
    return log.find("(hedge)") != std::string::npos;
  }));
  INFO(log);
  CHECK(log.find("\"tries\":[\"" + slow.address() + " cancelled\",\"" + fast.address() +
                 " 200 (hedge)\"]") != std::string::npos);
}

TEST_CASE("the lead answering first cancels the hedge, and the hedge answering first wins") {
  // "quick" answers after 200 ms, "sluggish" after 3 s. The hedge (after 50 ms) goes to the
  // other one each time: "quick" wins both races, as lead and as hedge.
  TestUpstream quick(answers_after(Millis{200}, "quick"), "quick");
  TestUpstream sluggish(answers_after(Millis{3000}, "sluggish"), "sluggish");
  BulwarkProcess bulwark;
  start_one_worker(bulwark, two_endpoints(quick, sluggish),
                   "timeout: 10s\nretry: {attempts: 2, hedge: {delay: 50ms}}");
  expect_answers(bulwark, "/race", 2, "quick", "2", Millis{2000});
  CHECK(hedges(bulwark, "won") == 1);
  CHECK(hedges(bulwark, "lost") == 1);
  CHECK(quick.requests() == 2);
  CHECK(sluggish.requests() == 2);
}

TEST_CASE("a lead that fails while a hedge is under way hands over to the hedge") {
  // "failing" resets each connection 150 ms after its request; "steady" answers after 300 ms.
  // With the lead on "failing", the hedge (after 50 ms) on "steady" takes over at the reset: the
  // client gets its answer, and no retry starts. With the lead on "steady", the hedge on
  // "failing" fails and the lead answers.
  std::atomic<int> resets{0};
  TestUpstream failing(
      [&resets](UpstreamConn& conn) {
        if (!conn.read_request()) return;
        conn.pause(Millis{150});
        ++resets;
        conn.close(true);
      },
      "failing");
  TestUpstream steady(answers_after(Millis{300}, "steady"), "steady");
  BulwarkProcess bulwark;
  start_one_worker(bulwark, two_endpoints(failing, steady),
                   "timeout: 5s\nretry: {attempts: 2, hedge: {delay: 50ms}}");
  expect_answers(bulwark, "/handover", 2, "steady", "2", Millis{1000});
  CHECK(resets == 2);
  CHECK(failing.requests() == 2);
  CHECK(steady.requests() == 2);  // no third try: the hedge was the retry
  CHECK(hedges(bulwark, "won") == 1);
  CHECK(hedges(bulwark, "failed") == 1);
  CHECK(hedges(bulwark, "lost") == 0);
  CHECK(scrape_metric(bulwark, "bulwark_retries_total",
                      {{"listener", "inbound"}, {"route", "api"}}) == 0);
}

TEST_CASE("requests that may not go twice are never hedged") {
  Event slow_closed;
  std::atomic<int> slow_requests{0};
  TestUpstream slow(never_answers(slow_closed, slow_requests), "slow");
  TestUpstream fast({}, "fast");
  ProxyOptions options;
  options.workers = 1;
  options.route = "timeout: 400ms\nretry: {attempts: 2, hedge: {delay: 20ms}}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(two_endpoints(slow, fast), options));
  // A connection per request; round robin on the one worker alternates all the same.
  int timed_out = 0;
  for (int i = 0; i < 2; ++i) {
    auto response =
        http_request(bulwark.port("inbound"), "POST", "/orders", {}, "order " + std::to_string(i));
    REQUIRE(response);
    INFO(describe(response));
    if (response->status == 504) {
      ++timed_out;
      CHECK(response->get("x-bulwark-attempts").empty());  // one try: no header
    } else {
      CHECK(response->status == 200);
    }
  }
  CHECK(timed_out == 1);
  CHECK(fast.requests() == 1);
  CHECK(hedges(bulwark, "won") + hedges(bulwark, "lost") + hedges(bulwark, "failed") == 0);
}

TEST_CASE("hedges spend the retry budget, and none is sent when it is empty") {
  Event slow_closed;
  std::atomic<int> slow_requests{0};
  TestUpstream slow(never_answers(slow_closed, slow_requests), "slow");
  TestUpstream fast({}, "fast");
  ProxyOptions options;
  options.workers = 1;
  options.route =
      "timeout: 300ms\n"
      "retry: {attempts: 2, hedge: {delay: 20ms},\n"
      "        budget: {ratio: 0, min_retries_per_second: 0, window: 1m}}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(two_endpoints(slow, fast), options));
  int timed_out = 0;
  for (int i = 0; i < 2; ++i) {
    auto response = http_get(bulwark.port("inbound"), "/budget/" + std::to_string(i));
    REQUIRE(response);
    INFO(describe(response));
    if (response->status == 504) {
      ++timed_out;
      CHECK(response->get("x-bulwark-attempts").empty());  // one try: no header
    } else {
      CHECK(response->status == 200);
    }
  }
  CHECK(timed_out == 1);
  CHECK(fast.requests() == 1);
  CHECK(hedges(bulwark, "won") == 0);
  CHECK(scrape_metric(bulwark, "bulwark_retry_budget_exhausted_total",
                      {{"listener", "inbound"}, {"route", "api"}}) >= 1);
}

TEST_CASE("delay: auto hedges after the route's recent p95") {
  // Both replicas answer at once until "flaky" stops answering. After 40 quick answers the
  // route's p95 is about a millisecond, so the request stuck on "flaky" is hedged within a few
  // milliseconds (at least 1 ms), long before the route's timeout.
  std::atomic<bool> stuck{false};
  Event flaky_closed;
  TestUpstream flaky(
      [&stuck, &flaky_closed](UpstreamConn& conn) {
        while (auto request = conn.read_request()) {
          if (stuck) {
            if (conn.wait_peer_close(Millis{10000})) flaky_closed.set();
            return;
          }
          if (!conn.write_response(200, "flaky\n", {{"x-upstream", "flaky"}})) return;
        }
      },
      "flaky");
  TestUpstream fast({}, "fast");
  ProxyOptions options;
  options.workers = 1;
  options.route = "timeout: 5s\nretry: {attempts: 2, hedge: {delay: auto}}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(two_endpoints(flaky, fast), options));
  ClientConn client(bulwark.port("inbound"));
  for (int i = 0; i < 40; ++i) {
    REQUIRE(client.send(make_request("GET", "/warm/" + std::to_string(i))));
    auto response = client.read_response();
    REQUIRE(response);
    REQUIRE(response->status == 200);
    // No hedge before the route has 20 answers to take a p95 from; after that, the answers
    // slower than the p95 (about 1 in 20) may be hedged.
    if (i < 20) CHECK(response->get("x-bulwark-attempts").empty());
  }
  const double warm_won = hedges(bulwark, "won");
  stuck = true;
  for (int i = 0; i < 2; ++i) {
    const auto started = Clock::now();
    REQUIRE(client.send(make_request("GET", "/stuck/" + std::to_string(i))));
    auto response = client.read_response();
    const auto elapsed = Clock::now() - started;
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "fast");
    CHECK(elapsed < Millis{1000});
  }
  // The request stuck on "flaky" was won by its hedge. (The other one went to "fast"; on a
  // loaded machine its answer may come after the p95 and be hedged too, and that hedge, sent to
  // "flaky", can only lose.)
  CHECK(hedges(bulwark, "won") == warm_won + 1);
  CHECK(flaky_closed.wait(Millis{2000}));
}

TEST_CASE("a hedge that took the lead is sent again when its pooled connection turns out closed") {
  // Three endpoints with a pooled connection each. The lead answers garbage after 100 ms, so the
  // hedge (on a pooled connection, sent at 50 ms) takes over; at 150 ms that connection closes
  // without an answer, as an idle close would look: the hedge's request goes again, whole, on a
  // new connection to its endpoint, which answers.
  std::atomic<int> visits{0};
  auto handler = [&visits](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (request->target != "/promo") {
        if (!conn.write_response(200, "warm\n")) return;
        continue;
      }
      const int n = ++visits;
      if (n == 1) {
        conn.pause(Millis{100});
        conn.write("garbage\r\n\r\n");
        return;
      }
      if (n == 2) {
        conn.pause(Millis{150});
        return;
      }
      if (!conn.write_response(200, "promoted\n")) return;
    }
  };
  TestUpstream a(handler, "a"), b(handler, "b"), c(handler, "c");
  ProxyOptions options;
  options.workers = 1;
  options.route = "timeout: 3s\nretry: {attempts: 3, hedge: {delay: 50ms}}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(a.address() + ", " + b.address() + ", " + c.address(), options));
  ClientConn client(bulwark.port("inbound"));
  for (int i = 0; i < 3; ++i) {
    REQUIRE(client.send(make_request("GET", "/warm")));
    auto warm = client.read_response();
    REQUIRE(warm);
    REQUIRE(warm->status == 200);
  }
  const auto started = Clock::now();
  REQUIRE(client.send(make_request("GET", "/promo")));
  auto response = client.read_response();
  const auto elapsed = Clock::now() - started;
  REQUIRE(response);
  INFO(describe(response));
  CHECK(response->status == 200);
  CHECK(response->body == "promoted\n");
  CHECK(elapsed < Millis{1000});
  CHECK(visits == 3);
}

TEST_CASE("a hedge answering 101 to a request that asked no upgrade does not cancel the lead") {
  std::atomic<int> upgrades{0};
  TestUpstream switcher(
      [&upgrades](UpstreamConn& conn) {
        if (!conn.read_request()) return;
        ++upgrades;
        conn.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n");
        conn.wait_peer_close(Millis{10000});
      },
      "switcher");
  TestUpstream slow_ok(answers_after(Millis{300}, "slow-ok"), "slow-ok");
  BulwarkProcess bulwark;
  start_one_worker(bulwark, two_endpoints(switcher, slow_ok),
                   "timeout: 5s\nretry: {attempts: 2, hedge: {delay: 50ms}}");
  expect_answers(bulwark, "/no-upgrade", 2, "slow-ok", "", Millis{5000});
  CHECK(upgrades == 2);  // once as a lead (retried), once as a hedge (ended)
  CHECK(hedges(bulwark, "won") == 0);
  CHECK(hedges(bulwark, "failed") == 1);
}

TEST_CASE("a request's hedges never go back to an endpoint one of its tries went to") {
  // "hung" never answers, "busy" answers 503 at once, "good" answers 200. With two hedges, a
  // request stuck on "hung" whose first hedge got "busy"'s 503 sends its second to "good".
  Event hung_closed;
  std::atomic<int> hung_requests{0};
  TestUpstream hung(never_answers(hung_closed, hung_requests), "hung");
  TestUpstream busy(
      [](UpstreamConn& conn) {
        while (auto request = conn.read_request()) {
          if (!conn.write_response(503, "busy\n")) return;
        }
      },
      "busy");
  TestUpstream good({}, "good");
  ProxyOptions options;
  options.workers = 1;
  options.route = "timeout: 3s\nretry: {attempts: 4, hedge: {delay: 50ms, max_hedges: 2}}";
  BulwarkProcess bulwark;
  bulwark.start(
      proxy_config(hung.address() + ", " + busy.address() + ", " + good.address(), options));
  for (int i = 0; i < 12; ++i) {
    auto response = http_get(bulwark.port("inbound"), "/spread/" + std::to_string(i));
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "good");
  }
  // No request reached "busy" twice.
  std::map<std::string, int> seen;
  for (const Request& r : busy.received()) CHECK(++seen[r.target] == 1);
}

TEST_CASE("a lead that floods interim responses while a hedge races hands over to the hedge") {
  // "chatty" sends twenty 103s 100 ms after the request (more than a try may send); "steady"
  // answers after 200 ms. The request whose lead is "chatty" gets "steady"'s answer through its
  // hedge, not a 502.
  TestUpstream chatty(
      [](UpstreamConn& conn) {
        if (!conn.read_request()) return;
        conn.pause(Millis{100});
        std::string hints;
        for (int i = 0; i < 20; ++i) hints += "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n";
        conn.write(hints);
        conn.wait_peer_close(Millis{10000});
      },
      "chatty");
  TestUpstream steady(answers_after(Millis{200}, "steady"), "steady");
  ProxyOptions options;
  options.workers = 1;
  options.route = "timeout: 5s\nretry: {attempts: 2, hedge: {delay: 50ms}}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(two_endpoints(chatty, steady), options));
  ClientConn client(bulwark.port("inbound"));
  for (int i = 0; i < 2; ++i) {
    REQUIRE(client.send(make_request("GET", "/hints/" + std::to_string(i))));
    // The 103s forwarded before the handover come first, each on its own.
    auto response = client.read_response();
    int interim = 0;
    while (response && response->status < 200 && ++interim <= 40) response = client.read_response();
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "steady");
  }
  CHECK(chatty.requests() == 2);  // once as a lead (handed over), once as a hedge (ended)
}
