// The access log as an operator reads it: one line per request with every field of the request,
// its tries and its response flags, in JSON or text, sampled, reopened on SIGUSR1 for log
// rotation, and complete when bulwark shuts down.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using Wall = std::chrono::system_clock;

// ---------------------------------------------------------------------------------------------
// Reading the log

// The complete lines of a file (without their newline); none when it does not exist.
std::vector<std::string> file_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  if (!in) return lines;
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  size_t start = 0, newline;
  while ((newline = text.find('\n', start)) != std::string::npos) {
    lines.push_back(text.substr(start, newline - start));
    start = newline + 1;
  }
  return lines;
}

// Waits until the file holds at least `count` complete lines (workers hand their lines over at
// most ~50 ms after writing them); returns the lines it has then.
std::vector<std::string> wait_for_file_lines(const std::string& path, size_t count,
                                             Millis timeout = kDefaultTimeout) {
  std::vector<std::string> lines;
  eventually(
      [&] {
        lines = file_lines(path);
        return lines.size() >= count;
      },
      timeout);
  return lines;
}

// One value of a flat JSON object: a string, a number, null, true/false, or an array of strings.
struct JsonValue {
  enum class Kind { kString, kNumber, kNull, kBool, kArray } kind = Kind::kNull;
  std::string text;                // the string (unescaped) or the number / literal as written
  std::vector<std::string> items;  // an array's strings
};

// A parsed JSON access log line, its keys in order.
struct LogLine {
  std::string raw;
  std::vector<std::string> keys;
  std::map<std::string, JsonValue> fields;

  bool has(const std::string& key) const { return fields.count(key) != 0; }
  // A canonical rendering for comparisons in CHECKs: "\"text\"", 12.5, null, ["a","b"].
  std::string get(const std::string& key) const {
    auto it = fields.find(key);
    if (it == fields.end()) return "<absent>";
    const JsonValue& v = it->second;
    switch (v.kind) {
      case JsonValue::Kind::kString:
        return "\"" + v.text + "\"";
      case JsonValue::Kind::kArray: {
        std::string out = "[";
        for (size_t i = 0; i < v.items.size(); ++i) out += (i ? ",\"" : "\"") + v.items[i] + "\"";
        return out + "]";
      }
      default:
        return v.text;
    }
  }
  std::optional<std::string> string(const std::string& key) const {
    auto it = fields.find(key);
    if (it == fields.end() || it->second.kind != JsonValue::Kind::kString) return std::nullopt;
    return it->second.text;
  }
  bool is_null(const std::string& key) const {
    auto it = fields.find(key);
    return it != fields.end() && it->second.kind == JsonValue::Kind::kNull;
  }
  std::optional<std::string> number_text(const std::string& key) const {
    auto it = fields.find(key);
    if (it == fields.end() || it->second.kind != JsonValue::Kind::kNumber) return std::nullopt;
    return it->second.text;
  }
  std::vector<std::string> array(const std::string& key) const {
    auto it = fields.find(key);
    if (it == fields.end() || it->second.kind != JsonValue::Kind::kArray) return {};
    return it->second.items;
  }
};

// A minimal parser for the flat objects of the access log.
class FlatJsonParser {
 public:
  explicit FlatJsonParser(std::string_view text) : s_(text) {}

  std::optional<LogLine> parse(std::string* error) {
    LogLine line;
    line.raw = std::string(s_);
    if (!expect('{')) return fail(error, "no '{'");
    skip_ws();
    if (peek() == '}') {
      ++i_;
    } else {
      for (;;) {
        std::string key;
        skip_ws();
        if (!string(key)) return fail(error, "bad key");
        skip_ws();
        if (!expect(':')) return fail(error, "no ':' after " + key);
        skip_ws();
        JsonValue value;
        if (!parse_value(value)) return fail(error, "bad value of " + key);
        if (line.fields.count(key)) return fail(error, "duplicate key " + key);
        line.keys.push_back(key);
        line.fields.emplace(key, std::move(value));
        skip_ws();
        if (peek() == ',') {
          ++i_;
          continue;
        }
        if (!expect('}')) return fail(error, "no '}' or ','");
        break;
      }
    }
    skip_ws();
    if (i_ != s_.size()) return fail(error, "text after the object");
    return line;
  }

 private:
  std::optional<LogLine> fail(std::string* error, std::string why) {
    if (error) *error = why + " at offset " + std::to_string(i_);
    return std::nullopt;
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool expect(char c) {
    if (peek() != c) return false;
    ++i_;
    return true;
  }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t')) ++i_;
  }
  bool string(std::string& out) {
    if (!expect('"')) return false;
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) return false;
      char e = s_[i_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          if (i_ + 4 > s_.size()) return false;
          unsigned code = static_cast<unsigned>(
              std::strtoul(std::string(s_.substr(i_, 4)).c_str(), nullptr, 16));
          i_ += 4;
          if (code >= 0x80) return false;  // the log escapes only control characters
          out += static_cast<char>(code);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }
  bool parse_value(JsonValue& v) {
    char c = peek();
    if (c == '"') {
      v.kind = JsonValue::Kind::kString;
      return string(v.text);
    }
    if (c == '[') {
      ++i_;
      v.kind = JsonValue::Kind::kArray;
      skip_ws();
      if (peek() == ']') {
        ++i_;
        return true;
      }
      for (;;) {
        skip_ws();
        std::string item;
        if (!string(item)) return false;
        v.items.push_back(std::move(item));
        skip_ws();
        if (peek() == ',') {
          ++i_;
          continue;
        }
        return expect(']');
      }
    }
    for (std::string_view literal : {"null", "true", "false"}) {
      if (s_.substr(i_, literal.size()) == literal) {
        v.kind = literal == "null" ? JsonValue::Kind::kNull : JsonValue::Kind::kBool;
        v.text = std::string(literal);
        i_ += literal.size();
        return true;
      }
    }
    size_t start = i_;
    if (peek() == '-') ++i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.' ||
                              s_[i_] == 'e' || s_[i_] == 'E' || s_[i_] == '+' || s_[i_] == '-')) {
      ++i_;
    }
    if (i_ == start) return false;
    v.kind = JsonValue::Kind::kNumber;
    v.text = std::string(s_.substr(start, i_ - start));
    return true;
  }

  std::string_view s_;
  size_t i_ = 0;
};

