// loadtest/slowclients: the real binary against scripted servers on 127.0.0.1, its stdout parsed
// the way loadtest/run parses it.

#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "tests/support/harness.h"


using namespace bulwark::test;

namespace {

using Stream = Subprocess::Stream;

struct AttackRun {
  int exit_code = -1;
  std::string out;
  std::string err;
  std::map<std::string, std::string> totals;  // the key=value lines, one key a line
  std::vector<std::string> reports;           // the t_ms= lines

  uint64_t count(const std::string& key) const {
    auto it = totals.find(key);
    CHECK_MESSAGE(it != totals.end(), "no " << key << "= in slowclients' stdout:\n" << out);
    return it == totals.end() ? 0 : std::strtoull(it->second.c_str(), nullptr, 10);
  }
};

AttackRun collect(Subprocess& process, Millis timeout) {
  AttackRun run;
  run.exit_code = process.wait_exit(timeout).value_or(-1);
  process.wait_streams_closed(Millis{2000});
  run.out = process.text(Stream::kStdout);
  run.err = process.text(Stream::kStderr);
  for (const std::string& line : process.lines(Stream::kStdout)) {
    if (line.starts_with("t_ms=")) {
      run.reports.push_back(line);
    } else if (size_t eq = line.find('='); eq != std::string::npos) {
      run.totals[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  return run;
}

AttackRun run_attack(const std::vector<std::string>& args, Millis timeout = Millis{15000}) {
  std::vector<std::string> argv{SLOWCLIENTS_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  Subprocess process;
  process.start(argv);
  return collect(process, timeout);
}

}  // namespace

TEST_CASE("slowclients: slow connections send an endless head a byte per interval") {
  std::mutex mutex;
  std::vector<std::string> heads;  // what each connection received, in full
  TestUpstream upstream([&](UpstreamConn& conn) {
    std::string head;
    while (true) {
      std::string bytes = conn.read_some(1, Millis{5000});
      if (bytes.empty()) break;
      head += bytes;
    }
    std::lock_guard lock(mutex);
    heads.push_back(head);
  });
  auto started = std::chrono::steady_clock::now();
  auto run =
      run_attack({"--target", upstream.address(), "--slow-headers", "5", "--byte-interval", "100ms",
                  "--duration", "1s", "--path", "/slow", "--report-interval", "250ms"});
  auto elapsed = std::chrono::steady_clock::now() - started;
  INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
  REQUIRE(run.exit_code == 0);
  CHECK(elapsed >= Millis{950});
  CHECK(elapsed < Millis{4000});

  CHECK(run.count("slow_headers") == 5);
  CHECK(run.count("no_read") == 0);
  CHECK(run.count("slow_connects") == 5);
  CHECK(run.count("slow_closed_by_peer") == 0);
  CHECK(run.count("slow_open_end") == 5);
  CHECK(run.count("connect_errors") == 0);
  CHECK(run.totals.count("all_open_ms") == 1);
  // About ten bytes per connection in a second: one on connecting, then one per 100 ms.
  CHECK(run.count("slow_bytes_sent") >= 5 * 8);
  CHECK(run.count("slow_bytes_sent") <= 5 * 11);
  // A report every 250 ms (the last one may fall after the end).
  CHECK(run.reports.size() >= 3);
  CHECK(run.reports.size() <= 4);
  REQUIRE(!run.reports.empty());
  CHECK(run.reports[0].find(" slow_open=5 no_read_open=0 connecting=0 ") != std::string::npos);

  REQUIRE(eventually([&] {
    std::lock_guard lock(mutex);
    return heads.size() == 5;
  }));
  std::string expected = "GET /slow HTTP/1.1\r\nHost: " + upstream.address() +
                         "\r\nUser-Agent: bulwark-slowclients\r\nX-Slow-1: 1\r\n";
  uint64_t total = 0;
  for (const std::string& head : heads) {
    CAPTURE(head);
    CHECK(head.size() >= 8);
    CHECK(expected.starts_with(head));  // a prefix of the endless head, never its end
    total += head.size();
  }
  CHECK(total == run.count("slow_bytes_sent"));
}

TEST_CASE("slowclients: a slow connection the server answers and closes is opened again") {
  // The server gives each head 300 ms, then answers 408 and closes, as a header timeout does.
  TestUpstream upstream([](UpstreamConn& conn) {
    conn.read_some(1, Millis{2000});
    if (!conn.pause(Millis{300})) return;
    conn.write("HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  });
  auto run = run_attack({"--target", upstream.address(), "--slow-headers", "4", "--byte-interval",
                         "100ms", "--reconnect-after", "100ms", "--duration", "1500ms"});
  INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
  REQUIRE(run.exit_code == 0);
  uint64_t closed = run.count("slow_closed_by_peer");
  CHECK(closed >= 4 * 3);  // each lives ~300 ms of the 1.5 s
  CHECK(run.count("slow_status_408") == closed);
  CHECK(run.count("slow_answered") >= closed);
  CHECK(run.count("slow_connects") >= closed);
  CHECK(upstream.connections() == run.count("slow_connects"));
}

TEST_CASE("slowclients: no-read connections never read their response") {
  SUBCASE("the response stays unread, and the server's writes stall") {
    std::atomic<int> stalled{0};
    TestUpstream upstream([&stalled](UpstreamConn& conn) {
      auto request = conn.read_request(Millis{2000});
      if (!request || request->target != "/big") return;
      // 64 MiB: far more than the socket buffers hold, so the write stops making progress.
      std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n";
      if (conn.write(head) && !conn.write_pattern(0, 64 << 20, Millis{500}) &&
          conn.last_error() == ReadError::kTimeout) {
        ++stalled;
      }
      conn.wait_peer_close(Millis{5000});
    });
    auto run = run_attack({"--target", upstream.address(), "--no-read", "3", "--large-path", "/big",
                           "--duration", "1500ms"});
    INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
    REQUIRE(run.exit_code == 0);
    CHECK(run.count("no_read_connects") == 3);
    CHECK(run.count("no_read_closed_by_peer") == 0);
    CHECK(run.count("no_read_open_end") == 3);
    CHECK(run.count("slow_connects") == 0);
    CHECK(upstream.requests() == 3);
    CHECK(stalled.load() == 3);
  }
  SUBCASE("a connection the server resets is noticed and opened again") {
    TestUpstream upstream([](UpstreamConn& conn) {
      if (conn.read_request(Millis{2000})) conn.close(/*reset=*/true);
    });
    auto run = run_attack({"--target", upstream.address(), "--no-read", "2", "--reconnect-after",
                           "100ms", "--report-interval", "100ms", "--duration", "1s"});
    INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
    REQUIRE(run.exit_code == 0);
    CHECK(run.count("no_read_closed_by_peer") >= 2 * 4);
    CHECK(run.count("no_read_connects") >= run.count("no_read_closed_by_peer"));
    CHECK(upstream.requests() == run.count("no_read_connects"));
  }
}

TEST_CASE("slowclients: SIGTERM ends the run early with its totals") {
  TestUpstream upstream([](UpstreamConn& conn) { conn.wait_peer_close(Millis{20000}); });
  Subprocess process;
  process.start({SLOWCLIENTS_BINARY, "--target", upstream.address(), "--slow-headers", "20",
                 "--no-read", "10", "--duration", "60s"});
  REQUIRE(process.wait_for_line(Stream::kStdout, "all_open_ms=", Millis{5000}));
  CHECK(eventually([&] { return upstream.connections() == 30; }));
  REQUIRE(process.signal(SIGTERM));
  auto run = collect(process, Millis{5000});
  INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
  CHECK(run.exit_code == 0);
  CHECK(run.count("slow_open_end") == 20);
  CHECK(run.count("no_read_open_end") == 10);
}

TEST_CASE("slowclients: bad arguments exit 2 with a message naming the argument") {
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{"--slow-headers", "1", "--duration", "1s"}, "--target"},
      {{"--target", "127.0.0.1:9", "--slow-headers", "1"}, "--duration"},
      {{"--target", "127.0.0.1:9", "--duration", "1s"}, "--slow-headers or --no-read"},
      {{"--target", "10.0.0.1:80", "--slow-headers", "1", "--duration", "1s"}, "loopback"},
      {{"--target", "localhost:80", "--slow-headers", "1", "--duration", "1s"}, "--target"},
      {{"--target", "[::2]:80", "--slow-headers", "1", "--duration", "1s"}, "--target"},
      {{"--target", "127.0.0.1:9", "--slow-headers", "20001", "--duration", "1s"},
       "--slow-headers"},
      {{"--target", "127.0.0.1:9", "--no-read", "-1", "--duration", "1s"}, "--no-read"},
      {{"--target", "127.0.0.1:9", "--slow-headers", "1", "--duration", "2h"}, "--duration"},
      {{"--target", "127.0.0.1:9", "--slow-headers", "1", "--duration", "1s", "--byte-interval",
        "1ms"},
       "--byte-interval"},
      {{"--target", "127.0.0.1:9", "--no-read", "1", "--duration", "1s", "--large-path", "x"},
       "--large-path"},
      {{"--target", "127.0.0.1:9", "--no-read", "1", "--duration", "1s", "--frobnicate", "1"},
       "--frobnicate"},
  };
  for (const Case& c : cases) {
    std::string shown;
    for (const auto& a : c.args) shown += "'" + a + "' ";
    CAPTURE(shown);
    auto run = run_attack(c.args, Millis{5000});
    CAPTURE(run.err);
    CHECK(run.exit_code == 2);
    CHECK(run.err.find(c.needle) != std::string::npos);
    CHECK(run.out.empty());
  }
  auto help = run_attack({"--help"}, Millis{5000});
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("usage: slowclients") != std::string::npos);
}
