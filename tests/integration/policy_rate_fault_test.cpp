// The route rate limit (429 rate_limited with Retry-After, one bucket over all workers) and
// fault injection, by config and by request header.

#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

double faults(const BulwarkProcess& bulwark, const std::string& kind) {
  return scrape_metric(bulwark, "bulwark_faults_injected_total",
                       {{"listener", "inbound"}, {"route", "api"}, {"kind", kind}})
      .value_or(-1);
}

bool is_rate_limited(const std::optional<Response>& response) {
  return response && response->status == 429 && response->get("x-bulwark-reason") == "rate_limited";
}

}  // namespace

TEST_CASE("a rate limit answers 429 rate_limited with Retry-After beyond its burst") {
  ProxyOptions options;
  options.route = "rate_limit: {requests_per_second: 2, burst: 3}";
  ProxyFixture proxy({}, options);
  // Each request on a new connection, so over both workers: the bucket is shared.
  int ok = 0, limited = 0;
  for (int i = 0; i < 8; ++i) {
    auto response = http_get(proxy.port(), "/limited");
    REQUIRE(response);
    INFO(describe(response));
    if (response->status == 200) {
      ++ok;
    } else {
      check_local_reply(response, 429, "rate_limited");
      CHECK(response->get("retry-after") == "1");  // one token every 500 ms, rounded up
      ++limited;
    }
  }
  auto emptied = Clock::now();
  // The burst, and at most one token that refilled meanwhile.
  CHECK(ok >= 3);
  CHECK(ok <= 4);
  CHECK(proxy.upstream.requests() == static_cast<size_t>(ok));
  CHECK(scrape_metric(proxy.bulwark, "bulwark_rate_limited_total",
                      {{"listener", "inbound"}, {"route", "api"}}) == limited);
  CHECK(scrape_metric(proxy.bulwark, "bulwark_local_replies_total", {{"reason", "rate_limited"}}) ==
        limited);

  // A token refills within about 500 ms, not at once.
  std::optional<Response> response;
  REQUIRE(eventually(
      [&] {
        response = http_get(proxy.port(), "/limited");
        return !is_rate_limited(response);
      },
      Millis{3000}, Millis{20}));
  CHECK(Clock::now() - emptied >= Millis{200});
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(is_rate_limited(http_get(proxy.port(), "/limited")));
}

TEST_CASE("a fault abort by config answers every request itself") {
  ProxyOptions options;
  options.route = "fault: {abort: {percent: 100, status: 502}}";
  ProxyFixture proxy({}, options);
  for (int i = 0; i < 5; ++i) {
    auto response = http_get(proxy.port(), "/chaos");
    check_local_reply(response, 502, "fault_abort");
    CHECK_FALSE(response->has("x-bulwark-attempts"));  // an injected fault is not retried
  }
  CHECK(proxy.upstream.requests() == 0);
  CHECK(faults(proxy.bulwark, "abort") == 5);
  CHECK(faults(proxy.bulwark, "delay") == 0);
  CHECK(scrape_metric(proxy.bulwark, "bulwark_local_replies_total", {{"reason", "fault_abort"}}) ==
        5);
}

TEST_CASE("a fault delay by config holds each request for its duration") {
  ProxyOptions options;
  options.route = "fault: {delay: {percent: 100, duration: 200ms}}";
  ProxyFixture proxy({}, options);
  for (int i = 0; i < 2; ++i) {
    auto started = Clock::now();
    auto response = http_get(proxy.port(), "/slowed");
    auto elapsed = Clock::now() - started;
    REQUIRE(response);
    CHECK(response->status == 200);  // delayed, then proxied
    CHECK(elapsed >= Millis{190});
    CHECK(elapsed < Millis{2000});
  }
  CHECK(proxy.upstream.requests() == 2);
  CHECK(faults(proxy.bulwark, "delay") == 2);
  CHECK(faults(proxy.bulwark, "abort") == 0);
}

TEST_CASE("a fault percentage applies to about that share of requests") {
  ProxyOptions options;
  options.route = "fault: {abort: {percent: 50, status: 503}}";
  ProxyFixture proxy({}, options);
  ClientConn client(proxy.port());
  constexpr int kRequests = 200;
  int aborted = 0;
  for (int i = 0; i < kRequests; ++i) {
    REQUIRE(client.send(make_request("GET", "/sometimes")));
    auto response = client.read_response();
    REQUIRE(response);
    if (response->get("x-bulwark-reason") == "fault_abort") ++aborted;
  }
  // Binomial(200, 0.5): 60..140 is more than five standard deviations either side.
  CHECK(aborted >= 60);
  CHECK(aborted <= 140);
  CHECK(proxy.upstream.requests() == static_cast<size_t>(kRequests - aborted));
  CHECK(faults(proxy.bulwark, "abort") == aborted);
}

TEST_CASE("with header_control a request asks for its own fault") {
  ProxyOptions options;
  options.route = "fault: {header_control: true}";
  ProxyFixture proxy({}, options);

  auto plain = http_get(proxy.port(), "/plain");
  REQUIRE(plain);
  CHECK(plain->status == 200);

  check_local_reply(http_get(proxy.port(), "/teapot", {{"x-bulwark-fault-abort", "418"}}), 418,
                    "fault_abort");

  auto started = Clock::now();
  auto delayed = http_get(proxy.port(), "/delayed", {{"x-bulwark-fault-delay-ms", "150"}});
  auto elapsed = Clock::now() - started;
  REQUIRE(delayed);
  CHECK(delayed->status == 200);
  CHECK(elapsed >= Millis{140});
  CHECK(elapsed < Millis{2000});

  // A value that is not a status is ignored.
  auto junk = http_get(proxy.port(), "/junk", {{"x-bulwark-fault-abort", "teapot"}});
  REQUIRE(junk);
  CHECK(junk->status == 200);

  CHECK(proxy.upstream.requests() == 3);
  CHECK(faults(proxy.bulwark, "abort") == 1);
  CHECK(faults(proxy.bulwark, "delay") == 1);
}

TEST_CASE("fault headers do nothing without header_control") {
  ProxyOptions options;
  SUBCASE("header_control false") { options.route = "fault: {header_control: false}"; }
  SUBCASE("no fault block") {}
  CAPTURE(options.route);
  ProxyFixture proxy({}, options);
  auto started = Clock::now();
  auto response =
      http_get(proxy.port(), "/ignored",
               {{"x-bulwark-fault-abort", "418"}, {"x-bulwark-fault-delay-ms", "3000"}});
  auto elapsed = Clock::now() - started;
  REQUIRE(response);
  INFO(describe(response));
  CHECK(response->status == 200);
  CHECK_FALSE(response->has("x-bulwark-reason"));
  CHECK(elapsed < Millis{2000});
  CHECK(proxy.upstream.requests() == 1);
}