// Parses every line; a line that is not a JSON object fails the test.
std::vector<LogLine> parse_lines(const std::vector<std::string>& raw) {
  std::vector<LogLine> out;
  for (const std::string& line : raw) {
    std::string error;
    auto parsed = FlatJsonParser(line).parse(&error);
    INFO("access log line: " << line);
    REQUIRE_MESSAGE(parsed, "not a flat JSON object: " << error);
    out.push_back(std::move(*parsed));
  }
  return out;
}

// The line whose request_id is `id`; fails the test when there is none or more than one.
const LogLine& line_with_id(const std::vector<LogLine>& lines, const std::string& id) {
  const LogLine* found = nullptr;
  size_t n = 0;
  for (const LogLine& line : lines) {
    if (line.string("request_id") == id) {
      found = &line;
      ++n;
    }
  }
  std::string all;
  for (const LogLine& line : lines) all += line.raw + "\n";
  INFO("request_id " << id << " in the access log:\n" << all);
  REQUIRE(n == 1);
  return *found;
}

std::string all_text(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& line : lines) out += line + "\n";
  return out;
}

// Stops bulwark (which writes every line handed over before it exits) and checks that the file
// then holds exactly `count` lines: none was written twice or late.
void check_lines_after_exit(BulwarkProcess& bulwark, const std::string& path, size_t count) {
  REQUIRE(bulwark.signal(SIGTERM));
  REQUIRE(bulwark.wait_exit() == 0);
  auto lines = file_lines(path);
  INFO("access log after exit:\n" << all_text(lines));
  CHECK(lines.size() == count);
}

// "2026-11-24T00:20:08.154Z" as milliseconds since the epoch; nullopt when not in that form.
std::optional<int64_t> parse_time_ms(const std::string& text) {
  static const std::regex form(R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$)");
  if (!std::regex_match(text, form)) return std::nullopt;
  tm t{};
  int ms = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &t.tm_year, &t.tm_mon, &t.tm_mday,
                  &t.tm_hour, &t.tm_min, &t.tm_sec, &ms) != 7) {
    return std::nullopt;
  }
  if (t.tm_mon < 1 || t.tm_mon > 12 || t.tm_mday < 1 || t.tm_mday > 31 || t.tm_hour > 23 ||
      t.tm_min > 59 || t.tm_sec > 60) {
    return std::nullopt;
  }
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&t)) * 1000 + ms;
}

int64_t unix_ms(Wall::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// A duration in milliseconds as the log writes it: digits, a point and exactly 3 digits.
bool is_ms(const std::string& text) {
  static const std::regex form(R"(^\d+\.\d{3}$)");
  return std::regex_match(text, form);
}

// A request id bulwark made up: 32 hex digits.
bool is_generated_id(const std::string& id) {
  static const std::regex form("^[0-9a-f]{32}$");
  return std::regex_match(id, form);
}

// ---------------------------------------------------------------------------------------------
// What a line should say

const std::vector<std::string> kJsonKeys = {
    "time",     "request_id", "listener",    "route",       "method",   "path",
    "protocol", "status",     "duration_ms", "upstream_ms", "bytes_in", "bytes_out",
    "cluster",  "upstream",   "tries",       "attempts",    "reason",   "flags"};

std::string q(const std::optional<std::string>& s) { return s ? "\"" + *s + "\"" : "null"; }
std::string list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ",\"" : "\"") + items[i] + "\"";
  return out + "]";
}

struct Expect {
  std::optional<std::string> request_id;
  std::string listener = "inbound";
  std::optional<std::string> route = "api";
  std::optional<std::string> method = "GET";
  std::optional<std::string> path;
  std::string protocol = "HTTP/1.1";
  int status = 200;
  bool upstream_ms = true;  // a number, else null
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  std::optional<std::string> cluster = "app";
  std::optional<std::string> upstream;
  std::vector<std::string> tries;
  uint32_t attempts = 1;
  std::optional<std::string> reason;
  std::string flags = "-";
  // The request was sent after `sent` and its response was read before `received`.
  Wall::time_point sent{}, received{};
};

// Checks every field of a JSON line.
void check_json_line(const LogLine& line, const Expect& e) {
  INFO("access log line: " << line.raw);
  CHECK(line.keys == kJsonKeys);

  auto time = line.string("time");
  REQUIRE_MESSAGE(time, "time is not a string");
  auto time_ms = parse_time_ms(*time);
  REQUIRE_MESSAGE(time_ms, "time is not ISO-8601 UTC with milliseconds");
  if (e.sent != Wall::time_point{}) {
    // The request started between sending it and reading the response (the log keeps whole
    // milliseconds; the slack covers that and clock granularity).
    CHECK(*time_ms >= unix_ms(e.sent) - 100);
    CHECK(*time_ms <= unix_ms(e.received) + 100);
  }

  CHECK(line.get("request_id") == q(e.request_id));
  CHECK(line.get("listener") == q(e.listener));
  CHECK(line.get("route") == q(e.route));
  CHECK(line.get("method") == q(e.method));
  CHECK(line.get("path") == q(e.path));
  CHECK(line.get("protocol") == q(e.protocol));
  CHECK(line.get("status") == std::to_string(e.status));

  auto duration = line.number_text("duration_ms");
  REQUIRE_MESSAGE(duration, "duration_ms is not a number");
  CHECK(is_ms(*duration));
  const double duration_ms = std::strtod(duration->c_str(), nullptr);
  CHECK(duration_ms >= 0);
  if (e.sent != Wall::time_point{}) {
    // A sanity bound (catches microseconds logged as milliseconds); bulwark may note the end of
    // an exchange a little after the client has read it, so not the client's elapsed time.
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(e.received - e.sent);
    CHECK(duration_ms <= static_cast<double>(elapsed.count()) + 1000);
  }
  if (e.upstream_ms) {
    auto upstream = line.number_text("upstream_ms");
    REQUIRE_MESSAGE(upstream, "upstream_ms is not a number");
    CHECK(is_ms(*upstream));
    const double upstream_ms = std::strtod(upstream->c_str(), nullptr);
    CHECK(upstream_ms >= 0);
    CHECK(upstream_ms <= duration_ms);
  } else {
    CHECK(line.get("upstream_ms") == "null");
  }

  CHECK(line.get("bytes_in") == std::to_string(e.bytes_in));
  CHECK(line.get("bytes_out") == std::to_string(e.bytes_out));
  CHECK(line.get("cluster") == q(e.cluster));
  CHECK(line.get("upstream") == q(e.upstream));
  CHECK(line.get("tries") == list(e.tries));
  CHECK(line.get("attempts") == std::to_string(e.attempts));
  CHECK(line.get("reason") == q(e.reason));
  CHECK(line.get("flags") == q(e.flags));
}

