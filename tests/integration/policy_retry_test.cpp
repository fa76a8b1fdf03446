// Retries as a client sees them: flaky replicas hidden, which failures and statuses are retried,
// which requests may be sent again, bodies re-sent byte for byte, per-try timeouts, and the
// retry budget that keeps a full outage from becoming a retry storm.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

double retries(const BulwarkProcess& bulwark, const std::string& reason) {
  return scrape_metric(bulwark, "bulwark_retries_total",
                       {{"listener", "inbound"}, {"route", "api"}, {"reason", reason}})
      .value_or(-1);
}

// Serves keep-alive requests: `respond` gets the upstream-wide number of the request (from 1)
// and answers it; it returns false to end the connection.
using Responder = std::function<bool(UpstreamConn&, const Request&, int number)>;
TestUpstream::Handler numbered(std::atomic<int>& counter, Responder respond) {
  return [&counter, respond](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (!respond(conn, *request, ++counter)) return;
    }
  };
}

bool answer_ok(UpstreamConn& conn, const Request& request) {
  return conn.write_response(200, request.method + " " + request.target + "\n");
}

// Reads one request and never answers it; sets `closed` when the proxy gives the connection up.
TestUpstream::Handler hang(Event& closed) {
  return [&closed](UpstreamConn& conn) {
    if (conn.read_request() && conn.wait_peer_close(Millis{10000})) closed.set();
  };
}

}  // namespace

TEST_CASE("retries hide a replica that fails one request in three") {
  bool reset = false;
  SUBCASE("with a 503") { reset = false; }
  SUBCASE("by resetting the connection") { reset = true; }
  CAPTURE(reset);
  std::atomic<int> counter{0};
  ProxyFixture proxy(numbered(counter, [reset](UpstreamConn& conn, const Request& request, int n) {
    if (n % 3 != 0) return answer_ok(conn, request);
    if (reset) {
      conn.close(true);
      return false;
    }
    return conn.write_response(503, "busy\n");
  }));

  constexpr int kRequests = 60;
  int ok = 0, retried = 0;
  for (int i = 0; i < kRequests; ++i) {
    auto response = http_get(proxy.port(), "/flaky/" + std::to_string(i));
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    if (response->status == 200) ++ok;
    if (response->get("x-bulwark-attempts") == "2") ++retried;
  }
  CHECK(ok == kRequests);
  // Each failed upstream request was followed by the same request once more, and it succeeded.
  int upstream_requests = 0, failures = 0;
  for (int i = 0; i < kRequests; ++i) {
    if (++upstream_requests % 3 == 0) {
      ++failures;
      ++upstream_requests;
    }
  }
  CHECK(proxy.upstream.requests() == static_cast<size_t>(upstream_requests));
  if (reset) {
    // A reset on a reused connection looks like an idle connection the upstream closed just as
    // it was reused, and goes again on a new connection without counting as a retry. Those that
    // count show in the header.
    CHECK(retries(proxy.bulwark, "reset") == retried);
  } else {
    CHECK(retried == failures);
    CHECK(retries(proxy.bulwark, "gateway-error") == failures);
  }
}

TEST_CASE("a retry goes to another replica than the one that failed") {
  TestUpstream broken(
      [](UpstreamConn& conn) {
        while (conn.read_request()) {
          if (!conn.write_response(503, "broken\n")) return;
        }
      },
      "broken");
  TestUpstream healthy({}, "healthy");
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(broken.address() + ", " + healthy.address()));
  constexpr int kRequests = 40;
  for (int i = 0; i < kRequests; ++i) {
    auto response = http_get(bulwark.port("inbound"), "/replicated");
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "healthy");
  }
  // Round robin sent about half of the first tries to the broken replica; none of the retries.
  CHECK(broken.requests() >= 1);
  CHECK(healthy.requests() == kRequests);
  CHECK(retries(bulwark, "gateway-error") == broken.requests());
}

