#include "proxy/codec.h"

#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "tests/unit/proxy/http_test_util.h"

namespace bulwark::http {
namespace {

using test::bytewise;
using test::feed;
using test::FeedResult;
using test::Recorder;
using test::split_at;
using test::whole;
using Status = Parser::Status;

// Parses `text` whole, split in two at every byte boundary, and one byte at a time, and checks
// that each way reports exactly the same messages and ends in the same status.
void check_split_invariant(Parser::Type type, std::string_view text) {
  Recorder reference;
  Parser reference_parser(type, &reference);
  std::string reference_buffer;
  FeedResult expected = feed(reference_parser, reference, reference_buffer, whole(text));
  CHECK_FALSE(reference.body_outside_buffer);

  auto compare = [&](const std::vector<std::string>& pieces, const std::string& how) {
    Recorder r;
    Parser p(type, &r);
    std::string buffer;  // grows (and moves) as pieces arrive, as a connection's buffer may
    FeedResult got = feed(p, r, buffer, pieces);
    INFO(how);
    CHECK(r.describe() == reference.describe());
    CHECK(got.status == expected.status);
    // Where an error is noticed may depend on the split; everything else may not.
    if (expected.status != Status::kError) CHECK(got.parsed == expected.parsed);
    CHECK_FALSE(r.body_outside_buffer);
  };
  for (size_t i = 1; i < text.size(); ++i)
    compare(split_at(text, i), "split at " + std::to_string(i));
  compare(bytewise(text), "one byte at a time");
}

TEST_CASE("codec: a simple GET request head is reported with every field") {
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string text =
      "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-Empty:\r\nAccept:  */*  \r\n\r\n";
  Parser::Result res = p.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == text.size());
  REQUIRE(r.messages.size() == 1);
  const auto& m = r.messages[0];
  CHECK(m.method == "GET");
  CHECK(m.target == "/a/b?c=d");
  CHECK(m.version_major == 1);
  CHECK(m.version_minor == 1);
  REQUIRE(m.headers.size() == 3);
  CHECK(m.headers[0] == std::pair<std::string, std::string>{"Host", "example.com"});
  CHECK(m.headers[1] == std::pair<std::string, std::string>{"X-Empty", ""});
  // Leading and trailing optional whitespace is not part of the value.
  CHECK(m.headers[2] == std::pair<std::string, std::string>{"Accept", "*/*"});
  CHECK(m.keep_alive);
  CHECK_FALSE(m.chunked);
  CHECK_FALSE(m.has_content_length);
  CHECK_FALSE(m.upgrade);
  CHECK_FALSE(m.is_head_method);
  CHECK(m.body.empty());
  CHECK(m.complete);
  CHECK_FALSE(p.in_message());
  CHECK_FALSE(p.in_head());
}

TEST_CASE("codec: MessageHead::find is case-insensitive and returns the first of duplicates") {
  test::ParsedHead p(Parser::Type::kRequest,
                     "GET / HTTP/1.1\r\nX-Dup: one\r\nhost: h\r\nx-dup: two\r\n\r\n");
  REQUIRE(p.have_head);
  const Header* h = p.head.find("X-DUP");
  REQUIRE(h != nullptr);
  CHECK(p.head.str(h->value) == "one");
  REQUIRE(p.head.find("Host") != nullptr);
  CHECK(p.head.find("X-Du") == nullptr);
  CHECK(p.head.find("X-Dupe") == nullptr);
  CHECK(p.head.find("missing") == nullptr);
}

TEST_CASE("codec: HEAD and CONNECT requests are flagged") {
  test::ParsedHead head(Parser::Type::kRequest, "HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE(head.have_head);
  CHECK(head.head.method == "HEAD");
  CHECK(head.head.is_head_method);
  CHECK_FALSE(head.head.is_connect_method);

  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string buffer;
  std::string text = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nTLS";
  Parser::Result res = p.execute(text.data(), 0, text.size());
  // The codec reports CONNECT like any request (bulwark refuses it with 501 and closes); it
  // never switches to a tunnel by itself.
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == text.size() - 3);
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].is_connect_method);
  CHECK(r.messages[0].target == "example.com:443");
}

