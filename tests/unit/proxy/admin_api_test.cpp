#include "proxy/admin_api.h"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace bulwark {
namespace {

// Stands in for the Server: state set by the test, actions counted.
class FakeTarget : public AdminTarget {
 public:
  config::Config config;
  bool is_draining = false;
  int drains = 0;
  std::string cluster_reason;
  std::string reload_error;           // refuse the reload with this; empty: accept it
  std::function<void()> reload_done;  // the `done` of the last accepted reload
  std::vector<ClusterStatus> statuses;

  const config::Config& current_config() const override { return config; }
  std::string metrics_text() const override { return "# metrics\n"; }
  bool draining() const override { return is_draining; }
  bool is_serving = true;
  bool serving() const override { return is_serving; }
  std::string stall;
  std::string worker_stall() const override { return stall; }
  std::string clusters_not_ready() const override { return cluster_reason; }
  bool reload(const char*, std::string* message, std::function<void()> done) override {
    if (!reload_error.empty()) {
      *message = reload_error;
      return false;
    }
    *message = "reloaded: generation 2";
    reload_done = std::move(done);
    return true;
  }
  void drain() override {
    ++drains;
    is_draining = true;
  }
  int shutdowns = 0;
  bool shutdown() override { return ++shutdowns == 1; }
  void cluster_status(std::function<void(std::vector<ClusterStatus>)> done) override {
    done(statuses);
  }
};

// A request from a client on loopback.
AdminRequest request(const std::string& method, const std::string& path) {
  AdminRequest r;
  r.method = method;
  r.path = path;
  r.peer = "127.0.0.1:40000";
  r.peer_loopback = true;
  return r;
}

// Sends one request; the answer, or nullopt while none was given.
std::optional<AdminResponse> ask(AdminApi& api, const std::string& method,
                                 const std::string& path) {
  std::optional<AdminResponse> answer;
  api.handle(request(method, path), [&](AdminResponse r) {
    CHECK_FALSE(answer.has_value());  // exactly once
    answer = std::move(r);
  });
  return answer;
}

TEST_CASE("the admin API takes one method per path (HEAD with GET) and says which") {
  FakeTarget target;
  AdminApi api(target);
  CHECK(ask(api, "GET", "/healthz")->body == "ok\n");
  CHECK(ask(api, "HEAD", "/healthz")->status == 200);
  for (const char* path : {"/healthz", "/ready", "/metrics", "/config", "/clusters"}) {
    auto r = ask(api, "POST", path);
    CHECK(r->status == 405);
    CHECK(r->body == "method not allowed: use GET\n");
  }
  for (const char* path : {"/healthcheck/fail", "/healthcheck/ok", "/drain", "/reload", "/shutdown"}) {
    auto r = ask(api, "GET", path);
    CHECK(r->status == 405);
    CHECK(r->body == "method not allowed: use POST\n");
  }
  CHECK(target.drains == 0);
  CHECK_FALSE(target.reload_done);  // GET /reload did not reload
  // A web page cannot make a browser change state: it always sends Origin (or Sec-Fetch-Site).
  AdminRequest from_page = request("POST", "/drain");
  from_page.from_browser = true;
  std::optional<AdminResponse> refused;
  api.handle(from_page, [&](AdminResponse r) { refused = std::move(r); });
  REQUIRE(refused);
  CHECK(refused->status == 403);
  CHECK(target.drains == 0);
  auto missing = ask(api, "GET", "/nope");
  CHECK(missing->status == 404);
  CHECK(missing->body.rfind("not found; try GET /healthz", 0) == 0);
  auto metrics = ask(api, "GET", "/metrics");
  CHECK(metrics->content_type == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(metrics->body == "# metrics\n");
  auto config = ask(api, "GET", "/config");
  CHECK(config->content_type == "application/json");
  CHECK(config->body.rfind("{\"source_file\":", 0) == 0);
}

TEST_CASE("/ready says why it is not ready: draining, then failed on purpose, then a cluster") {
  FakeTarget target;
  AdminApi api(target);
  CHECK(ask(api, "GET", "/ready")->body == "ready\n");

  target.cluster_reason = "cluster a: no routable endpoint";
  auto unready = ask(api, "GET", "/ready");
  CHECK(unready->status == 503);
  CHECK(unready->body == "cluster a: no routable endpoint\n");

  CHECK(ask(api, "POST", "/healthcheck/fail")->body == "/ready now fails on purpose\n");
  CHECK(api.not_ready_reason() ==
        "failed on purpose (POST /healthcheck/fail; POST /healthcheck/ok to undo)");
  target.is_draining = true;
  CHECK(api.not_ready_reason() == "draining");
  target.is_draining = false;

  CHECK(ask(api, "POST", "/healthcheck/ok")->body == "/ready follows the proxy's state again\n");
  CHECK(api.not_ready_reason() == "cluster a: no routable endpoint");
  target.cluster_reason.clear();
  CHECK(ask(api, "GET", "/ready")->status == 200);
}

TEST_CASE("POST /reload answers once the workers run the new config, or at once when refused") {
  FakeTarget target;
  AdminApi api(target);
  std::optional<AdminResponse> answer;
  api.handle(request("POST", "/reload"), [&](AdminResponse r) { answer = std::move(r); });
  CHECK_FALSE(answer.has_value());
  REQUIRE(target.reload_done);
  target.reload_done();
  REQUIRE(answer.has_value());
  CHECK(answer->status == 200);
  CHECK(answer->body == "reloaded: generation 2\n");

  target.reload_error = "test.yaml:3:1: bad";
  auto refused = ask(api, "POST", "/reload");
  CHECK(refused->status == 400);
  CHECK(refused->body == "test.yaml:3:1: bad\n");
}

TEST_CASE("POST /drain starts the drain once and keeps answering") {
  FakeTarget target;
  AdminApi api(target);
  CHECK(ask(api, "POST", "/drain")->body == "draining; the process keeps running until SIGTERM\n");
  CHECK(ask(api, "POST", "/drain")->body == "already draining\n");
  CHECK(target.drains == 2);  // the second is the Server's to ignore
  CHECK(ask(api, "GET", "/ready")->body == "draining\n");
}

TEST_CASE("/clusters writes each cluster and endpoint with its fields in a fixed order") {
  config::ClusterConfig checked;
  checked.name = "app\"1";
  checked.lb = config::LbPolicy::kLeastRequest;
  checked.pool.max_connections = 64;
  config::ClusterConfig plain;
  plain.name = "plain";

  ClusterStatus first;
  first.config = &checked;
  first.connections = 3;
  first.pending = 1;
  first.circuit = ClusterStatus::Circuit{"open", 30000};
  first.health.checks = true;
  first.health.outlier = true;
  first.health.routable = 1;
  EndpointHealthView pending;
  pending.name = "app.internal:80";
  pending.address = "10.0.0.1:80";
  pending.state = "pending";
  EndpointHealthView ejected;
  ejected.name = "app.internal:80";
  ejected.address = "10.0.0.2:80";
  ejected.weight = 2;
  ejected.priority = 1;
  ejected.routable = false;
  ejected.state = "unhealthy";
  ejected.has_result = true;
  ejected.last_result = CheckResult::kFailure;
  ejected.last_detail = "status 503 \"x\"\n\xff";
  ejected.last_check_unix_ms = 1700000000123;
  ejected.consecutive_failures = 4;
  ejected.ejected = true;
  ejected.ejected_until_unix_ms = 1700000030005;
  ejected.times_ejected = 1;
  ejected.consecutive_5xx = 5;
  ejected.ejections_total = 7;
  first.health.endpoints = {pending, ejected};
  first.pools = {{2, 3, 1}, {0, 0, 0}};

  ClusterStatus second;
  second.config = &plain;
  second.health.routable = 1;
  EndpointHealthView only;
  only.name = "127.0.0.1:9000";
  only.address = "127.0.0.1:9000";
  second.health.endpoints = {only};  // no pools: a reload added the cluster while gathering

  FakeTarget target;
  target.statuses = {first, second};
  AdminApi api(target);
  auto r = ask(api, "GET", "/clusters");
  CHECK(r->content_type == "application/json");
  CHECK(r->body ==
        R"({"clusters":[{"name":"app\"1","lb":"least_request","connections":3,)"
        R"("max_connections":64,"pending":1,"routable_endpoints":1,"panic":false,)"
        R"("circuit":{"state":"open","open_duration_ms":30000},"endpoints":[)"
        R"({"name":"app.internal:80","address":"10.0.0.1:80","priority":0,"weight":1,)"
        R"("routable":true,"health":{"state":"pending","last_result":null,"last_detail":null,)"
        R"("last_check":null,"consecutive_failures":0,"consecutive_successes":0},)"
        R"("outlier":{"ejected":false,"ejected_until":null,"times_ejected":0,)"
        R"("consecutive_5xx":0,"consecutive_gateway_failures":0,)"
        R"("consecutive_local_origin_failures":0,"ejections_total":0},)"
        R"("active_requests":2,"connections":3,"idle_connections":1},)"
        R"({"name":"app.internal:80","address":"10.0.0.2:80","priority":1,"weight":2,)"
        R"("routable":false,"health":{"state":"unhealthy","last_result":"failure",)"
        R"("last_detail":"status 503 \"x\"\u000a\ufffd","last_check":"2023-11-14T22:13:20.123Z",)"
        R"("consecutive_failures":4,"consecutive_successes":0},)"
        R"("outlier":{"ejected":true,"ejected_until":"2023-11-14T22:13:50.005Z",)"
        R"("times_ejected":1,"consecutive_5xx":5,"consecutive_gateway_failures":0,)"
        R"("consecutive_local_origin_failures":0,"ejections_total":7},)"
        R"("active_requests":0,"connections":0,"idle_connections":0}]},)"
        R"({"name":"plain","lb":"round_robin","connections":0,"max_connections":1024,)"
        R"("pending":0,"routable_endpoints":1,"panic":false,"endpoints":[)"
        R"({"name":"127.0.0.1:9000","address":"127.0.0.1:9000","priority":0,"weight":1,)"
        R"("routable":true,"active_requests":0,"connections":0,"idle_connections":0}]}]})"
        "\n");
}

