// The chaos upstream of loadtest/ (build/loadtest/replica), driven the way the benchmark runner
// drives it: answers on the data port; shares of failures, delays and resets set over the control
// port; stop and start; the counters of /stats; bad input on both ports; and clients that vanish
// at the worst moment.

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/harness.h"


using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kStdout = Subprocess::Stream::kStdout;
constexpr auto kStderr = Subprocess::Stream::kStderr;

Millis since(Clock::time_point start) {
  return std::chrono::duration_cast<Millis>(Clock::now() - start);
}

// A replica on 127.0.0.1 with both ports picked by the kernel and learned from its
// "listening on 127.0.0.1:P control 127.0.0.1:C" line.
class Replica {
 public:
  explicit Replica(const std::vector<std::string>& extra_args = {}) {
    std::vector<std::string> argv{REPLICA_BINARY, "--port", "0", "--control-port", "0",
                                  "--name",       "r1"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    process_.start(argv);
    auto line = process_.wait_for_line(kStdout, "listening on");
    if (!line || std::sscanf(line->c_str(), "listening on 127.0.0.1:%hu control 127.0.0.1:%hu",
                             &port_, &control_port_) != 2) {
      throw std::runtime_error("replica did not start: " + process_.text(kStdout) +
                               process_.text(kStderr));
    }
  }

  uint16_t port() const { return port_; }
  uint16_t control_port() const { return control_port_; }
  Subprocess& process() { return process_; }

  // One control request on its own connection; the test fails when nothing answers.
  Response control(std::string_view method, std::string_view target) {
    std::string error;
    auto response = http_request(control_port_, method, target, {}, {}, kDefaultTimeout, &error);
    REQUIRE_MESSAGE(response, method << " " << target << ": " << error);
    return *response;
  }
  // POST /set?QUERY, which must succeed; returns the settings it answers with.
  std::string set(const std::string& query) {
    Response response = control("POST", "/set?" + query);
    REQUIRE_MESSAGE(response.status == 200, response.body);
    return response.body;
  }
  // GET /stats as a map; the numbers only (name= is checked on its own).
  std::map<std::string, uint64_t> stats() {
    Response response = control("GET", "/stats");
    REQUIRE(response.status == 200);
    std::map<std::string, uint64_t> values;
    size_t start = 0;
    while (start < response.body.size()) {
      size_t end = response.body.find('\n', start);
      std::string line = response.body.substr(start, end - start);
      start = end == std::string::npos ? response.body.size() : end + 1;
      size_t eq = line.find('=');
      if (eq != std::string::npos && line.compare(0, eq, "name") != 0) {
        values[line.substr(0, eq)] = std::stoull(line.substr(eq + 1));
      }
    }
    return values;
  }

 private:
  Subprocess process_;
  uint16_t port_ = 0;
  uint16_t control_port_ = 0;
};

// Sends `count` GETs in one write and reads the answers; returns their statuses in order.
std::vector<int> pipelined_statuses(ClientConn& conn, int count, std::string_view target = "/") {
  std::string requests;
  for (int i = 0; i < count; ++i) requests += make_request("GET", target);
  REQUIRE(conn.send(requests));
  std::vector<int> statuses;
  for (int i = 0; i < count; ++i) {
    auto response = conn.read_response();
    REQUIRE_MESSAGE(response, "answer " << i << ": " << conn.last_error_text());
    statuses.push_back(response->status);
  }
  return statuses;
}

// A socket listening on 127.0.0.1:port, so that nobody else can bind it; closed when destroyed.
class PortSquatter {
 public:
  explicit PortSquatter(uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in address = loopback(port);
    ok_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
          ::listen(fd_, 16) == 0;
  }
  ~PortSquatter() { ::close(fd_); }
  PortSquatter(const PortSquatter&) = delete;
  PortSquatter& operator=(const PortSquatter&) = delete;
  bool ok() const { return ok_; }

 private:
  int fd_;
  bool ok_ = false;
};

}  // namespace