TEST_CASE("codec: in_head and in_message track the message being parsed") {
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string text = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody";
  CHECK_FALSE(p.in_message());
  size_t head_end = text.find("\r\n\r\n") + 4;

  Parser::Result res = p.execute(text.data(), 0, 10);
  CHECK(res.status == Status::kOk);
  CHECK(res.consumed == 10);
  CHECK(p.in_head());
  CHECK(p.in_message());

  res = p.execute(text.data(), 10, head_end + 2);
  CHECK(res.status == Status::kOk);
  CHECK_FALSE(p.in_head());
  CHECK(p.in_message());
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].body == "bo");

  res = p.execute(text.data(), head_end + 2, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == 2);
  CHECK_FALSE(p.in_message());
  CHECK(r.messages[0].body == "body");
  CHECK(r.messages[0].complete);
}

TEST_CASE("codec: pipelined requests are delivered one at a time, pausing after each") {
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string first = "POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
  std::string second = "GET /two HTTP/1.1\r\nHost: h\r\n\r\n";
  std::string third = "DELETE /three HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
  std::string text = first + second + third;

  Parser::Result res = p.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == first.size());
  // The next message has not begun: the owner handles one message at a time.
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].body == "abc");
  CHECK(r.messages[0].complete);

  p.resume();
  size_t at = first.size();
  res = p.execute(text.data(), at, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == second.size());
  REQUIRE(r.messages.size() == 2);
  CHECK(r.messages[1].target == "/two");
  CHECK(r.messages[1].complete);

  p.resume();
  at += second.size();
  res = p.execute(text.data(), at, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == third.size());
  REQUIRE(r.messages.size() == 3);
  CHECK(r.messages[2].method == "DELETE");
  CHECK(r.messages[2].body.empty());
}

TEST_CASE("codec: a message split at every byte boundary parses identically") {
  SUBCASE("pipelined requests with length and chunked bodies") {
    check_split_invariant(Parser::Type::kRequest,
                          "POST /upload?x=1 HTTP/1.1\r\n"
                          "Host: example.com\r\n"
                          "X-Long-Header-Name: some value with  inner  spaces\r\n"
                          "Content-Length: 11\r\n"
                          "\r\n"
                          "hello world"
                          "PUT /chunks HTTP/1.1\r\n"
                          "Host: h\r\n"
                          "Transfer-Encoding: chunked\r\n"
                          "X-Trim:   padded   \r\n"
                          "\r\n"
                          "5\r\nhello\r\n"
                          "a;name=value\r\n0123456789\r\n"
                          "0\r\n\r\n"
                          "GET /last HTTP/1.0\r\nHost: h\r\n\r\n");
  }
  SUBCASE("a response with a close-delimited body") {
    check_split_invariant(Parser::Type::kResponse,
                          "HTTP/1.1 200 Fine Thanks\r\nServer: x\r\n\r\nuntil the end");
  }
  SUBCASE("an interim response, then a chunked response") {
    check_split_invariant(Parser::Type::kResponse,
                          "HTTP/1.1 100 Continue\r\n\r\n"
                          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "3\r\nabc\r\n0\r\n\r\n");
  }
  SUBCASE("a 101 upgrade followed by raw bytes") {
    check_split_invariant(Parser::Type::kResponse,
                          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\n\r\n\x81\x05hello");
  }
  SUBCASE("a folded header is rejected wherever the split falls") {
    check_split_invariant(Parser::Type::kRequest,
                          "GET / HTTP/1.1\r\nX-Folded: first\r\n second\r\nHost: h\r\n\r\n");
  }
  SUBCASE("a bad header name is rejected wherever the split falls") {
    check_split_invariant(Parser::Type::kRequest,
                          "GET / HTTP/1.1\r\nHost: h\r\nX-Bad Name: v\r\n\r\n");
  }
}

TEST_CASE("codec: feeding a request one byte at a time gives the same head and body") {
  std::string text =
      "POST /p HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n"
      "Transfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string buffer;  // appended to byte by byte, reallocating as it grows
  FeedResult f = feed(p, r, buffer, bytewise(text));
  CHECK(f.status == Status::kOk);
  CHECK(f.parsed == text.size());
  CHECK(f.pauses == 1);
  REQUIRE(r.messages.size() == 1);
  const auto& m = r.messages[0];
  CHECK(m.method == "POST");
  CHECK(m.target == "/p");
  REQUIRE(m.headers.size() == 3);
  CHECK(m.headers[0].first == "Host");
  CHECK(m.headers[0].second == "example.com");
  CHECK(m.headers[1].first == "Content-Type");
  CHECK(m.headers[1].second == "text/plain");
  CHECK(m.headers[2].first == "Transfer-Encoding");
  CHECK(m.headers[2].second == "chunked");
  CHECK(m.chunked);
  CHECK(m.body == "Wikipedia");
  CHECK(m.complete);
  CHECK_FALSE(r.body_outside_buffer);
}

TEST_CASE("codec: chunked bodies are de-chunked, extensions and trailers dropped") {
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string buffer;
  std::string text =
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4;ext=\"q\"\r\nWiki\r\n"
      "10\r\n0123456789abcdef\r\n"
      "0\r\nX-Trailer: t\r\n\r\n";
  FeedResult f = feed(p, r, buffer, whole(text));
  CHECK(f.status == Status::kOk);
  CHECK(f.parsed == text.size());
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].chunked);
  CHECK(r.messages[0].body == "Wiki0123456789abcdef");
  CHECK(r.messages[0].complete);
}

