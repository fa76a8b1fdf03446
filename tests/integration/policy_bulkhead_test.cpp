// Route bulkheads: a route whose upstream is slow fills its own slots and queue, answers the
// overflow with 503 bulkhead_full or queue_timeout, and never slows down the other routes.

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

// Route "slow" (/slow...) to cluster "slow" with `bulkhead`, and route "fast" (everything else)
// to cluster "fast", on listener "inbound".
std::string two_routes(const std::string& slow, const std::string& fast,
                       const std::string& bulkhead) {
  return "workers: 2\n"
         "drain_delay: 0s\n"
         "drain_timeout: 1s\n"
         "admin: {address: 127.0.0.1:0}\n"
         "listeners:\n"
         "  - name: inbound\n"
         "    address: 127.0.0.1:0\n"
         "    routes:\n"
         "      - name: slow\n"
         "        match: {prefix: /slow}\n"
         "        cluster: slow\n"
         "        bulkhead: " +
         bulkhead +
         "\n"
         "      - name: fast\n"
         "        match: {prefix: /}\n"
         "        cluster: fast\n"
         "clusters:\n"
         "  - name: slow\n"
         "    endpoints: [" +
         slow +
         "]\n"
         "  - name: fast\n"
         "    endpoints: [" +
         fast + "]\n";
}

// Answers each request once the gate lets it.
TestUpstream::Handler gated(Gate& gate) {
  return [&gate](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (!gate.pass() || !conn.write_response(200, "done " + request->target + "\n")) return;
    }
  };
}

double slow_metric(const BulwarkProcess& bulwark, std::string_view name,
                   std::map<std::string, std::string> labels = {}) {
  labels["listener"] = "inbound";
  labels["route"] = "slow";
  return scrape_metric(bulwark, name, labels).value_or(-1);
}

}  // namespace

TEST_CASE("a slow route fills its bulkhead while another route stays fast") {
  Gate gate;
  TestUpstream slow(gated(gate), "slow");
  TestUpstream fast({}, "fast");
  BulwarkProcess bulwark;
  bulwark.start(two_routes(slow.address(), fast.address(),
                           "{max_concurrent: 2, max_queued: 2, queue_timeout: 300ms}"));
  Gate::Opener open_at_end(gate);
  const uint16_t port = bulwark.port("inbound");

  // Two requests take both slots and hang in the slow upstream.
  std::vector<ClientConn> running;
  for (int i = 0; i < 2; ++i) {
    running.emplace_back(port);
    REQUIRE(running.back().send(make_request("GET", "/slow/run-" + std::to_string(i))));
  }
  REQUIRE(slow.wait_for_requests(2));

  // Two more wait in the queue.
  std::vector<ClientConn> queued;
  auto queued_at = Clock::now();
  for (int i = 0; i < 2; ++i) {
    queued.emplace_back(port);
    REQUIRE(queued.back().send(make_request("GET", "/slow/queued-" + std::to_string(i))));
  }
  REQUIRE(eventually([&] { return slow_metric(bulwark, "bulwark_bulkhead_queued") == 2; }));

  // The next one finds slots and queue full.
  check_local_reply(http_get(port, "/slow/overflow"), 503, "bulkhead_full");

  // Meanwhile the other route answers at once.
  auto fast_started = Clock::now();
  for (int i = 0; i < 20; ++i) {
    auto response = http_get(port, "/api/" + std::to_string(i));
    REQUIRE(response);
    CHECK(response->status == 200);
    CHECK(response->get("x-upstream") == "fast");
  }
  auto fast_elapsed = Clock::now() - fast_started;
  CHECK(fast_elapsed < Millis{1000});
  CHECK(fast.requests() == 20);

  // The queued requests give up after queue_timeout, without reaching the upstream.
  for (auto& client : queued) {
    auto response = client.read_response(false, Millis{3000});
    check_local_reply(response, 503, "queue_timeout");
  }
  auto waited = Clock::now() - queued_at;
  CHECK(waited >= Millis{280});
  CHECK(waited < Millis{2000});
  CHECK(slow.requests() == 2);

  CHECK(slow_metric(bulwark, "bulwark_bulkhead_rejections_total", {{"reason", "bulkhead_full"}}) ==
        1);
  CHECK(slow_metric(bulwark, "bulwark_bulkhead_rejections_total", {{"reason", "queue_timeout"}}) ==
        2);
  CHECK(slow_metric(bulwark, "bulwark_bulkhead_queued") == 0);
  CHECK(scrape_metric(bulwark, "bulwark_local_replies_total", {{"reason", "bulkhead_full"}}) == 1);
  CHECK(scrape_metric(bulwark, "bulwark_local_replies_total", {{"reason", "queue_timeout"}}) == 2);
  // The fast route has no bulkhead, so no bulkhead series.
  CHECK_FALSE(scrape_metric(bulwark, "bulwark_bulkhead_rejections_total", {{"route", "fast"}}));

  // The slow upstream answers: the two running requests complete and the slots are free again.
  gate.open();
  for (auto& client : running) {
    auto response = client.read_response();
    REQUIRE(response);
    CHECK(response->status == 200);
  }
  auto again = http_get(port, "/slow/again");
  REQUIRE(again);
  CHECK(again->status == 200);
  CHECK(slow.requests() == 3);
}

TEST_CASE("queued requests get the slots that finished requests free, in arrival order") {
  Gate gate;
  TestUpstream slow(gated(gate), "slow");
  TestUpstream fast({}, "fast");
  BulwarkProcess bulwark;
  bulwark.start(two_routes(slow.address(), fast.address(),
                           "{max_concurrent: 1, max_queued: 5, queue_timeout: 3s}"));
  Gate::Opener open_at_end(gate);
  const uint16_t port = bulwark.port("inbound");

  // One running, then five queued one after the other, each on its own connection, and so
  // spread over both workers.
  constexpr int kQueued = 5;
  std::vector<ClientConn> clients;
  clients.emplace_back(port);
  REQUIRE(clients.back().send(make_request("GET", "/slow/0")));
  REQUIRE(slow.wait_for_requests(1));
  for (int i = 1; i <= kQueued; ++i) {
    clients.emplace_back(port);
    REQUIRE(clients.back().send(make_request("GET", "/slow/" + std::to_string(i))));
    REQUIRE(eventually([&] { return slow_metric(bulwark, "bulwark_bulkhead_queued") == i; }));
  }

  // Each finished request hands its slot to the oldest waiting one.
  for (int i = 0; i <= kQueued; ++i) {
    REQUIRE(slow.wait_for_requests(static_cast<size_t>(i) + 1));
    CHECK(slow.requests() == static_cast<size_t>(i) + 1);  // one at a time
    gate.release();
  }
  for (int i = 0; i <= kQueued; ++i) {
    auto response = clients[static_cast<size_t>(i)].read_response();
    REQUIRE(response);
    INFO(describe(response));
    CHECK(response->status == 200);
    CHECK(response->body == "done /slow/" + std::to_string(i) + "\n");
  }
  auto received = slow.received();
  REQUIRE(received.size() == kQueued + 1);
  for (size_t i = 0; i < received.size(); ++i) {
    CHECK(received[i].target == "/slow/" + std::to_string(i));
  }
  CHECK(slow_metric(bulwark, "bulwark_bulkhead_queued") == 0);
  CHECK(slow_metric(bulwark, "bulwark_bulkhead_rejections_total") == 0);
}