TEST_CASE("replica serves 200, its name and body-bytes, with keep-alive, pipelining and bodies") {
  Replica replica({"--body-bytes", "137"});
  uint64_t requests = 0, connections = 0;

  ClientConn conn(replica.port());
  REQUIRE(conn.connected());
  ++connections;
  for (int i = 0; i < 3; ++i) {  // keep-alive: all on one connection
    REQUIRE(conn.send(make_request("GET", "/item/" + std::to_string(i))));
    auto response = conn.read_response();
    REQUIRE_MESSAGE(response, conn.last_error_text());
    ++requests;
    CHECK(response->status == 200);
    CHECK(response->get("x-replica") == "r1");
    CHECK(response->get("content-type") == "text/plain");
    CHECK(response->body.size() == 137);
    CHECK_FALSE(response->has("connection"));
  }

  // A pipelined HEAD and GET: if the answers came the other way round, the GET's body would be
  // read as the second status line.
  REQUIRE(conn.send(make_request("HEAD", "/a") + make_request("GET", "/b")));
  auto head = conn.read_response(/*head_request=*/true);
  REQUIRE_MESSAGE(head, conn.last_error_text());
  CHECK(head->get("content-length") == "137");
  auto get = conn.read_response();
  REQUIRE_MESSAGE(get, conn.last_error_text());
  CHECK(get->body.size() == 137);
  requests += 2;

  // Bodies are read and dropped; the connection goes on after each.
  REQUIRE(conn.send("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                    chunk("hello ") + chunk(std::string(10000, 'w')) + chunk("")));
  auto chunked = conn.read_response();
  REQUIRE_MESSAGE(chunked, conn.last_error_text());
  CHECK(chunked->status == 200);
  REQUIRE(conn.send(make_request("PUT", "/form", {}, std::string(5000, 'b'))));
  auto sized = conn.read_response();
  REQUIRE_MESSAGE(sized, conn.last_error_text());
  CHECK(sized->status == 200);
  requests += 2;

  // Connection: close is honoured.
  REQUIRE(conn.send(make_request("GET", "/last", {{"Connection", "close"}})));
  auto last = conn.read_response();
  REQUIRE_MESSAGE(last, conn.last_error_text());
  ++requests;
  CHECK(last->get("connection") == "close");
  CHECK(conn.is_closed());

  // HTTP/1.0 keeps the connection only when asked to.
  ClientConn old(replica.port());
  ++connections;
  for (int i = 0; i < 2; ++i) {
    REQUIRE(old.send("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto response = old.read_response();
    REQUIRE_MESSAGE(response, old.last_error_text());
    ++requests;
    CHECK(response->get("connection") == "keep-alive");
  }
  REQUIRE(old.send("GET /old HTTP/1.0\r\n\r\n"));
  auto closing = old.read_response();
  REQUIRE_MESSAGE(closing, old.last_error_text());
  ++requests;
  CHECK(closing->get("connection") == "close");
  CHECK(old.is_closed());

  // The health path is served like any other but counted apart.
  for (int i = 0; i < 2; ++i) {
    auto health = http_get(replica.port(), "/health?probe=1");
    REQUIRE(health);
    CHECK(health->status == 200);
    ++connections;
  }

  auto stats = replica.stats();
  CHECK(stats["requests"] == requests);
  CHECK(stats["health_requests"] == 2);
  CHECK(stats["responses_200"] == requests + 2);
  CHECK(stats["responses_503"] == 0);
  CHECK(stats["connections_accepted"] == connections);
  CHECK(stats["listening"] == 1);
  CHECK(stats["first_request_unix_ms"] >= stats["started_unix_ms"]);
  CHECK(stats["last_request_unix_ms"] >= stats["first_request_unix_ms"]);
  CHECK(replica.control("GET", "/stats").body.starts_with("name=r1\n"));

  // Counters go back to zero; the times stay.
  CHECK(replica.control("POST", "/reset-stats").status == 200);
  stats = replica.stats();
  CHECK(stats["requests"] == 0);
  CHECK(stats["responses_200"] == 0);
  CHECK(stats["connections_accepted"] == 0);
  CHECK(stats["first_request_unix_ms"] > 0);

  REQUIRE(replica.process().signal(SIGTERM));
  CHECK(replica.process().wait_exit() == 0);
}

TEST_CASE("replica fails the share of requests set by fail, health checks included") {
  Replica replica;
  CHECK(replica.set("fail=1") ==
        "fail=1\ndelay=0\ndelay_ms=0\nreset=0\nservice_ms=0\ncapacity=0\n");
  ClientConn conn(replica.port());
  REQUIRE(conn.connected());
  for (int i = 0; i < 10; ++i) {
    REQUIRE(conn.send(make_request("GET", i % 2 ? "/" : "/health")));
    auto response = conn.read_response();
    REQUIRE_MESSAGE(response, conn.last_error_text());
    CHECK(response->status == 503);
    CHECK(response->body == "replica r1 failing\n");
    CHECK(response->get("x-replica") == "r1");
  }

  replica.set("fail=0.5");
  int failed = 0;
  for (int status : pipelined_statuses(conn, 400)) failed += status == 503;
  CHECK(failed >= 140);
  CHECK(failed <= 260);

  auto stats = replica.stats();
  CHECK(stats["responses_503"] == 10 + failed);
  CHECK(stats["responses_200"] == 400 - failed);
  CHECK(stats["requests"] == 405);
  CHECK(stats["health_requests"] == 5);

  replica.set("fail=0");
  for (int status : pipelined_statuses(conn, 20)) CHECK(status == 200);
}

TEST_CASE("replica draws the same outcomes from the same seed") {
  auto statuses = [](const std::string& seed) {
    Replica replica({"--seed", seed});
    replica.set("fail=0.5");
    ClientConn conn(replica.port());
    return pipelined_statuses(conn, 64);
  };
  auto first = statuses("7");
  CHECK(first == statuses("7"));
  CHECK(first != statuses("8"));  // equal by chance with probability 2^-64
}

TEST_CASE("replica delays answers by delay_ms without holding up other connections") {
  Replica replica;
  replica.set("delay=1&delay_ms=300");

  // Two connections at once both take about 300 ms, not 600; the control port answers meanwhile.
  ClientConn a(replica.port()), b(replica.port());
  auto start = Clock::now();
  REQUIRE(a.send(make_request("GET", "/a")));
  REQUIRE(b.send(make_request("GET", "/b")));
  auto control_start = Clock::now();
  replica.stats();
  CHECK(since(control_start) < Millis{250});  // well before the delay ends
  auto ra = a.read_response();
  auto a_time = since(start);
  auto rb = b.read_response();
  auto b_time = since(start);
  REQUIRE(ra);
  REQUIRE(rb);
  CHECK(ra->status == 200);
  CHECK(rb->status == 200);
  CHECK(a_time >= Millis{300});
  CHECK(b_time >= Millis{300});
  CHECK(b_time < Millis{550});

  // A pipelined pair: each is due 300 ms after it arrived, and they leave in order.
  start = Clock::now();
  CHECK(pipelined_statuses(a, 2) == std::vector<int>{200, 200});
  CHECK(since(start) >= Millis{300});
  CHECK(since(start) < Millis{550});

  // A failure is delayed as well.
  replica.set("fail=1&delay_ms=150");
  start = Clock::now();
  auto failed = http_get(replica.port(), "/");
  REQUIRE(failed);
  CHECK(failed->status == 503);
  CHECK(since(start) >= Millis{150});
}

TEST_CASE("replica with a capacity serves that many at a time, and a cold start is slower") {
  // Two at a time, 150 ms each: of four requests on four connections, two answer after about
  // 150 ms and two after about 300 ms; the health path does not wait.
  Replica replica({"--service-ms", "150", "--capacity", "2"});
  std::vector<std::unique_ptr<ClientConn>> conns;
  const auto start = Clock::now();
  for (int i = 0; i < 4; ++i) {
    conns.push_back(std::make_unique<ClientConn>(replica.port()));
    REQUIRE(conns.back()->send(make_request("GET", "/work/" + std::to_string(i))));
  }
  auto health_start = Clock::now();
  auto health = http_get(replica.port(), "/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(since(health_start) < Millis{100});
  std::vector<Millis> times;
  for (auto& c : conns) {
    auto r = c->read_response();
    REQUIRE(r);
    CHECK(r->status == 200);
    times.push_back(std::chrono::duration_cast<Millis>(since(start)));
  }
  std::sort(times.begin(), times.end());
  CHECK(times[1] >= Millis{150});
  CHECK(times[1] < Millis{290});
  CHECK(times[2] >= Millis{300});
  CHECK(times[3] < Millis{450});
  // /set changes both; capacity 0 lifts the limit.
  CHECK(replica.set("capacity=0&service_ms=50").find("service_ms=50\ncapacity=0\n") !=
        std::string::npos);

  // Cold: the first 400 ms after the start, service takes 4 times as long.
  Replica cold({"--service-ms", "50", "--cold-ms", "400", "--cold-factor", "4"});
  auto t0 = Clock::now();
  REQUIRE(http_get(cold.port(), "/first"));
  CHECK(since(t0) >= Millis{200});
  while (since(t0) < Millis{450}) REQUIRE(http_get(cold.port(), "/meanwhile"));
  auto t1 = Clock::now();
  REQUIRE(http_get(cold.port(), "/warm"));
  CHECK(since(t1) >= Millis{50});
  CHECK(since(t1) < Millis{190});
}

TEST_CASE("replica resets the share of connections set by reset") {
  Replica replica;
  replica.set("reset=1");
  ClientConn conn(replica.port());
  REQUIRE(conn.send(make_request("GET", "/")));
  CHECK_FALSE(conn.read_response());
  CHECK(conn.last_error() == ReadError::kReset);
  CHECK(conn.partial().head.empty());

  // With a delay, the reset comes when the answer would have.
  replica.set("delay=1&delay_ms=150");
  ClientConn late(replica.port());
  auto start = Clock::now();
  REQUIRE(late.send(make_request("GET", "/")));
  CHECK_FALSE(late.read_response());
  CHECK(late.last_error() == ReadError::kReset);
  CHECK(since(start) >= Millis{150});

  auto stats = replica.stats();
  CHECK(stats["resets"] == 2);
  CHECK(stats["requests"] == 2);
  CHECK(stats["responses_200"] + stats["responses_503"] == 0);
  CHECK(stats["open_connections"] == 0);

  replica.set("reset=0&delay=0");
  auto response = http_get(replica.port(), "/");
  REQUIRE(response);
  CHECK(response->status == 200);
}

TEST_CASE("replica stop resets open connections and refuses new ones, start serves again") {
  Replica replica;
  ClientConn conn(replica.port());
  REQUIRE(conn.send(make_request("GET", "/")));
  REQUIRE(conn.read_response());
  auto before = replica.stats();
  CHECK(before["open_connections"] == 1);

  CHECK(replica.control("POST", "/stop").status == 200);
  CHECK(conn.is_closed());
  CHECK(conn.last_error() == ReadError::kReset);
  ClientConn refused;
  CHECK_FALSE(refused.connect(replica.port(), Millis{1000}));
  CHECK(refused.last_error_text().find("refused") != std::string::npos);
  auto stopped = replica.stats();
  CHECK(stopped["listening"] == 0);
  CHECK(stopped["open_connections"] == 0);
  CHECK(replica.control("POST", "/stop").status == 200);  // idempotent

  std::this_thread::sleep_for(Millis{5});  // so that started_unix_ms visibly moves
  CHECK(replica.control("POST", "/start").status == 200);
  auto started = replica.stats();
  CHECK(started["listening"] == 1);
  CHECK(started["started_unix_ms"] > before["started_unix_ms"]);
  CHECK(started["first_request_unix_ms"] == 0);

  auto health = http_get(replica.port(), "/health");  // not a request for first_request_unix_ms
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(replica.stats()["first_request_unix_ms"] == 0);
  auto served = http_get(replica.port(), "/");
  REQUIRE(served);
  CHECK(served->status == 200);
  auto after = replica.stats();
  CHECK(after["first_request_unix_ms"] >= started["started_unix_ms"]);
  CHECK(replica.control("POST", "/start").status == 200);  // idempotent: nothing moves
  CHECK(replica.stats()["started_unix_ms"] == started["started_unix_ms"]);

  // When the port has been taken meanwhile, /start says why and the replica stays stopped.
  CHECK(replica.control("POST", "/stop").status == 200);
  {
    PortSquatter squatter(replica.port());
    REQUIRE(squatter.ok());
    Response refused_start = replica.control("POST", "/start");
    CHECK(refused_start.status == 500);
    CHECK(refused_start.body.find("address already in use") != std::string::npos);
    CHECK(replica.stats()["listening"] == 0);
  }
  CHECK(replica.control("POST", "/start").status == 200);
  auto again = http_get(replica.port(), "/");
  REQUIRE(again);
  CHECK(again->status == 200);
}

TEST_CASE("replica answers bad control requests with 400, 404 or 405 and malformed data with 400") {
  Replica replica;
  struct Bad {
    std::string query;
    std::string named;
  };
  for (const Bad& bad : std::vector<Bad>{{"fail=2", "fail"},
                                         {"fail=abc", "fail"},
                                         {"fail=", "fail"},
                                         {"delay=-0.1", "delay"},
                                         {"reset=nan", "reset"},
                                         {"delay_ms=-1", "delay_ms"},
                                         {"delay_ms=1.5", "delay_ms"},
                                         {"bogus=1", "bogus"},
                                         {"fail=0.5&reset=x", "reset"}}) {
    CAPTURE(bad.query);
    Response response = replica.control("POST", "/set?" + bad.query);
    CHECK(response.status == 400);
    CHECK(response.body.find(bad.named) != std::string::npos);
  }
  // Nothing changed.
  CHECK(replica.set("") == "fail=0\ndelay=0\ndelay_ms=0\nreset=0\nservice_ms=0\ncapacity=0\n");

  Response get_set = replica.control("GET", "/set?fail=1");
  CHECK(get_set.status == 405);
  CHECK(get_set.get("allow") == "POST");
  CHECK(replica.control("GET", "/stop").status == 405);
  CHECK(replica.control("POST", "/stats").status == 405);
  CHECK(replica.control("GET", "/nope").status == 404);
  CHECK(replica.stats()["listening"] == 1);

  ClientConn control(replica.control_port());
  REQUIRE(control.send("GET /stats HTTP/1.1\r\nno colon\r\n\r\n"));
  auto bad_control = control.read_response();
  REQUIRE(bad_control);
  CHECK(bad_control->status == 400);

  // Malformed data requests: 400, then the connection closes. The first comes after a good one.
  const std::string good = make_request("GET", "/");
  for (const std::string& raw : {good + "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
                                 std::string("\x16\x03\x01\x02\x00 hello\r\n\r\n"),
                                 "GET / HTTP/1.1\r\nX-Big: " + std::string(70000, 'a') + "\r\n\r\n",
                                 std::string("POST / HTTP/1.1\r\nContent-Length: 3\r\n"
                                             "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")}) {
    CAPTURE(raw.substr(0, 60));
    ClientConn conn(replica.port());
    REQUIRE(conn.send(raw));
    if (raw.starts_with(good)) {
      auto first = conn.read_response();
      REQUIRE(first);
      CHECK(first->status == 200);
    }
    auto response = conn.read_response();
    REQUIRE_MESSAGE(response, conn.last_error_text());
    CHECK(response->status == 400);
    CHECK(response->get("connection") == "close");
    CHECK(conn.is_closed());
  }
  CHECK(replica.process().running());
}

TEST_CASE("replica exits 2 on bad arguments and 1 on a port it cannot bind") {
  auto run = [](std::vector<std::string> args) {
    args.insert(args.begin(), REPLICA_BINARY);
    auto process = std::make_unique<Subprocess>();
    process->start(args);
    return process;
  };
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--port", "x", "--control-port", "0"},
           {"--port", "0"},
           {"--port", "0", "--control-port", "70000"},
           {"--port", "0", "--control-port", "0", "--chaos", "1"},
           {"--port", "0", "--control-port", "0", "--address", "localhost"},
           {"--port", "0", "--control-port", "0", "--body-bytes", "-1"}}) {
    auto process = run(args);
    CHECK(process->wait_exit() == 2);
    CHECK(process->wait_streams_closed());
    CHECK(process->text(kStderr).find("usage:") != std::string::npos);
  }

  Replica taken;
  auto data = run({"--port", std::to_string(taken.port()), "--control-port", "0"});
  CHECK(data->wait_exit() == 1);
  CHECK(data->wait_streams_closed());
  CHECK(data->text(kStderr).find("data port") != std::string::npos);
  auto control = run({"--port", "0", "--control-port", std::to_string(taken.control_port())});
  CHECK(control->wait_exit() == 1);
  CHECK(control->wait_streams_closed());
  CHECK(control->text(kStderr).find("control port") != std::string::npos);
}

TEST_CASE("replica survives clients that vanish in the middle of a delayed or a large answer") {
  Replica replica({"--body-bytes", "1000000"});
  replica.set("delay=1&delay_ms=200");
  {
    std::vector<ClientConn> clients;
    for (int i = 0; i < 12; ++i) {
      clients.emplace_back(replica.port());
      std::string raw = make_request("GET", "/");
      if (i % 3 == 1) raw += raw + raw;                  // pipelined, all delayed
      if (i % 3 == 2) raw = "GET /half HTTP/1.1\r\nHo";  // a head that never ends
      REQUIRE(clients.back().send(raw));
    }
    REQUIRE(eventually([&] { return replica.stats()["requests"] == 4 + 4 * 3; }));
    for (size_t i = 0; i < clients.size(); ++i) clients[i].close(/*reset=*/i % 2 == 0);
  }
  std::this_thread::sleep_for(Millis{300});  // the delays run out with nobody to answer
  CHECK(replica.process().running());
  CHECK(eventually([&] { return replica.stats()["open_connections"] == 0; }));

  // A client that asks for 50 MB and reads a little: the replica waits for it (it reads no
  // further requests meanwhile) and lets go when it leaves.
  replica.set("delay=0");
  {
    ClientConn greedy;
    REQUIRE(greedy.connect(replica.port(), kDefaultTimeout, /*receive_buffer=*/4096));
    std::string requests;
    for (int i = 0; i < 50; ++i) requests += make_request("GET", "/big");
    REQUIRE(greedy.send(requests));
    CHECK(greedy.read_some(100000).size() >= 100000);
    greedy.close(/*reset=*/true);
  }
  CHECK(eventually([&] { return replica.stats()["open_connections"] == 0; }));
  CHECK(replica.process().running());
  auto response = http_get(replica.port(), "/");
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(response->body.size() == 1000000);
}