TEST_CASE("codec: a Content-Length body stops exactly at its length") {
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string text =
      "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n12345GET / HTTP/1.1\r\n\r\n";
  Parser::Result res = p.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == text.find("GET"));
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].has_content_length);
  CHECK(r.messages[0].content_length == 5);
  CHECK(r.messages[0].body == "12345");
}

TEST_CASE("codec: request smuggling vectors are errors") {
  auto status_of = [](std::string_view text) {
    Recorder r;
    Parser p(Parser::Type::kRequest, &r);
    std::string buffer;
    FeedResult f = feed(p, r, buffer, whole(text));
    // Nothing of a rejected message reaches the owner as complete.
    for (const auto& m : r.messages) CHECK_FALSE(m.complete);
    return f.status;
  };
  SUBCASE("Content-Length with Transfer-Encoding") {
    CHECK(
        status_of(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            "0\r\n\r\n") == Status::kError);
    CHECK(
        status_of(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
            "0\r\n\r\n") == Status::kError);
  }
  SUBCASE("two different Content-Lengths") {
    CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                    "123456") == Status::kError);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n123456") ==
          Status::kError);
  }
  SUBCASE("a Content-Length that is not a number") {
    CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5x\r\n\r\n12345") ==
          Status::kError);
    CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n") == Status::kError);
  }
  SUBCASE("a Transfer-Encoding that does not end in chunked, in a request") {
    CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n") ==
          Status::kError);
  }
  SUBCASE("a bad chunk size") {
    CHECK(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n") ==
          Status::kError);
  }
  SUBCASE("obs-fold (a header line continued on the next line)") {
    CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n two\r\n\r\n") == Status::kError);
    CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n\ttwo\r\n\r\n") == Status::kError);
  }
  SUBCASE("whitespace between a header name and the colon") {
    CHECK(status_of("GET / HTTP/1.1\r\nHost : h\r\n\r\n") == Status::kError);
  }
}

TEST_CASE("codec: header names must be RFC 9110 tokens") {
  const std::string_view tchars =
      "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  for (int c = 0; c < 256; ++c) {
    if (c == ':' || tchars.find(static_cast<char>(c)) != std::string_view::npos) continue;
    std::string text =
        std::string("GET / HTTP/1.1\r\nHost: h\r\nX-") + static_cast<char>(c) + "Y: v\r\n\r\n";
    Recorder r;
    Parser p(Parser::Type::kRequest, &r);
    std::string buffer;
    FeedResult f = feed(p, r, buffer, whole(text));
    INFO("byte: " << c);
    CHECK(f.status == Status::kError);
    CHECK(r.messages.empty());
  }
  // Every tchar is allowed.
  test::ParsedHead ok(Parser::Type::kRequest,
                      "GET / HTTP/1.1\r\nHost: h\r\nX-!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n");
  CHECK(ok.result.status == Status::kPaused);
  REQUIRE(ok.have_head);
  REQUIRE(ok.head.headers.size() == 2);
  CHECK(ok.head.str(ok.head.headers[1].name) == "X-!#$%&'*+-.^_`|~09azAZ");
}

