// Routing: path prefix, exact path and regex; host, wildcard host, header and method matches;
// first match wins; prefix_rewrite; no_route; a regex over a 50 KB path (issue 12); --check on
// regexes RE2 rejects.

#include <doctest/doctest.h>

#include <string>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

// Three upstreams "a", "b" and "c" (each answers with header x-upstream: NAME) behind a bulwark
// whose listener "inbound" has the given routes (YAML list items, indented by 6 in the file).
struct RoutedProxy {
  explicit RoutedProxy(const std::string& routes) {
    std::string yaml =
        "workers: 1\n"
        "drain_delay: 0s\n"
        "admin: {address: 127.0.0.1:0}\n"
        "listeners:\n"
        "  - name: inbound\n"
        "    address: 127.0.0.1:0\n"
        "    routes:\n" +
        indent(routes, 6) +
        "clusters:\n"
        "  - name: a\n"
        "    endpoints: [" +
        a.address() +
        "]\n"
        "  - name: b\n"
        "    endpoints: [" +
        b.address() +
        "]\n"
        "  - name: c\n"
        "    endpoints: [" +
        c.address() + "]\n";
    bulwark.start(yaml);
  }

  // Which upstream answered: "a", "b", "c", or the x-bulwark-reason of a local reply, or the
  // failure.
  std::string route(std::string_view method, std::string_view target, HeaderList headers = {}) {
    std::string error;
    auto response =
        http_request(bulwark.port("inbound"), method, target, headers, {}, kDefaultTimeout, &error);
    if (!response) return "no response: " + error;
    if (response->has("x-upstream")) return response->get("x-upstream");
    return std::to_string(response->status) + " " + response->get("x-bulwark-reason");
  }

  TestUpstream a{{}, "a"};
  TestUpstream b{{}, "b"};
  TestUpstream c{{}, "c"};
  BulwarkProcess bulwark;
};

}  // namespace

TEST_CASE("routes match by exact path, path prefix and regex") {
  RoutedProxy proxy(
      "- name: exact\n"
      "  match: {path: /exact}\n"
      "  cluster: a\n"
      "- name: prefix\n"
      "  match: {prefix: /api/}\n"
      "  cluster: b\n"
      "- name: versioned\n"
      "  match: {regex: '^/v[0-9]+/'}\n"
      "  cluster: c\n");
  CHECK(proxy.route("GET", "/exact") == "a");
  CHECK(proxy.route("GET", "/exact?query=1") == "a");  // the query is not part of the path
  CHECK(proxy.route("GET", "/exact/more") == "404 no_route");
  CHECK(proxy.route("GET", "/api/users") == "b");
  CHECK(proxy.route("GET", "/api/") == "b");
  CHECK(proxy.route("GET", "/api") == "404 no_route");
  CHECK(proxy.route("GET", "/v2/items") == "c");
  CHECK(proxy.route("GET", "/v10/") == "c");
  CHECK(proxy.route("GET", "/vx/items") == "404 no_route");
  CHECK(proxy.route("GET", "/other") == "404 no_route");
}

TEST_CASE("the first matching route wins") {
  RoutedProxy proxy(
      "- name: broad\n"
      "  match: {prefix: /api/}\n"
      "  cluster: a\n"
      "- name: narrow\n"
      "  match: {prefix: /api/special/}\n"
      "  cluster: b\n"
      "- name: rest\n"
      "  match: {prefix: /}\n"
      "  cluster: c\n");
  CHECK(proxy.route("GET", "/api/special/x") == "a");
  CHECK(proxy.route("GET", "/api/x") == "a");
  CHECK(proxy.route("GET", "/elsewhere") == "c");
}

