// Admin controls as an operator uses them: POST /healthcheck/fail and /healthcheck/ok take the
// proxy out of (and back into) load balancers through /ready while traffic keeps flowing;
// POST /drain drains the forwarding core without exiting; mutating paths take POST only, and an
// admin listener bound beyond loopback is warned about.

#include <doctest/doctest.h>
#include <signal.h>

#include <string>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

int status_of(const std::optional<Response>& r) { return r ? r->status : -1; }

}  // namespace

TEST_CASE("POST /healthcheck/fail fails /ready on purpose until POST /healthcheck/ok") {
  ProxyFixture proxy;
  const uint16_t admin = proxy.bulwark.admin_port();
  REQUIRE(status_of(http_get(admin, "/ready")) == 200);

  auto failed = http_request(admin, "POST", "/healthcheck/fail");
  REQUIRE(failed);
  CHECK(failed->status == 200);
  auto ready = http_get(admin, "/ready");
  REQUIRE(ready);
  CHECK(ready->status == 503);
  CHECK(ready->body.find("failed on purpose") != std::string::npos);
  CHECK(status_of(http_get(admin, "/healthz")) == 200);  // the process is fine
  // Traffic still flows: only load balancers are told to stop.
  auto response = http_get(proxy.port(), "/still-served");
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(wait_for_log_lines(proxy.bulwark, {"readiness failed on purpose"}));

  REQUIRE(status_of(http_request(admin, "POST", "/healthcheck/ok")) == 200);
  CHECK(status_of(http_get(admin, "/ready")) == 200);
  CHECK(wait_for_log_lines(proxy.bulwark, {"readiness restored"}));
}

TEST_CASE("admin paths that change state take POST only, and read-only ones GET only") {
  ProxyFixture proxy;
  const uint16_t admin = proxy.bulwark.admin_port();
  for (const char* path : {"/healthcheck/fail", "/healthcheck/ok", "/drain"}) {
    CAPTURE(path);
    auto r = http_get(admin, path);
    REQUIRE(r);
    CHECK(r->status == 405);
    CHECK(r->body.find("use POST") != std::string::npos);
  }
  auto r = http_request(admin, "POST", "/metrics");
  REQUIRE(r);
  CHECK(r->status == 405);
  CHECK(r->body.find("use GET") != std::string::npos);
  // None of the refused calls changed anything.
  CHECK(status_of(http_get(admin, "/ready")) == 200);
  CHECK(status_of(http_get(proxy.port(), "/")) == 200);
}

TEST_CASE("POST /drain drains the forwarding core and keeps the process up until SIGTERM") {
  Event release;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{10000})) {
      if (request->target == "/slow") release.wait(Millis{10000});
      if (!conn.write_response(200, "finished " + request->target + "\n")) return;
    }
  };
  ProxyFixture proxy(handler);
  const uint16_t admin = proxy.bulwark.admin_port();
  const uint16_t port = proxy.port();
  ClientConn client(port);
  REQUIRE(client.send(make_request("GET", "/slow")));
  REQUIRE(proxy.upstream.wait_for_requests(1));

  auto drain = http_request(admin, "POST", "/drain");
  REQUIRE(drain);
  CHECK(drain->status == 200);
  auto ready = http_get(admin, "/ready");
  REQUIRE(ready);
  CHECK(ready->status == 503);
  CHECK(ready->body == "draining\n");

  // The in-flight request finishes, told to close; then the core is drained and new
  // connections are refused, while the admin listener still answers.
  release.set();
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text() << "\n" << proxy.bulwark.logs_text());
  CHECK(response->status == 200);
  CHECK(iequals(response->get("connection"), "close"));
  REQUIRE(wait_for_log_lines(proxy.bulwark, {"drained; still running"}));
  std::string error;
  CHECK_FALSE(http_get(port, "/after-drain", {}, Millis{1000}, &error));
  CHECK(status_of(http_get(admin, "/healthz")) == 200);
  CHECK_FALSE(proxy.bulwark.wait_exit(Millis{0}));
  CHECK(status_of(http_request(admin, "POST", "/drain")) == 200);  // again: nothing changes

  REQUIRE(proxy.bulwark.signal(SIGTERM));
  CHECK(proxy.bulwark.wait_exit(Millis{5000}) == 0);
}

TEST_CASE("an admin listener bound beyond loopback is warned about") {
  TestUpstream upstream;
  BulwarkProcess bulwark;
  std::string yaml = proxy_config(upstream.address());
  const std::string loopback = "admin: {address: 127.0.0.1:0}";
  REQUIRE(yaml.find(loopback) != std::string::npos);
  yaml.replace(yaml.find(loopback), loopback.size(), "admin: {address: 0.0.0.0:0}");
  bulwark.start(yaml);
  CHECK(wait_for_log_lines(bulwark, {"the admin listener is reachable from other hosts"}));
  CHECK(status_of(http_get(bulwark.admin_port(), "/healthz")) == 200);
}

TEST_CASE("an admin listener on loopback gets no such warning") {
  ProxyFixture proxy;
  REQUIRE(status_of(http_get(proxy.bulwark.admin_port(), "/healthz")) == 200);
  CHECK(proxy.bulwark.logs_text().find("reachable from other hosts") == std::string::npos);
}