TEST_CASE("codec: the error result carries a reason") {
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string text = "GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n two\r\n\r\n";
  Parser::Result res = p.execute(text.data(), 0, text.size());
  REQUIRE(res.status == Status::kError);
  REQUIRE(res.error != nullptr);
  CHECK(std::string_view(res.error).find("fold") != std::string_view::npos);

  Recorder r2;
  Parser p2(Parser::Type::kRequest, &r2);
  text = "GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n";
  res = p2.execute(text.data(), 0, text.size());
  REQUIRE(res.status == Status::kError);
  REQUIRE(res.error != nullptr);
  CHECK(std::string_view(res.error).find("header") != std::string_view::npos);
}

TEST_CASE("codec: reset after an error parses a new message") {
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string bad = "GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n";
  CHECK(p.execute(bad.data(), 0, bad.size()).status == Status::kError);
  p.reset();
  CHECK_FALSE(p.in_message());
  std::string good = "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n";
  Parser::Result res = p.execute(good.data(), 0, good.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == good.size());
  REQUIRE_FALSE(r.messages.empty());
  CHECK(r.messages.back().target == "/ok");
  CHECK(r.messages.back().complete);
}

TEST_CASE("codec: a head over the limit is kHeadTooLarge, however it arrives") {
  std::string text = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + std::string(200, 'v') + "\r\n\r\n";
  for (bool bytewise_feed : {false, true}) {
    Recorder r;
    Parser p(Parser::Type::kRequest, &r);
    p.set_max_head_size(100);
    std::string buffer;
    FeedResult f = feed(p, r, buffer, bytewise_feed ? bytewise(text) : whole(text));
    INFO("bytewise: " << bytewise_feed);
    CHECK(f.status == Status::kHeadTooLarge);
    CHECK(r.messages.empty());
  }
  SUBCASE("many small headers") {
    std::string many = "GET / HTTP/1.1\r\nHost: h\r\n";
    for (int i = 0; i < 20; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
    many += "\r\n";
    Recorder r;
    Parser p(Parser::Type::kRequest, &r);
    p.set_max_head_size(100);
    std::string buffer;
    CHECK(feed(p, r, buffer, whole(many)).status == Status::kHeadTooLarge);
  }
  SUBCASE("an incomplete head already over the limit") {
    Recorder r;
    Parser p(Parser::Type::kRequest, &r);
    p.set_max_head_size(100);
    std::string partial = "GET /" + std::string(150, 'a');
    CHECK(p.execute(partial.data(), 0, partial.size()).status == Status::kHeadTooLarge);
  }
  SUBCASE("a head at the limit is accepted, and the limit is per message") {
    std::string one = "GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(60, 'v') + "\r\n\r\n";
    Recorder r;
    Parser p(Parser::Type::kRequest, &r);
    p.set_max_head_size(one.size());
    std::string buffer;
    // Three such heads in a row: each is measured from its own first byte.
    FeedResult f = feed(p, r, buffer, whole(one + one + one));
    CHECK(f.status == Status::kOk);
    CHECK(r.messages.size() == 3);
  }
}

TEST_CASE("codec: kPause stops right after the head, and resume continues with the body") {
  Recorder r;
  r.decide = [](const MessageHead&) { return ParserCallbacks::kPause; };
  Parser p(Parser::Type::kRequest, &r);
  std::string text = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz";
  Parser::Result res = p.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == text.size() - 3);
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].body.empty());
  CHECK_FALSE(r.messages[0].complete);
  CHECK(p.in_message());

  p.resume();
  res = p.execute(text.data(), text.size() - 3, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == 3);
  CHECK(r.messages[0].body == "xyz");
  CHECK(r.messages[0].complete);
}

TEST_CASE("codec: HTTP/1.0 and Connection decide keep_alive") {
  auto keep_alive = [](std::string text) {
    test::ParsedHead p(Parser::Type::kRequest, std::move(text));
    REQUIRE(p.have_head);
    return p.head.keep_alive;
  };
  CHECK(keep_alive("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  CHECK_FALSE(keep_alive("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
  CHECK_FALSE(keep_alive("GET / HTTP/1.0\r\nHost: h\r\n\r\n"));
  CHECK(keep_alive("GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"));

  test::ParsedHead v10(Parser::Type::kRequest, "GET / HTTP/1.0\r\nHost: h\r\n\r\n");
  CHECK(v10.head.version_major == 1);
  CHECK(v10.head.version_minor == 0);
}

// --- Responses ---

TEST_CASE("codec: a response head reports status, reason and length") {
  Recorder r;
  Parser p(Parser::Type::kResponse, &r);
  std::string buffer;
  std::string text = "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
  FeedResult f = feed(p, r, buffer, whole(text));
  CHECK(f.status == Status::kOk);
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].status == 404);
  CHECK(r.messages[0].reason == "Not Found");
  CHECK(r.messages[0].method.empty());
  CHECK(r.messages[0].body == "no");
  CHECK(r.messages[0].complete);
}