TEST_CASE("a retried PUT sends the same body again") {
  bool chunked = false;
  size_t size = 20000;
  SUBCASE("Content-Length") { chunked = false; }
  SUBCASE("chunked") { chunked = true; }
  // Larger than the read buffer and than what is read before a connection takes it (64 KiB): the
  // body arrives over several reads while the first try is already writing.
  SUBCASE("Content-Length, 300 KB") { size = 300000; }
  SUBCASE("chunked, 300 KB") {
    chunked = true;
    size = 300000;
  }
  CAPTURE(chunked);
  CAPTURE(size);
  std::atomic<int> counter{0};
  ProxyOptions options;
  options.route = "retry: {max_body_bytes: 1MiB}";
  ProxyFixture proxy(numbered(counter,
                              [](UpstreamConn& conn, const Request&, int n) {
                                return n == 1 ? conn.write_response(503, "busy\n")
                                              : conn.write_response(201, "stored\n");
                              }),
                     options);
  const std::string body = pattern_string(0, size);
  ClientConn client(proxy.port());
  if (chunked) {
    REQUIRE(client.send(
        make_request("PUT", "/items/7", {{"Transfer-Encoding", "chunked"}},
                     chunk(body.substr(0, 7000)) + chunk(body.substr(7000)) + chunk(""))));
  } else {
    REQUIRE(client.send(make_request("PUT", "/items/7", {}, body)));
  }
  auto response = client.read_response();
  REQUIRE(response);
  INFO(describe(response));
  CHECK(response->status == 201);
  CHECK(response->body == "stored\n");
  CHECK(response->get("x-bulwark-attempts") == "2");
  auto received = proxy.upstream.received();
  REQUIRE(received.size() == 2);
  for (const Request& request : received) {
    CHECK(request.method == "PUT");
    CHECK(request.target == "/items/7");
    CHECK(request.body_size == body.size());
    CHECK(request.body == body);
  }
}

TEST_CASE("a request body larger than max_body_bytes is not sent twice") {
  size_t size = 0;
  SUBCASE("a body that fits in the read buffer") { size = 4000; }
  SUBCASE("a body larger than the read buffer") { size = 100000; }
  CAPTURE(size);
  ProxyOptions options;
  options.route = "retry: {attempts: 3, max_body_bytes: 1KiB}";
  ProxyFixture proxy(
      [](UpstreamConn& conn) {
        while (conn.read_request()) {
          if (!conn.write_response(503, "busy\n")) return;
        }
      },
      options);
  auto response = http_request(proxy.port(), "PUT", "/big", {}, pattern_string(0, size));
  REQUIRE(response);
  INFO(describe(response));
  // The upstream's own 503, passed on: the body could not be sent again.
  CHECK(response->status == 503);
  CHECK(response->body == "busy\n");
  CHECK_FALSE(response->has("x-bulwark-reason"));
  CHECK_FALSE(response->has("x-bulwark-attempts"));
  CHECK(proxy.upstream.requests() == 1);
  CHECK(retries(proxy.bulwark, "gateway-error") == 0);
}

TEST_CASE("the last try's retriable response reaches the client as the upstream sent it") {
  ProxyOptions options;
  options.route = "retry: {attempts: 3, backoff: {base: 5ms, max: 20ms}}";
  ProxyFixture proxy(
      [](UpstreamConn& conn) {
        while (conn.read_request()) {
          if (!conn.write_response(503, "upstream is busy\n", {{"x-upstream-says", "busy"}}))
            return;
        }
      },
      options);
  auto response = http_get(proxy.port(), "/always-busy");
  REQUIRE(response);
  INFO(describe(response));
  CHECK(response->status == 503);
  CHECK(response->body == "upstream is busy\n");
  CHECK(response->get("x-upstream-says") == "busy");
  CHECK_FALSE(response->has("x-bulwark-reason"));
  CHECK(response->get("x-bulwark-attempts") == "3");
  CHECK(proxy.upstream.requests() == 3);
  CHECK(retries(proxy.bulwark, "gateway-error") == 2);
}

TEST_CASE("retry_on decides which upstream statuses are retried") {
  int first_status = 0;
  std::string route;
  std::string reason;  // the retry reason counted; empty when no retry is expected
  SUBCASE("a 500 is not retried by default") { first_status = 500; }
  SUBCASE("a 500 is retried with 5xx") {
    first_status = 500;
    route = "retry: {retry_on: [5xx]}";
    reason = "5xx";
  }
  SUBCASE("a 409 is retried when listed in retriable_status_codes") {
    first_status = 409;
    route = "retry: {retry_on: [retriable-status-codes], retriable_status_codes: [409]}";
    reason = "retriable-status-codes";
  }
  SUBCASE("a 409 is not retried with gateway-error and 5xx") {
    first_status = 409;
    route = "retry: {retry_on: [gateway-error, 5xx]}";
  }
  CAPTURE(first_status);
  CAPTURE(route);
  std::atomic<int> counter{0};
  ProxyOptions options;
  options.route = route;
  ProxyFixture proxy(numbered(counter,
                              [first_status](UpstreamConn& conn, const Request& request, int n) {
                                return n == 1 ? conn.write_response(first_status, "first\n")
                                              : answer_ok(conn, request);
                              }),
                     options);
  auto response = http_get(proxy.port(), "/status");
  REQUIRE(response);
  INFO(describe(response));
  if (reason.empty()) {
    CHECK(response->status == first_status);
    CHECK(response->body == "first\n");
    CHECK_FALSE(response->has("x-bulwark-attempts"));
    CHECK(proxy.upstream.requests() == 1);
  } else {
    CHECK(response->status == 200);
    CHECK(response->get("x-bulwark-attempts") == "2");
    CHECK(proxy.upstream.requests() == 2);
    CHECK(retries(proxy.bulwark, reason) == 1);
  }
}