// The answer to `r` from the admin (or, with `probe`, the probes) handler.
std::optional<AdminResponse> send(AdminApi& api, const AdminRequest& r, bool probe = false) {
  std::optional<AdminResponse> answer;
  auto respond = [&](AdminResponse resp) { answer = std::move(resp); };
  probe ? api.handle_probe(r, respond) : api.handle(r, respond);
  return answer;
}

TEST_CASE("a state change from beyond loopback needs the token, compared in full") {
  FakeTarget target;
  AdminApi api(target);
  AdminRequest remote = request("POST", "/drain");
  remote.peer = "10.1.2.3:5555";
  remote.peer_loopback = false;
  auto r = send(api, remote);
  CHECK(r->status == 403);
  CHECK(r->body ==
        "refused: only a client on loopback may POST /drain (admin.token_file would allow a "
        "bearer token from elsewhere)\n");

  const std::string file = "/tmp/bulwark-admin-api-test-token-" + std::to_string(::getpid());
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    REQUIRE(f != nullptr);
    std::fputs("  tok-3n\n", f);
    std::fclose(f);
  }
  target.config.admin.token_file = file;
  CHECK(send(api, remote)->body ==
        "refused: POST /drain from another host needs Authorization: Bearer <token>\n");
  for (const char* wrong : {"Bearer tok-3", "Bearer tok-3nn", "Bearer  tok-3N", "Token tok-3n",
                            "Bearer", "Bearer "}) {
    CAPTURE(wrong);
    remote.authorization = wrong;
    CHECK(send(api, remote)->status == 403);
  }
  CHECK(target.drains == 0);
  remote.authorization = "BEARER tok-3n";
  CHECK(send(api, remote)->status == 200);
  CHECK(target.drains == 1);
  // A browser is refused even with the token, even on loopback.
  remote.from_browser = true;
  CHECK(send(api, remote)->status == 403);
  AdminRequest local_page = request("POST", "/healthcheck/fail");
  local_page.from_browser = true;
  CHECK(send(api, local_page)->status == 403);
  // A token file that went missing refuses every token.
  std::remove(file.c_str());
  remote.from_browser = false;
  CHECK(send(api, remote)->body == "refused: the bearer token is not the admin token\n");

  auto counts = api.refusals();
  REQUIRE(counts.size() == 3);
  CHECK(std::string(counts[0].first) == "browser");
  CHECK(counts[0].second == 2);
  CHECK(std::string(counts[1].first) == "not_loopback");
  // Not loopback: no file, no Authorization, and three that are not "Bearer <something>".
  CHECK(counts[1].second == 5);
  CHECK(std::string(counts[2].first) == "bad_token");
  CHECK(counts[2].second == 4);  // three wrong tokens, and the right one once its file was gone
  // Reads stay open to any peer.
  AdminRequest read = request("GET", "/config");
  read.peer_loopback = false;
  CHECK(send(api, read)->status == 200);
}

