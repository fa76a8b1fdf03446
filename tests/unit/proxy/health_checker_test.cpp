// The HealthChecker on a real libuv loop against real sockets on 127.0.0.1: what an HTTP check
// makes of the answers it gets, and how a new endpoint set (a DNS change) keeps the health and
// ejection state of the endpoints that stayed.

#include "proxy/health_checker.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>

#include "proxy/net.h"
#include "tests/unit/proxy/test_net.h"

namespace bulwark {
namespace {

using namespace std::chrono_literals;

// A loop with a 5 ms tick, so run_until() never blocks for long on an idle loop.
struct TestLoop {
  TestLoop() {
    uv_loop_init(&loop);
    uv_timer_init(&loop, &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 5, 5);
  }
  ~TestLoop() {
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_walk(
        &loop,
        [](uv_handle_t* h, void*) {
          if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  // Turns the loop until `done` or 5 s have passed; returns done().
  bool run_until(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done() && std::chrono::steady_clock::now() < deadline) uv_run(&loop, UV_RUN_ONCE);
    return done();
  }
  uv_loop_t loop;
  uv_timer_t tick;
};

// A one-shot HTTP server on the test loop: answers every connection with `response` once the
// request head is in, then closes. Keeps the last request head it read.
class CannedServer {
 public:
  CannedServer(uv_loop_t* loop, std::string response)
      : loop_(loop), response_(std::move(response)) {
    uv_tcp_init(loop, &server_);
    server_.data = this;
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", 0, &addr);
    REQUIRE(uv_tcp_bind(&server_, reinterpret_cast<const sockaddr*>(&addr), 0) == 0);
    REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(&server_), 16, &CannedServer::on_connection) ==
            0);
    int len = sizeof addr;
    uv_tcp_getsockname(&server_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  uint16_t port() const { return port_; }
  const std::string& last_request() const { return last_request_; }

 private:
  struct Conn {
    CannedServer* server;
    uv_tcp_t tcp;
    uv_write_t write;
    std::string in;
    char buf[1024];
  };
  static void on_connection(uv_stream_t* s, int status) {
    if (status != 0) return;
    auto* self = static_cast<CannedServer*>(s->data);
    auto* c = new Conn{self, {}, {}, {}, {}};
    uv_tcp_init(self->loop_, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(s, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
      close(c);
      return;
    }
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* b) {
          auto* conn = static_cast<Conn*>(h->data);
          *b = uv_buf_init(conn->buf, sizeof conn->buf);
        },
        [](uv_stream_t* st, ssize_t n, const uv_buf_t* b) {
          auto* conn = static_cast<Conn*>(st->data);
          if (n < 0) return close(conn);
          conn->in.append(b->base, static_cast<size_t>(n));
          if (conn->in.find("\r\n\r\n") == std::string::npos) return;
          uv_read_stop(st);
          conn->server->last_request_ = conn->in;
          uv_buf_t out = uv_buf_init(conn->server->response_.data(),
                                     static_cast<unsigned>(conn->server->response_.size()));
          conn->write.data = conn;
          uv_write(&conn->write, st, &out, 1,
                   [](uv_write_t* w, int) { close(static_cast<Conn*>(w->data)); });
        });
  }
  static void close(Conn* c) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
             [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
  }

  uv_loop_t* loop_;
  std::string response_;
  uv_tcp_t server_;
  uint16_t port_ = 0;
  std::string last_request_;
};

using testing::refused_port;

Endpoint endpoint(uint16_t port) {
  Endpoint e;
  e.name = "127.0.0.1:" + std::to_string(port);
  config::SocketAddress a;
  a.host = "127.0.0.1";
  a.port = port;
  a.is_ip = true;
  to_sockaddr(a, &e.sockaddr);
  e.address = format_sockaddr(e.sockaddr);
  return e;
}

std::shared_ptr<EndpointSet> set_of(std::initializer_list<uint16_t> ports) {
  auto set = std::make_shared<EndpointSet>();
  for (uint16_t p : ports) set->endpoints.push_back(endpoint(p));
  return set;
}

config::ClusterConfig cluster_config() {
  config::ClusterConfig c;
  c.name = "app";
  config::HealthCheckConfig hc;
  hc.interval = 10s;  // one round is all these tests look at
  hc.timeout = 2s;
  c.health_check = hc;
  c.outlier_detection = config::OutlierDetectionConfig{};
  return c;
}

struct Fixture {
  explicit Fixture(config::ClusterConfig c = cluster_config())
      : config(std::move(c)),
        cluster(nullptr, config, 0, clock),
        health(&loop.loop, cluster, clock) {}
  ~Fixture() {
    health.stop();
    uv_run(&loop.loop, UV_RUN_NOWAIT);
  }
  const EndpointHealthView& endpoint(size_t i) {
    view = health.view();
    REQUIRE(i < view.endpoints.size());
    return view.endpoints[i];
  }
  config::ClusterConfig config;
  filters::MonotonicClock clock;
  TestLoop loop;
  ClusterState cluster;
  HealthChecker health;
  ClusterHealthView view;
};

TEST_CASE("health checker: an HTTP check sends GET path with Host and reads the status") {
  Fixture f;
  f.config.health_check->path = "/healthz?deep=1";
  CannedServer ok(&f.loop.loop, "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
  CannedServer failing(&f.loop.loop, "HTTP/1.1 503 Service Unavailable\r\n\r\n");
  CannedServer garbage(&f.loop.loop, "SSH-2.0-OpenSSH_9.2\r\n\r\n");
  const uint64_t version = f.cluster.health_version.load();
  auto set = f.health.adopt(set_of({ok.port(), failing.port(), garbage.port()}));
  CHECK_FALSE(f.health.first_round_done());
  CHECK(f.endpoint(0).state == std::string("pending"));
  CHECK(f.endpoint(0).routable);
  REQUIRE(f.loop.run_until([&] { return f.health.first_round_done(); }));

  CHECK(f.endpoint(0).state == std::string("healthy"));
  CHECK(f.endpoint(0).last_detail == "status 204");
  CHECK(f.endpoint(0).checks[static_cast<size_t>(CheckResult::kSuccess)] == 1);
  CHECK(set->endpoints[0].status->check_passing.load());
  CHECK(ok.last_request().rfind("GET /healthz?deep=1 HTTP/1.1\r\n", 0) == 0);
  CHECK(ok.last_request().find("\r\nHost: 127.0.0.1:" + std::to_string(ok.port()) + "\r\n") !=
        std::string::npos);
  CHECK(ok.last_request().find("\r\nUser-Agent: bulwark-health-check/") != std::string::npos);

  CHECK(f.endpoint(1).state == std::string("unhealthy"));
  CHECK(f.endpoint(1).last_detail == "status 503");
  CHECK_FALSE(f.endpoint(1).routable);
  CHECK_FALSE(set->endpoints[1].status->check_passing.load());

  CHECK(f.endpoint(2).state == std::string("unhealthy"));
  CHECK(f.endpoint(2).last_detail == "malformed response");
  CHECK(f.endpoint(2).checks[static_cast<size_t>(CheckResult::kFailure)] == 1);

  CHECK(f.health.view().routable == 1);
  // Two endpoints changed state from pending to unhealthy, one to healthy: each told the workers.
  CHECK(f.cluster.health_version.load() == version + 3);
}

TEST_CASE("health checker: responses are read with the proxy's codec and its limits") {
  Fixture f;
  // A head longer than a check reads (8 KiB), a response that is not HTTP/1, and a status line
  // the proxy's codec accepts with headers folded over two reads' worth of bytes.
  CannedServer huge(&f.loop.loop,
                    "HTTP/1.1 200 OK\r\nX-Pad: " + std::string(9000, 'a') + "\r\n\r\n");
  CannedServer bare_lf(&f.loop.loop, "HTTP/1.1 200 OK\nContent-Length: 0\n\n");
  CannedServer long_ok(&f.loop.loop,
                       "HTTP/1.1 200 OK\r\nX-Pad: " + std::string(6000, 'b') + "\r\n\r\n");
  f.health.adopt(set_of({huge.port(), bare_lf.port(), long_ok.port()}));
  REQUIRE(f.loop.run_until([&] { return f.health.first_round_done(); }));
  CHECK(f.endpoint(0).state == std::string("unhealthy"));
  CHECK(f.endpoint(0).last_detail == "malformed response");
  CHECK(f.endpoint(1).state == std::string("unhealthy"));  // bare LF: refused, as for tries
  CHECK(f.endpoint(1).last_detail == "malformed response");
  CHECK(f.endpoint(2).state == std::string("healthy"));
  CHECK(f.endpoint(2).last_detail == "status 200");
}

TEST_CASE("health checker: a check bulwark cannot make for want of descriptors blames nobody") {
#if defined(BULWARK_SLAB_CHECKS)
  // The sanitizer build (ASan and UBSan): UBSan's vptr check needs a pipe of its own to look at
  // memory, and without a descriptor it reports valid objects.
  MESSAGE("skipped in the sanitizer build: UBSan cannot check vptrs without descriptors");
  return;
#endif
  Fixture f;
  f.config.health_check->interval = 50ms;
  CannedServer ok(&f.loop.loop, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  auto count = [&](CheckResult r) { return f.endpoint(0).checks[static_cast<size_t>(r)]; };
  // No descriptor can be opened: the probe's socket fails with EMFILE.
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  rlimit none = saved;
  none.rlim_cur = 0;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &none) == 0);
  f.health.adopt(set_of({ok.port()}));
  const bool skipped = f.loop.run_until([&] { return count(CheckResult::kSkipped) > 0; });
  setrlimit(RLIMIT_NOFILE, &saved);
  REQUIRE(skipped);
  CHECK(f.endpoint(0).state == std::string("pending"));
  CHECK(f.endpoint(0).routable);
  CHECK(count(CheckResult::kFailure) == 0);
  // With descriptors again, the next check is made and passes.
  REQUIRE(f.loop.run_until([&] { return f.health.first_round_done(); }));
  CHECK(f.endpoint(0).state == std::string("healthy"));
  CHECK(count(CheckResult::kFailure) == 0);
}

TEST_CASE("health checker: a host override goes in the Host header") {
  Fixture f;
  f.config.health_check->host = "app.local";
  CannedServer ok(&f.loop.loop, "HTTP/1.0 200 OK\r\n\r\n");
  f.health.adopt(set_of({ok.port()}));
  REQUIRE(f.loop.run_until([&] { return f.health.first_round_done(); }));
  CHECK(f.endpoint(0).state == std::string("healthy"));
  CHECK(ok.last_request().find("\r\nHost: app.local\r\n") != std::string::npos);
}

TEST_CASE("health checker: a new endpoint set keeps the state of the endpoints that stayed") {
  Fixture f;
  const uint16_t stays = refused_port(), leaves = refused_port();
  auto first = f.health.adopt(set_of({leaves, stays}));
  REQUIRE(first->outlier != nullptr);
  REQUIRE(f.loop.run_until([&] { return f.health.first_round_done(); }));
  REQUIRE(f.endpoint(1).state == std::string("unhealthy"));
  REQUIRE(f.endpoint(1).last_detail == "connect failed: connection refused");
  // Real traffic ejects the endpoint that will stay (3 gateway failures by default).
  for (int i = 0; i < 3; ++i)
    first->outlier->record(1, filters::OutlierDetector::Outcome::kGatewayFailure);
  REQUIRE(f.endpoint(1).ejected);

  // DNS now answers: a new endpoint, and the one that stayed (at another index).
  CannedServer fresh(&f.loop.loop, "HTTP/1.1 200 OK\r\n\r\n");
  auto second = f.health.adopt(set_of({fresh.port(), stays}));
  CHECK(second->endpoints[1].status == first->endpoints[1].status);
  CHECK(f.endpoint(1).state == std::string("unhealthy"));
  CHECK(f.endpoint(1).consecutive_failures == 1);
  CHECK(f.endpoint(1).ejected);
  CHECK(f.endpoint(1).times_ejected == 1);
  CHECK(second->outlier->ejected(1));
  CHECK_FALSE(second->routable(1));
  CHECK(f.endpoint(0).state == std::string("pending"));
  CHECK(second->routable(0));
  // The new endpoint is checked at once; the one that left is not checked any more.
  REQUIRE(f.loop.run_until([&] { return f.endpoint(0).state == std::string("healthy"); }));
  CHECK(f.health.view().endpoints.size() == 2);
  CHECK(f.health.view().routable == 1);
}

TEST_CASE("health checker: an ejection ends at its deadline and the workers are told") {
  config::ClusterConfig c = cluster_config();
  c.health_check.reset();
  c.outlier_detection->base_ejection_time = 100ms;
  Fixture f(c);
  CHECK(f.health.first_round_done());  // no checks: nothing to wait for
  auto set = f.health.adopt(set_of({refused_port(), refused_port()}));
  for (int i = 0; i < 3; ++i)
    set->outlier->record(0, filters::OutlierDetector::Outcome::kGatewayFailure);
  REQUIRE(set->outlier->ejected(0));
  f.health.on_ejection();
  const uint64_t version = f.cluster.health_version.load();
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(f.loop.run_until([&] { return f.cluster.health_version.load() != version; }));
  CHECK(std::chrono::steady_clock::now() - start >= 90ms);
  CHECK_FALSE(set->outlier->ejected(0));
  CHECK(set->outlier->ejected_until(0) == 0);
  CHECK(f.health.view().routable == 2);
}

TEST_CASE("health checker: a passing check ends a local-origin ejection at once") {
  config::ClusterConfig c = cluster_config();
  c.health_check->interval = 50ms;
  c.outlier_detection->base_ejection_time = 30s;
  Fixture f(c);
  CannedServer ok(&f.loop.loop, "HTTP/1.1 200 OK\r\n\r\n");
  auto set = f.health.adopt(set_of({ok.port(), refused_port()}));
  REQUIRE(f.loop.run_until([&] { return f.health.first_round_done(); }));
  // Real traffic could not reach it (a crash, say): 3 local-origin failures eject it for 30 s.
  for (int i = 0; i < 3; ++i)
    set->outlier->record(0, filters::OutlierDetector::Outcome::kLocalOriginFailure);
  REQUIRE(set->outlier->ejected(0));
  const uint64_t version = f.cluster.health_version.load();
  const auto start = std::chrono::steady_clock::now();
  // Its next check passes: it is back, long before its 30 s, and the workers are told.
  REQUIRE(f.loop.run_until([&] { return !set->outlier->ejected(0); }));
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  CHECK(f.cluster.health_version.load() != version);
  CHECK_FALSE(f.endpoint(0).ejected);
  CHECK(f.endpoint(0).times_ejected == 1);
  CHECK(set->routable(0));
}

TEST_CASE("health checker: a passing check does not end an ejection for 5xx") {
  config::ClusterConfig c = cluster_config();
  c.health_check->interval = 20ms;
  Fixture f(c);
  CannedServer ok(&f.loop.loop, "HTTP/1.1 200 OK\r\n\r\n");
  auto set = f.health.adopt(set_of({ok.port(), refused_port()}));
  REQUIRE(f.loop.run_until([&] { return f.health.first_round_done(); }));
  for (int i = 0; i < 5; ++i)
    set->outlier->record(0, filters::OutlierDetector::Outcome::kServerError);
  REQUIRE(set->outlier->ejected(0));
  const size_t checks = f.endpoint(0).checks[static_cast<size_t>(CheckResult::kSuccess)];
  REQUIRE(f.loop.run_until([&] {
    return f.endpoint(0).checks[static_cast<size_t>(CheckResult::kSuccess)] >= checks + 3;
  }));
  CHECK(set->outlier->ejected(0));
}

TEST_CASE("health checker: a cluster without outlier_detection gets the implicit detection") {
  config::ClusterConfig c = cluster_config();
  c.outlier_detection.reset();
  c.health_check.reset();
  Fixture f(c);
  auto set = f.health.adopt(set_of({refused_port(), refused_port()}));
  REQUIRE(set->outlier != nullptr);
  CHECK(set->outlier->config().implicit);
  CHECK(f.health.view().outlier);
  using O = filters::OutlierDetector::Outcome;
  for (int i = 0; i < 10; ++i) set->outlier->record(0, O::kGatewayFailure);
  CHECK_FALSE(set->outlier->ejected(0));
  for (int i = 0; i < 3; ++i) set->outlier->record(0, O::kLocalOriginFailure);
  CHECK(set->outlier->ejected(0));
  CHECK(f.endpoint(0).ejected);
}

TEST_CASE("health checker: after a reload the ejections go on under the new settings") {
  config::ClusterConfig c = cluster_config();
  c.health_check.reset();
  c.outlier_detection.reset();
  Fixture f(c);
  const uint16_t port = refused_port();
  auto first = f.health.adopt(set_of({port, refused_port()}));
  for (int i = 0; i < 3; ++i)
    first->outlier->record(0, filters::OutlierDetector::Outcome::kLocalOriginFailure);
  REQUIRE(first->outlier->ejected(0));

  // The reload adds a section: the endpoint stays ejected, and the detector follows it.
  config::ClusterConfig changed = cluster_config();
  changed.health_check.reset();
  changed.outlier_detection->consecutive_local_origin_failure = 7;
  ClusterState cluster(nullptr, changed, 0, f.clock);
  HealthChecker health(&f.loop.loop, cluster, f.clock);
  health.inherit(f.health);
  auto second = health.adopt(set_of({port}));
  CHECK(second->outlier->ejected(0));
  CHECK(&second->outlier->config() == &*changed.outlier_detection);
  CHECK_FALSE(second->outlier->config().implicit);
  health.stop();
}

}  // namespace
}  // namespace bulwark
