// The admin listener (/healthz, /ready, /metrics, /config, /clusters), graceful drain on SIGTERM,
// and `bulwark --check`.

#include <doctest/doctest.h>
#include <signal.h>

#include <string>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

// A light check that a body is one JSON object: braces and brackets balance outside strings.
bool looks_like_json_object(std::string_view body) {
  while (!body.empty() && std::isspace(static_cast<unsigned char>(body.back()))) {
    body.remove_suffix(1);
  }
  if (body.empty() || body.front() != '{' || body.back() != '}') return false;
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      ++depth;
    else if (c == '}' || c == ']')
      --depth;
    if (depth < 0) return false;
  }
  return depth == 0 && !in_string;
}

}  // namespace

TEST_CASE("admin /healthz and /ready answer 200 while serving") {
  ProxyFixture proxy;
  auto healthz = http_get(proxy.bulwark.admin_port(), "/healthz");
  REQUIRE(healthz);
  CHECK(healthz->status == 200);
  auto ready = http_get(proxy.bulwark.admin_port(), "/ready");
  REQUIRE(ready);
  CHECK(ready->status == 200);
}

TEST_CASE("admin /metrics counts requests by listener, route and status code") {
  ProxyFixture proxy;
  for (int i = 0; i < 3; ++i) REQUIRE(http_get(proxy.port(), "/counted"));

  std::string text;
  bool counted = eventually([&] {
    auto metrics = http_get(proxy.bulwark.admin_port(), "/metrics");
    text = metrics ? metrics->body : "";
    auto value = metric_value(text, "bulwark_requests_total",
                              {{"listener", "inbound"}, {"route", "api"}, {"code", "200"}});
    return value && *value == 3;
  });
  INFO(text);
  CHECK(counted);
  auto metrics = http_get(proxy.bulwark.admin_port(), "/metrics");
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  CHECK(metrics->get("content-type").find("text/plain") == 0);
  CHECK(text.find("# TYPE bulwark_requests_total counter") != std::string::npos);
}

TEST_CASE("admin /metrics counts local replies by reason") {
  RefusingPort refused;
  BulwarkProcess bulwark;
  bulwark.start(proxy_config(refused.address()));
  auto response = http_get(bulwark.port("inbound"), "/");
  REQUIRE(response);
  REQUIRE(response->status == 503);
  std::string text;
  bool counted = eventually([&] {
    auto metrics = http_get(bulwark.admin_port(), "/metrics");
    text = metrics ? metrics->body : "";
    auto value =
        metric_value(text, "bulwark_local_replies_total", {{"reason", "upstream_connect_failure"}});
    return value && *value >= 1;
  });
  INFO(text);
  CHECK(counted);
}

TEST_CASE("admin /config returns the effective config as JSON") {
  ProxyFixture proxy;
  auto config = http_get(proxy.bulwark.admin_port(), "/config");
  REQUIRE(config);
  CHECK(config->status == 200);
  CHECK(config->get("content-type").find("application/json") == 0);
  INFO(config->body);
  CHECK(looks_like_json_object(config->body));
  CHECK(config->body.find("\"inbound\"") != std::string::npos);
  CHECK(config->body.find("\"api\"") != std::string::npos);
  CHECK(config->body.find("\"app\"") != std::string::npos);
  CHECK(config->body.find(proxy.upstream.address()) != std::string::npos);
}

TEST_CASE("admin /clusters lists each cluster with its endpoints as JSON") {
  ProxyFixture proxy;
  REQUIRE(http_get(proxy.port(), "/warm"));
  auto clusters = http_get(proxy.bulwark.admin_port(), "/clusters");
  REQUIRE(clusters);
  CHECK(clusters->status == 200);
  CHECK(clusters->get("content-type").find("application/json") == 0);
  INFO(clusters->body);
  CHECK(looks_like_json_object(clusters->body));
  CHECK(clusters->body.find("\"app\"") != std::string::npos);
  CHECK(clusters->body.find(proxy.upstream.address()) != std::string::npos);
}

TEST_CASE("SIGTERM drains: /ready turns 503, the in-flight request completes, exit status 0") {
  Event release;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{10000})) {
      if (request->target == "/slow") release.wait(Millis{10000});
      if (!conn.write_response(200, "finished " + request->target + "\n")) return;
    }
  };
  ProxyFixture proxy(handler);
  uint16_t admin = proxy.bulwark.admin_port();
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/slow")));
  REQUIRE(proxy.upstream.wait_for_requests(1));

  REQUIRE(proxy.bulwark.signal(SIGTERM));
  bool not_ready = eventually([&] {
    auto ready = http_get(admin, "/ready", {}, Millis{1000});
    return ready && ready->status == 503;
  });
  CHECK(not_ready);
  CHECK_FALSE(proxy.bulwark.wait_exit(Millis{0}));  // still waiting for the in-flight request

  release.set();
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, client.last_error_text() << "\n" << proxy.bulwark.logs_text());
  CHECK(response->status == 200);
  CHECK(response->body == "finished /slow\n");
  CHECK(iequals(response->get("connection"), "close"));
  CHECK(client.is_closed());
  CHECK(proxy.bulwark.wait_exit(Millis{5000}) == 0);
}

TEST_CASE("SIGTERM with a request that never finishes exits 0 after drain_timeout") {
  TestUpstream::Handler handler = [](UpstreamConn& conn) {
    if (conn.read_request()) conn.wait_peer_close(Millis{10000});
  };
  ProxyOptions options;
  options.drain_timeout = "500ms";
  ProxyFixture proxy(handler, options);
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/forever")));
  REQUIRE(proxy.upstream.wait_for_requests(1));
  REQUIRE(proxy.bulwark.signal(SIGTERM));
  CHECK(proxy.bulwark.wait_exit(Millis{4000}) == 0);
  CHECK(client.is_closed(Millis{1000}));
}

TEST_CASE("--check accepts a valid config with exit status 0") {
  auto result = run_check(proxy_config("127.0.0.1:9000"));
  INFO(result.out << result.err);
  CHECK(result.exit_code == 0);
}

TEST_CASE("--check rejects an invalid config with exit status 1 and FILE:LINE:COL") {
  // Line 5 holds a key bulwark does not know.
  std::string yaml =
      "workers: 1\n"
      "drain_delay: 0s\n"
      "admin: {address: 127.0.0.1:0}\n"
      "listeners:\n"
      "  - nme: inbound\n"
      "    address: 127.0.0.1:0\n"
      "    routes: []\n"
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [127.0.0.1:9000]\n";
  auto result = run_check(yaml);
  std::string output = result.out + result.err;
  INFO(output);
  CHECK(result.exit_code == 1);
  CHECK(output.find(result.config_path + ":5:5") != std::string::npos);

  auto bad_value = run_check(proxy_config("127.0.0.1:9000") + "bogus_top_level_key: true\n");
  CHECK(bad_value.exit_code == 1);
  CHECK((bad_value.out + bad_value.err).find(bad_value.config_path + ":") != std::string::npos);
}
