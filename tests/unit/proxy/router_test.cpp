#include "proxy/router.h"

#include <doctest/doctest.h>
#include <re2/re2.h>

#include <cctype>
#include <chrono>
#include <memory>
#include <string>

#include "config/loader.h"
#include "tests/unit/proxy/http_test_util.h"

namespace bulwark {
namespace {

using test::ParsedHead;

RequestTarget split(std::string_view target) {
  RequestTarget t;
  REQUIRE(split_target(target, &t));
  return t;
}

TEST_CASE("router: split_target splits origin-form at the query") {
  RequestTarget t = split("/a/b?c=d&e");
  CHECK(t.path == "/a/b");
  CHECK(t.query == "?c=d&e");
  CHECK(t.authority.empty());

  t = split("/");
  CHECK(t.path == "/");
  CHECK(t.query.empty());

  t = split("/p?");
  CHECK(t.path == "/p");
  CHECK(t.query == "?");

  t = split("/x?y?z");  // only the first "?" starts the query
  CHECK(t.path == "/x");
  CHECK(t.query == "?y?z");
}

TEST_CASE("router: split_target takes the authority from absolute-form") {
  RequestTarget t = split("http://Example.com:8080/a?b");
  CHECK(t.authority == "Example.com:8080");
  CHECK(t.path == "/a");
  CHECK(t.query == "?b");

  t = split("https://h/x");
  CHECK(t.authority == "h");
  CHECK(t.path == "/x");

  t = split("HTTP://h/");  // the scheme is case-insensitive
  CHECK(t.authority == "h");
  CHECK(t.path == "/");

  t = split("http://h");  // no path: "/"
  CHECK(t.authority == "h");
  CHECK(t.path == "/");
  CHECK(t.query.empty());

  t = split("http://h?q=1");  // no path but a query
  CHECK(t.authority == "h");
  CHECK(t.path == "/");
  CHECK(t.query == "?q=1");

  t = split("http://[::1]:80/v6");
  CHECK(t.authority == "[::1]:80");
  CHECK(t.path == "/v6");
}

TEST_CASE("router: split_target accepts asterisk-form as path \"*\"") {
  RequestTarget t = split("*");
  CHECK(t.path == "*");
  CHECK(t.query.empty());
  CHECK(t.authority.empty());
}

TEST_CASE("router: split_target rejects everything else") {
  RequestTarget t;
  for (const char* bad : {"", "a/b", "example.com:443", "ftp://h/x", "http:/h/x", "http://",
                          "https://", "**", "?q", "\\x"}) {
    INFO("target: " << bad);
    CHECK_FALSE(split_target(bad, &t));
  }
}

TEST_CASE("router: request_host lowercases and strips the port") {
  char buf[256];
  auto host_of = [&](std::string text, std::string_view target) {
    ParsedHead p(http::Parser::Type::kRequest, std::move(text));
    REQUIRE(p.have_head);
    return std::string(request_host(p.head, split(target), buf, sizeof buf));
  };
  CHECK(host_of("GET / HTTP/1.1\r\nHost: Example.COM\r\n\r\n", "/") == "example.com");
  CHECK(host_of("GET / HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n", "/") == "example.com");
  CHECK(host_of("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", "/") == "[::1]");
  CHECK(host_of("GET / HTTP/1.1\r\nHost: [2001:DB8::1]\r\n\r\n", "/") == "[2001:db8::1]");
  CHECK(host_of("GET / HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n", "/") == "10.0.0.1");
  CHECK(host_of("GET / HTTP/1.1\r\nHost:\r\n\r\n", "/").empty());
  // A name longer than the buffer is not truncated (a wildcard suffix must see all of it).
  std::string long_name = std::string(300, 'A') + ".Example.com";
  CHECK(host_of("GET / HTTP/1.1\r\nHost: " + long_name + ":80\r\n\r\n", "/") == long_name);
  // The absolute-form authority wins over the Host header.
  CHECK(host_of("GET http://Inner.Example:81/ HTTP/1.1\r\nHost: outer.example\r\n\r\n",
                "http://Inner.Example:81/") == "inner.example");
}

std::string to_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A listener with the given routes, all sending to cluster 0.
struct Routes {
  config::ListenerConfig listener;

