// Fuzz target: chunked bodies. A fixed head with Transfer-Encoding: chunked (a request, or a
// response; picked by the input) is followed by fuzzed bytes, fed in pieces chosen by the input.
// Besides the checks of fuzz_request / fuzz_response (the body, re-chunked as bulwark writes it,
// parses back the same), the first message is decoded again by a small reference decoder that
// follows RFC 9112 7.1 but accepts any chunk extension and trailer line: when the parser says the
// body ended, the reference must agree on where it ended and on every byte of it.
//
// Input: [flags] [n] [n piece sizes] [body bytes]. Flags: bits 0-1 pick the head, bit 2 a
// response, bit 3 compacts the buffer between messages, bits 4-5 the head-size limit.

#include "tests/fuzz/http_fuzz.h"

using namespace bulwark::fuzz;

namespace {

constexpr std::string_view kRequestHeads[] = {
    "POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n",
    "PUT /api/items?id=7 HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n"
    "Transfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
    "X-Request-Id: abc\r\n\r\n",
    "POST /legacy HTTP/1.0\r\nhost: b\r\ntransfer-encoding: chunked\r\n\r\n",
};
constexpr std::string_view kResponseHeads[] = {
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
    "Trailer: x-checksum\r\n\r\n",
    "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\nconnection: "
    "keep-alive\r\n\r\n",
    "HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\nX-Request-Id: up\r\n\r\n",
};

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

struct Decoded {
  bool ok = false;  // a complete chunked body
  size_t end = 0;   // offset right after it
  std::string body;
};

// Reads a line ending in CRLF from `pos`; false if it holds a bare CR or LF, or has no end.
bool line(std::string_view s, size_t& pos, std::string_view& out) {
  size_t start = pos;
  while (pos < s.size()) {
    char c = s[pos];
    if (c == '\n') return false;  // bare LF
    if (c == '\r') {
      if (pos + 1 >= s.size() || s[pos + 1] != '\n') return false;  // bare CR, or no end
      out = s.substr(start, pos - start);
      pos += 2;
      return true;
    }
    ++pos;
  }
  return false;
}

// chunked-body = *chunk last-chunk trailer-section CRLF (RFC 9112 7.1), where a chunk line is
// 1*HEXDIG then anything that starts with BWS or ";" (an extension, not interpreted).
Decoded reference_decode(std::string_view s) {
  Decoded d;
  size_t pos = 0;
  while (true) {
    std::string_view size_line;
    if (!line(s, pos, size_line)) return d;
    size_t i = 0;
    uint64_t size = 0;
    while (i < size_line.size() && is_hex(size_line[i])) {
      if (size > (UINT64_MAX >> 4)) return d;  // overflows
      char c = size_line[i++];
      size = size * 16 + static_cast<uint64_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    if (i == 0) return d;
    if (i < size_line.size() && size_line[i] != ';' && size_line[i] != ' ' && size_line[i] != '\t')
      return d;
    if (size == 0) break;
    if (size > s.size() - pos || s.size() - pos - size < 2) return d;
    d.body.append(s.substr(pos, size));
    pos += size;
    if (s[pos] != '\r' || s[pos + 1] != '\n') return d;
    pos += 2;
  }
  while (true) {  // trailer fields, then the empty line
    std::string_view field;
    if (!line(s, pos, field)) return d;
    if (field.empty()) break;
  }
  d.ok = true;
  d.end = pos;
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in = parse_input(data, size);
  const bool response = in.flags & 4;
  const std::string_view head = (response ? kResponseHeads : kRequestHeads)[in.flags & 3];
  std::string message(head);
  message.append(in.bytes);
  const std::string_view body_input = in.bytes;
  in.bytes = message;

  Window window;
  const bool compact = in.flags & 8;
  const size_t limit = head_limit(in.flags >> 4);
  FeedResult r;
  std::vector<Message> completed;
  size_t body_bytes = 0;
  if (response) {
    // A keep-alive HTTP/1.1 client that sent a GET: the body is re-chunked.
    ResponseChecker checker(window, message, 8);
    Parser parser(Parser::Type::kResponse, &checker);
    parser.set_max_head_size(limit);
    r = feed(parser, in, compact, window, checker.stop);
    completed = checker.completed;
    body_bytes = checker.body_bytes();
  } else {
    RequestChecker checker(window, message, 0);
    Parser parser(Parser::Type::kRequest, &checker);
    parser.set_max_head_size(limit);
    r = feed(parser, in, compact, window, checker.stop);
    completed = checker.completed;
    body_bytes = checker.body_bytes();
  }
  // De-chunking only ever removes bytes.
  FUZZ_CHECK(body_bytes <= body_input.size(), "more body bytes than fuzzed body bytes");

  // The head is fixed and valid, so the first message is the fuzzed chunked body.
  if (r.message_ends.empty()) return 0;
  FUZZ_CHECK(!completed.empty() && completed[0].chunked, "the fixed head was not chunked");
  size_t end = r.message_ends[0] - head.size();
  Decoded ref = reference_decode(body_input);
  std::string why =
      "parser: body ends at " + std::to_string(end) + ", " +
      std::to_string(completed[0].body.size()) + " bytes [" + escaped(completed[0].body) +
      "]; reference: " +
      (ref.ok ? "ends at " + std::to_string(ref.end) + ", " + std::to_string(ref.body.size()) +
                    " bytes [" + escaped(ref.body) + "]"
              : std::string("malformed")) +
      "\nbody bytes: " + escaped(body_input);
  FUZZ_CHECK(ref.ok && ref.end == end && ref.body == completed[0].body,
             "the parser and the reference decoder disagree on a chunked body\n" + why);
  return 0;
}
