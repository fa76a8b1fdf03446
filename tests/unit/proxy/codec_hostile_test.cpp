// The codec against hostile and odd messages: every vector of issue 12 that the codec decides,
// with its exact bytes. Each is fed whole, split at every byte and one byte at a time; all three
// must end the same way.

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

#include "proxy/codec.h"
#include "tests/unit/proxy/http_test_util.h"

namespace bulwark::http {
namespace {

using test::Recorder;
using Status = Parser::Status;

struct Outcome {
  Status status = Status::kOk;
  ParseError code = ParseError::kNone;
  std::vector<test::RecordedMessage> messages;
};

// Feeds the pieces into one growing buffer, resuming after each pause, until all is parsed or
// the parser stops with an error.
Outcome run(Parser::Type type, const std::vector<std::string>& pieces, size_t max_headers = 100) {
  Recorder r;
  Parser p(type, &r);
  p.set_max_headers(max_headers);
  std::string buffer;
  size_t parsed = 0;
  Outcome out;
  for (const std::string& piece : pieces) {
    buffer.append(piece);
    while (parsed < buffer.size()) {
      Parser::Result res = p.execute(buffer.data(), parsed, buffer.size());
      parsed += res.consumed;
      if (res.status == Status::kPaused) {
        p.resume();
        continue;
      }
      if (res.status == Status::kOk) break;
      out.status = res.status;
      out.code = res.code;
      out.messages = r.messages;
      return out;
    }
  }
  out.messages = r.messages;
  return out;
}

// Runs `text` whole, split at every byte and bytewise; checks the three agree and returns one.
Outcome parse(Parser::Type type, std::string_view text, size_t max_headers = 100) {
  Outcome whole = run(type, test::whole(text), max_headers);
  auto same = [&](const Outcome& o, const std::string& how) {
    INFO(how);
    CHECK(o.status == whole.status);
    CHECK(o.code == whole.code);
    REQUIRE(o.messages.size() == whole.messages.size());
    for (size_t i = 0; i < o.messages.size(); ++i)
      CHECK(o.messages[i].describe() == whole.messages[i].describe());
  };
  if (text.size() < 400) {
    for (size_t i = 1; i < text.size(); ++i)
      same(run(type, test::split_at(text, i), max_headers), "split at " + std::to_string(i));
  }
  same(run(type, test::bytewise(text), max_headers), "bytewise");
  return whole;
}

Outcome request(std::string_view text) { return parse(Parser::Type::kRequest, text); }
Outcome response(std::string_view text) { return parse(Parser::Type::kResponse, text); }

// A refused message: the error, and no message reported complete.
void check_refused(const Outcome& o, ParseError code) {
  CHECK(o.status == Status::kError);
  CHECK(o.code == code);
  for (const auto& m : o.messages) CHECK_FALSE(m.complete);
}

TEST_CASE("codec hostile: a Connection token cannot remove Content-Length or Host (smuggling)") {
  // Issue 12 item 2, the exact bytes: the body is the 34 bytes of what looks like a request.
  Outcome o = request(
      "POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 34\r\n\r\n"
      "GET /smuggled1 HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(o.status == Status::kOk);
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].has_content_length);
  CHECK(o.messages[0].content_length == 34);
  // The 34 body bytes stop short of the last CRLF, which reads as an empty line between requests.
  CHECK(o.messages[0].body == "GET /smuggled1 HTTP/1.1\r\nHost: a\r\n");
  CHECK(o.messages[0].complete);

  test::ParsedHead h(Parser::Type::kRequest,
                     "GET / HTTP/1.1\r\nHost: a\r\nConnection: host, content-length, x-a\r\n"
                     "X-A: 1\r\nContent-Length: 0\r\n\r\n");
  REQUIRE(h.have_head);
  CHECK(h.head.find("host")->kind == HeaderKind::kHost);
  CHECK(h.head.find("content-length")->kind == HeaderKind::kContentLength);
  CHECK(h.head.find("x-a")->kind == HeaderKind::kListedInConnection);
}

TEST_CASE("codec hostile: header count is limited, and grown storage is given back") {
  std::string head = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 1; i < 100; ++i) head += "X-" + std::to_string(i) + ": v\r\n";
  Outcome ok = run(Parser::Type::kRequest, test::whole(head + "\r\n"));  // exactly 100
  CHECK(ok.status == Status::kOk);
  REQUIRE(ok.messages.size() == 1);
  CHECK(ok.messages[0].headers.size() == 100);
  Outcome over = run(Parser::Type::kRequest, test::whole(head + "X-100: v\r\n\r\n"));
  check_refused(over, ParseError::kTooManyHeaders);
  Outcome small =
      run(Parser::Type::kRequest, test::whole("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\n\r\n"), 1);
  check_refused(small, ParseError::kTooManyHeaders);
  Outcome resp =
      run(Parser::Type::kResponse,
          test::whole("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n"), 2);
  check_refused(resp, ParseError::kTooManyHeaders);