TEST_CASE("codec: a response to HEAD has no body when the owner says kNoBody") {
  Recorder r;
  r.decide = [](const MessageHead&) { return ParserCallbacks::kNoBody; };
  Parser p(Parser::Type::kResponse, &r);
  std::string first = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
  std::string second = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string text = first + second;
  Parser::Result res = p.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == first.size());
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].complete);
  CHECK(r.messages[0].content_length == 1000);  // still reported: it describes the GET body

  p.resume();
  res = p.execute(text.data(), first.size(), text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == second.size());
  REQUIRE(r.messages.size() == 2);
  CHECK(r.messages[1].chunked);
  CHECK(r.messages[1].body.empty());
  CHECK(r.messages[1].complete);
}

TEST_CASE("codec: 204 and 304 responses end at the head") {
  for (std::string status_line : {"HTTP/1.1 204 No Content\r\n", "HTTP/1.1 304 Not Modified\r\n"}) {
    Recorder r;
    Parser p(Parser::Type::kResponse, &r);
    std::string head = status_line + "ETag: \"x\"\r\n\r\n";
    std::string text = head + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    Parser::Result res = p.execute(text.data(), 0, text.size());
    INFO(status_line);
    CHECK(res.status == Status::kPaused);
    CHECK(res.consumed == head.size());
    REQUIRE(r.messages.size() == 1);
    CHECK(r.messages[0].complete);
    CHECK(r.messages[0].body.empty());
    CHECK_FALSE(p.needs_eof());
  }
  // A Content-Length on a 1xx, 204 or 304 does not give it a body (RFC 9112 6.3): a 304 may
  // carry the length of the representation it stands for.
  for (int status : {100, 103, 204, 304}) {
    Recorder r;
    Parser p(Parser::Type::kResponse, &r);
    std::string head = "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Length: 50\r\n\r\n";
    std::string next = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    std::string buffer;
    FeedResult f = feed(p, r, buffer, whole(head + next));
    INFO("status " << status);
    CHECK(f.status == Status::kOk);
    CHECK(f.parsed == head.size() + next.size());
    REQUIRE(r.messages.size() == 2);
    CHECK(r.messages[0].complete);
    CHECK(r.messages[0].body.empty());
    CHECK(r.messages[1].status == 200);
    CHECK(r.messages[1].body == "ok");
  }
}

TEST_CASE("codec: a close-delimited response is completed by finish()") {
  Recorder r;
  Parser p(Parser::Type::kResponse, &r);
  std::string buffer;
  FeedResult f = feed(p, r, buffer, {"HTTP/1.1 200 OK\r\nServer: s\r\n\r\nsome ", "bytes"});
  CHECK(f.status == Status::kOk);
  REQUIRE(r.messages.size() == 1);
  CHECK(p.needs_eof());
  CHECK(p.in_message());
  CHECK_FALSE(r.messages[0].complete);
  CHECK(r.messages[0].body == "some bytes");

  Parser::Result res = p.finish();
  CHECK(res.status != Status::kError);
  CHECK(r.messages[0].complete);
  CHECK_FALSE(p.in_message());
}