  config::RouteMatch& add(std::string name) {
    config::RouteConfig r;
    r.name = std::move(name);
    listener.routes.push_back(std::move(r));
    return listener.routes.back().match;
  }
};

// Makes `m` match paths by `pattern` (RE2 syntax), compiled as the loader does.
void set_regex(config::RouteMatch& m, std::string pattern) {
  RE2::Options options;
  options.set_log_errors(false);
  auto regex = std::make_shared<const re2::RE2>(pattern, options);
  REQUIRE_MESSAGE(regex->ok(), regex->error());
  m.path.kind = config::PathMatch::Kind::kRegex;
  m.path.value = std::move(pattern);
  m.path.regex = std::move(regex);
}

int route_for(const Router& router, std::string request) {
  // Every request needs a Host to parse; the ones here that do not test hosts get "any.host".
  if (to_lower(request).find("\r\nhost:") == std::string::npos) {
    request.insert(request.find("\r\n") + 2, "Host: any.host\r\n");
  }
  ParsedHead p(http::Parser::Type::kRequest, std::move(request));
  REQUIRE(p.have_head);
  RequestTarget target = split(p.head.str(p.head.target));
  char buf[256];
  std::string_view host = request_host(p.head, target, buf, sizeof buf);
  return router.match(p.head, target, host);
}

TEST_CASE("router: path prefix, exact and regex") {
  Routes routes;
  config::RouteMatch& exact = routes.add("exact");
  exact.path.kind = config::PathMatch::Kind::kExact;
  exact.path.value = "/healthz";
  set_regex(routes.add("regex"), "^/reports/[0-9]+$");
  config::RouteMatch& prefix = routes.add("prefix");
  prefix.path.kind = config::PathMatch::Kind::kPrefix;
  prefix.path.value = "/api/";
  Router router(routes.listener);

  CHECK(route_for(router, "GET /healthz HTTP/1.1\r\n\r\n") == 0);
  CHECK(route_for(router, "GET /healthz?verbose=1 HTTP/1.1\r\n\r\n") == 0);  // query ignored
  CHECK(route_for(router, "GET /healthz/ HTTP/1.1\r\n\r\n") == -1);
  CHECK(route_for(router, "GET /healthzz HTTP/1.1\r\n\r\n") == -1);
  CHECK(route_for(router, "GET /reports/42 HTTP/1.1\r\n\r\n") == 1);
  CHECK(route_for(router, "GET /reports/42?x=1 HTTP/1.1\r\n\r\n") == 1);
  CHECK(route_for(router, "GET /reports/x HTTP/1.1\r\n\r\n") == -1);
  CHECK(route_for(router, "GET /api/users HTTP/1.1\r\n\r\n") == 2);
  CHECK(route_for(router, "GET /api/ HTTP/1.1\r\n\r\n") == 2);
  CHECK(route_for(router, "GET /api HTTP/1.1\r\n\r\n") == -1);
  CHECK(route_for(router, "GET /API/users HTTP/1.1\r\n\r\n") == -1);  // paths are case-sensitive
  CHECK(route_for(router, "GET http://h/api/x HTTP/1.1\r\n\r\n") == 2);
}

TEST_CASE("router: a regex is searched anywhere in the path, not in the query") {
  Routes routes;
  set_regex(routes.add("unanchored"), "/v[0-9]+/");
  Router router(routes.listener);
  CHECK(route_for(router, "GET /v1/x HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
  CHECK(route_for(router, "GET /api/v22/x HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
  CHECK(route_for(router, "GET /api/v/x HTTP/1.1\r\nHost: a\r\n\r\n") == -1);
  CHECK(route_for(router, "GET /api?next=/v1/ HTTP/1.1\r\nHost: a\r\n\r\n") == -1);
}

// Issue 12: std::regex recursed once per digit here and overflowed the worker's stack.
TEST_CASE("router: a 50,000-digit path matches ^/v[0-9]+/ without recursion") {
  Routes routes;
  set_regex(routes.add("versioned"), "^/v[0-9]+/");
  Router router(routes.listener);
  const std::string digits(50000, '7');
  CHECK(route_for(router, "GET /v" + digits + "/ HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
  CHECK(route_for(router, "GET /v" + digits + " HTTP/1.1\r\nHost: a\r\n\r\n") == -1);
  CHECK(route_for(router, "GET /x" + digits + "/ HTTP/1.1\r\nHost: a\r\n\r\n") == -1);
}

// A backtracking search tries every start position and, from each, backtracks over the rest:
// quadratic here (and exponential for the nested repetition). RE2 takes one linear pass.
TEST_CASE("router: unanchored regexes take linear time on a long path") {
  Routes routes;
  set_regex(routes.add("digits-then-z"), "[0-9]+z");
  set_regex(routes.add("nested"), "(a+)+b");
  Router router(routes.listener);
  const std::string digits(60000, '1');
  const std::string as(60000, 'a');
  auto start = std::chrono::steady_clock::now();
  CHECK(route_for(router, "GET /" + digits + " HTTP/1.1\r\nHost: a\r\n\r\n") == -1);
  CHECK(route_for(router, "GET /" + as + " HTTP/1.1\r\nHost: a\r\n\r\n") == -1);
  CHECK(route_for(router, "GET /" + as + "b HTTP/1.1\r\nHost: a\r\n\r\n") == 1);
  CHECK(route_for(router, "GET /" + digits + "z HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
  // Milliseconds for RE2 even under a sanitizer; minutes or more for a backtracking engine.
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
}

TEST_CASE("router: the first matching route wins") {
  Routes routes;
  routes.add("narrow").path.value = "/a/b";
  routes.add("wide").path.value = "/a";
  routes.add("all");  // default: prefix "/"
  Router router(routes.listener);
  CHECK(route_for(router, "GET /a/b/c HTTP/1.1\r\n\r\n") == 0);
  CHECK(route_for(router, "GET /a/c HTTP/1.1\r\n\r\n") == 1);
  CHECK(route_for(router, "GET /z HTTP/1.1\r\n\r\n") == 2);
}

TEST_CASE("router: an exact host matches that host only, with any port and case") {
  Routes routes;
  routes.add("api").host.value = "api.example.com";
  Router router(routes.listener);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n") == 0);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nHost: API.Example.com:8443\r\n\r\n") == 0);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nHost: x.api.example.com\r\n\r\n") == -1);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nHost: api.example.co\r\n\r\n") == -1);
  CHECK(route_for(router, "GET / HTTP/1.1\r\n\r\n") == -1);
}

TEST_CASE("router: a wildcard host matches subdomains but not the bare domain") {
  Routes routes;
  config::RouteMatch& m = routes.add("wild");
  m.host.value = ".example.com";
  m.host.wildcard = true;
  Router router(routes.listener);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n") == 0);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nHost: a.b.example.com:80\r\n\r\n") == 0);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n") == -1);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nHost: .example.com\r\n\r\n") == -1);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nHost: badexample.com\r\n\r\n") == -1);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nHost: a.example.com.evil\r\n\r\n") == -1);
  CHECK(route_for(router, "GET / HTTP/1.1\r\n\r\n") == -1);
}