  // A connection that once carried 100 headers keeps no more than a small vector once idle.
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string text = head + "\r\n";
  REQUIRE(p.execute(text.data(), 0, text.size()).status == Status::kPaused);
  p.resume();
  p.trim();
  std::string next = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  REQUIRE(p.execute(next.data(), 0, next.size()).status == Status::kPaused);
  CHECK(r.messages.size() == 2);
}

TEST_CASE("codec hostile: Host rules (RFC 9112 3.2)") {
  check_refused(request("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nX: y\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n"), ParseError::kMalformed);
  // bulwark forwards HTTP/1.1, so an HTTP/1.0 request needs a Host too.
  check_refused(request("GET / HTTP/1.0\r\n\r\n"), ParseError::kMalformed);
  // IPv6 literals, ports, an empty value and long names are fine, and kept whole.
  CHECK(request("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").status == Status::kOk);
  CHECK(request("GET / HTTP/1.1\r\nHost: a.b-c_d~e:\r\n\r\n").status == Status::kOk);
  CHECK(request("GET / HTTP/1.1\r\nHost:\r\n\r\n").status == Status::kOk);
  std::string long_host(300, 'a');
  Outcome o = request("GET / HTTP/1.1\r\nHost: " + long_host + ".example\r\n\r\n");
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].headers[0].second == long_host + ".example");
}

TEST_CASE("codec hostile: a bare CR is never a line ending (llhttp 8.1 loose mode split on it)") {
  // Issue 12 item 10, each exact vector.
  check_refused(request("GET / HTTP/1.1\r\nHost: a\r\n\rZGET /evil: HTTP/1.1\r\nHost: a\r\n\r\n"),
                ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nHost: a\r\nx:\rXTransfer-Encoding: chunked\r\n\r\n"),
                ParseError::kMalformed);
  check_refused(request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\rZhello\rZ0\rZ\rZ"),
                ParseError::kMalformed);
  check_refused(request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "2\r\r;a\r\nab\r\n0\r\n\r\n"),
                ParseError::kMalformed);
  check_refused(request("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\rHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), ParseError::kMalformed);
  // A trailer line, and the line after the last chunk.
  check_refused(request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "0\r\nX: a\rb\r\n\r\n"),
                ParseError::kMalformed);
  check_refused(request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "0\r\n\rX"),
                ParseError::kMalformed);
  check_refused(response("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\rX"), ParseError::kMalformed);
  check_refused(response("HTTP/1.1 200 OK\rX: y\r\nContent-Length: 0\r\n\r\n"),
                ParseError::kMalformed);
  check_refused(
      response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\rXab\r\n0\r\n\r\n"),
      ParseError::kMalformed);
}