TEST_CASE("routes match by host, wildcard host, header and method") {
  RoutedProxy proxy(
      "- name: exact-host\n"
      "  match: {prefix: /, host: a.example.com}\n"
      "  cluster: a\n"
      "- name: wildcard-host\n"
      "  match: {prefix: /, host: '*.example.com'}\n"
      "  cluster: b\n"
      "- name: canary\n"
      "  match: {prefix: /, headers: {x-canary: \"1\"}}\n"
      "  cluster: c\n"
      "- name: writes\n"
      "  match: {prefix: /write, methods: [POST, PUT]}\n"
      "  cluster: a\n");
  CHECK(proxy.route("GET", "/", {{"Host", "a.example.com"}}) == "a");
  CHECK(proxy.route("GET", "/", {{"Host", "A.Example.COM:8080"}}) == "a");
  CHECK(proxy.route("GET", "/", {{"Host", "b.example.com"}}) == "b");
  CHECK(proxy.route("GET", "/", {{"Host", "x.y.example.com"}}) == "b");
  CHECK(proxy.route("GET", "/", {{"Host", "example.com"}}) == "404 no_route");
  CHECK(proxy.route("GET", "/", {{"Host", "notexample.com"}}) == "404 no_route");
  CHECK(proxy.route("GET", "/", {{"Host", "other.org"}, {"X-Canary", "1"}}) == "c");
  CHECK(proxy.route("GET", "/", {{"Host", "other.org"}, {"X-Canary", "2"}}) == "404 no_route");
  CHECK(proxy.route("POST", "/write", {{"Host", "other.org"}}) == "a");
  CHECK(proxy.route("PUT", "/write/x", {{"Host", "other.org"}}) == "a");
  CHECK(proxy.route("GET", "/write", {{"Host", "other.org"}}) == "404 no_route");
}

TEST_CASE("prefix_rewrite replaces the matched prefix and keeps the rest and the query") {
  RoutedProxy proxy(
      "- name: api\n"
      "  match: {prefix: /api/}\n"
      "  cluster: a\n"
      "  prefix_rewrite: /\n"
      "- name: old\n"
      "  match: {prefix: /old}\n"
      "  cluster: b\n"
      "  prefix_rewrite: /new\n");
  auto response = http_get(proxy.bulwark.port("inbound"), "/api/users/7?x=1");
  REQUIRE(response);
  CHECK(response->body == "GET /users/7?x=1\n");
  auto old = http_get(proxy.bulwark.port("inbound"), "/old/page");
  REQUIRE(old);
  CHECK(old->body == "GET /new/page\n");
}

TEST_CASE("a request no route matches gets 404 no_route and reaches no upstream") {
  RoutedProxy proxy(
      "- name: only\n"
      "  match: {path: /only}\n"
      "  cluster: a\n");
  auto response = http_get(proxy.bulwark.port("inbound"), "/nothing-here");
  REQUIRE(response);
  CHECK(response->status == 404);
  CHECK(response->get("x-bulwark-reason") == "no_route");
  CHECK_FALSE(response->body.empty());
  CHECK(proxy.a.connections() == 0);
}

