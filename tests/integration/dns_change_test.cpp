// A DNS change under a request in flight (issue 12, item 8): when re-resolution removes the
// endpoint a request is using, the endpoint's pool is retired but must live until that request
// is done with it (its outcome is recorded against the endpoint and its access log line names
// it). Before, the pool was freed at once and the request read freed memory; the ASan run of this
// suite catches such a read.
//
// bulwark resolves names with getaddrinfo, so the test gives it an /etc/hosts of its own: it runs
// in a mount namespace of its own (unshare -m) in which a file the test rewrites is bind-mounted
// over /etc/hosts. That needs root (or CAP_SYS_ADMIN); without it the test says so and skips.

#include <doctest/doctest.h>

#include <cstdlib>

#include "tests/integration/proxy_fixture.h"

namespace bulwark::test {
namespace {

bool can_unshare_mounts() { return std::system("unshare -m true >/dev/null 2>&1") == 0; }

TEST_CASE(
    "dns change: a request on an endpoint that DNS just removed finishes, and its log names it") {
  if (!can_unshare_mounts()) {
    MESSAGE(
        "skipped: needs `unshare -m` (root or CAP_SYS_ADMIN) to give bulwark its own /etc/hosts");
    return;
  }
  Gate gate;
  Event request_arrived;
  TestUpstream upstream([&](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      if (request->target == "/held") {
        request_arrived.set();
        if (!gate.pass(Millis{20000})) return;
      }
      if (!conn.write_response(200, request->method + " " + request->target + "\n")) return;
    }
  });
  Gate::Opener open_gate_on_exit(gate);
  const std::string port = upstream.address().substr(upstream.address().rfind(':') + 1);

  TempDir dir;
  const std::string hosts = dir.file("hosts");
  write_file(hosts, "127.0.0.1 localhost\n127.0.0.1 app.bulwark.test\n");
  // bulwark with `hosts` as its /etc/hosts; exec keeps the pid, so signals reach bulwark.
  const std::string wrapper = dir.file("bulwark-with-hosts");
  write_file(wrapper,
             "#!/bin/sh\n"
             "exec unshare -m sh -c 'mount --bind \"$0\" /etc/hosts && exec \"$@\"' '" +
                 hosts + "' '" + BULWARK_BINARY + "' \"$@\"\n");
  REQUIRE(std::system(("chmod +x '" + wrapper + "'").c_str()) == 0);
  const std::string log_path = dir.file("access.log");

  BulwarkProcess bulwark(wrapper);
  bulwark.start(
      "workers: 1\n"
      "drain_delay: 0s\n"
      "admin: {address: 127.0.0.1:0}\n"
      "access_log: {path: " +
      log_path +
      ", format: json}\n"
      "listeners:\n"
      "  - name: inbound\n"
      "    address: 127.0.0.1:0\n"
      "    routes:\n"
      "      - {name: api, match: {prefix: /}, cluster: app, retry: {attempts: 1}}\n"
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [app.bulwark.test:" +
      port +
      "]\n"
      "    dns_refresh: 100ms\n");
  const uint16_t proxy_port = bulwark.port("inbound");
  auto clusters_text = [&] {
    auto clusters = http_get(bulwark.admin_port(), "/clusters");
    return clusters && clusters->status == 200 ? clusters->body : std::string();
  };
  REQUIRE(
      eventually([&] { return clusters_text().find("127.0.0.1:" + port) != std::string::npos; }));

  // A request held by the upstream on 127.0.0.1 while DNS moves the name to 127.0.0.2.
  ClientConn client(proxy_port);
  REQUIRE(client.connected());
  REQUIRE(client.send(make_request("GET", "/held")));
  REQUIRE(request_arrived.wait());
  write_file(hosts, "127.0.0.1 localhost\n127.0.0.2 app.bulwark.test\n");
  REQUIRE_MESSAGE(eventually([&] {
                    std::string text = clusters_text();
                    return text.find("127.0.0.2:" + port) != std::string::npos &&
                           text.find("127.0.0.1:" + port) == std::string::npos;
                  }),
                  clusters_text());

  // The endpoint is gone from the cluster; the request on it still ends normally.
  gate.open();
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text());
  CHECK(response->status == 200);
  CHECK(response->body == "GET /held\n");

  // Its log line names the endpoint it used, and the process lives on.
  REQUIRE(eventually([&] { return read_file(log_path).find("/held") != std::string::npos; }));
  std::string log = read_file(log_path);
  CHECK(log.find("\"upstream\":\"127.0.0.1:" + port + "\"") != std::string::npos);
  auto health = http_get(bulwark.admin_port(), "/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  // New requests go to the new address, where nothing listens.
  auto after = http_get(proxy_port, "/after");
  REQUIRE(after);
  CHECK(after->status == 503);
  CHECK(after->get("x-bulwark-reason") == "upstream_connect_failure");
}

}  // namespace
}  // namespace bulwark::test