TEST_CASE("the probes handler answers /healthz /ready /metrics only") {
  FakeTarget target;
  AdminApi api(target);
  CHECK(send(api, request("GET", "/healthz"), true)->body == "ok\n");
  CHECK(send(api, request("HEAD", "/ready"), true)->status == 200);
  CHECK(send(api, request("GET", "/metrics"), true)->body == "# metrics\n");
  for (const char* path : {"/config", "/clusters", "/drain", "/reload", "/", "/healthz/"}) {
    CAPTURE(path);
    for (const char* method : {"GET", "POST"}) {
      auto r = send(api, request(method, path), true);
      CHECK(r->status == 404);
    }
  }
  CHECK(send(api, request("POST", "/healthz"), true)->status == 405);
  CHECK(target.drains == 0);
}

TEST_CASE("/healthz fails on a stuck worker loop, /ready until the workers serve") {
  FakeTarget target;
  AdminApi api(target);
  target.stall = "worker 1 loop has not turned for 12000 ms (watchdog 10000 ms)";
  auto healthz = ask(api, "GET", "/healthz");
  CHECK(healthz->status == 503);
  CHECK(healthz->body == target.stall + "\n");
  CHECK(send(api, request("GET", "/healthz"), true)->status == 503);
  target.stall.clear();
  CHECK(ask(api, "GET", "/healthz")->status == 200);

  target.is_serving = false;
  auto ready = ask(api, "GET", "/ready");
  CHECK(ready->status == 503);
  CHECK(ready->body == "starting: the workers have not taken the config yet\n");
  target.is_serving = true;
  CHECK(ask(api, "GET", "/ready")->status == 200);
}