TEST_CASE("codec hostile: bare LF in chunk lines is refused, in a request line too") {
  check_refused(request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\nhello\n0\n\n"),
                ParseError::kMalformed);
  check_refused(request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\r\nhello\n0\r\n\r\n"),
                ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\nHost: a\r\n\r\n"), ParseError::kMalformed);
}

TEST_CASE("codec hostile: ambiguities both peers refuse are refused") {
  // Issue 12 item 11.
  check_refused(request("GET /a\tHTTP/1.1 HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET /#frag HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(
      request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\nContent-Length: 3\r\n\r\nabc"),
      ParseError::kMalformed);
  check_refused(request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n"),
                ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\n: x\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.1\r\n:\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / RTSP/1.0\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / ICE/1.0\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET /\r\n\r\n"), ParseError::kMalformed);  // HTTP/0.9
  check_refused(request("GET / HTTP/0.9\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / http/1.1\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("G@T / HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), ParseError::kMalformed);
  check_refused(request("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), ParseError::kVersionNotSupported);
  check_refused(request("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), ParseError::kVersionNotSupported);
  // HTTP/1.0 with chunked framing is read, and the connection closes after it.
  Outcome o = request(
      "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
      "3\r\nabc\r\n0\r\n\r\n");
  CHECK(o.status == Status::kOk);
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].body == "abc");
  CHECK_FALSE(o.messages[0].keep_alive);
}

TEST_CASE("codec hostile: Transfer-Encoding is exactly chunked, or refused") {
  auto te = [](std::string_view value) {
    return request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + std::string(value) +
                   "\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
  };
  CHECK(te("chunked").status == Status::kOk);
  CHECK(te("Chunked").status == Status::kOk);
  CHECK(te("CHUNKED ").status == Status::kOk);
  CHECK(te(" chunked").status == Status::kOk);
  check_refused(te("gzip, chunked"), ParseError::kUnsupportedCoding);  // as nginx: 501
  check_refused(te("identity, chunked"), ParseError::kUnsupportedCoding);
  check_refused(te("chunked, identity"), ParseError::kMalformed);
  check_refused(te("chunked, chunked"), ParseError::kMalformed);
  check_refused(te("xchunked"), ParseError::kMalformed);
  check_refused(te("chunkedx"), ParseError::kMalformed);
  check_refused(te("gzip"), ParseError::kMalformed);
  check_refused(te("chunked;a=b"), ParseError::kMalformed);
  check_refused(te("\"chunked\""), ParseError::kMalformed);
  check_refused(request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                ParseError::kMalformed);
  check_refused(request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                ParseError::kUnsupportedCoding);
}

TEST_CASE("codec hostile: chunk syntax") {
  auto body = [](std::string_view chunks) {
    return request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   std::string(chunks));
  };
  // Issue 12 item 12: accepted by both peers, so by us; extensions are dropped.
  Outcome o = body("5;a=b;c=d\r\nhello\r\n0\r\n\r\n");
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].body == "hello");
  CHECK(o.messages[0].complete);
  o = body("5 ;a=b\r\nhello\r\n0\r\n\r\n");
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].body == "hello");
  o = body("5;a=\"q;x\"\r\nhello\r\n000\r\nX-T: 1\r\nY: 2\r\n\r\n");
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].body == "hello");
  CHECK(o.messages[0].complete);
  o = body("0005\r\nhello\r\n0\r\n\r\n");  // leading zeros
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].body == "hello");

  check_refused(body("ffffffffffffffffff\r\n"), ParseError::kMalformed);  // overflow
  check_refused(body("10000000000000000\r\n"), ParseError::kMalformed);   // 2^64
  check_refused(body("-5\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);
  check_refused(body("+5\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);
  check_refused(body("0x5\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);
  check_refused(body(";a\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);
  check_refused(body("5\r\nhelloXX0\r\n\r\n"),
                ParseError::kMalformed);  // data longer than its size
  check_refused(body("5\r\nhell\r\n0\r\n\r\n"), ParseError::kMalformed);  // shorter
  check_refused(body("5;\x01\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);
  check_refused(body("0\r\nBad Name: v\r\n\r\n"), ParseError::kMalformed);
  check_refused(body("0\r\nNoColon\r\n\r\n"), ParseError::kMalformed);
  check_refused(body("5 5\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);
  check_refused(body("5 \r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);  // BWS only before ";"
  check_refused(body("5;\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);  // no extension name
  check_refused(body("5;a=\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);
  check_refused(body("5;a b\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);
  check_refused(body("5;a=\"x\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);  // open quote
  check_refused(body("5;a=b c\r\nhello\r\n0\r\n\r\n"), ParseError::kMalformed);
  for (std::string_view ok :
       {"5;a\r\n", "5 ; a = b ; c\r\n", "5;a=\"\\\"q\"\r\n", "5\t;a=b\t\r\n"}) {
    INFO(ok);
    Outcome good = body(std::string(ok) + "hello\r\n0\r\n\r\n");
    REQUIRE(good.messages.size() == 1);
    CHECK(good.messages[0].body == "hello");
  }
  check_refused(body("5;" + std::string(5000, 'a') + "\r\nhello\r\n0\r\n\r\n"),
                ParseError::kMalformed);

  // A pipelined request after a chunked one is its own message, parsed by our request line.
  o = body("3\r\nabc\r\n0\r\n\r\nQUERY /next HTTP/1.1\r\nHost: b\r\nContent-Length: 1\r\n\r\nz");
  REQUIRE(o.messages.size() == 2);
  CHECK(o.messages[1].method == "QUERY");
  CHECK(o.messages[1].target == "/next");
  CHECK(o.messages[1].body == "z");
}

TEST_CASE("codec hostile: valid traffic both peers accept is accepted") {
  // Issue 12 item 12: any RFC 9110 token method, and HTTP/1.2 read as 1.1.
  for (std::string_view method : {"QUERY", "FOO-BAR", "M", "PROPFIND", "x!#$%&'*+-.^_`|~"}) {
    Outcome o = request(std::string(method) + " /q HTTP/1.1\r\nHost: a\r\n\r\n");
    INFO(method);
    REQUIRE(o.messages.size() == 1);
    CHECK(o.messages[0].method == method);
    CHECK(o.messages[0].target == "/q");
    CHECK(o.messages[0].complete);
  }
  Outcome o = request("GET / HTTP/1.2\r\nHost: a\r\n\r\n");
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].version_minor == 1);
  CHECK(o.messages[0].keep_alive);
  // Empty lines before a request line are skipped (RFC 9112 2.2).
  o = request("\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].target == "/x");
  // Percent-encoded bytes are passed on as they came; raw ones (not ASCII) are refused above.
  o = request("GET /caf%C3%A9 HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].target == "/caf%C3%A9");
}

TEST_CASE("codec hostile: an upgrade the owner refuses leaves the connection on HTTP/1.1") {
  Recorder r;
  r.decide = [](const MessageHead&) { return ParserCallbacks::kProceed; };
  Parser p(Parser::Type::kRequest, &r);
  std::string text =
      "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
      "GET /second HTTP/1.1\r\nHost: a\r\n\r\n";
  Parser::Result res = p.execute(text.data(), 0, text.size());
  REQUIRE(res.status == Status::kUpgrade);
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].upgrade);
  size_t parsed = res.consumed;
  p.resume_after_refused_upgrade();
  res = p.execute(text.data(), parsed, text.size());
  CHECK(res.status == Status::kPaused);
  REQUIRE(r.messages.size() == 2);
  CHECK(r.messages[1].target == "/second");

  // An owner that clears `upgrade` in on_head keeps the parser from switching at all.
  Recorder r2;
  struct Refuse : Recorder {
    HeadAction on_head(MessageHead& h) override {
      HeadAction a = Recorder::on_head(h);
      h.upgrade = false;
      return a;
    }
  } refuse;
  Parser p2(Parser::Type::kRequest, &refuse);
  res = p2.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kPaused);
  p2.resume();
  res = p2.execute(text.data(), res.consumed, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(refuse.messages.size() == 2);
}

TEST_CASE("codec hostile: responses") {
  check_refused(
      response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
               "0\r\n\r\n"),
      ParseError::kMalformed);
  check_refused(response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
                ParseError::kMalformed);
  check_refused(response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
                ParseError::kMalformed);
  check_refused(response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
                ParseError::kMalformed);
  check_refused(response("HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n"), ParseError::kMalformed);
  check_refused(response("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
                ParseError::kMalformed);
  check_refused(response("HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n"), ParseError::kMalformed);
  check_refused(response("HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n"), ParseError::kMalformed);
  check_refused(response("HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"), ParseError::kMalformed);
  static constexpr char kNulInReason[] = "HTTP/1.1 200 O\0K\r\nContent-Length: 0\r\n\r\n";
  check_refused(response(std::string(kNulInReason, sizeof kNulInReason - 1)),
                ParseError::kMalformed);
  check_refused(response("HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"), ParseError::kMalformed);
  check_refused(response("HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n"),
                ParseError::kMalformed);
  check_refused(
      request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n"),
      ParseError::kMalformed);
  CHECK(
      request(
          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 000000000000000000000000000003\r\n\r\nabc")
          .messages.at(0)
          .body == "abc");
  check_refused(response("HTTP/1.1 101 Switching Protocols\r\n\r\n"), ParseError::kMalformed);
  check_refused(response("HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n"), ParseError::kMalformed);
  check_refused(
      response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n"),
      ParseError::kMalformed);
  // A 204 or 304 ends at its head, whatever it announces.
  Outcome o = response("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
  REQUIRE(o.messages.size() == 1);
  CHECK(o.messages[0].complete);
  CHECK(o.messages[0].body.empty());
}

}  // namespace
}  // namespace bulwark::http