TEST_CASE("router: header matches are exact on the value, case-insensitive on the name") {
  Routes routes;
  routes.add("canary").headers.push_back({"x-canary", "1"});
  Router router(routes.listener);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nX-Canary: 1\r\n\r\n") == 0);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nx-canary: 1\r\n\r\n") == 0);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nX-Canary: 10\r\n\r\n") == -1);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nX-Canary: \r\n\r\n") == -1);
  CHECK(route_for(router, "GET / HTTP/1.1\r\n\r\n") == -1);
}

TEST_CASE("router: every header listed must match") {
  Routes routes;
  config::RouteMatch& m = routes.add("both");
  m.headers.push_back({"x-a", "1"});
  m.headers.push_back({"x-b", "2"});
  Router router(routes.listener);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nX-B: 2\r\nX-A: 1\r\n\r\n") == 0);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n") == -1);
  CHECK(route_for(router, "GET / HTTP/1.1\r\nX-A: 1\r\nX-B: 3\r\n\r\n") == -1);
}

TEST_CASE("router: methods restrict a route") {
  Routes routes;
  routes.add("writes").methods = {"POST", "PUT"};
  Router router(routes.listener);
  CHECK(route_for(router, "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n") == 0);
  CHECK(route_for(router, "PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n") == 0);
  CHECK(route_for(router, "GET / HTTP/1.1\r\n\r\n") == -1);
  CHECK(route_for(router, "PATCH / HTTP/1.1\r\n\r\n") == -1);
}

