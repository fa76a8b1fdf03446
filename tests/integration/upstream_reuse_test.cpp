// Reusing a pooled upstream connection (issue 12, from the hostile review): a response to HEAD
// (or a 304) announces a body it must not have. An upstream that sends one anyway has bytes on
// their way that answer nothing; if they arrive just as the connection is reused, in the same loop
// turn, they would be read as the answer to the next client's request. An idle connection that
// receives bytes closes, so the window is one loop turn; the test makes it certain by stopping
// bulwark (SIGSTOP) while the next request and the stray bytes arrive, in that order, so that
// one epoll_wait returns the client's request first.

#include <dirent.h>
#include <doctest/doctest.h>
#include <signal.h>

#include <fstream>

#include "tests/integration/proxy_fixture.h"

namespace bulwark::test {
namespace {

// True when every thread of `pid` is stopped (kill() returns before the signal has taken effect).
bool all_threads_stopped(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* tasks = ::opendir(dir.c_str());
  if (tasks == nullptr) return false;
  bool stopped = true;
  size_t seen = 0;
  while (dirent* entry = ::readdir(tasks)) {
    if (entry->d_name[0] == '.') continue;
    std::ifstream stat(dir + "/" + entry->d_name + "/stat");
    std::string line;
    std::getline(stat, line);
    size_t paren = line.rfind(')');  // the state follows the command name, which may hold spaces
    if (paren == std::string::npos || paren + 2 >= line.size()) continue;
    ++seen;
    char state = line[paren + 2];
    if (state != 'T' && state != 't') stopped = false;
  }
  ::closedir(tasks);
  return stopped && seen > 0;
}

TEST_CASE("upstream reuse: bytes after a HEAD response never answer the next request on that connection") {
  Event head_answered;
  Event send_stray;
  Event stray_sent;
  TestUpstream::Handler handler = [&](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      if (request->method == "HEAD") {
        if (!conn.write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")) return;
        head_answered.set();
        if (!send_stray.wait(Millis{10000})) return;
        // A whole response: read as the next one, it would be believed.
        if (!conn.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")) return;
        stray_sent.set();
        continue;
      }
      if (!conn.write_response(200, request->method + " " + request->target + "\n")) return;
    }
  };
  ProxyOptions options;
  options.workers = 1;  // the client and the pooled connection on one loop
  ProxyFixture proxy(handler, options);
  auto idle_connections = [&] {
    return scrape_metric(proxy.bulwark, "bulwark_upstream_connections", {{"cluster", "app"}, {"state", "idle"}});
  };

  // B is connected and accepted before bulwark stops (its first request proves it).
  ClientConn b(proxy.port());
  REQUIRE(b.connected());
  REQUIRE(b.send(make_request("GET", "/warm")));
  auto warm = b.read_response();
  REQUIRE_MESSAGE(warm, b.last_error_text());
  CHECK(warm->body == "GET /warm\n");
  REQUIRE(eventually([&] { return idle_connections() == 1.0; }));

  // A's HEAD goes over the one pooled connection and is answered; the connection is idle again.
  ClientConn a(proxy.port());
  REQUIRE(a.connected());
  REQUIRE(a.send(make_request("HEAD", "/h")));
  auto head = a.read_response(true);
  REQUIRE_MESSAGE(head, a.last_error_text());
  CHECK(head->status == 200);
  REQUIRE(head_answered.wait());
  REQUIRE(eventually([&] { return idle_connections() == 1.0; }));

  // Stopped, bulwark reads nothing: B's request arrives, then the stray bytes.
  REQUIRE(proxy.bulwark.signal(SIGSTOP));
  REQUIRE(eventually([&] { return all_threads_stopped(proxy.bulwark.pid()); }));
  bool resumed = false;
  struct Resume {
    BulwarkProcess& process;
    bool& resumed;
    ~Resume() {
      if (!resumed) process.signal(SIGCONT);
    }
  } resume_on_exit{proxy.bulwark, resumed};
  REQUIRE(b.send(make_request("GET", "/next")));
  send_stray.set();
  REQUIRE(stray_sent.wait());
  resumed = proxy.bulwark.signal(SIGCONT);
  REQUIRE(resumed);

  auto next = b.read_response();
  REQUIRE_MESSAGE(next, b.last_error_text());
  CHECK(next->status == 200);
  CHECK(next->body == "GET /next\n");
}

}  // namespace
}  // namespace bulwark::test
