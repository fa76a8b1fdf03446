// Admin controls as an operator uses them: POST /healthcheck/fail and /healthcheck/ok take the
// proxy out of (and back into) load balancers through /ready while traffic keeps flowing;
// POST /drain drains the forwarding core without exiting; mutating paths take POST only, and
// only from loopback or with the admin token; an admin listener bound beyond loopback is warned
// about; the probes listener answers the kubelet and nothing else; /healthz tells a stuck loop.

#include <doctest/doctest.h>
#include <signal.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include "tests/integration/proxy_fixture.h"
#include "tests/integration/thread_stopper.h"

using namespace bulwark::test;

namespace {

int status_of(const std::optional<Response>& r) { return r ? r->status : -1; }

// `yaml` with the admin listener line replaced by `admin`.
std::string with_admin(std::string yaml, const std::string& admin) {
  const std::string loopback = "admin: {address: 127.0.0.1:0}\n";
  REQUIRE(yaml.find(loopback) != std::string::npos);
  yaml.replace(yaml.find(loopback), loopback.size(), admin);
  return yaml;
}

// A request to port `port` of this host, from its non-loopback address `from`.
std::optional<Response> request_from(const std::string& from, uint16_t port,
                                     std::string_view method, std::string_view path,
                                     const HeaderList& headers = {}) {
  sockaddr_in source{};
  source.sin_family = AF_INET;
  REQUIRE(::inet_pton(AF_INET, from.c_str(), &source.sin_addr) == 1);
  sockaddr_in destination = source;
  destination.sin_port = htons(port);
  ClientConn client;
  if (!client.connect(destination, &source)) return std::nullopt;
  if (!client.send(make_request(method, path, headers))) return std::nullopt;
  return client.read_response(method == "HEAD");
}

double refused(BulwarkProcess& bulwark, const char* reason) {
  auto metrics = http_get(bulwark.admin_port(), "/metrics");
  REQUIRE(metrics);
  return metric_value(metrics->body, "bulwark_admin_requests_refused_total", {{"reason", reason}})
      .value_or(-1);
}

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

TEST_CASE("the probes listener answers GET /healthz /ready /metrics and nothing else") {
  ProxyOptions options;
  options.top = "probes: {address: 127.0.0.1:0}";
  ProxyFixture proxy({}, options);
  const uint16_t probes = proxy.bulwark.port("probes");
  REQUIRE(probes != proxy.bulwark.admin_port());

  auto healthz = http_get(probes, "/healthz");
  REQUIRE(healthz);
  CHECK(healthz->status == 200);
  CHECK(healthz->body == "ok\n");
  auto ready = http_get(probes, "/ready");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  CHECK(ready->body == "ready\n");
  auto metrics = http_get(probes, "/metrics");
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  CHECK(metrics->body.find("# TYPE bulwark_requests_total counter") != std::string::npos);
  auto head = http_request(probes, "HEAD", "/ready");
  REQUIRE(head);
  CHECK(head->status == 200);

  // What reads config or changes state is on the admin listener only, whoever asks.
  for (const char* path : {"/config", "/clusters", "/reload", "/drain", "/healthcheck/fail"}) {
    CAPTURE(path);
    for (const char* method : {"GET", "POST"}) {
      CAPTURE(method);
      auto r = http_request(probes, method, path);
      REQUIRE(r);
      CHECK(r->status == 404);
      CHECK(r->body.find("the probes listener answers GET /healthz /ready /metrics") !=
            std::string::npos);
    }
  }
  auto post = http_request(probes, "POST", "/ready");
  REQUIRE(post);
  CHECK(post->status == 405);
  // Nothing above changed anything.
  CHECK(status_of(http_get(probes, "/ready")) == 200);
  CHECK_FALSE(proxy.bulwark.logs_text().find("draining") != std::string::npos);
}

TEST_CASE("admin POSTs from another host need the token of admin.token_file") {
  const std::optional<std::string> address = non_loopback_ipv4();
  if (!address) {
    MESSAGE("skipped: this host has no IPv4 address besides loopback to connect from");
    return;
  }
  TempDir dir;
  const std::string token_file = dir.file("admin-token");
  write_file(token_file, "s3cret-token-0123456789\n");  // a Secret's file may end in a newline
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(with_admin(proxy_config(upstream.address()),
                           "admin: {address: 0.0.0.0:0, token_file: " + token_file + "}\n"));
  const uint16_t admin = bulwark.admin_port();

  // Reads are open to every peer the listener is reachable from.
  CHECK(status_of(request_from(*address, admin, "GET", "/healthz")) == 200);
  CHECK(status_of(request_from(*address, admin, "GET", "/config")) == 200);

  // No token, or a wrong one (a prefix, another scheme): 403, counted, logged with the peer.
  auto none = request_from(*address, admin, "POST", "/healthcheck/fail");
  REQUIRE(none);
  CHECK(none->status == 403);
  CHECK(none->body.find("needs Authorization: Bearer") != std::string::npos);
  for (const char* wrong :
       {"Bearer s3cret-token-012345678", "Bearer s3cret-token-0123456789x", "Bearer x"}) {
    CAPTURE(wrong);
    auto r = request_from(*address, admin, "POST", "/healthcheck/fail", {{"Authorization", wrong}});
    REQUIRE(r);
    CHECK(r->status == 403);
    CHECK(r->body.find("not the admin token") != std::string::npos);
  }
  auto basic = request_from(*address, admin, "POST", "/drain",
                            {{"Authorization", "Basic czNjcmV0LXRva2VuLTAxMjM0NTY3ODk="}});
  REQUIRE(basic);
  CHECK(basic->status == 403);
  CHECK(status_of(http_get(admin, "/ready")) == 200);  // nothing was failed or drained
  CHECK(refused(bulwark, "not_loopback") == 2);
  CHECK(refused(bulwark, "bad_token") == 3);
  CHECK(wait_for_log_lines(bulwark, {"admin request refused", *address, "bad_token"}));

  // The token (any case of the scheme) acts from anywhere.
  auto with_token =
      request_from(*address, admin, "POST", "/healthcheck/fail",
                   {{"Authorization", "bearer s3cret-token-0123456789"}});
  REQUIRE(with_token);
  CHECK(with_token->status == 200);
  CHECK(status_of(http_get(admin, "/ready")) == 503);
  // A loopback peer needs none.
  CHECK(status_of(http_request(admin, "POST", "/healthcheck/ok")) == 200);
  CHECK(status_of(http_get(admin, "/ready")) == 200);

  // A rotated token applies at the next request: the old one is refused.
  write_file(token_file, "rotated-token-abcdefghij");
  CHECK(status_of(request_from(*address, admin, "POST", "/healthcheck/fail",
                               {{"Authorization", "Bearer s3cret-token-0123456789"}})) == 403);
  CHECK(status_of(request_from(*address, admin, "POST", "/healthcheck/fail",
                               {{"Authorization", "Bearer rotated-token-abcdefghij"}})) == 200);
}

TEST_CASE("without admin.token_file only loopback peers may change state") {
  const std::optional<std::string> address = non_loopback_ipv4();
  if (!address) {
    MESSAGE("skipped: this host has no IPv4 address besides loopback to connect from");
    return;
  }
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(with_admin(proxy_config(upstream.address()), "admin: {address: 0.0.0.0:0}\n"));
  const uint16_t admin = bulwark.admin_port();
  for (const char* path : {"/drain", "/reload", "/healthcheck/fail"}) {
    CAPTURE(path);
    auto r = request_from(*address, admin, "POST", path, {{"Authorization", "Bearer anything"}});
    REQUIRE(r);
    CHECK(r->status == 403);
    CHECK(r->body.find("only a client on loopback") != std::string::npos);
  }
  CHECK(refused(bulwark, "not_loopback") == 3);
  CHECK(status_of(http_get(admin, "/ready")) == 200);
  // The same request from loopback is served.
  CHECK(status_of(http_request(admin, "POST", "/healthcheck/fail")) == 200);
  CHECK(status_of(http_get(admin, "/ready")) == 503);
}

TEST_CASE("an admin.token_file that cannot be read stops the start, saying why") {
  TempDir dir;
  TestUpstream upstream;
  for (const bool exists : {false, true}) {
    CAPTURE(exists);
    const std::string token_file = dir.file(exists ? "empty-token" : "no-such-token");
    if (exists) write_file(token_file, " \n");
    Subprocess process;
    const std::string config = dir.file("bulwark.yaml");
    write_file(config, with_admin(proxy_config(upstream.address()),
                                  "admin: {address: 127.0.0.1:0, token_file: " + token_file +
                                      "}\n"));
    process.start({BULWARK_BINARY, "--config", config});
    CHECK(process.wait_exit().value_or(-1) == 1);
    REQUIRE(process.wait_streams_closed());
    const std::string err = process.text(Subprocess::Stream::kStderr);
    CHECK(err.find("admin.token_file holds no usable token") != std::string::npos);
    CHECK(err.find(token_file) != std::string::npos);
  }
}

TEST_CASE("/healthz turns 503 while a worker loop is stuck for `watchdog`, and 200 once it turns") {
  ProxyOptions options;
  options.workers = 1;  // one loop thread besides the main one (no access log, no DNS)
  options.top = "watchdog: 300ms\nprobes: {address: 127.0.0.1:0}";
  ProxyFixture proxy({}, options);
  const uint16_t probes = proxy.bulwark.port("probes");
  REQUIRE(status_of(http_get(probes, "/healthz")) == 200);
  REQUIRE(wait_for_log_lines(proxy.bulwark, {"worker loop watchdog on", "\"tick_ms\":75"}));

  std::optional<Response> healthz;
  {
    ThreadStopper stopper;
    const std::string stopped = stopper.stop_all_but_main(proxy.bulwark.pid());
    REQUIRE_MESSAGE(stopped.empty(), stopped);
    const auto deadline = std::chrono::steady_clock::now() + Millis{5000};
    do {
      healthz = http_get(probes, "/healthz");
    } while (healthz && healthz->status == 200 && std::chrono::steady_clock::now() < deadline);
    REQUIRE(healthz);
    CHECK(healthz->status == 503);
    CHECK(healthz->body.find("worker 0 loop has not turned for ") == 0);
    CHECK(healthz->body.find("(watchdog 300 ms)") != std::string::npos);
    // The admin listener tells the same.
    CHECK(status_of(http_get(proxy.bulwark.admin_port(), "/healthz")) == 503);
  }  // the worker runs again
  const auto deadline = std::chrono::steady_clock::now() + Millis{5000};
  do {
    healthz = http_get(probes, "/healthz");
  } while (healthz && healthz->status != 200 && std::chrono::steady_clock::now() < deadline);
  REQUIRE(healthz);
  CHECK(healthz->status == 200);
  auto response = http_get(proxy.port(), "/after-the-stall");
  REQUIRE(response);
  CHECK(response->status == 200);
}

TEST_CASE("bulwark wait-ready exits 0 once /ready is 200, 1 with the reason when time runs out") {
  ProxyFixture proxy;
  const std::string admin = "127.0.0.1:" + std::to_string(proxy.bulwark.admin_port());
  {
    Subprocess ready;
    ready.start({BULWARK_BINARY, "wait-ready", "--admin", admin, "--timeout", "5s"});
    CHECK(ready.wait_exit().value_or(-1) == 0);
    CHECK(ready.wait_for_line(Subprocess::Stream::kStdout, "ready: " + admin));
  }
  {
    Subprocess once;  // --timeout 0s still asks once
    once.start({BULWARK_BINARY, "wait-ready", "--admin", admin, "--timeout", "0s"});
    CHECK(once.wait_exit().value_or(-1) == 0);
  }
  REQUIRE(status_of(http_request(proxy.bulwark.admin_port(), "POST", "/healthcheck/fail")) == 200);
  {
    Subprocess late;
    late.start({BULWARK_BINARY, "wait-ready", "--admin", admin, "--timeout", "300ms"});
    CHECK(late.wait_exit().value_or(-1) == 1);
    REQUIRE(late.wait_streams_closed());
    CHECK(late.text(Subprocess::Stream::kStderr).find("not ready after 300 ms: 503 failed on "
                                                      "purpose") != std::string::npos);
  }
  // Waiting while it is not ready, and ready meanwhile: it exits 0 at the next poll.
  Subprocess waiting;
  waiting.start({BULWARK_BINARY, "wait-ready", "--admin", admin, "--timeout", "20s"});
  CHECK_FALSE(waiting.wait_exit(Millis{300}).has_value());
  REQUIRE(status_of(http_request(proxy.bulwark.admin_port(), "POST", "/healthcheck/ok")) == 200);
  CHECK(waiting.wait_exit(Millis{5000}).value_or(-1) == 0);
}

TEST_CASE("bulwark wait-ready: nothing listening, and usage errors") {
  RefusingPort refused;
  Subprocess nobody;
  nobody.start({BULWARK_BINARY, "wait-ready", "--admin", refused.address(), "--timeout", "250ms"});
  CHECK(nobody.wait_exit().value_or(-1) == 1);
  REQUIRE(nobody.wait_streams_closed());
  CHECK(nobody.text(Subprocess::Stream::kStderr).find("cannot connect: Connection refused") !=
        std::string::npos);
  const std::vector<std::vector<std::string>> usage_errors = {
      {"--admin", "localhost:9901"}, {"--timeout", "soon"}, {"--what"}};
  for (const auto& args : usage_errors) {
    CAPTURE(args.front());
    std::vector<std::string> argv = {BULWARK_BINARY, "wait-ready"};
    argv.insert(argv.end(), args.begin(), args.end());
    Subprocess wrong;
    wrong.start(argv);
    CHECK(wrong.wait_exit().value_or(-1) == 2);
  }
}

TEST_CASE("--check reads admin.token_file as the admin listener will") {
  TempDir dir;
  TestUpstream upstream;
  const std::string token_file = dir.file("admin-token");
  const std::string yaml = with_admin(
      proxy_config(upstream.address()),
      "admin: {address: 127.0.0.1:0, token_file: " + token_file + "}\n");
  CheckResult missing = run_check(yaml);
  CHECK(missing.exit_code == 1);
  INFO(missing.out);
  CHECK(missing.out.find(":4:43: admin.token_file: cannot read " + token_file) !=
        std::string::npos);
  write_file(token_file, "\n");
  CheckResult empty = run_check(yaml);
  CHECK(empty.exit_code == 1);
  CHECK(empty.out.find("admin.token_file: " + token_file + " holds no token") !=
        std::string::npos);
  write_file(token_file, "t0ken\n");
  CheckResult ok = run_check(yaml);
  INFO(ok.out << ok.err);
  CHECK(ok.exit_code == 0);
}