TEST_CASE("a POST is not sent again after the upstream reset it") {
  ProxyFixture proxy([](UpstreamConn& conn) {
    if (conn.read_request()) conn.close(true);
  });
  auto response = http_request(proxy.port(), "POST", "/payments", {}, "amount=100");
  check_local_reply(response, 502, "upstream_reset");
  CHECK_FALSE(response->has("x-bulwark-attempts"));
  // The reply is final: a duplicate, if any, would have been sent before it.
  CHECK(proxy.upstream.requests() == 1);
  CHECK(retries(proxy.bulwark, "reset") == 0);
}

TEST_CASE("attempts 1 never sends a request twice, even a GET") {
  ProxyOptions options;
  options.route = "retry: {attempts: 1}";
  // The upstream reads the request on a new connection, then resets it.
  ProxyFixture proxy(
      [](UpstreamConn& conn) {
        if (conn.read_request()) conn.close(true);
      },
      options);
  auto response = http_get(proxy.port(), "/once");
  check_local_reply(response, 502, "upstream_reset");
  CHECK(proxy.upstream.requests() == 1);
}

TEST_CASE("a request that may safely go again is retried after a reset") {
  std::string method = "GET";
  HeaderList headers;
  std::string body;
  std::string route;
  SUBCASE("GET") {}
  SUBCASE("POST with Idempotency-Key") {
    method = "POST";
    headers = {{"Idempotency-Key", "pay-4711"}};
    body = "amount=100";
  }
  SUBCASE("POST with retry_non_idempotent") {
    method = "POST";
    body = "amount=100";
    route = "retry: {retry_non_idempotent: true}";
  }
  CAPTURE(method);
  CAPTURE(route);
  ProxyOptions options;
  options.route = route;
  // The first connection is reset after its request; every later one answers.
  ProxyFixture proxy(
      [](UpstreamConn& conn) {
        if (conn.index() == 1) {
          if (conn.read_request()) conn.close(true);
          return;
        }
        while (auto request = conn.read_request()) {
          if (!answer_ok(conn, *request)) return;
        }
      },
      options);
  auto response = http_request(proxy.port(), method, "/payments", headers, body);
  REQUIRE(response);
  INFO(describe(response));
  CHECK(response->status == 200);
  CHECK(response->get("x-bulwark-attempts") == "2");
  auto received = proxy.upstream.received();
  REQUIRE(received.size() == 2);
  for (const Request& request : received) {
    CHECK(request.method == method);
    CHECK(request.body == body);
    if (!headers.empty()) CHECK(request.get("idempotency-key") == "pay-4711");
  }
  CHECK(retries(proxy.bulwark, "reset") == 1);
}

TEST_CASE("a POST that could not connect is retried on another endpoint") {
  TestUpstream upstream;
  RefusingPort refused;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(refused.address() + ", " + upstream.address()));
  // One client connection, so one worker, whose round robin alternates: every other request
  // tries the refused endpoint first.
  ClientConn client(bulwark.port("inbound"));
  constexpr int kRequests = 6;
  int retried = 0;
  for (int i = 0; i < kRequests; ++i) {
    REQUIRE(client.send(make_request("POST", "/orders", {}, "order-" + std::to_string(i))));
    auto response = client.read_response();
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "upstream");
    if (response->get("x-bulwark-attempts") == "2") ++retried;
  }
  CHECK(retried == kRequests / 2);
  CHECK(retries(bulwark, "connect-failure") == kRequests / 2);
  // Each order reached the upstream exactly once.
  auto received = upstream.received();
  REQUIRE(received.size() == kRequests);
  for (int i = 0; i < kRequests; ++i) CHECK(received[i].body == "order-" + std::to_string(i));
}