// The flags of a line, split at commas.
std::set<std::string> flag_set(const LogLine& line) {
  std::set<std::string> out;
  std::string flags = line.string("flags").value_or("");
  size_t start = 0;
  while (start <= flags.size()) {
    size_t comma = flags.find(',', start);
    if (comma == std::string::npos) comma = flags.size();
    out.insert(flags.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sending requests

// A response with the wall-clock times around it.
struct Exchange {
  std::optional<Response> response;
  Wall::time_point sent, received;

  std::string id() const { return response ? response->get("x-request-id") : ""; }
  uint64_t body_size() const { return response ? response->body.size() : 0; }
};

Exchange get(uint16_t port, const std::string& target, const HeaderList& headers = {}) {
  Exchange x;
  x.sent = Wall::now();
  x.response = http_get(port, target, headers);
  x.received = Wall::now();
  return x;
}

// The expectation of a plain 200 through route "api" to cluster "app" at `endpoint`.
Expect proxied(const Exchange& x, const std::string& path, const std::string& endpoint) {
  Expect e;
  e.request_id = x.id();
  e.path = path;
  e.bytes_out = x.body_size();
  e.upstream = endpoint;
  e.tries = {endpoint + " 200"};
  e.sent = x.sent;
  e.received = x.received;
  return e;
}

// The access_log key for ProxyOptions::top.
std::string access_log_yaml(const std::string& path, const std::string& format = "json",
                            const std::string& sample_percent = "100") {
  return "access_log: {path: " + path + ", format: " + format +
         ", sample_percent: " + sample_percent + "}";
}

std::string local(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("access log: every field of a retried request, a circuit-open reply and a normal one") {
  TempDir dir;
  const std::string log_path = dir.file("access.log");
  TestUpstream good({}, "good");
  TestUpstream failing(
      [](UpstreamConn& conn) {
        while (conn.read_request()) {
          if (!conn.write_response(500, "broken\n")) return;
        }
      },
      "failing");
  RefusingPort refusing;
  const std::string refused = refusing.address();

  // Route "retried" to a pair of endpoints of which one refuses connections (default retry:
  // 2 attempts); route "guarded" without retries to an always-failing endpoint behind a circuit
  // breaker; everything else to the good endpoint.
  const std::string yaml =
      "workers: 2\n"
      "drain_delay: 0s\n"
      "drain_timeout: 5s\n"
      "admin: {address: 127.0.0.1:0}\n" +
      access_log_yaml(log_path) +
      "\n"
      "listeners:\n"
      "  - name: inbound\n"
      "    address: 127.0.0.1:0\n"
      "    routes:\n"
      "      - name: guarded\n"
      "        match: {prefix: /guarded}\n"
      "        cluster: fragile\n"
      "        retry: {attempts: 1}\n"
      "      - name: retried\n"
      "        match: {prefix: /retried}\n"
      "        cluster: pair\n"
      "      - name: api\n"
      "        match: {prefix: /}\n"
      "        cluster: app\n"
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [" +
      good.address() +
      "]\n"
      "  - name: pair\n"
      "    endpoints: [" +
      refused + ", " + good.address() +
      "]\n"
      "  - name: fragile\n"
      "    endpoints: [" +
      failing.address() +
      "]\n"
      "    circuit_breaker: {failure_rate_percent: 50, minimum_calls: 3, window: 30s,\n"
      "                      open_duration: 60s}\n";
  BulwarkProcess bulwark;
  bulwark.start(yaml);
  const uint16_t port = bulwark.port("inbound");
  size_t requests = 0;

  // A normal request with a generated request id, and one with the client's own.
  Exchange normal = get(port, "/normal/items?page=2&sort=asc");
  ++requests;
  REQUIRE(normal.response);
  CHECK(normal.response->status == 200);
  CHECK(is_generated_id(normal.id()));
  Exchange client_id = get(port, "/normal/own-id", {{"X-Request-Id", "client-chosen-id-42"}});
  ++requests;
  REQUIRE(client_id.response);
  CHECK(client_id.response->status == 200);
  CHECK(client_id.id() == "client-chosen-id-42");

  // Round robin sends a first try to the refusing endpoint within a few requests; that request
  // is retried on the good one.
  std::vector<Exchange> first_try_good;
  std::optional<Exchange> retried;
  for (int i = 0; i < 10 && !retried; ++i) {
    Exchange x = get(port, "/retried/" + std::to_string(i));
    ++requests;
    REQUIRE(x.response);
    INFO(describe(x.response));
    CHECK(x.response->status == 200);
    CHECK(x.response->get("x-upstream") == "good");
    if (x.response->get("x-bulwark-attempts") == "2") {
      retried = x;
    } else {
      first_try_good.push_back(x);
    }
  }
  REQUIRE_MESSAGE(retried, "no request went to the refusing endpoint first in 10");

  // Three upstream failures open the circuit; the next request is refused at once.
  std::vector<Exchange> failures;
  for (int i = 0; i < 3; ++i) {
    failures.push_back(get(port, "/guarded/" + std::to_string(i)));
    ++requests;
    REQUIRE(failures.back().response);
    CHECK(failures.back().response->status == 500);
  }
  Exchange open = get(port, "/guarded/open");
  ++requests;
  check_local_reply(open.response, 503, "circuit_open");
  CHECK(failing.requests() == 3);

  auto raw = wait_for_file_lines(log_path, requests);
  INFO("access log:\n" << all_text(raw));
  REQUIRE(raw.size() == requests);
  auto lines = parse_lines(raw);

  SUBCASE("the normal request") {
    check_json_line(line_with_id(lines, normal.id()),
                    proxied(normal, "/normal/items?page=2&sort=asc", good.address()));
    check_json_line(line_with_id(lines, "client-chosen-id-42"),
                    proxied(client_id, "/normal/own-id", good.address()));
  }

  SUBCASE("the retried request") {
    Expect e =
        proxied(*retried, "/retried/" + std::to_string(first_try_good.size()), good.address());
    e.route = "retried";
    e.cluster = "pair";
    e.tries = {refused + " connect-failure", good.address() + " 200"};
    e.attempts = 2;
    check_json_line(line_with_id(lines, retried->id()), e);
    for (size_t i = 0; i < first_try_good.size(); ++i) {
      Expect first = proxied(first_try_good[i], "/retried/" + std::to_string(i), good.address());
      first.route = "retried";
      first.cluster = "pair";
      check_json_line(line_with_id(lines, first_try_good[i].id()), first);
    }
  }

  SUBCASE("the failures that opened the circuit and the circuit-open reply") {
    for (size_t i = 0; i < failures.size(); ++i) {
      Expect e = proxied(failures[i], "/guarded/" + std::to_string(i), failing.address());
      e.route = "guarded";
      e.cluster = "fragile";
      e.tries = {failing.address() + " 500"};
      e.status = 500;
      check_json_line(line_with_id(lines, failures[i].id()), e);
    }
    Expect e;
    e.request_id = open.id();
    e.route = "guarded";
    e.path = "/guarded/open";
    e.status = 503;
    e.upstream_ms = false;
    e.bytes_out = open.body_size();  // the local reply's body
    e.cluster = "fragile";
    e.upstream = std::nullopt;
    e.tries = {};
    e.attempts = 0;
    e.reason = "circuit_open";
    e.flags = "UO";
    e.sent = open.sent;
    e.received = open.received;
    check_json_line(line_with_id(lines, open.id()), e);
  }
  check_lines_after_exit(bulwark, log_path, requests);
}

TEST_CASE("access log: the text format line of a normal request") {
  TempDir dir;
  const std::string log_path = dir.file("access.log");
  ProxyOptions options;
  options.top = access_log_yaml(log_path, "text");
  ProxyFixture proxy({}, options);

  Exchange x = get(proxy.port(), "/text/path?q=1&r=two", {{"X-Request-Id", "text-id-1"}});
  REQUIRE(x.response);
  CHECK(x.response->status == 200);
  auto lines = wait_for_file_lines(log_path, 1);
  REQUIRE(lines.size() == 1);
  INFO("access log line: " << lines[0]);

  const std::string ep = proxy.upstream.address();
  static const std::regex shape(
      R"(^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z) "GET /text/path\?q=1&r=two HTTP/1\.1" 200 )"
      R"(flags=- reason=- duration_ms=(\d+\.\d{3}) upstream_ms=(\d+\.\d{3}) bytes_in=0 )"
      R"(bytes_out=(\d+) listener=inbound route=api cluster=app upstream=([0-9.:]+) attempts=1 )"
      R"(tries="([0-9.:]+) 200" request_id="text-id-1"$)");
  std::smatch m;
  REQUIRE(std::regex_match(lines[0], m, shape));
  auto time_ms = parse_time_ms(m[1]);
  REQUIRE(time_ms);
  CHECK(*time_ms >= unix_ms(x.sent) - 100);
  CHECK(*time_ms <= unix_ms(x.received) + 100);
  CHECK(std::strtod(m[3].str().c_str(), nullptr) <= std::strtod(m[2].str().c_str(), nullptr));
  CHECK(m[4] == std::to_string(x.body_size()));
  CHECK(m[5] == ep);
  CHECK(m[6] == ep);
  check_lines_after_exit(proxy.bulwark, log_path, 1);
}

TEST_CASE("access log: bytes_in and bytes_out count the request and response bodies") {
  TempDir dir;
  const std::string log_path = dir.file("access.log");
  ProxyOptions options;
  options.top = access_log_yaml(log_path);
  // Answers with the request body twice and a line about it.
  ProxyFixture proxy(
      [](UpstreamConn& conn) {
        while (auto request = conn.read_request()) {
          std::string body = request->body + request->body + "received " +
                             std::to_string(request->body.size()) + "\n";
          if (!conn.write_response(200, body)) return;
        }
      },
      options);

  const std::string body = pattern_string(0, 12345);
  std::string raw;
  std::string protocol = "HTTP/1.1";
  SUBCASE("Content-Length") {
    raw = make_request("POST", "/upload?kind=cl", {{"X-Request-Id", "body-1"}}, body);
  }
  SUBCASE("chunked") {
    raw = make_request("POST", "/upload?kind=cl",
                       {{"X-Request-Id", "body-1"}, {"Transfer-Encoding", "chunked"}},
                       chunk(body.substr(0, 5000)) + chunk(body.substr(5000)) + chunk(""));
  }
  SUBCASE("HTTP/1.0") {
    protocol = "HTTP/1.0";
    raw =
        "POST /upload?kind=cl HTTP/1.0\r\nHost: localhost\r\nX-Request-Id: body-1\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
  }
  CAPTURE(protocol);

  Exchange x;
  x.sent = Wall::now();
  ClientConn client(proxy.port());
  REQUIRE(client.send(raw));
  x.response = client.read_response();
  x.received = Wall::now();
  REQUIRE(x.response);
  INFO(describe(x.response));
  CHECK(x.response->status == 200);
  CHECK(x.response->body.size() == 2 * body.size() + std::string("received 12345\n").size());

  auto lines = parse_lines(wait_for_file_lines(log_path, 1));
  REQUIRE(lines.size() == 1);
  Expect e = proxied(x, "/upload?kind=cl", proxy.upstream.address());
  e.method = "POST";
  e.protocol = protocol;
  e.bytes_in = body.size();
  e.bytes_out = x.response->body.size();
  check_json_line(lines[0], e);
  check_lines_after_exit(proxy.bulwark, log_path, 1);
}

TEST_CASE("access log: local replies before and at routing get one line each with their flag") {
  TempDir dir;
  const std::string log_path = dir.file("access.log");
  ProxyOptions options;
  options.top = access_log_yaml(log_path);
  options.match = "{prefix: /api}";
  options.route = "rate_limit: {requests_per_second: 1, burst: 1}";
  ProxyFixture proxy({}, options);

  Expect e;  // a local reply: no upstream, no try
  e.upstream_ms = false;
  e.upstream = std::nullopt;
  e.attempts = 0;

  SUBCASE("no route: 404 NR") {
    Exchange x = get(proxy.port(), "/nowhere?x=1");
    check_local_reply(x.response, 404, "no_route");
    auto lines = parse_lines(wait_for_file_lines(log_path, 1));
    REQUIRE(lines.size() == 1);
    e.request_id = x.id();
    e.route = std::nullopt;
    e.path = "/nowhere?x=1";
    e.status = 404;
    e.bytes_out = x.body_size();
    e.cluster = std::nullopt;
    e.reason = "no_route";
    e.flags = "NR";
    e.sent = x.sent;
    e.received = x.received;
    check_json_line(lines[0], e);
    check_lines_after_exit(proxy.bulwark, log_path, 1);
  }

  // A head that cannot be parsed: no method, no path, no route.
  auto expect_malformed = [&](const Exchange& x) {
    // It has no x-request-id of its own: a generated one, on the reply and on the line.
    CHECK(is_generated_id(x.id()));
    e.request_id = x.id();
    e.route = std::nullopt;
    e.method = std::nullopt;
    e.path = std::nullopt;
    e.status = 400;
    e.bytes_out = x.body_size();
    e.cluster = std::nullopt;
    e.reason = "bad_request";
    e.flags = "DPE";
    e.sent = x.sent;
    e.received = x.received;
  };
  const std::string malformed = "GET /api/x HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n";

  SUBCASE("a malformed request on a new connection: 400 DPE") {
    Exchange x;
    x.sent = Wall::now();
    ClientConn client(proxy.port());
    REQUIRE(client.send(malformed));
    x.response = client.read_response();
    x.received = Wall::now();
    check_local_reply(x.response, 400, "bad_request");
    auto lines = parse_lines(wait_for_file_lines(log_path, 1));
    REQUIRE(lines.size() == 1);
    expect_malformed(x);
    check_json_line(lines[0], e);
    check_lines_after_exit(proxy.bulwark, log_path, 1);
  }

  SUBCASE("a malformed request after a good one on the same connection: 400 DPE") {
    ClientConn client(proxy.port());
    REQUIRE(client.send(make_request("GET", "/api/first", {{"X-Request-Id", "the-good-one"}})));
    auto first = client.read_response();
    REQUIRE(first);
    CHECK(first->status == 200);
    Exchange x;
    x.sent = Wall::now();
    REQUIRE(client.send(malformed));
    x.response = client.read_response();
    x.received = Wall::now();
    check_local_reply(x.response, 400, "bad_request");
    // The reply and its line are not the previous request's.
    CHECK(x.response->get("x-request-id") != "the-good-one");
    auto lines = parse_lines(wait_for_file_lines(log_path, 2));
    REQUIRE(lines.size() == 2);
    const LogLine* bad = nullptr;
    for (const LogLine& line : lines) {
      if (line.get("status") == "400") bad = &line;
    }
    REQUIRE(bad != nullptr);
    expect_malformed(x);
    CHECK(bad->get("request_id") != "\"the-good-one\"");
    check_json_line(*bad, e);
    check_lines_after_exit(proxy.bulwark, log_path, 2);
  }

  SUBCASE("rate limited: 429 RL") {
    // One token a second, burst 1: a request right after another is refused.
    std::optional<Exchange> limited;
    size_t sent = 0;
    for (int i = 0; i < 20 && !limited; ++i) {
      Exchange x = get(proxy.port(), "/api/limited/" + std::to_string(i));
      ++sent;
      REQUIRE(x.response);
      if (x.response->status != 200) {
        check_local_reply(x.response, 429, "rate_limited");
        limited = x;
      }
    }
    REQUIRE(limited);
    auto lines = parse_lines(wait_for_file_lines(log_path, sent));
    REQUIRE(lines.size() == sent);
    e.request_id = limited->id();
    e.path = "/api/limited/" + std::to_string(sent - 1);
    e.status = 429;
    e.bytes_out = limited->body_size();
    e.reason = "rate_limited";
    e.flags = "RL";
    e.sent = limited->sent;
    e.received = limited->received;
    check_json_line(line_with_id(lines, limited->id()), e);
    check_lines_after_exit(proxy.bulwark, log_path, sent);
  }
}

TEST_CASE("access log: retries used up show every try and the flag URX") {
  TempDir dir;
  const std::string log_path = dir.file("access.log");
  SUBCASE("both endpoints refuse connections: UF and URX") {
    RefusingPort refusing_a, refusing_b;
    const uint16_t a = refusing_a.port(), b = refusing_b.port();
    ProxyOptions options;
    options.top = access_log_yaml(log_path);
    options.route = "retry: {attempts: 2}";
    BulwarkProcess bulwark;
    bulwark.start(proxy_config(local(a) + ", " + local(b), options));
    Exchange x = get(bulwark.port("inbound"), "/down");
    check_local_reply(x.response, 503, "upstream_connect_failure");
    CHECK(x.response->get("x-bulwark-attempts") == "2");

    auto lines = parse_lines(wait_for_file_lines(log_path, 1));
    REQUIRE(lines.size() == 1);
    const LogLine& line = lines[0];
    auto tries = line.array("tries");
    INFO("access log line: " << line.raw);
    REQUIRE(tries.size() == 2);
    // The retry went to the other endpoint; which one was first is round robin's choice.
    const std::string first = tries[0].substr(0, tries[0].find(' '));
    const std::string second = first == local(a) ? local(b) : local(a);
    CHECK((first == local(a) || first == local(b)));
    CHECK(flag_set(line) == std::set<std::string>{"UF", "URX"});
    Expect e;
    e.request_id = x.id();
    e.path = "/down";
    e.status = 503;
    e.upstream_ms = false;
    e.bytes_out = x.body_size();
    e.upstream = second;
    e.tries = {first + " connect-failure", second + " connect-failure"};
    e.attempts = 2;
    e.reason = "upstream_connect_failure";
    e.flags = "UF,URX";
    e.sent = x.sent;
    e.received = x.received;
    check_json_line(line, e);
    check_lines_after_exit(bulwark, log_path, 1);
  }

  SUBCASE("both endpoints answer 503: URX on the upstream's own 503") {
    auto answer_503 = [](UpstreamConn& conn) {
      while (conn.read_request()) {
        if (!conn.write_response(503, "busy\n")) return;
      }
    };
    TestUpstream one(answer_503, "one"), two(answer_503, "two");
    ProxyOptions options;
    options.top = access_log_yaml(log_path);
    options.route = "retry: {attempts: 2, retry_on: [gateway-error]}";
    BulwarkProcess bulwark;
    bulwark.start(proxy_config(one.address() + ", " + two.address(), options));
    Exchange x = get(bulwark.port("inbound"), "/busy");
    REQUIRE(x.response);
    INFO(describe(x.response));
    CHECK(x.response->status == 503);
    CHECK(x.response->body == "busy\n");
    CHECK(x.response->get("x-bulwark-attempts") == "2");

    auto lines = parse_lines(wait_for_file_lines(log_path, 1));
    REQUIRE(lines.size() == 1);
    const LogLine& line = lines[0];
    auto tries = line.array("tries");
    INFO("access log line: " << line.raw);
    REQUIRE(tries.size() == 2);
    const std::string first = tries[0].substr(0, tries[0].find(' '));
    const std::string second = first == one.address() ? two.address() : one.address();
    Expect e = proxied(x, "/busy", second);
    e.status = 503;
    e.tries = {first + " 503", second + " 503"};
    e.attempts = 2;
    e.flags = "URX";
    check_json_line(line, e);
    check_lines_after_exit(bulwark, log_path, 1);
  }

  SUBCASE("the retry budget refuses the retry: URX after one try") {
    TestUpstream busy(
        [](UpstreamConn& conn) {
          while (conn.read_request()) {
            if (!conn.write_response(503, "busy\n")) return;
          }
        },
        "busy");
    ProxyOptions options;
    options.top = access_log_yaml(log_path);
    options.route =
        "retry: {attempts: 3, retry_on: [gateway-error],\n"
        "        budget: {ratio: 0, min_retries_per_second: 0}}";
    BulwarkProcess bulwark;
    bulwark.start(proxy_config(busy.address(), options));
    Exchange x = get(bulwark.port("inbound"), "/no-budget");
    REQUIRE(x.response);
    INFO(describe(x.response));
    CHECK(x.response->status == 503);
    CHECK(x.response->body == "busy\n");
    CHECK_FALSE(x.response->has("x-bulwark-attempts"));
    CHECK(busy.requests() == 1);

    auto lines = parse_lines(wait_for_file_lines(log_path, 1));
    REQUIRE(lines.size() == 1);
    Expect e = proxied(x, "/no-budget", busy.address());
    e.status = 503;
    e.tries = {busy.address() + " 503"};
    e.attempts = 1;
    e.flags = "URX";
    check_json_line(lines[0], e);
    check_lines_after_exit(bulwark, log_path, 1);
  }
}

TEST_CASE("access log: a client that goes away before its response gets a line with DC") {
  TempDir dir;
  const std::string log_path = dir.file("access.log");
  bool head_first = false;
  SUBCASE("while the upstream holds the response: status 0") { head_first = false; }
  SUBCASE("after the response head and part of the body") { head_first = true; }
  CAPTURE(head_first);
  Event upstream_closed;
  ProxyOptions options;
  options.top = access_log_yaml(log_path);
  ProxyFixture proxy(
      [&upstream_closed, head_first](UpstreamConn& conn) {
        if (!conn.read_request()) return;
        if (head_first &&
            !conn.write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")) {
          return;
        }
        if (conn.wait_peer_close(Millis{10000})) upstream_closed.set();
      },
      options);

  auto sent = Wall::now();
  ClientConn client(proxy.port());
  REQUIRE(client.send(make_request("GET", "/slow", {{"X-Request-Id", "gone-away"}})));
  REQUIRE(proxy.upstream.wait_for_requests(1));
  if (head_first) {
    auto head = client.read_response_head();
    REQUIRE(head);
    CHECK(head->status == 200);
    CHECK(client.read_exact(10) == "0123456789");
  }
  client.close(true);  // a reset: a half-close after a complete request would still be answered
  CHECK(upstream_closed.wait());

  auto raw = wait_for_file_lines(log_path, 1);
  auto received = Wall::now();
  auto lines = parse_lines(raw);
  REQUIRE(lines.size() == 1);
  const LogLine& line = lines[0];
  INFO("access log line: " << line.raw);
  CHECK(flag_set(line).count("DC") == 1);
  auto tries = line.array("tries");
  REQUIRE(tries.size() == 1);
  CHECK(tries[0].rfind(proxy.upstream.address() + " ", 0) == 0);

  Expect e;
  e.request_id = "gone-away";
  e.path = "/slow";
  e.status = head_first ? 200 : 0;
  e.upstream_ms = head_first;
  e.bytes_out = head_first ? 10 : 0;
  e.upstream = proxy.upstream.address();
  e.tries = tries;  // the outcome of a try cut short is not specified
  e.flags = "DC";
  e.sent = sent;
  e.received = received;
  check_json_line(line, e);
  check_lines_after_exit(proxy.bulwark, log_path, 1);
}

TEST_CASE("access log: sample_percent 0 writes nothing and 50 about half") {
  TempDir dir;
  const std::string log_path = dir.file("access.log");
  std::string percent;
  size_t requests = 0;
  SUBCASE("0") {
    percent = "0";
    requests = 30;
  }
  SUBCASE("50") {
    percent = "50";
    requests = 400;
  }
  CAPTURE(percent);
  ProxyOptions options;
  options.top = access_log_yaml(log_path, "json", percent);
  ProxyFixture proxy({}, options);

  // Keep-alive connections, most likely spread over both workers.
  std::vector<ClientConn> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back(proxy.port());
    REQUIRE(clients.back().connected());
  }
  for (size_t i = 0; i < requests; ++i) {
    ClientConn& client = clients[i % clients.size()];
    REQUIRE(client.send(make_request("GET", "/sampled/" + std::to_string(i))));
    auto response = client.read_response();
    REQUIRE(response);
    REQUIRE(response->status == 200);
  }
  clients.clear();
  // Everything handed over is written by the time bulwark has exited.
  REQUIRE(proxy.bulwark.signal(SIGTERM));
  REQUIRE(proxy.bulwark.wait_exit() == 0);

  struct stat st {};
  REQUIRE(::stat(log_path.c_str(), &st) == 0);  // created at start even when nothing is logged
  auto raw = file_lines(log_path);
  if (percent == "0") {
    CHECK(st.st_size == 0);
    CHECK(raw.empty());
  } else {
    INFO("lines: " << raw.size());
    CHECK(raw.size() >= 120);
    CHECK(raw.size() <= 280);
    auto lines = parse_lines(raw);
    std::set<std::string> paths, ids;
    for (const LogLine& line : lines) {
      CHECK(line.get("status") == "200");
      paths.insert(line.string("path").value_or(""));
      ids.insert(line.string("request_id").value_or(""));
    }
    CHECK(paths.size() == lines.size());  // each logged request once
    CHECK(ids.size() == lines.size());
    for (const std::string& path : paths) CHECK(path.rfind("/sampled/", 0) == 0);
  }
}

TEST_CASE("access log: SIGUSR1 reopens the file for log rotation") {
  TempDir dir;
  const std::string log_path = dir.file("access.log");
  const std::string rotated = dir.file("access.log.1");
  ProxyOptions options;
  options.top = access_log_yaml(log_path);
  ProxyFixture proxy({}, options);

  std::set<std::string> before_ids, after_ids;
  for (int i = 0; i < 3; ++i) {
    Exchange x = get(proxy.port(), "/before/" + std::to_string(i));
    REQUIRE(x.response);
    CHECK(x.response->status == 200);
    before_ids.insert(x.id());
  }
  REQUIRE(wait_for_file_lines(log_path, 3).size() == 3);

  // What logrotate does: rename, then signal.
  REQUIRE(std::rename(log_path.c_str(), rotated.c_str()) == 0);
  REQUIRE(proxy.bulwark.signal(SIGUSR1));
  REQUIRE(wait_for_log_lines(proxy.bulwark, {"access log reopened", log_path}));
  CHECK(proxy.bulwark.process().running());

  for (int i = 0; i < 2; ++i) {
    Exchange x = get(proxy.port(), "/after/" + std::to_string(i));
    REQUIRE(x.response);
    CHECK(x.response->status == 200);
    after_ids.insert(x.id());
  }
  auto fresh = parse_lines(wait_for_file_lines(log_path, 2));
  REQUIRE(fresh.size() == 2);
  for (const LogLine& line : fresh) {
    CHECK(after_ids.count(line.string("request_id").value_or("")) == 1);
    CHECK(line.string("path").value_or("").rfind("/after/", 0) == 0);
  }
  auto old = parse_lines(file_lines(rotated));
  REQUIRE(old.size() == 3);
  for (const LogLine& line : old) {
    CHECK(before_ids.count(line.string("request_id").value_or("")) == 1);
  }

  // The new file is created 0644 (less what the umask takes away).
  mode_t mask = ::umask(0);
  ::umask(mask);
  struct stat st {};
  REQUIRE(::stat(log_path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == (0644 & ~mask));

  // After shutdown neither file has gained a line.
  REQUIRE(proxy.bulwark.signal(SIGTERM));
  REQUIRE(proxy.bulwark.wait_exit() == 0);
  CHECK(file_lines(log_path).size() == 2);
  CHECK(file_lines(rotated).size() == 3);
}

TEST_CASE("access log: a path that cannot be opened makes bulwark exit 1 at start") {
  TempDir dir;
  const std::string log_path = dir.file("no-such-dir/access.log");
  ProxyOptions options;
  options.top = access_log_yaml(log_path);
  TestUpstream upstream;
  BulwarkProcess bulwark;
  CHECK_THROWS(bulwark.start(proxy_config(upstream.address(), options)));
  CHECK(bulwark.wait_exit() == 1);
  INFO(bulwark.logs_text());
  CHECK(wait_for_log_lines(bulwark, {"\"level\":\"error\"", "cannot open the access log",
                                     "\"path\":\"" + log_path + "\""}));
  CHECK_FALSE(wait_for_log_lines(bulwark, {"\"msg\":\"started\""}, 1, Millis{0}));
}

TEST_CASE("access log: no line is lost when bulwark shuts down") {
  TempDir dir;
  const std::string log_path = dir.file("access.log");
  ProxyOptions options;
  options.top = access_log_yaml(log_path);
  ProxyFixture proxy({}, options);

  constexpr size_t kRequests = 60;
  std::set<std::string> ids;
  {
    std::vector<ClientConn> clients;
    for (int i = 0; i < 6; ++i) {
      clients.emplace_back(proxy.port());
      REQUIRE(clients.back().connected());
    }
    for (size_t i = 0; i < kRequests; ++i) {
      ClientConn& client = clients[i % clients.size()];
      REQUIRE(client.send(make_request("GET", "/last/" + std::to_string(i))));
      auto response = client.read_response();
      REQUIRE(response);
      REQUIRE(response->status == 200);
      ids.insert(response->get("x-request-id"));
    }
  }
  // At once: most lines are still in the workers' buffers.
  REQUIRE(proxy.bulwark.signal(SIGTERM));
  REQUIRE(proxy.bulwark.wait_exit() == 0);
  auto raw = file_lines(log_path);
  INFO("access log:\n" << all_text(raw));
  CHECK(raw.size() == kRequests);
  std::set<std::string> logged;
  for (const LogLine& line : parse_lines(raw))
    logged.insert(line.string("request_id").value_or(""));
  CHECK(logged == ids);
}

TEST_CASE("access log: the default path is bulwark's standard output") {
  ProxyOptions options;
  options.top = "access_log: {format: json}";
  ProxyFixture proxy({}, options);
  Exchange x = get(proxy.port(), "/to-stdout");
  REQUIRE(x.response);
  CHECK(x.response->status == 200);
  auto line = proxy.bulwark.process().wait_for_line(Subprocess::Stream::kStdout,
                                                    "\"request_id\":\"" + x.id() + "\"");
  REQUIRE_MESSAGE(line, "stdout:\n" << proxy.bulwark.stdout_text());
  auto lines = parse_lines({*line});
  check_json_line(lines[0], proxied(x, "/to-stdout", proxy.upstream.address()));
}

namespace {

// bulwark's standard output as the far end of a Unix stream socket the test reads, as under
// journald or a container runtime that hands the process a socket. A wrapper script, the stand-in
// binary for BulwarkProcess, points its fd 1 at the descriptor this process passes down.
class StdoutSocket {
 public:
  StdoutSocket() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    ours_ = fds[0];
    theirs_ = fds[1];  // inherited by the child: no FD_CLOEXEC
    REQUIRE(::fcntl(ours_, F_SETFD, FD_CLOEXEC) == 0);
  }
  ~StdoutSocket() {
    ::close(ours_);
    if (theirs_ >= 0) ::close(theirs_);
  }
  StdoutSocket(const StdoutSocket&) = delete;
  StdoutSocket& operator=(const StdoutSocket&) = delete;

  std::string wrapper(const TempDir& dir) const {
    const std::string path = dir.file("stdout-to-socket.sh");
    write_file(path, std::string("#!/bin/sh\nexec ") + BULWARK_BINARY + " \"$@\" >&" +
                         std::to_string(theirs_) + "\n");
    REQUIRE(::chmod(path.c_str(), 0755) == 0);
    return path;
  }
  // Once the child runs: its copy is the only one left, so its exit ends the stream.
  void started() {
    ::close(theirs_);
    theirs_ = -1;
  }
  // The first line containing `needle` read within `timeout`, or nullopt.
  std::optional<std::string> wait_for_line(std::string_view needle,
                                           Millis timeout = kDefaultTimeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      size_t newline;
      while ((newline = buffer_.find('\n')) != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        if (line.find(needle) != std::string::npos) return line;
      }
      const auto left =
          std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      pollfd p{ours_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1)
        return std::nullopt;
      char chunk[4096];
      const ssize_t n = ::recv(ours_, chunk, sizeof chunk, 0);
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  int ours_ = -1, theirs_ = -1;
  std::string buffer_;
};

}  // namespace

TEST_CASE("access log: /dev/stdout and - write to standard output when it is a socket") {
  std::string path;
  SUBCASE("/dev/stdout") { path = "/dev/stdout"; }
  SUBCASE("- (quoted in YAML)") { path = "\"-\""; }
  CAPTURE(path);
  TempDir dir;
  StdoutSocket out;
  ProxyOptions options;
  options.top = "access_log: {path: " + path + "}";
  TestUpstream upstream;
  BulwarkProcess bulwark(out.wrapper(dir));
  bulwark.start(proxy_config(upstream.address(), options));
  out.started();

  Exchange x = get(bulwark.port("inbound"), "/to-socket");
  REQUIRE(x.response);
  CHECK(x.response->status == 200);
  auto line = out.wait_for_line("\"request_id\":\"" + x.id() + "\"");
  REQUIRE_MESSAGE(line, "stderr:\n" << bulwark.logs_text());
  check_json_line(parse_lines({*line})[0], proxied(x, "/to-socket", upstream.address()));

  // Log rotation leaves standard output alone: lines keep coming on the same socket.
  REQUIRE(bulwark.signal(SIGUSR1));
  Exchange after = get(bulwark.port("inbound"), "/after-usr1");
  REQUIRE(after.response);
  CHECK(out.wait_for_line("\"request_id\":\"" + after.id() + "\""));
  REQUIRE(bulwark.signal(SIGTERM));
  CHECK(bulwark.wait_exit() == 0);
  INFO(bulwark.logs_text());
  CHECK_FALSE(wait_for_log_lines(bulwark, {"reopen"}, 1, Millis{0}));
}

TEST_CASE("access log: /dev/stderr writes to standard error, next to the logs") {
  ProxyOptions options;
  options.top = "access_log: {path: /dev/stderr, format: text}";
  ProxyFixture proxy({}, options);
  Exchange x = get(proxy.port(), "/to-stderr");
  REQUIRE(x.response);
  CHECK(x.response->status == 200);
  CHECK(wait_for_log_lines(proxy.bulwark, {"\"GET /to-stderr HTTP/1.1\" 200", x.id()}));
}

TEST_CASE("--check opens the access log as bulwark would, and says where the path is") {
  TempDir dir;
  // proxy_config() puts the top-level keys on line 5: "access_log: {path: " is 19 columns.
  auto check = [](const std::string& path) {
    ProxyOptions options;
    options.top = "access_log: {path: " + path + "}";
    return run_check(proxy_config("127.0.0.1:9000", options));
  };
  SUBCASE("a directory that does not exist") {
    const std::string path = dir.file("no-such-dir/access.log");
    CheckResult result = check(path);
    INFO(result.out << result.err);
    CHECK(result.exit_code == 1);
    CHECK(result.out.find(result.config_path + ":5:20: access_log.path: cannot open " + path +
                          " for appending: No such file or directory") != std::string::npos);
  }
  SUBCASE("a path that is a directory") {
    CheckResult result = check(dir.path());
    INFO(result.out << result.err);
    CHECK(result.exit_code == 1);
    CHECK(result.out.find(result.config_path + ":5:20: access_log.path: cannot open " + dir.path() +
                          " for appending: Is a directory") != std::string::npos);
  }
  SUBCASE("a new file: fine, and not left behind") {
    const std::string path = dir.file("access.log");
    CheckResult result = check(path);
    INFO(result.out << result.err);
    CHECK(result.exit_code == 0);
    CHECK(::access(path.c_str(), F_OK) != 0);
  }
  SUBCASE("an existing file: fine, and not truncated") {
    const std::string path = dir.file("access.log");
    write_file(path, "an earlier line\n");
    CheckResult result = check(path);
    INFO(result.out << result.err);
    CHECK(result.exit_code == 0);
    CHECK(read_file(path) == "an earlier line\n");
  }
  SUBCASE("standard output and standard error are not opened") {
    for (const std::string path : {"/dev/stdout", "\"-\"", "/dev/stderr"}) {
      CAPTURE(path);
      CheckResult result = check(path);
      INFO(result.out << result.err);
      CHECK(result.exit_code == 0);
    }
  }
}
