#include "proxy/headers.h"

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "tests/unit/proxy/http_test_util.h"

namespace bulwark::http {
namespace {

using test::ParsedHead;
using Status = Parser::Status;
using Values = std::vector<std::string>;

// Everything written must itself be a well-formed message: parse it back to inspect it.
#define REQUIRE_PARSES(parsed)                       \
  REQUIRE((parsed).have_head);                       \
  REQUIRE((parsed).result.status != Status::kError); \
  REQUIRE((parsed).result.status != Status::kHeadTooLarge)

TEST_CASE("headers: iequals compares ASCII case-insensitively and by length") {
  CHECK(iequals("Content-Length", "content-length"));
  CHECK(iequals("", ""));
  CHECK_FALSE(iequals("content-length", "content-lengt"));
  CHECK_FALSE(iequals("te", "tf"));
}

TEST_CASE("headers: reason_phrase knows the statuses bulwark replies with") {
  CHECK(reason_phrase(200) == "OK");
  CHECK(reason_phrase(400) == "Bad Request");
  CHECK(reason_phrase(404) == "Not Found");
  CHECK(reason_phrase(408) == "Request Timeout");
  CHECK(reason_phrase(429) == "Too Many Requests");
  CHECK(reason_phrase(431) == "Request Header Fields Too Large");
  CHECK(reason_phrase(501) == "Not Implemented");
  CHECK(reason_phrase(502) == "Bad Gateway");
  CHECK(reason_phrase(503) == "Service Unavailable");
  CHECK(reason_phrase(504) == "Gateway Timeout");
  CHECK(reason_phrase(299) == "Unknown");
}

TEST_CASE("headers: the codec reads every token of every Connection header") {
  ParsedHead p(Parser::Type::kRequest,
               "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
               "Connection: Keep-Alive ,\tX-Foo\r\nconnection: UPGRADE\r\n\r\n");
  REQUIRE_PARSES(p);
  CHECK(p.head.connection_keep_alive);
  CHECK(p.head.upgrade);
  CHECK_FALSE(p.head.connection_close);

  ParsedHead c(Parser::Type::kRequest, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
  REQUIRE_PARSES(c);
  CHECK(c.head.connection_close);
  CHECK_FALSE(c.head.connection_keep_alive);
  CHECK_FALSE(c.head.keep_alive);

  // Tokens are whole words.
  ParsedHead w(Parser::Type::kRequest,
               "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: x\r\nConnection: closed, upgrades\r\n\r\n");
  REQUIRE_PARSES(w);
  CHECK_FALSE(w.head.connection_close);
  CHECK_FALSE(w.head.upgrade);
}

TEST_CASE(
    "headers: each header is classified once, and Connection cannot declare framing or Host hop by "
    "hop") {
  ParsedHead p(
      Parser::Type::kRequest,
      "POST / HTTP/1.1\r\nHost: h\r\nConnection: x-secret, X-Other, content-length, host\r\n"
      "Keep-Alive: 5\r\nTE: trailers\r\nTrailer: x\r\nProxy-Connection: x\r\n"
      "X-Secret: 1\r\nx-other: 2\r\nX-Secrets: 3\r\nContent-Length: 0\r\n\r\n");
  REQUIRE_PARSES(p);
  auto kind = [&](std::string_view name) {
    const Header* h = p.head.find(name);
    REQUIRE(h != nullptr);
    return h->kind;
  };
  CHECK(kind("host") == HeaderKind::kHost);
  CHECK(kind("content-length") == HeaderKind::kContentLength);
  CHECK(kind("connection") == HeaderKind::kConnection);
  CHECK(kind("keep-alive") == HeaderKind::kKeepAlive);
  CHECK(kind("te") == HeaderKind::kTE);
  CHECK(kind("trailer") == HeaderKind::kTrailer);
  CHECK(kind("proxy-connection") == HeaderKind::kProxyConnection);
  CHECK(kind("x-secret") == HeaderKind::kListedInConnection);
  CHECK(kind("x-other") == HeaderKind::kListedInConnection);
  CHECK(kind("x-secrets") == HeaderKind::kOther);
  CHECK(p.head.host == 0);

  ParsedHead q(Parser::Type::kRequest,
               "GET / HTTP/1.1\r\nHOST: h\r\nExpect: 100-continue\r\nUpgrade: x\r\n"
               "X-Request-ID: r\r\nHTTP2-Settings: s\r\nX-Forwarded-For: f\r\n"
               "X-Forwarded-Proto: p\r\nIdempotency-Key: k\r\n\r\n");
  REQUIRE_PARSES(q);
  const HeaderKind expected[] = {HeaderKind::kHost,
                                 HeaderKind::kExpect,
                                 HeaderKind::kUpgrade,
                                 HeaderKind::kXRequestId,
                                 HeaderKind::kHttp2Settings,
                                 HeaderKind::kXForwardedFor,
                                 HeaderKind::kXForwardedProto,
                                 HeaderKind::kIdempotencyKey};
  REQUIRE(q.head.headers.size() == std::size(expected));
  for (size_t i = 0; i < std::size(expected); ++i) CHECK(q.head.headers[i].kind == expected[i]);
  CHECK(q.head.expect_continue);
  CHECK(q.head.request_id == 3);
  CHECK(q.head.idempotency_key == 7);
}

TEST_CASE("headers: write_upstream_request writes the request line with the rewritten path") {
  ParsedHead req(Parser::Type::kRequest, "DELETE /api/x?q=1 HTTP/1.0\r\nHost: h\r\n\r\n");
  REQUIRE_PARSES(req);
  UpstreamRequestHead how;
  how.path = "/v1/x?q=1";
  how.client_address = "10.0.0.1";
  std::string out = "stale bytes from the previous request";
  write_upstream_request(req.head, how, out);
  CHECK(out.starts_with("DELETE /v1/x?q=1 HTTP/1.1\r\n"));
  CHECK(out.size() >= 4);
  CHECK(out.substr(out.size() - 4) == "\r\n\r\n");
  CHECK(out.find("stale") == std::string::npos);

  ParsedHead back(Parser::Type::kRequest, out);
  REQUIRE_PARSES(back);
  CHECK(back.result.consumed == out.size());
  CHECK(back.values("Host") == Values{"h"});
}

TEST_CASE("headers: write_upstream_request removes hop-by-hop headers and keeps the rest") {
  ParsedHead req(Parser::Type::kRequest,
                 "POST /p HTTP/1.1\r\n"
                 "Host: example.com\r\n"
                 "Connection: keep-alive, X-Secret\r\n"
                 "Keep-Alive: timeout=5\r\n"
                 "TE: trailers\r\n"
                 "Trailer: X-Checksum\r\n"
                 "Upgrade: websocket\r\n"
                 "Proxy-Connection: keep-alive\r\n"
                 "x-secret: hidden\r\n"
                 "X-Keep: Mixed Case Value\r\n"
                 "Content-Length: 3\r\n"
                 "Accept: a\r\n"
                 "Accept: b\r\n"
                 "\r\nabc");
  REQUIRE_PARSES(req);
  UpstreamRequestHead how;
  how.path = "/p";
  how.client_address = "192.0.2.7";
  how.framing = BodyFraming::kContentLength;
  std::string out;
  write_upstream_request(req.head, how, out);

  ParsedHead back(Parser::Type::kRequest, out);
  REQUIRE_PARSES(back);
  for (const char* gone : {"Connection", "Keep-Alive", "TE", "Trailer", "Upgrade",
                           "Proxy-Connection", "X-Secret", "Transfer-Encoding"}) {
    INFO(gone);
    CHECK(back.values(gone).empty());
  }
  CHECK(back.values("Host") == Values{"example.com"});
  CHECK(back.values("Content-Length") == Values{"3"});
  CHECK(back.values("Accept") == Values{"a", "b"});
  // Names and values are passed through as sent.
  CHECK(out.find("\r\nX-Keep: Mixed Case Value\r\n") != std::string::npos);
  // End-to-end headers keep their order; framing is written by the proxy, after them.
  CHECK(out.find("Host:") < out.find("X-Keep:"));
  CHECK(out.find("X-Keep:") < out.find("Accept: a"));
  CHECK(out.find("Accept: a") < out.find("Content-Length:"));
}

TEST_CASE("headers: write_upstream_request appends the client to X-Forwarded-For") {
  UpstreamRequestHead how;
  how.path = "/";
  how.client_address = "10.0.0.9";

  SUBCASE("no earlier hops") {
    ParsedHead req(Parser::Type::kRequest, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    REQUIRE_PARSES(req);
    std::string out;
    write_upstream_request(req.head, how, out);
    ParsedHead back(Parser::Type::kRequest, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("X-Forwarded-For") == Values{"10.0.0.9"});
    CHECK(back.values("X-Forwarded-Proto") == Values{"http"});
  }
  ParsedHead chained(Parser::Type::kRequest,
                     "GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.1, 198.51.100.2\r\nHost: h\r\n"
                     "x-forwarded-for: 192.0.2.3\r\nX-Forwarded-Proto: https\r\n\r\n");
  REQUIRE_PARSES(chained);
  auto forwarded = [&](uint32_t trusted_hops) {
    how.trusted_hops = trusted_hops;
    std::string out;
    write_upstream_request(chained.head, how, out);
    auto back = std::make_unique<ParsedHead>(Parser::Type::kRequest, out);
    REQUIRE_PARSES(*back);
    return std::make_pair(back->values("X-Forwarded-For"), back->values("X-Forwarded-Proto"));
  };
  SUBCASE("no trusted hops: what the client claims is dropped") {
    auto [xff, proto] = forwarded(0);
    CHECK(xff == Values{"10.0.0.9"});
    // The proto is what the client spoke to bulwark, not what it claims.
    CHECK(proto == Values{"http"});
  }
  SUBCASE("trusted hops: their addresses (the last N, over all headers) and proto are kept") {
    auto [xff, proto] = forwarded(1);
    CHECK(xff == Values{"192.0.2.3, 10.0.0.9"});
    CHECK(proto == Values{"https"});
    std::tie(xff, proto) = forwarded(2);
    CHECK(xff == Values{"198.51.100.2, 192.0.2.3, 10.0.0.9"});
    std::tie(xff, proto) = forwarded(10);
    CHECK(xff == Values{"203.0.113.1, 198.51.100.2, 192.0.2.3, 10.0.0.9"});
  }
}

TEST_CASE("headers: write_upstream_request adds X-Request-Id only when asked") {
  UpstreamRequestHead how;
  how.path = "/";
  how.client_address = "10.0.0.1";
  how.request_id = "abc-123";

  ParsedHead bare(Parser::Type::kRequest, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
  REQUIRE_PARSES(bare);
  std::string out;
  write_upstream_request(bare.head, how, out);
  {
    ParsedHead back(Parser::Type::kRequest, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("X-Request-Id").empty());
  }
  how.add_request_id = true;
  write_upstream_request(bare.head, how, out);
  {
    ParsedHead back(Parser::Type::kRequest, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("X-Request-Id") == Values{"abc-123"});
  }
  // A request that has one keeps it (the caller does not ask to add another).
  ParsedHead with_id(Parser::Type::kRequest,
                     "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: theirs\r\n\r\n");
  REQUIRE_PARSES(with_id);
  how.add_request_id = false;
  write_upstream_request(with_id.head, how, out);
  ParsedHead back(Parser::Type::kRequest, out);
  REQUIRE_PARSES(back);
  CHECK(back.values("X-Request-Id") == Values{"theirs"});
  // One bulwark cannot use (too long) is replaced by the new one, not sent beside it.
  how.add_request_id = true;
  write_upstream_request(with_id.head, how, out);
  ParsedHead replaced(Parser::Type::kRequest, out);
  REQUIRE_PARSES(replaced);
  CHECK(replaced.values("X-Request-Id") == Values{"abc-123"});
}

TEST_CASE("headers: write_upstream_request frames the body as told") {
  UpstreamRequestHead how;
  how.path = "/";
  how.client_address = "10.0.0.1";

  SUBCASE("chunked in, chunked out") {
    ParsedHead req(Parser::Type::kRequest,
                   "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    REQUIRE_PARSES(req);
    how.framing = BodyFraming::kChunked;
    std::string out;
    write_upstream_request(req.head, how, out);
    ParsedHead back(Parser::Type::kRequest, out + "3\r\nabc\r\n0\r\n\r\n");
    REQUIRE_PARSES(back);
    CHECK(back.values("Transfer-Encoding") == Values{"chunked"});
    CHECK(back.values("Content-Length").empty());
    CHECK(back.body == "abc");
    CHECK(back.complete);
  }
  SUBCASE("a Content-Length is dropped when bulwark chunks the body") {
    ParsedHead req(Parser::Type::kRequest,
                   "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    REQUIRE_PARSES(req);
    how.framing = BodyFraming::kChunked;
    std::string out;
    write_upstream_request(req.head, how, out);
    ParsedHead back(Parser::Type::kRequest, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("Content-Length").empty());
    CHECK(back.values("Transfer-Encoding") == Values{"chunked"});
  }
  SUBCASE("a Content-Length is dropped for a bodiless request") {
    ParsedHead req(Parser::Type::kRequest,
                   "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    REQUIRE_PARSES(req);
    how.framing = BodyFraming::kNone;
    std::string out;
    write_upstream_request(req.head, how, out);
    ParsedHead back(Parser::Type::kRequest, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("Content-Length").empty());
    CHECK(back.values("Transfer-Encoding").empty());
  }
  SUBCASE("a Content-Length passes through with kContentLength") {
    ParsedHead req(Parser::Type::kRequest,
                   "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    REQUIRE_PARSES(req);
    how.framing = BodyFraming::kContentLength;
    std::string out;
    write_upstream_request(req.head, how, out);
    ParsedHead back(Parser::Type::kRequest, out + "abc");
    REQUIRE_PARSES(back);
    CHECK(back.values("Content-Length") == Values{"3"});
    CHECK(back.values("Transfer-Encoding").empty());
    CHECK(back.body == "abc");
  }
}

TEST_CASE("headers: write_upstream_request forwards an upgrade only when tunnelling") {
  ParsedHead req(Parser::Type::kRequest,
                 "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, X-Hop\r\nX-Hop: 1\r\n"
                 "Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
  REQUIRE_PARSES(req);
  UpstreamRequestHead how;
  how.path = "/ws";
  how.client_address = "10.0.0.1";

  how.upgrade = true;
  how.upgrade_protocols = "websocket";
  std::string out;
  write_upstream_request(req.head, how, out);
  {
    ParsedHead back(Parser::Type::kRequest, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("Upgrade") == Values{"websocket"});
    CHECK(back.values("Connection") == Values{"upgrade"});
    CHECK(back.values("X-Hop").empty());
    CHECK(back.values("Sec-WebSocket-Key") == Values{"k"});
    CHECK(back.head.upgrade);
  }
  how.upgrade = false;
  write_upstream_request(req.head, how, out);
  ParsedHead back(Parser::Type::kRequest, out);
  REQUIRE_PARSES(back);
  CHECK(back.values("Upgrade").empty());
  CHECK(back.values("Connection").empty());
  CHECK_FALSE(back.head.upgrade);
}

TEST_CASE("headers: write_downstream_response writes an HTTP/1.1 status line") {
  DownstreamResponseHead how;
  std::string out;
  SUBCASE("the upstream's reason phrase is kept") {
    ParsedHead resp(Parser::Type::kResponse, "HTTP/1.0 201 Made It\r\nContent-Length: 0\r\n\r\n");
    REQUIRE_PARSES(resp);
    write_downstream_response(resp.head, how, out);
    CHECK(out.starts_with("HTTP/1.1 201 Made It\r\n"));
  }
  SUBCASE("an empty reason phrase is filled in") {
    ParsedHead resp(Parser::Type::kResponse, "HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n");
    REQUIRE_PARSES(resp);
    write_downstream_response(resp.head, how, out);
    CHECK(out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
  }
  ParsedHead back(Parser::Type::kResponse, out);
  REQUIRE_PARSES(back);
  CHECK(back.result.consumed == out.size());
}

TEST_CASE("headers: write_downstream_response says how the connection continues") {
  ParsedHead resp(Parser::Type::kResponse,
                  "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=9\r\n"
                  "X-Hop: 1\r\nContent-Length: 2\r\nServer: up\r\n\r\nok");
  REQUIRE_PARSES(resp);
  DownstreamResponseHead how;
  std::string out;

  SUBCASE("keep-alive for HTTP/1.1 says nothing") {
    write_downstream_response(resp.head, how, out);
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("Connection").empty());
    CHECK(back.values("Keep-Alive").empty());
    CHECK(back.values("X-Hop").empty());
    CHECK(back.values("Server") == Values{"up"});
    CHECK(back.values("Content-Length") == Values{"2"});
  }
  SUBCASE("close") {
    how.keep_alive = false;
    write_downstream_response(resp.head, how, out);
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("Connection") == Values{"close"});
    CHECK_FALSE(back.head.keep_alive);
  }
  SUBCASE("an HTTP/1.0 client that asked for keep-alive") {
    how.http10_keep_alive = true;
    write_downstream_response(resp.head, how, out);
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("Connection") == Values{"keep-alive"});
  }
}

TEST_CASE("headers: write_downstream_response adds X-Request-Id only if missing") {
  DownstreamResponseHead how;
  how.request_id = "rid-1";
  std::string out;
  {
    ParsedHead resp(Parser::Type::kResponse, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    REQUIRE_PARSES(resp);
    write_downstream_response(resp.head, how, out);
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("X-Request-Id") == Values{"rid-1"});
  }
  {
    ParsedHead resp(Parser::Type::kResponse,
                    "HTTP/1.1 200 OK\r\nx-request-id: upstream-id\r\nContent-Length: 0\r\n\r\n");
    REQUIRE_PARSES(resp);
    write_downstream_response(resp.head, how, out);
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("X-Request-Id") == Values{"upstream-id"});
  }
  {
    ParsedHead resp(Parser::Type::kResponse, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    REQUIRE_PARSES(resp);
    how.request_id = {};
    write_downstream_response(resp.head, how, out);
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("X-Request-Id").empty());
  }
}

TEST_CASE("headers: write_downstream_response re-frames a body as chunked") {
  ParsedHead resp(Parser::Type::kResponse,
                  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: br\r\n\r\n");
  REQUIRE_PARSES(resp);
  DownstreamResponseHead how;
  how.framing = BodyFraming::kChunked;
  std::string out;
  write_downstream_response(resp.head, how, out);
  ParsedHead back(Parser::Type::kResponse, out + "2\r\nok\r\n0\r\n\r\n");
  REQUIRE_PARSES(back);
  CHECK(back.values("Transfer-Encoding") == Values{"chunked"});
  CHECK(back.values("Content-Encoding") == Values{"br"});
  CHECK(back.body == "ok");
  CHECK(back.complete);

  // A Content-Length next to bulwark's own chunking would be a smuggling vector.
  ParsedHead with_length(Parser::Type::kResponse, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  REQUIRE_PARSES(with_length);
  write_downstream_response(with_length.head, how, out);
  ParsedHead back2(Parser::Type::kResponse, out);
  REQUIRE_PARSES(back2);
  CHECK(back2.values("Content-Length").empty());
  CHECK(back2.values("Transfer-Encoding") == Values{"chunked"});
}

TEST_CASE("headers: write_downstream_response forwards a 101 upgrade") {
  ParsedHead resp(Parser::Type::kResponse,
                  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n");
  REQUIRE(resp.have_head);
  DownstreamResponseHead how;
  how.upgrade = true;
  how.keep_alive = false;  // the upgrade wins: no Connection: close
  how.framing = BodyFraming::kNone;
  std::string out;
  write_downstream_response(resp.head, how, out);
  CHECK(out.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
  ParsedHead back(Parser::Type::kResponse, out);
  REQUIRE(back.have_head);
  CHECK(back.result.status == Status::kUpgrade);
  CHECK(back.values("Upgrade") == Values{"websocket"});
  CHECK(back.values("Connection") == Values{"upgrade"});
  CHECK(back.values("Sec-WebSocket-Accept") == Values{"a"});
}

TEST_CASE("headers: write_local_reply says why, with a body that matches its length") {
  std::string out;
  write_local_reply(404, "no_route", true, "rid-9", false, out);
  ParsedHead back(Parser::Type::kResponse, out);
  REQUIRE_PARSES(back);
  CHECK(back.result.consumed == out.size());
  CHECK(back.complete);
  CHECK(back.head.status == 404);
  CHECK(back.head.str(back.head.reason) == "Not Found");
  CHECK(back.values("x-bulwark-reason") == Values{"no_route"});
  CHECK(back.values("x-request-id") == Values{"rid-9"});
  CHECK(back.values("content-type") == Values{"text/plain"});
  CHECK(back.values("connection").empty());
  CHECK(back.head.keep_alive);
  REQUIRE(back.head.has_content_length);
  CHECK(back.head.content_length == back.body.size());
  CHECK(back.body == "404 Not Found: no_route\n");
}

TEST_CASE("headers: write_local_reply closes when asked and omits an empty request id") {
  std::string out;
  write_local_reply(503, "pool_exhausted", false, "", false, out);
  ParsedHead back(Parser::Type::kResponse, out);
  REQUIRE_PARSES(back);
  CHECK(back.head.status == 503);
  CHECK(back.values("connection") == Values{"close"});
  CHECK_FALSE(back.head.keep_alive);
  CHECK(back.values("x-request-id").empty());
  CHECK(back.values("x-bulwark-reason") == Values{"pool_exhausted"});
  CHECK(back.body == "503 Service Unavailable: pool_exhausted\n");
}

TEST_CASE("headers: write_local_reply to HEAD has the length of the body it does not send") {
  std::string get_reply;
  std::string head_reply;
  write_local_reply(431, "headers_too_large", true, "r", false, get_reply);
  write_local_reply(431, "headers_too_large", true, "r", true, head_reply);
  CHECK(get_reply.starts_with(head_reply));  // the same head, then the body
  CHECK(head_reply.size() >= 4);
  CHECK(head_reply.substr(head_reply.size() - 4) == "\r\n\r\n");

  ParsedHead get_back(Parser::Type::kResponse, get_reply);
  REQUIRE_PARSES(get_back);
  CHECK(get_back.head.content_length == get_reply.size() - head_reply.size());
}

TEST_CASE("headers: write_chunk_header writes the size in hex and CRLF") {
  char buf[20];
  size_t n = write_chunk_header(buf, 500);
  CHECK(std::string(buf, n) == "1f4\r\n");
  n = write_chunk_header(buf, 1);
  CHECK(std::string(buf, n) == "1\r\n");
  n = write_chunk_header(buf, 16);
  CHECK(std::string(buf, n) == "10\r\n");
  n = write_chunk_header(buf, SIZE_MAX);
  CHECK(std::string(buf, n) == "ffffffffffffffff\r\n");
  CHECK(kChunkEnd == "\r\n");
  CHECK(kLastChunk == "0\r\n\r\n");
}

TEST_CASE("headers: write_downstream_response says how many tries it took, only after a retry") {
  ParsedHead resp(Parser::Type::kResponse,
                  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: up\r\n\r\nok");
  REQUIRE_PARSES(resp);
  DownstreamResponseHead how;
  std::string out;

  SUBCASE("one try: no header") {
    CHECK(how.attempts == 1);  // the default
    write_downstream_response(resp.head, how, out);
    ParsedHead back(Parser::Type::kResponse, out + "ok");
    REQUIRE_PARSES(back);
    CHECK(back.values("x-bulwark-attempts").empty());
    CHECK(out.find("x-bulwark-attempts") == std::string::npos);
    CHECK(back.body == "ok");
  }
  SUBCASE("two tries") {
    how.attempts = 2;
    write_downstream_response(resp.head, how, out);
    CHECK(out.find("\r\nx-bulwark-attempts: 2\r\n") != std::string::npos);
    ParsedHead back(Parser::Type::kResponse, out + "ok");
    REQUIRE_PARSES(back);
    CHECK(back.values("x-bulwark-attempts") == Values{"2"});
    CHECK(back.values("Server") == Values{"up"});
    CHECK(back.values("Content-Length") == Values{"2"});
    CHECK(back.body == "ok");
    CHECK(back.complete);
  }
  SUBCASE("ten tries, with chunking and close") {
    how.attempts = 10;
    how.framing = BodyFraming::kChunked;
    how.keep_alive = false;
    write_downstream_response(resp.head, how, out);
    ParsedHead back(Parser::Type::kResponse, out + "2\r\nok\r\n0\r\n\r\n");
    REQUIRE_PARSES(back);
    CHECK(back.values("x-bulwark-attempts") == Values{"10"});
    CHECK(back.values("Transfer-Encoding") == Values{"chunked"});
    CHECK(back.values("Connection") == Values{"close"});
    CHECK(back.body == "ok");
    CHECK(back.complete);
  }
}

TEST_CASE("headers: write_local_reply adds x-bulwark-attempts and retry-after when asked") {
  std::string out;

  SUBCASE("no extras: neither header") {
    write_local_reply(503, "circuit_open", true, "rid", false, out, LocalReplyExtras{});
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.complete);
    CHECK(back.values("x-bulwark-attempts").empty());
    CHECK(back.values("retry-after").empty());
  }
  SUBCASE("one try and no wait: neither header") {
    write_local_reply(503, "upstream_connect_failure", true, "", false, out,
                      LocalReplyExtras{1, 0});
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("x-bulwark-attempts").empty());
    CHECK(back.values("retry-after").empty());
  }
  SUBCASE("after retries") {
    write_local_reply(502, "upstream_reset", true, "rid-3", false, out, LocalReplyExtras{3, 0});
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.result.consumed == out.size());
    CHECK(back.complete);
    CHECK(back.head.status == 502);
    CHECK(back.values("x-bulwark-attempts") == Values{"3"});
    CHECK(back.values("retry-after").empty());
    CHECK(back.values("x-bulwark-reason") == Values{"upstream_reset"});
    CHECK(back.values("x-request-id") == Values{"rid-3"});
    REQUIRE(back.head.has_content_length);
    CHECK(back.head.content_length == back.body.size());
    CHECK(back.body == "502 Bad Gateway: upstream_reset\n");
  }
  SUBCASE("rate limited: retry-after in seconds") {
    write_local_reply(429, "rate_limited", true, "", false, out, LocalReplyExtras{1, 7});
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.result.consumed == out.size());
    CHECK(back.complete);
    CHECK(back.head.status == 429);
    CHECK(back.values("retry-after") == Values{"7"});
    CHECK(back.values("x-bulwark-attempts").empty());
    REQUIRE(back.head.has_content_length);
    CHECK(back.head.content_length == back.body.size());
    CHECK(back.body == "429 Too Many Requests: rate_limited\n");
  }
  SUBCASE("both, on a closing connection") {
    write_local_reply(503, "bulkhead_full", false, "r", false, out, LocalReplyExtras{4, 120});
    ParsedHead back(Parser::Type::kResponse, out);
    REQUIRE_PARSES(back);
    CHECK(back.result.consumed == out.size());
    CHECK(back.complete);
    CHECK(back.values("x-bulwark-attempts") == Values{"4"});
    CHECK(back.values("retry-after") == Values{"120"});
    CHECK(back.values("connection") == Values{"close"});
    CHECK_FALSE(back.head.keep_alive);
    REQUIRE(back.head.has_content_length);
    CHECK(back.head.content_length == back.body.size());
    CHECK(back.body == "503 Service Unavailable: bulkhead_full\n");
  }
}

TEST_CASE("headers: write_local_reply to HEAD with extras keeps the head of the GET reply") {
  std::string get_reply;
  std::string head_reply;
  LocalReplyExtras extras{2, 5};
  write_local_reply(429, "rate_limited", true, "r", false, get_reply, extras);
  write_local_reply(429, "rate_limited", true, "r", true, head_reply, extras);
  CHECK(get_reply.starts_with(head_reply));
  ParsedHead get_back(Parser::Type::kResponse, get_reply);
  REQUIRE_PARSES(get_back);
  CHECK(get_back.head.content_length == get_reply.size() - head_reply.size());
  CHECK(get_back.values("x-bulwark-attempts") == Values{"2"});
  CHECK(get_back.values("retry-after") == Values{"5"});
}

TEST_CASE("headers: a retried response's x-bulwark-attempts replaces the upstream's") {
  std::string raw =
      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Bulwark-Attempts: 3\r\nX-Other: a\r\n\r\n";
  ParsedHead resp(Parser::Type::kResponse, raw);
  REQUIRE_PARSES(resp);
  std::string once, retried;
  DownstreamResponseHead how;
  write_downstream_response(resp.head, how, once);
  CHECK(once.find("X-Bulwark-Attempts: 3\r\n") != std::string::npos);  // another hop's count
  how.attempts = 2;
  write_downstream_response(resp.head, how, retried);
  CHECK(retried.find("X-Bulwark-Attempts: 3") == std::string::npos);
  CHECK(retried.find("x-bulwark-attempts: 2\r\n") != std::string::npos);
  CHECK(retried.find("X-Other: a\r\n") != std::string::npos);
}

TEST_CASE("headers: an incoming X-Forwarded-Client-Cert never reaches the upstream unless kept") {
  ParsedHead req(
      Parser::Type::kRequest,
      "GET / HTTP/1.1\r\nHost: h\r\n"
      "X-Forwarded-Client-Cert: Hash=forged;URI=spiffe://cluster.local/ns/ops/sa/admin\r\n"
      "x-forwarded-client-cert: By=x\r\n\r\n");
  REQUIRE_PARSES(req);
  CHECK(req.head.headers[1].kind == HeaderKind::kXForwardedClientCert);
  CHECK(req.head.headers[2].kind == HeaderKind::kXForwardedClientCert);
  UpstreamRequestHead how;
  how.path = "/";
  how.client_address = "10.0.0.1";

  SUBCASE("sanitize: dropped, and nothing of ours (no client certificate or mode sanitize)") {
    std::string out;
    write_upstream_request(req.head, how, out);
    ParsedHead back(Parser::Type::kRequest, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("X-Forwarded-Client-Cert").empty());
    CHECK(back.values("X-Forwarded-Proto") == Values{"http"});
  }
  SUBCASE("sanitize_set over TLS: only ours, and the scheme is https") {
    how.proto = "https";
    how.client_cert = "Hash=abc;URI=spiffe://cluster.local/ns/shop/sa/web";
    std::string out;
    write_upstream_request(req.head, how, out);
    ParsedHead back(Parser::Type::kRequest, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("X-Forwarded-Client-Cert") ==
          Values{"Hash=abc;URI=spiffe://cluster.local/ns/shop/sa/web"});
    CHECK(back.values("X-Forwarded-Proto") == Values{"https"});
  }
  SUBCASE("append_forward: theirs, then ours") {
    how.keep_client_cert = true;
    how.client_cert = "Hash=abc";
    std::string out;
    write_upstream_request(req.head, how, out);
    ParsedHead back(Parser::Type::kRequest, out);
    REQUIRE_PARSES(back);
    CHECK(back.values("X-Forwarded-Client-Cert") ==
          Values{"Hash=forged;URI=spiffe://cluster.local/ns/ops/sa/admin", "By=x", "Hash=abc"});
  }
}

}  // namespace
}  // namespace bulwark::http