TEST_CASE("the admin token file is read only when it is a small regular file, never blocking") {
  const std::string dir = "/tmp/bulwark-admin-token-test-" + std::to_string(::getpid());
  REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
  std::string error;
  // A FIFO would block the main loop in open() until someone writes to it.
  const std::string fifo = dir + "/fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(read_admin_token(fifo, &error).empty());
  CHECK(error == fifo + " is not a regular file");
  // /dev/zero would be read without end.
  error.clear();
  CHECK(read_admin_token("/dev/zero", &error).empty());
  CHECK(error == "/dev/zero is not a regular file");
  // A file over the limit, and one just at it.
  const std::string big = dir + "/big";
  for (size_t size : {kMaxAdminTokenFile + 1, kMaxAdminTokenFile}) {
    std::FILE* f = std::fopen(big.c_str(), "w");
    REQUIRE(f != nullptr);
    const std::string text(size, 't');
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    error.clear();
    const std::string token = read_admin_token(big, &error);
    if (size > kMaxAdminTokenFile) {
      CHECK(token.empty());
      CHECK(error == big + " is larger than 4096 bytes");
    } else {
      CHECK(token == text);
      CHECK(error.empty());
    }
  }
  ::unlink(fifo.c_str());
  ::unlink(big.c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace bulwark
