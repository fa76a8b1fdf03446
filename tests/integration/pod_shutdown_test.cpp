// Shutdown in a pod: on SIGTERM inbound listeners drain while outbound listeners keep carrying
// the app's calls to its dependencies, until POST /shutdown says the app is done or
// drain_timeout ends; POST /shutdown alone (a Job whose work is over) drains everything at once.

#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <string>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using SteadyClock = std::chrono::steady_clock;

// An inbound listener "inbound" (the service's callers) and an outbound listener "outbound"
// (the app's calls to its dependency), both to `endpoint`.
std::string pod_config(const std::string& endpoint, const std::string& drain_delay,
                       const std::string& drain_timeout) {
  return "workers: 2\n"
         "drain_delay: " +
         drain_delay +
         "\n"
         "drain_timeout: " +
         drain_timeout +
         "\n"
         "admin: {address: 127.0.0.1:0}\n"
         "listeners:\n"
         "  - name: inbound\n"
         "    address: 127.0.0.1:0\n"
         "    routes: [{name: app, cluster: app}]\n"
         "  - name: outbound\n"
         "    address: 127.0.0.1:0\n"
         "    direction: outbound\n"
         "    routes: [{name: payments, cluster: app, host_rewrite: auto}]\n"
         "clusters:\n"
         "  - name: app\n"
         "    endpoints: [" +
         endpoint + "]\n";
}

int status_of(const std::optional<Response>& r) { return r ? r->status : -1; }

}  // namespace

TEST_CASE("SIGTERM drains inbound listeners while an outbound one serves until POST /shutdown") {
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(pod_config(upstream.address(), "0s", "20s"));
  const uint16_t inbound = bulwark.port("inbound"), outbound = bulwark.port("outbound");
  // The app holds a keep-alive connection to its outbound listener.
  ClientConn app(outbound);
  REQUIRE(app.send(make_request("GET", "/before")));
  auto before = app.read_response();
  REQUIRE(before);
  CHECK(before->status == 200);

  REQUIRE(bulwark.signal(SIGTERM));
  REQUIRE(wait_for_log_lines(bulwark, {"closing inbound listeners", "POST /shutdown"}));
  CHECK(status_of(http_get(bulwark.admin_port(), "/ready")) == 503);
  // The inbound listener closes (each worker closes its socket on its own loop)...
  CHECK(eventually([&] {
    ClientConn caller;
    return !caller.connect(inbound, Millis{1000});
  }));
  // ...while the app's calls go on: on its kept connection (still kept alive) and on new ones.
  REQUIRE(app.send(make_request("GET", "/during")));
  auto during = app.read_response();
  REQUIRE(during);
  CHECK(during->status == 200);
  CHECK_FALSE(during->has("connection"));
  for (int i = 0; i < 3; ++i) CHECK(status_of(http_get(outbound, "/new-connection")) == 200);
  CHECK(bulwark.process().running());

  // The app is done: every listener drains now and the process exits.
  auto shutdown = http_request(bulwark.admin_port(), "POST", "/shutdown");
  REQUIRE(shutdown);
  CHECK(shutdown->status == 200);
  CHECK(shutdown->body.find("shutting down") == 0);
  app.close();
  CHECK(bulwark.wait_exit(Millis{5000}) == 0);
  CHECK(wait_for_log_lines(bulwark, {"shutdown asked"}));
}

TEST_CASE("an outbound listener serves after SIGTERM until drain_timeout at the latest") {
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(pod_config(upstream.address(), "0s", "600ms"));
  const uint16_t outbound = bulwark.port("outbound");
  const auto signalled = SteadyClock::now();
  REQUIRE(bulwark.signal(SIGTERM));
  REQUIRE(wait_for_log_lines(bulwark, {"closing inbound listeners"}));
  CHECK(status_of(http_get(outbound, "/still-served")) == 200);
  CHECK(bulwark.wait_exit(Millis{5000}) == 0);
  const auto lived = SteadyClock::now() - signalled;
  CHECK(lived >= Millis{500});  // it waited for drain_timeout, the outbound listener open
  CHECK(wait_for_log_lines(bulwark, {"drain timeout"}));
}

TEST_CASE("POST /shutdown alone drains every listener at once, without drain_delay, and exits") {
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(pod_config(upstream.address(), "30s", "20s"));
  CHECK(status_of(http_get(bulwark.port("outbound"), "/work")) == 200);
  const auto asked = SteadyClock::now();
  auto first = http_request(bulwark.admin_port(), "POST", "/shutdown");
  REQUIRE(first);
  CHECK(first->status == 200);
  CHECK(bulwark.wait_exit(Millis{5000}) == 0);
  CHECK(SteadyClock::now() - asked < Millis{5000});  // not drain_delay's 30 s
  CHECK(wait_for_log_lines(bulwark, {"closing listeners; finishing in-flight requests"}));
}

TEST_CASE("without outbound listeners SIGTERM drains everything as before") {
  TestUpstream upstream;
  BulwarkProcess bulwark;
  ProxyOptions options;
  options.drain_timeout = "20s";
  bulwark.start(proxy_config(upstream.address(), options));
  REQUIRE(bulwark.signal(SIGTERM));
  CHECK(bulwark.wait_exit(Millis{5000}) == 0);
  CHECK(wait_for_log_lines(bulwark, {"closing listeners; finishing in-flight requests"}));
  CHECK(bulwark.logs_text().find("closing inbound listeners") == std::string::npos);
}

TEST_CASE("SIGTERM after POST /drain and a passed drain_timeout stops the process at once") {
  // A request the upstream never answers keeps the drain from ending by itself.
  TestUpstream upstream([](UpstreamConn& conn) {
    if (conn.read_request()) conn.wait_peer_close(Millis{20000});
  });
  ProxyOptions options;
  options.drain_timeout = "300ms";
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(upstream.address(), options));
  ClientConn stuck(bulwark.port("inbound"));
  REQUIRE(stuck.send(make_request("GET", "/never-answered")));
  REQUIRE(eventually([&] { return upstream.requests() == 1; }));
  REQUIRE(status_of(http_request(bulwark.admin_port(), "POST", "/drain")) == 200);
  REQUIRE(wait_for_log_lines(bulwark, {"drain timeout: connections still open are left"}));
  const auto signalled = SteadyClock::now();
  REQUIRE(bulwark.signal(SIGTERM));
  CHECK(bulwark.wait_exit(Millis{5000}) == 0);
  CHECK(SteadyClock::now() - signalled < Millis{3000});
}

TEST_CASE("the kubelet's SIGTERM after the app's POST /shutdown lets the drain finish") {
  // The request in flight is answered 500 ms after it came; the first signal must not cut it.
  TestUpstream upstream([](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (request->target == "/slow" && !conn.pause(Millis{500})) return;
      if (!conn.write_response(200, "done\n")) return;
    }
  });
  BulwarkProcess bulwark;
  bulwark.start(pod_config(upstream.address(), "0s", "20s"));
  ClientConn app(bulwark.port("inbound"));
  REQUIRE(app.send(make_request("GET", "/slow")));
  REQUIRE(eventually([&] { return upstream.requests() == 1; }));
  REQUIRE(status_of(http_request(bulwark.admin_port(), "POST", "/shutdown")) == 200);
  REQUIRE(bulwark.signal(SIGTERM));
  REQUIRE(wait_for_log_lines(bulwark, {"signal during the shutdown: the drain goes on"}));
  auto response = app.read_response();
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(response->body == "done\n");
  CHECK(bulwark.wait_exit(Millis{5000}) == 0);
  CHECK(bulwark.logs_text().find("second signal") == std::string::npos);
}