TEST_CASE("a refused endpoint gets upstream_connect_failure after every attempt") {
  BulwarkProcess bulwark;
  ProxyOptions options;
  options.route = "retry: {attempts: 3, backoff: {base: 5ms, max: 20ms}}";
  RefusingPort refused;
  bulwark.start(proxy_config(refused.address(), options));
  auto response = http_request(bulwark.port("inbound"), "POST", "/orders", {}, "order");
  check_local_reply(response, 503, "upstream_connect_failure");
  CHECK(response->get("x-bulwark-attempts") == "3");
  CHECK(retries(bulwark, "connect-failure") == 2);
  CHECK(scrape_metric(bulwark, "bulwark_upstream_connect_failures_total", {{"cluster", "app"}}) ==
        3);
}

TEST_CASE("a try that hangs past per_try_timeout is retried on the other endpoint") {
  Event hung_closed;
  TestUpstream hanging(hang(hung_closed), "hanging");
  TestUpstream healthy({}, "healthy");
  ProxyOptions options;
  options.route =
      "timeout: 5s\n"
      "retry: {per_try_timeout: 200ms, retry_on: [connect-failure, reset, per-try-timeout]}";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(hanging.address() + ", " + healthy.address(), options));
  // Same client connection, same worker: its round robin sends one of the two requests to the
  // hanging endpoint first.
  ClientConn client(bulwark.port("inbound"));
  int retried = 0;
  for (int i = 0; i < 2; ++i) {
    auto started = Clock::now();
    REQUIRE(client.send(make_request("GET", "/slow-or-not")));
    auto response = client.read_response();
    auto elapsed = Clock::now() - started;
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "healthy");
    if (response->get("x-bulwark-attempts") == "2") {
      ++retried;
      CHECK(elapsed >= Millis{190});
      CHECK(elapsed < Millis{2000});
    }
  }
  CHECK(retried == 1);
  CHECK(hanging.requests() == 1);
  CHECK(healthy.requests() == 2);
  CHECK(retries(bulwark, "per-try-timeout") == 1);
  // The abandoned try's connection is closed, not left hanging.
  CHECK(hung_closed.wait(Millis{2000}));
}

TEST_CASE("an expired per_try_timeout without per-try-timeout in retry_on gets 504") {
  Event hung_closed;
  ProxyOptions options;
  options.route =
      "timeout: 5s\n"
      "retry: {attempts: 3, per_try_timeout: 200ms}";
  ProxyFixture proxy(hang(hung_closed), options);
  auto started = Clock::now();
  auto response = http_get(proxy.port(), "/hangs");
  auto elapsed = Clock::now() - started;
  check_local_reply(response, 504, "upstream_timeout");
  CHECK_FALSE(response->has("x-bulwark-attempts"));
  CHECK(elapsed >= Millis{190});
  CHECK(elapsed < Millis{2000});  // well before the route timeout of 5 s
  CHECK(proxy.upstream.requests() == 1);
  CHECK(hung_closed.wait(Millis{2000}));
}

TEST_CASE("the route timeout bounds all tries together") {
  Event hung_closed;
  ProxyOptions options;
  options.route =
      "timeout: 500ms\n"
      "retry: {attempts: 10, per_try_timeout: 200ms, backoff: {base: 5ms, max: 20ms},\n"
      "        retry_on: [per-try-timeout]}";
  ProxyFixture proxy(hang(hung_closed), options);
  auto started = Clock::now();
  auto response = http_get(proxy.port(), "/hangs");
  auto elapsed = Clock::now() - started;
  check_local_reply(response, 504, "upstream_timeout");
  CHECK(elapsed >= Millis{450});
  CHECK(elapsed < Millis{2000});
  // Tries start at about 0, 200 and 400 ms; none after the route's 500 ms.
  CHECK(proxy.upstream.requests() >= 2);
  CHECK(proxy.upstream.requests() <= 3);
}

