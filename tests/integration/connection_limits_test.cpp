// Connection limits (issue 12, "slow and many clients"): max_connections per listener and for the
// whole process. At a limit bulwark stops accepting, so further connections wait in the kernel's
// backlog (they connect, but get no answer) and are served as soon as a connection closes; out of
// file descriptors, the worker neither crashes nor spins.

#include <doctest/doctest.h>
#include <sys/resource.h>

#include <fstream>
#include <sstream>

#include "tests/integration/proxy_fixture.h"

namespace bulwark::test {
namespace {

TestUpstream::Handler answer_all() {
  return [](UpstreamConn& conn) {
    while (auto request = conn.read_request()) {
      if (!conn.write_response(200, "ok")) return;
    }
  };
}

// A keep-alive client connection that has had one request answered, so bulwark holds it.
std::unique_ptr<ClientConn> held_connection(uint16_t port) {
  auto c = std::make_unique<ClientConn>(port);
  REQUIRE(c->connected());
  REQUIRE(c->send(make_request("GET", "/hold")));
  auto r = c->read_response();
  REQUIRE(r);
  REQUIRE(r->status == 200);
  return c;
}

void check_limit_holds_then_releases(const std::string& listener_keys, const std::string& top_keys,
                                     const std::string& limit_label) {
  ProxyOptions options;
  options.listener = listener_keys;
  options.top = top_keys;
  options.workers = 2;
  ProxyFixture proxy(answer_all(), options);
  auto first = held_connection(proxy.port());
  auto second = held_connection(proxy.port());

  // The third connects (the kernel's backlog takes it) but is not served while two are open.
  ClientConn third(proxy.port());
  REQUIRE(third.connected());
  REQUIRE(third.send(make_request("GET", "/waiting")));
  CHECK_FALSE(third.read_response(false, Millis{400}));
  CHECK(third.last_error() == ReadError::kTimeout);
  CHECK(eventually([&] {
    auto n = scrape_metric(proxy.bulwark, "bulwark_downstream_connection_limit_reached_total",
                           {{"listener", "inbound"}, {"limit", limit_label}});
    return n && *n >= 1;
  }));
  auto open =
      scrape_metric(proxy.bulwark, "bulwark_downstream_connections", {{"listener", "inbound"}});
  REQUIRE(open);
  CHECK(*open == 2);

  // One closes: the waiting connection is accepted and answered.
  first->close();
  auto response = third.read_response(false, Millis{5000});
  REQUIRE(response);
  CHECK(response->status == 200);
  // And the limit still holds: with two open again, a fourth waits.
  ClientConn fourth(proxy.port());
  REQUIRE(fourth.send(make_request("GET", "/fourth")));
  CHECK_FALSE(fourth.read_response(false, Millis{300}));
  second->close();
  auto fourth_response = fourth.read_response(false, Millis{5000});
  REQUIRE(fourth_response);
  CHECK(fourth_response->status == 200);
}

TEST_CASE("connection limits: a listener's max_connections holds new connections in the backlog") {
  check_limit_holds_then_releases("max_connections: 2", "", "listener");
}

TEST_CASE("connection limits: the process-wide max_connections holds them too") {
  check_limit_holds_then_releases("", "max_connections: 2", "process");
}

TEST_CASE("connection limits: the limits in force are shown in /metrics and /config") {
  ProxyOptions options;
  options.listener = "max_connections: 7";
  options.top = "max_connections: 9";
  ProxyFixture proxy(answer_all(), options);
  CHECK(scrape_metric(proxy.bulwark, "bulwark_downstream_connection_limit",
                      {{"listener", "inbound"}}) == 7);
  CHECK(scrape_metric(proxy.bulwark, "bulwark_downstream_connection_limit", {{"listener", ""}}) ==
        9);
  auto config = http_get(proxy.bulwark.admin_port(), "/config");
  REQUIRE(config);
  CHECK(config->body.find("\"max_connections\":9") != std::string::npos);
  CHECK(config->body.find("\"max_connections\":7") != std::string::npos);
}

// CPU time (user + system) of a process, in clock ticks.
long cpu_ticks(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream rest(text.substr(paren + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

TEST_CASE("connection limits: out of file descriptors, accept neither crashes nor spins") {
  ProxyOptions options;
  options.top = "max_connections: 100000";  // the limit is not what stops it here
  options.workers = 1;
  ProxyFixture proxy(answer_all(), options);
  // A proxy that has served, and closed the connection: under UBSan, the first virtual call of
  // each kind (reading, closing, freeing a client connection) checks the object's type, and the
  // check needs a pipe (sanitizer_common's IsAccessibleMemoryRange), which fails with no
  // descriptor left and is then reported as a bad type. Serving one connection to its end first
  // makes those checks now, as any running proxy has.
  REQUIRE(http_get(proxy.port(), "/before", {}, Millis{2000}));
  REQUIRE(eventually([&] {
    return scrape_metric(proxy.bulwark, "bulwark_downstream_connections",
                         {{"listener", "inbound"}}) == 0.0;
  }));
  // Give the running bulwark only a few descriptors more than it uses now.
  rlimit tight{64, 64};
  if (prlimit(proxy.bulwark.pid(), RLIMIT_NOFILE, &tight, nullptr) != 0) {
    MESSAGE(
        "skipped: cannot lower bulwark's RLIMIT_NOFILE here (prlimit needs CAP_SYS_RESOURCE or the "
        "same user)");
    return;
  }
  std::vector<std::unique_ptr<ClientConn>> flood;
  for (int i = 0; i < 120; ++i) {
    auto c = std::make_unique<ClientConn>();
    if (c->connect(proxy.port(), Millis{1000})) flood.push_back(std::move(c));
  }
  // Out of descriptors, the connections the worker cannot keep are closed at once (libuv's
  // reserve-descriptor trick) rather than left to make accept() fail in a loop.
  size_t refused = 0;
  for (auto& c : flood) {
    if (c->is_closed(Millis{20})) ++refused;
  }
  CHECK(refused > 0);
  // While the flood is held, the worker does not burn a core retrying accept.
  long before = cpu_ticks(proxy.bulwark.pid());
  std::this_thread::sleep_for(Millis{1000});  // measuring CPU over a wall-clock interval
  long used = cpu_ticks(proxy.bulwark.pid()) - before;
  CHECK(used >= 0);
  CHECK(used < 30);  // ticks are 10 ms: under 0.3 s of CPU in 1 s
  // Once the flood is gone, bulwark serves again.
  flood.clear();
  CHECK(eventually([&] {
    auto r = http_get(proxy.port(), "/after", {}, Millis{1000});
    return r && r->status == 200;
  }));
  CHECK(proxy.bulwark.process().running());
}

}  // namespace
}  // namespace bulwark::test
