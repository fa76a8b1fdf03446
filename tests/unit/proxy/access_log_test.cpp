// The access log line formats, and the writer thread on a real file: lines arrive in order, a
// reopen (log rotation) moves the next lines to a new file, and a path that cannot be opened is
// a clear error.

#include "proxy/access_log.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace bulwark {
namespace {

AccessRecord retried_request() {
  AccessRecord r;
  r.start_unix_us = 1'795'000'000'123'456;  // 2026-11-18T11:06:40.123Z
  r.request_id = "abc123";
  r.listener = "inbound";
  r.route = "api";
  r.cluster = "app";
  r.request = "GET /items?id=\"7\"";
  r.status = 200;
  r.duration_us = 31'250;
  r.upstream_us = 1'005;
  r.bytes_in = 0;
  r.bytes_out = 42;
  r.upstream = "127.0.0.1:9002";
  r.failed_tries = "127.0.0.1:9001 connect-failure, 127.0.0.1:9003 503";
  r.last_try = "127.0.0.1:9002 200";
  r.attempts = 3;
  return r;
}

std::string line(const AccessRecord& r, config::AccessLogFormat f) {
  std::string out;
  format_access_line(r, f, out);
  return out;
}

TEST_CASE("access log: a JSON line has every field, each try in order") {
  CHECK(
      line(retried_request(), config::AccessLogFormat::kJson) ==
      "{\"time\":\"2026-11-18T11:06:40.123Z\",\"request_id\":\"abc123\",\"listener\":\"inbound\","
      "\"route\":\"api\",\"method\":\"GET\",\"path\":\"/items?id=\\\"7\\\"\",\"protocol\":\"HTTP/"
      "1.1\","
      "\"status\":200,\"duration_ms\":31.250,\"upstream_ms\":1.005,\"bytes_in\":0,\"bytes_out\":42,"
      "\"cluster\":\"app\",\"upstream\":\"127.0.0.1:9002\",\"tries\":[\"127.0.0.1:9001 "
      "connect-failure\",\"127.0.0.1:9003 503\",\"127.0.0.1:9002 200\"],\"attempts\":3,"
      "\"reason\":null,\"flags\":\"-\"}\n");
}

TEST_CASE("access log: a local reply before any try has nulls where nothing happened") {
  AccessRecord r;
  r.start_unix_us = 0;
  r.listener = "inbound";
  r.http10 = true;
  r.status = 400;
  r.reason = "bad_request";
  r.flags = "DPE";
  CHECK(
      line(r, config::AccessLogFormat::kJson) ==
      "{\"time\":\"1970-01-01T00:00:00.000Z\",\"request_id\":null,\"listener\":\"inbound\","
      "\"route\":null,\"method\":null,\"path\":null,\"protocol\":\"HTTP/1.0\",\"status\":400,"
      "\"duration_ms\":0.000,\"upstream_ms\":null,\"bytes_in\":0,\"bytes_out\":0,\"cluster\":null,"
      "\"upstream\":null,\"tries\":[],\"attempts\":0,\"reason\":\"bad_request\",\"flags\":\"DPE\"}"
      "\n");
}

TEST_CASE("access log: a text line is the request line, the status and key=value pairs") {
  AccessRecord r = retried_request();
  r.flags = "URX,FI";
  CHECK(line(r, config::AccessLogFormat::kText) ==
        "2026-11-18T11:06:40.123Z \"GET /items?id=\\\"7\\\" HTTP/1.1\" 200 flags=URX,FI reason=- "
        "duration_ms=31.250 upstream_ms=1.005 bytes_in=0 bytes_out=42 listener=inbound route=api "
        "cluster=app upstream=127.0.0.1:9002 attempts=3 tries=\"127.0.0.1:9001 connect-failure, "
        "127.0.0.1:9003 503, 127.0.0.1:9002 200\" request_id=\"abc123\"\n");
}

TEST_CASE("access log: control characters in client data cannot break a line") {
  AccessRecord r = retried_request();
  r.request_id = "a\"b\x01";
  for (auto f : {config::AccessLogFormat::kJson, config::AccessLogFormat::kText}) {
    const std::string l = line(r, f);
    CHECK(l.find('\x01') == std::string::npos);
    CHECK(l.find("a\\\"b\\u0001") != std::string::npos);
    CHECK(l.find('\n') == l.size() - 1);
  }
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TempPath {
  TempPath() {
    char dir[] = "/tmp/bulwark_access_log_XXXXXX";
    REQUIRE(mkdtemp(dir) != nullptr);
    this->dir = dir;
    path = this->dir + "/access.log";
  }
  ~TempPath() {
    std::remove(path.c_str());
    std::remove((path + ".1").c_str());
    rmdir(dir.c_str());
  }
  std::string dir, path;
};

TEST_CASE("access log: the writer appends the lines it is handed, in order, before it stops") {
  TempPath tmp;
  {
    std::ofstream(tmp.path) << "an older line\n";
    config::AccessLogConfig c;
    c.path = tmp.path;
    std::string error;
    auto log = AccessLog::open(c, &error);
    REQUIRE(log != nullptr);
    for (int i = 0; i < 100; ++i) log->submit("line " + std::to_string(i) + "\n");
    log->submit("");  // nothing to write
  }
  std::string expected = "an older line\n";
  for (int i = 0; i < 100; ++i) expected += "line " + std::to_string(i) + "\n";
  CHECK(slurp(tmp.path) == expected);
}

TEST_CASE("access log: reopen moves the next lines to the file now at the path") {
  TempPath tmp;
  config::AccessLogConfig c;
  c.path = tmp.path;
  std::string error;
  auto log = AccessLog::open(c, &error);
  REQUIRE(log != nullptr);
  log->submit("before rotation\n");
  // As logrotate does: rename, then signal.
  REQUIRE(std::rename(tmp.path.c_str(), (tmp.path + ".1").c_str()) == 0);
  log->reopen();
  log->submit("after rotation\n");
  log.reset();  // writes everything, then stops
  CHECK(slurp(tmp.path + ".1") == "before rotation\n");
  CHECK(slurp(tmp.path) == "after rotation\n");
  CHECK(log == nullptr);
}

TEST_CASE("access log: a path that cannot be opened is an error, not a crash") {
  config::AccessLogConfig c;
  c.path = "/nonexistent-dir/access.log";
  std::string error;
  CHECK(AccessLog::open(c, &error) == nullptr);
  CHECK(error == "No such file or directory");
}

}  // namespace
}  // namespace bulwark