TEST_CASE("during a full outage the retry budget keeps the upstream load near the offered load") {
  constexpr int kClients = 4;
  constexpr int kPerClient = 50;
  constexpr int kRequests = kClients * kPerClient;
  constexpr double kRatio = 0.2;
  constexpr int kMinimum = 10;  // min_retries_per_second 1 over a 10 s window
  bool refused = false;
  SUBCASE("upstream answers 503") { refused = false; }
  SUBCASE("upstream refuses connections") { refused = true; }
  CAPTURE(refused);
  TestUpstream upstream([](UpstreamConn& conn) {
    while (conn.read_request()) {
      if (!conn.write_response(503, "down\n")) return;
    }
  });
  ProxyOptions options;
  options.route =
      "retry:\n"
      "  attempts: 3\n"
      "  backoff: {base: 1ms, max: 5ms}\n"
      "  budget: {ratio: 0.2, min_retries_per_second: 1, window: 10s}";
  RefusingPort refusing;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(refused ? refusing.address() : upstream.address(), options));

  std::atomic<int> answered{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      ClientConn client(bulwark.port("inbound"));
      for (int i = 0; i < kPerClient; ++i) {
        if (!client.send(make_request("GET", "/outage"))) break;
        auto response = client.read_response();
        if (!response) break;
        ++answered;
        if (response->status == 503) ++failed;
      }
    });
  }
  for (auto& thread : clients) thread.join();
  CHECK(answered == kRequests);
  CHECK(failed == kRequests);

  double tries = refused ? scrape_metric(bulwark, "bulwark_upstream_connect_failures_total",
                                         {{"cluster", "app"}})
                               .value_or(-1)
                         : static_cast<double>(upstream.requests());
  CAPTURE(tries);
  // Without the budget the upstream would see 3x the requests.
  CHECK(tries <= kRequests * (1 + kRatio) + kMinimum);
  CHECK(tries >= kRequests + kMinimum);  // retries still happen, within the budget
  std::string reason = refused ? "connect-failure" : "gateway-error";
  CHECK(retries(bulwark, reason) == tries - kRequests);
  CHECK(scrape_metric(bulwark, "bulwark_retry_budget_exhausted_total",
                      {{"listener", "inbound"}, {"route", "api"}})
            .value_or(0) > 0);
}

TEST_CASE("with the retry budget disabled every failing request is tried attempts times") {
  ProxyOptions options;
  options.route =
      "retry:\n"
      "  attempts: 3\n"
      "  backoff: {base: 1ms, max: 2ms}\n"
      "  budget: {enabled: false}";
  ProxyFixture proxy(
      [](UpstreamConn& conn) {
        while (conn.read_request()) {
          if (!conn.write_response(503, "down\n")) return;
        }
      },
      options);
  ClientConn client(proxy.port());
  constexpr int kRequests = 30;
  for (int i = 0; i < kRequests; ++i) {
    REQUIRE(client.send(make_request("GET", "/outage")));
    auto response = client.read_response();
    REQUIRE(response);
    CHECK(response->status == 503);
    CHECK(response->get("x-bulwark-attempts") == "3");
  }
  CHECK(proxy.upstream.requests() == 3 * kRequests);
  CHECK(scrape_metric(proxy.bulwark, "bulwark_retry_budget_exhausted_total", {{"route", "api"}}) ==
        0);
}

TEST_CASE("a request that kills its upstream is sent at most attempts times (a query of death)") {
  // Three kept-alive connections wait in the pool; then a request that makes the upstream drop
  // the connection (as a crash would) arrives. On the first reused connection that dies, bulwark
  // cannot tell a query of death from a connection the upstream closed while idle, so it sends
  // the request again on a new one for free; once that fresh connection dies too, the free
  // send counts as the try it was and later reused connections get none. Without that, each
  // of the three tries would be two sends: six crashes instead of three.
  std::atomic<int> warm{0};
  std::atomic<int> poison{0};
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (request->target == "/poison") {
        ++poison;
        conn.close(true);
        return;
      }
      ++warm;
      eventually([&] { return warm.load() >= 3; }, Millis{5000});  // all three at once
      if (!conn.write_response(200, "ok\n")) return;
    }
  };
  ProxyOptions options;
  options.workers = 1;
  options.route = "retry: {attempts: 3, backoff: {base: 1ms, max: 2ms}}";
  ProxyFixture proxy(handler, options);
  std::vector<std::thread> warmers;
  for (int i = 0; i < 3; ++i) {
    warmers.emplace_back([&] {
      auto r = http_get(proxy.port(), "/warm");
      CHECK((r && r->status == 200));
    });
  }
  for (auto& t : warmers) t.join();
  REQUIRE(proxy.upstream.connections() == 3);

  auto response = http_get(proxy.port(), "/poison");
  REQUIRE(response);
  CHECK(response->status == 502);
  CHECK(response->get("x-bulwark-reason") == "upstream_reset");
  CHECK(response->get("x-bulwark-attempts") == "3");
  CHECK(poison.load() == 3);
}