TEST_CASE("codec: finish() in the middle of a message with a length is an error") {
  SUBCASE("Content-Length body cut short") {
    Recorder r;
    Parser p(Parser::Type::kResponse, &r);
    std::string text = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    CHECK(p.execute(text.data(), 0, text.size()).status == Status::kOk);
    CHECK_FALSE(p.needs_eof());
    CHECK(p.finish().status == Status::kError);
    REQUIRE(r.messages.size() == 1);
    CHECK_FALSE(r.messages[0].complete);
  }
  SUBCASE("chunked body cut short") {
    Recorder r;
    Parser p(Parser::Type::kResponse, &r);
    std::string text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
    CHECK(p.execute(text.data(), 0, text.size()).status == Status::kOk);
    CHECK(p.finish().status == Status::kError);
    CHECK_FALSE(r.messages[0].complete);
  }
  SUBCASE("head cut short") {
    Recorder r;
    Parser p(Parser::Type::kResponse, &r);
    std::string text = "HTTP/1.1 200 OK\r\nContent-Le";
    CHECK(p.execute(text.data(), 0, text.size()).status == Status::kOk);
    CHECK(p.finish().status == Status::kError);
    CHECK(r.messages.empty());
  }
  SUBCASE("between messages, finish() is not an error") {
    Recorder r;
    Parser p(Parser::Type::kResponse, &r);
    std::string text = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    CHECK(p.execute(text.data(), 0, text.size()).status == Status::kPaused);
    p.resume();
    CHECK(p.finish().status == Status::kOk);
    REQUIRE(r.messages.size() == 1);
    CHECK(r.messages[0].complete);
  }
}

TEST_CASE("codec: a 1xx response is a message of its own, then the final response follows") {
  Recorder r;
  Parser p(Parser::Type::kResponse, &r);
  std::string interim = "HTTP/1.1 100 Continue\r\n\r\n";
  std::string hints = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
  std::string final_response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  std::string text = interim + hints + final_response;

  Parser::Result res = p.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == interim.size());
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].status == 100);
  CHECK(r.messages[0].complete);

  p.resume();
  res = p.execute(text.data(), interim.size(), text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == hints.size());
  REQUIRE(r.messages.size() == 2);
  CHECK(r.messages[1].status == 103);
  CHECK(r.messages[1].body.empty());

  p.resume();
  res = p.execute(text.data(), interim.size() + hints.size(), text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == final_response.size());
  REQUIRE(r.messages.size() == 3);
  CHECK(r.messages[2].status == 200);
  CHECK(r.messages[2].body == "ok");
}

TEST_CASE("codec: 101 switches protocols, and the bytes after the head are left raw") {
  Recorder r;
  Parser p(Parser::Type::kResponse, &r);
  std::string head =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
  std::string text = head + "\x81\x02hi";
  Parser::Result res = p.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kUpgrade);
  CHECK(res.consumed == head.size());
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].upgrade);
  CHECK(r.messages[0].status == 101);
  CHECK(r.messages[0].body.empty());
}

TEST_CASE("codec: an upgrade request reports kUpgrade after its head") {
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string head =
      "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: "
      "websocket\r\n\r\n";
  std::string text = head + "frames";
  Parser::Result res = p.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kUpgrade);
  CHECK(res.consumed == head.size());
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].upgrade);
}

TEST_CASE("codec: Upgrade headers on a non-101 response do not switch protocols") {
  Recorder r;
  Parser p(Parser::Type::kResponse, &r);
  std::string text =
      "HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 2\r\n\r\nok";
  Parser::Result res = p.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kPaused);
  CHECK(res.consumed == text.size());
  REQUIRE(r.messages.size() == 1);
  CHECK_FALSE(r.messages[0].upgrade);
  CHECK(r.messages[0].body == "ok");
}

TEST_CASE("codec: an HTTP/1.0 response without a length is close-delimited and not keep-alive") {
  Recorder r;
  Parser p(Parser::Type::kResponse, &r);
  std::string text = "HTTP/1.0 200 OK\r\n\r\nbody";
  CHECK(p.execute(text.data(), 0, text.size()).status == Status::kOk);
  REQUIRE(r.messages.size() == 1);
  CHECK_FALSE(r.messages[0].keep_alive);
  CHECK(p.needs_eof());
  CHECK(r.messages[0].body == "body");
}

TEST_CASE("codec: an empty header value does not swallow the next header's name") {
  Recorder r;
  Parser p(Parser::Type::kRequest, &r);
  std::string text = "GET / HTTP/1.1\r\nX-Empty:\r\nHost: h\r\n\r\n";
  Parser::Result res = p.execute(text.data(), 0, text.size());
  CHECK(res.status == Status::kPaused);
  REQUIRE(r.messages.size() == 1);
  REQUIRE(r.messages[0].headers.size() == 2);
  CHECK(r.messages[0].headers[0].first == "X-Empty");
  CHECK(r.messages[0].headers[0].second == "");
  CHECK(r.messages[0].headers[1].first == "Host");
  CHECK(r.messages[0].headers[1].second == "h");
}

}  // namespace
}  // namespace bulwark::http
