// loadtest/loadgen: the real binary against real upstreams on 127.0.0.1, its stdout parsed the
// way the benchmark runner parses it.

#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/harness.h"


using namespace bulwark::test;

namespace {

using Stream = Subprocess::Stream;

// One finished loadgen run: exit code, streams and the key=value lines of stdout.
struct LoadgenRun {
  int exit_code = -1;
  std::string out;
  std::string err;
  std::vector<std::string> keys;  // in the order printed
  std::map<std::string, std::string> values;

  bool has(const std::string& key) const { return values.count(key) > 0; }
  // A value as a number; fails the test (and returns 0) when the key is missing.
  double number(const std::string& key) const {
    auto it = values.find(key);
    CHECK_MESSAGE(it != values.end(), "no " << key << "= in loadgen's stdout:\n" << out);
    return it == values.end() ? 0 : std::strtod(it->second.c_str(), nullptr);
  }
  uint64_t count(const std::string& key) const { return static_cast<uint64_t>(number(key)); }
};

LoadgenRun run_loadgen(const std::vector<std::string>& args, Millis timeout = Millis{15000}) {
  std::vector<std::string> argv{LOADGEN_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  Subprocess process;
  process.start(argv);
  LoadgenRun run;
  run.exit_code = process.wait_exit(timeout).value_or(-1);
  process.wait_streams_closed(Millis{2000});
  run.out = process.text(Stream::kStdout);
  run.err = process.text(Stream::kStderr);
  for (const std::string& line : process.lines(Stream::kStdout)) {
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    run.keys.push_back(line.substr(0, eq));
    run.values[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return run;
}

// The arguments of a constant-rate run against 127.0.0.1:port.
std::vector<std::string> rate_args(uint16_t port, const std::string& rate,
                                   const std::string& connections, const std::string& duration) {
  return {"--target",      "127.0.0.1:" + std::to_string(port),
          "--rate",        rate,
          "--connections", connections,
          "--duration",    duration};
}

// A keep-alive upstream that answers each request with `status(n)`, n counting requests from 0
// over all connections.
TestUpstream::Handler answering(std::atomic<int>& counter, int (*status)(int)) {
  return [&counter, status](UpstreamConn& conn) {
    while (conn.read_request(Millis{20000})) {
      if (!conn.write_response(status(counter++), "hello\n")) return;
    }
  };
}

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<std::string> split(const std::string& line, char separator) {
  std::vector<std::string> fields;
  std::stringstream stream(line);
  for (std::string field; std::getline(stream, field, separator);) fields.push_back(field);
  return fields;
}

}  // namespace

TEST_CASE("loadgen: sends at a constant rate over keep-alive connections and reports it") {
  TestUpstream upstream;
  auto args = rate_args(upstream.port(), "200", "4", "2s");
  args.insert(args.end(), {"--path", "/lg/probe?x=1"});
  auto started = std::chrono::steady_clock::now();
  auto run = run_loadgen(args);
  auto elapsed = std::chrono::steady_clock::now() - started;
  INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
  REQUIRE(run.exit_code == 0);

  // The runner's contract: these keys, in this order (no status_ lines: every answer was 200).
  CHECK(run.keys == std::vector<std::string>{"rate_target", "duration_s", "connections", "sent",
                                             "completed", "rate_achieved", "ok", "failed",
                                             "error_connect", "error_reset", "error_timeout",
                                             "error_parse", "p50_us", "p90_us", "p99_us", "p999_us",
                                             "max_us", "mean_us", "ok_p50_us", "ok_p99_us",
                                             "ok_p999_us"});
  CHECK(run.values["rate_target"] == "200");
  CHECK(run.values["duration_s"] == "2.000");
  CHECK(run.count("connections") == 4);

  uint64_t sent = run.count("sent");
  CHECK(sent >= 398);
  CHECK(sent <= 402);
  CHECK(run.count("completed") == sent);
  CHECK(run.count("ok") == sent);
  CHECK(run.count("failed") == 0);
  CHECK(run.number("rate_achieved") >= 190);
  CHECK(run.number("rate_achieved") <= 210);
  for (const char* key : {"error_connect", "error_reset", "error_timeout", "error_parse"}) {
    CHECK(run.count(key) == 0);
  }
  // Latencies against a local upstream are small but present, and ordered.
  CHECK(run.count("p50_us") > 0);
  CHECK(run.count("p50_us") < 50'000);
  CHECK(run.count("p50_us") <= run.count("p99_us"));
  CHECK(run.count("p99_us") <= run.count("max_us"));

  // Paced over the duration, not sent in a burst.
  CHECK(elapsed >= Millis{1900});
  CHECK(elapsed < Millis{6000});

  // The upstream saw exactly those requests, over the 4 kept-alive connections.
  CHECK(upstream.requests() == sent);
  CHECK(upstream.connections() == 4);
  auto request = upstream.last_request();
  REQUIRE(request);
  CHECK(request->method == "GET");
  CHECK(request->target == "/lg/probe?x=1");
  CHECK(request->version == "HTTP/1.1");
  CHECK(request->get("host") == "127.0.0.1:" + std::to_string(upstream.port()));
  CHECK(request->get("user-agent") == "bulwark-loadgen");
}

TEST_CASE("loadgen: spreads connections over several targets, with --host") {
  TestUpstream a({}, "a");
  TestUpstream b({}, "b");
  auto run = run_loadgen({"--target", a.address(), "--target", b.address(), "--rate", "200",
                          "--connections", "4", "--duration", "500ms", "--host", "svc.example"});
  INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
  REQUIRE(run.exit_code == 0);
  CHECK(run.count("ok") == run.count("completed"));
  CHECK(a.connections() == 2);
  CHECK(b.connections() == 2);
  // Idle connections are used least recently used first, so the load is even.
  CHECK(a.requests() + b.requests() == run.count("sent"));
  CHECK(a.requests() >= 40);
  CHECK(b.requests() >= 40);
  REQUIRE(a.last_request());
  CHECK(a.last_request()->get("host") == "svc.example");
}

TEST_CASE("loadgen: a stall shows in every request due during it (no coordinated omission)") {
  // One connection at 100 requests/s; the upstream holds request 50 for 600 ms. The ~60 requests
  // due meanwhile wait for the connection, and their latency counts from their due time.
  std::atomic<int> counter{0};
  TestUpstream upstream([&counter](UpstreamConn& conn) {
    while (conn.read_request(Millis{20000})) {
      if (counter++ == 50 && !conn.pause(Millis{600})) return;
      if (!conn.write_response(200, "ok\n")) return;
    }
  });
  auto run = run_loadgen(rate_args(upstream.port(), "100", "1", "2s"));
  INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
  REQUIRE(run.exit_code == 0);
  uint64_t completed = run.count("completed");
  CHECK(completed >= 198);  // still rate x duration: the queued requests were all sent later
  CHECK(completed <= 202);
  CHECK(run.count("ok") == completed);
  CHECK(run.count("max_us") >= 550'000);
  CHECK(run.count("p99_us") >= 400'000);
  CHECK(run.count("p90_us") >= 100'000);  // a closed-loop client would see one slow request
  CHECK(run.count("p50_us") < 50'000);
}

TEST_CASE("loadgen: counts non-2xx statuses as failures, by status") {
  std::atomic<int> counter{0};
  TestUpstream upstream(answering(counter, [](int n) { return n % 2 == 0 ? 503 : 200; }));
  auto run = run_loadgen(rate_args(upstream.port(), "200", "4", "1s"));
  INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
  REQUIRE(run.exit_code == 0);
  uint64_t completed = run.count("completed");
  uint64_t ok = run.count("ok");
  uint64_t unavailable = run.count("status_503");
  CHECK(completed >= 198);
  CHECK(ok + unavailable == completed);
  CHECK(run.count("failed") == unavailable);
  CHECK(ok >= 98);
  CHECK(unavailable >= 98);
  // status_ lines sit between failed= and error_connect=.
  auto at = [&](const std::string& key) {
    return std::find(run.keys.begin(), run.keys.end(), key) - run.keys.begin();
  };
  CHECK(at("failed") + 1 == at("status_503"));
  CHECK(at("status_503") + 1 == at("error_connect"));
}

TEST_CASE("loadgen: the ok_ percentiles count only the requests answered 2xx") {
  // Every 503 is held 300 ms, every 200 answered at once: the percentiles of all requests see
  // the slow failures, those of the ok ones do not.
  std::atomic<int> counter{0};
  TestUpstream upstream([&counter](UpstreamConn& conn) {
    while (conn.read_request(Millis{20000})) {
      const bool fail = counter++ % 2 == 0;
      if (fail && !conn.pause(Millis{300})) return;
      if (!conn.write_response(fail ? 503 : 200, "x\n")) return;
    }
  });
  auto run = run_loadgen(rate_args(upstream.port(), "50", "40", "1s"));
  INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
  REQUIRE(run.exit_code == 0);
  CHECK(run.count("ok") >= 20);
  CHECK(run.count("p99_us") >= 250'000);
  CHECK(run.count("ok_p99_us") < 100'000);
  CHECK(run.count("ok_p50_us") <= run.count("ok_p99_us"));
  CHECK(run.count("ok_p99_us") <= run.count("ok_p999_us"));
}

TEST_CASE("loadgen: counts connect, reset, timeout and parse errors, and still exits 0") {
  SUBCASE("nothing listening: connect errors") {
    RefusingPort refused;
    auto args = rate_args(refused.port(), "50", "4", "1s");
    args.insert(args.end(), {"--timeout", "500ms"});
    auto run = run_loadgen(args);
    INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
    CHECK(run.exit_code == 0);
    uint64_t completed = run.count("completed");
    CHECK(completed >= 49);
    CHECK(completed <= 51);
    CHECK(run.count("ok") == 0);
    CHECK(run.count("failed") == completed);
    CHECK(run.count("sent") == 0);
    CHECK(run.count("error_connect") > 0);
    // With 4 connections each sitting out 50 ms after a refusal, at most ~80 connects a second
    // fail; the requests that found no connection in time time out.
    CHECK(run.count("error_connect") + run.count("error_timeout") == completed);
  }
  SUBCASE("the upstream closes without answering: reset errors") {
    TestUpstream upstream([](UpstreamConn& conn) { conn.read_request(); });
    auto run = run_loadgen(rate_args(upstream.port(), "100", "2", "1s"));
    INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
    CHECK(run.exit_code == 0);
    uint64_t completed = run.count("completed");
    CHECK(completed >= 99);
    CHECK(run.count("error_reset") == completed);
    CHECK(run.count("sent") == completed);
    CHECK(upstream.connections() >= completed);  // a new connection for every request
  }
  SUBCASE("the upstream never answers: timeouts") {
    TestUpstream upstream([](UpstreamConn& conn) {
      if (conn.read_request()) conn.wait_peer_close(Millis{10000});
    });
    auto args = rate_args(upstream.port(), "20", "2", "500ms");
    args.insert(args.end(), {"--timeout", "300ms"});
    auto started = std::chrono::steady_clock::now();
    auto run = run_loadgen(args);
    auto elapsed = std::chrono::steady_clock::now() - started;
    INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
    CHECK(run.exit_code == 0);
    CHECK(run.count("completed") == 10);
    CHECK(run.count("error_timeout") == 10);
    // Each failure's latency is the time from its due time to the timeout.
    CHECK(run.count("p50_us") >= 300'000);
    CHECK(run.count("max_us") < 500'000);
    CHECK(elapsed < Millis{3000});
  }
  SUBCASE("a malformed response: parse errors") {
    TestUpstream upstream([](UpstreamConn& conn) {
      while (conn.read_request()) {
        if (!conn.write("HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")) return;
      }
    });
    auto run = run_loadgen(rate_args(upstream.port(), "50", "2", "500ms"));
    INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
    CHECK(run.exit_code == 0);
    CHECK(run.count("completed") == 25);
    CHECK(run.count("error_parse") == 25);
  }
  SUBCASE("Connection: close is a normal completion, and the next request reconnects") {
    TestUpstream upstream([](UpstreamConn& conn) {
      if (conn.read_request()) conn.write_response(200, "bye\n", {{"Connection", "close"}});
    });
    auto run = run_loadgen(rate_args(upstream.port(), "100", "2", "500ms"));
    INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
    CHECK(run.exit_code == 0);
    CHECK(run.count("completed") == 50);
    CHECK(run.count("ok") == 50);
    CHECK(upstream.connections() == 50);
  }
}

TEST_CASE("loadgen: writes a timeline of completions with unix timestamps") {
  TestUpstream upstream;
  TempDir dir;
  std::string path = dir.file("timeline.tsv");
  auto args = rate_args(upstream.port(), "200", "2", "1s");
  args.insert(args.end(), {"--warmup", "500ms", "--bin", "100ms", "--timeline", path});
  int64_t before_ms = unix_ms_now();
  auto run = run_loadgen(args);
  int64_t after_ms = unix_ms_now();
  INFO("stdout:\n" << run.out << "\nstderr:\n" << run.err);
  REQUIRE(run.exit_code == 0);

  // The warm-up's requests reached the upstream but are not counted.
  uint64_t ok = run.count("ok");
  CHECK(ok >= 198);
  CHECK(ok <= 202);
  CHECK(upstream.requests() >= ok + 98);
  CHECK(upstream.requests() <= ok + 102);

  std::string text = read_file(path);
  INFO("timeline:\n" << text);
  auto lines = split(text, '\n');
  REQUIRE(lines.size() >= 11);
  CHECK(lines[0] == "# bin_start_unix_ms\tok\tfail\tfirst_ok_unix_ms");
  uint64_t ok_total = 0;
  int64_t previous_start = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    CAPTURE(lines[i]);
    auto fields = split(lines[i], '\t');
    REQUIRE(fields.size() == 4);
    int64_t start = std::stoll(fields[0]);
    uint64_t bin_ok = std::stoull(fields[1]);
    CHECK(std::stoull(fields[2]) == 0);
    if (i == 1) {
      // The measured period starts after the warm-up.
      CHECK(start >= before_ms + 500);
      // ... and lasts a second; loadgen exits once its last request (due at +995 ms) is done.
      CHECK(start <= after_ms - 995);
    } else {
      CHECK(start - previous_start == 100);
    }
    previous_start = start;
    if (bin_ok == 0) {
      CHECK(fields[3] == "-");
    } else {
      int64_t first_ok = std::stoll(fields[3]);
      CHECK(first_ok >= start);
      CHECK(first_ok < start + 100);
    }
    // Bins inside the run see 20 completions each (the edges may differ by one).
    if (i >= 2 && i <= 9) {
      CHECK(bin_ok >= 18);
      CHECK(bin_ok <= 22);
    }
    ok_total += bin_ok;
  }
  CHECK(ok_total == ok);
}

TEST_CASE("loadgen: idle mode opens and holds connections until SIGTERM") {
  std::atomic<int> held{0};
  TestUpstream upstream([&held](UpstreamConn& conn) {
    if (!conn.read_request() || !conn.write_response(200, "idle\n")) return;
    ++held;
    conn.wait_peer_close(Millis{30000});
    --held;
  });
  Subprocess loadgen;
  loadgen.start({LOADGEN_BINARY, "--idle", "300", "--target", upstream.address()});
  auto open = loadgen.wait_for_line(Stream::kStdout, "idle_open=", Millis{10000});
  INFO("stderr:\n" << loadgen.text(Stream::kStderr));
  REQUIRE(open);
  CHECK(*open == "idle_open=300");
  CHECK(loadgen.wait_for_line(Stream::kStdout, "idle_failed=").value_or("") == "idle_failed=0");
  CHECK(eventually([&] { return held.load() == 300; }));
  CHECK(upstream.connections() == 300);
  CHECK(upstream.requests() == 300);

  // Held, not closed: nothing changes while we wait.
  std::this_thread::sleep_for(Millis{200});
  CHECK(held.load() == 300);
  CHECK(loadgen.running());

  REQUIRE(loadgen.signal(SIGTERM));
  CHECK(loadgen.wait_exit().value_or(-1) == 0);
  loadgen.wait_streams_closed();
  CHECK(loadgen.wait_for_line(Stream::kStdout, "idle_closed_by_peer=").value_or("") ==
        "idle_closed_by_peer=0");
  CHECK(eventually([&] { return held.load() == 0; }));
}

TEST_CASE("loadgen: idle mode counts connections the server closes, and failures") {
  SUBCASE("closed by the server while held") {
    TestUpstream upstream([](UpstreamConn& conn) {
      if (conn.read_request() && conn.write_response(200, "idle\n")) conn.wait_peer_close();
    });
    Subprocess loadgen;
    loadgen.start({LOADGEN_BINARY, "--idle", "20", "--target", upstream.address()});
    REQUIRE(loadgen.wait_for_line(Stream::kStdout, "idle_open=").value_or("") == "idle_open=20");
    upstream.stop();  // closes every connection
    std::this_thread::sleep_for(Millis{500});
    REQUIRE(loadgen.signal(SIGINT));
    CHECK(loadgen.wait_exit().value_or(-1) == 0);
    loadgen.wait_streams_closed();
    CHECK(loadgen.wait_for_line(Stream::kStdout, "idle_closed_by_peer=").value_or("") ==
          "idle_closed_by_peer=20");
  }
  SUBCASE("nothing listening") {
    RefusingPort refused;
    Subprocess loadgen;
    loadgen.start({LOADGEN_BINARY, "--idle", "10", "--target", refused.address()});
    CHECK(loadgen.wait_for_line(Stream::kStdout, "idle_open=").value_or("") == "idle_open=0");
    CHECK(loadgen.wait_for_line(Stream::kStdout, "idle_failed=").value_or("") == "idle_failed=10");
    REQUIRE(loadgen.signal(SIGTERM));
    CHECK(loadgen.wait_exit().value_or(-1) == 0);
  }
}

TEST_CASE("loadgen: bad arguments exit 2 with a message naming the argument") {
  TempDir dir;
  // A valid command line with one option changed (or added).
  auto with = [](const std::string& option, const std::string& value) {
    std::vector<std::string> args{"--target",      "127.0.0.1:9", "--rate",     "10",
                                  "--connections", "1",           "--duration", "1s"};
    auto it = std::find(args.begin(), args.end(), option);
    if (it != args.end()) {
      *(it + 1) = value;
    } else {
      args.insert(args.end(), {option, value});
    }
    return args;
  };
  auto twice = with("--rate", "10");
  twice.insert(twice.end(), {"--rate", "20"});
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{}, "--target"},
      {{"--target", "127.0.0.1:9", "--connections", "1", "--duration", "1s"}, "--rate"},
      {{"--target", "127.0.0.1:9", "--rate", "10", "--duration", "1s"}, "--connections"},
      {{"--target", "127.0.0.1:9", "--rate", "10", "--connections", "1"}, "--duration"},
      {with("--rate", "abc"), "--rate"},
      {with("--rate", "0"), "--rate"},
      {with("--rate", "-5"), "--rate"},
      {with("--rate", "nan"), "--rate"},
      {with("--rate", "1e3"), "--rate"},
      {with("--duration", "10x"), "--duration"},
      {with("--duration", "-1s"), "--duration"},
      {with("--duration", "0"), "--duration"},
      {with("--duration", "s"), "--duration"},
      {with("--warmup", "1y"), "--warmup"},
      {with("--timeout", ""), "--timeout"},
      {with("--bin", "0ms"), "--bin"},
      {with("--connections", "0"), "--connections"},
      {with("--connections", "1.5"), "--connections"},
      {with("--connections", "99999999999999999999999"), "--connections"},
      {with("--target", "localhost"), "--target"},
      {with("--target", "127.0.0.1:70000"), "--target"},
      {with("--target", "127.0.0.1:"), "--target"},
      {with("--target", ":80"), "--target"},
      {with("--target", "::1:80"), "--target"},
      {with("--path", "no-slash"), "--path"},
      {with("--path", "/a b"), "--path"},
      {with("--host", "a\r\nX-Injected: y"), "--host"},
      {with("--timeline", dir.file("missing/timeline.tsv")), "--timeline"},
      {with("--frobnicate", "1"), "--frobnicate"},
      {twice, "--rate given twice"},
      {{"--target", "127.0.0.1:9", "--rate"}, "--rate needs a value"},
      {{"--idle", "0", "--target", "127.0.0.1:9"}, "--idle"},
      {{"--idle", "5", "--target", "127.0.0.1:9", "--rate", "10"}, "--rate"},
  };
  for (const Case& c : cases) {
    std::string shown;
    for (const auto& a : c.args) shown += "'" + a + "' ";
    CAPTURE(shown);
    auto run = run_loadgen(c.args, Millis{5000});
    CAPTURE(run.err);
    CHECK(run.exit_code == 2);
    CHECK(run.err.find(c.needle) != std::string::npos);
    CHECK(run.out.empty());
  }

  auto help = run_loadgen({"--help"}, Millis{5000});
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("usage: loadgen") != std::string::npos);
}