constexpr std::string_view kRoutesYaml = R"(
listeners:
  - name: inbound
    address: 127.0.0.1:0
    routes:
      - name: api
        match:
          prefix: /api/
          host: API.example.com
          headers:
            X-Canary: "1"
          methods: [get, POST]
        cluster: app
      - name: health
        match:
          path: /healthz
          host: "*.Example.com"
        cluster: app
      - name: reports
        match:
          regex: "^/reports/[0-9]+$"
        cluster: app
      - name: fallback
        cluster: app
clusters:
  - name: app
    endpoints: [127.0.0.1:9000]
)";

TEST_CASE("router: routes loaded from YAML match as the example config describes") {
  config::LoadResult loaded = config::load_config_string(kRoutesYaml, "routes.yaml");
  for (const auto& e : loaded.errors) FAIL_CHECK(e.to_string());
  REQUIRE(loaded.ok());
  const config::ListenerConfig& listener = loaded.config->listeners.at(0);
  REQUIRE(listener.routes.size() == 4);
  CHECK(listener.routes[1].match.host.wildcard);
  CHECK(listener.routes[1].match.host.value == ".example.com");
  Router router(listener);

  CHECK(route_for(router, "GET /api/x HTTP/1.1\r\nHost: api.example.com\r\nX-Canary: 1\r\n\r\n") ==
        0);
  CHECK(route_for(router,
                  "POST /api/x HTTP/1.1\r\nHost: api.example.com\r\nX-Canary: 1\r\n"
                  "Content-Length: 0\r\n\r\n") == 0);
  // Each failed condition of route 0 falls through to the fallback.
  CHECK(route_for(router, "PUT /api/x HTTP/1.1\r\nHost: api.example.com\r\nX-Canary: 1\r\n\r\n") ==
        3);
  CHECK(route_for(router, "GET /api/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n") == 3);
  CHECK(route_for(router, "GET /api/x HTTP/1.1\r\nHost: www.example.com\r\nX-Canary: 1\r\n\r\n") ==
        3);
  CHECK(route_for(router, "GET /healthz HTTP/1.1\r\nHost: node1.example.com\r\n\r\n") == 1);
  CHECK(route_for(router, "GET /healthz HTTP/1.1\r\nHost: example.com\r\n\r\n") == 3);
  CHECK(route_for(router, "GET /reports/7 HTTP/1.1\r\nHost: h\r\n\r\n") == 2);
  CHECK(route_for(router, "GET /nothing HTTP/1.1\r\n\r\n") == 3);
}

}  // namespace
}  // namespace bulwark