// Issue 12: with std::regex this one request overflowed the worker's stack (libstdc++ recursed
// once per digit) and the segmentation fault closed every connection. RE2 matches in one pass.
TEST_CASE("a 50 KB path against the README's regex is routed and the process lives on") {
  RoutedProxy proxy(
      "- name: versioned\n"
      "  match: {regex: '^/v[0-9]+/'}\n"
      "  cluster: c\n");
  const std::string path = "/v" + std::string(50000, '1') + "/";
  ClientConn client(proxy.bulwark.port("inbound"));
  REQUIRE(client.connected());
  REQUIRE(client.send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n"));
  auto response = client.read_response();
  REQUIRE_MESSAGE(response, proxy.bulwark.logs_text());
  CHECK(response->status == 200);
  CHECK(response->get("x-upstream") == "c");
  CHECK(response->body == "GET " + path + "\n");

  CHECK(proxy.bulwark.process().running());
  CHECK(proxy.route("GET", "/v2/items") == "c");
  CHECK(proxy.route("GET", "/v2") == "404 no_route");
}

TEST_CASE("--check rejects a regex RE2 cannot compile and one over the program size cap") {
  // proxy_config puts the route's match on line 10, its value at column 24.
  ProxyOptions lookahead;
  lookahead.match = "{regex: '^/a(?=b)'}";
  auto invalid = run_check(proxy_config("127.0.0.1:9000", lookahead));
  std::string output = invalid.out + invalid.err;
  INFO(output);
  CHECK(invalid.exit_code == 1);
  CHECK(output.find(invalid.config_path + ":10:24: listeners[0].routes[0].match.regex: invalid "
                                          "regex '^/a(?=b)': invalid perl operator: (?=") !=
        std::string::npos);

  ProxyOptions oversized;
  oversized.match = "{regex: '^/[a-z]{997}'}";
  auto big = run_check(proxy_config("127.0.0.1:9000", oversized));
  output = big.out + big.err;
  INFO(output);
  CHECK(big.exit_code == 1);
  CHECK(output.find(big.config_path + ":10:24: listeners[0].routes[0].match.regex: regex "
                                      "'^/[a-z]{997}' compiles to a program of size 1001, more "
                                      "than the cap of 1000") != std::string::npos);
}

TEST_CASE("host_rewrite: a name replaces the client's Host, even an absolute-form authority") {
  RoutedProxy proxy(
      "- name: payments\n"
      "  match: {prefix: /pay}\n"
      "  cluster: a\n"
      "  host_rewrite: payments.internal:8443\n"
      "- name: rest\n"
      "  cluster: b\n");
  const uint16_t port = proxy.bulwark.port("inbound");
  REQUIRE(http_get(port, "/pay/1", {{"Host", "localhost:8080"}}));
  REQUIRE(http_get(port, "/other", {{"Host", "localhost:8080"}}));
  // An absolute-form target, and an HTTP/1.0 request.
  ClientConn client(port);
  REQUIRE(client.send("GET http://evil.example/pay/2 HTTP/1.1\r\nHost: evil.example\r\n\r\n"));
  auto absolute = client.read_response();
  REQUIRE(absolute);
  CHECK(absolute->get("x-upstream") == "a");
  ClientConn old(port);
  REQUIRE(old.send("GET /pay/3 HTTP/1.0\r\nHost: old.example\r\n\r\n"));
  auto http10 = old.read_response();
  REQUIRE(http10);
  INFO(describe(http10));
  CHECK(http10->get("x-upstream") == "a");

  auto paid = proxy.a.received();
  REQUIRE(paid.size() == 3);
  for (const Request& r : paid) {
    INFO(r.head);
    CHECK(r.get("host") == "payments.internal:8443");
    CHECK(r.head.find("evil.example") == std::string::npos);
    CHECK(r.head.find("old.example") == std::string::npos);
  }
  auto rest = proxy.b.received();
  REQUIRE(rest.size() == 1);
  CHECK(rest[0].get("host") == "localhost:8080");  // a route without host_rewrite keeps it
}

TEST_CASE("host_rewrite auto: each try carries the name of the endpoint it goes to") {
  // "named" always answers 503 and is configured by DNS name; "numbered" answers and is
  // configured by address. A request that tries "named" first is retried on "numbered", and
  // each sees its own name in Host.
  TestUpstream named(
      [](UpstreamConn& conn) {
        while (conn.read_request()) {
          if (!conn.write_response(503, "busy\n")) return;
        }
      },
      "named");
  TestUpstream numbered({}, "numbered");
  const std::string named_host = "localhost:" + std::to_string(named.port());
  BulwarkProcess bulwark;
  ProxyOptions options;
  options.workers = 1;
  options.route =
      "host_rewrite: auto\n"
      "retry: {attempts: 4, retry_on: [gateway-error, connect-failure], backoff: {base: 1ms, "
      "max: 2ms}}";
  bulwark.start(proxy_config(named_host + ", " + numbered.address(), options));
  // localhost resolves in the background (and may give ::1 too, where nothing listens).
  REQUIRE(eventually([&] {
    auto clusters = http_get(bulwark.admin_port(), "/clusters");
    return clusters && clusters->body.find("127.0.0.1:" + std::to_string(named.port())) !=
                           std::string::npos;
  }));
  constexpr int kRequests = 6;
  for (int i = 0; i < kRequests; ++i) {
    auto response = http_get(bulwark.port("inbound"), "/x", {{"Host", "app.local"}});
    REQUIRE(response);
    CHECK(response->status == 200);
  }
  auto at_named = named.received();
  auto at_numbered = numbered.received();
  CHECK(at_named.size() >= 1);  // round robin sent some first tries there
  CHECK(at_numbered.size() == kRequests);
  for (const Request& r : at_named) CHECK(r.get("host") == named_host);
  for (const Request& r : at_numbered) CHECK(r.get("host") == numbered.address());
}
