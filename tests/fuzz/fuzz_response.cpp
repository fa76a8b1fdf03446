// Fuzz target: the response side of the proxy. Bytes from an upstream, in pieces chosen by the
// input, go through http::Parser (responses); each head is rewritten for the client
// (write_downstream_response) as Exchange::on_try_head and Http1Connection::send_head would, and
// each complete body re-framed. What bulwark would send the client must parse back into the same
// response (see http_fuzz.h).
//
// Input: [flags] [n] [n piece sizes] [bytes from the upstream]. Flags: bit 0 compacts the buffer
// between responses; bits 1-5 describe the request (HEAD, an HTTP/1.0 client, keep-alive,
// upgrade, three tries); bits 6-7 pick the head-size limit.

#include "tests/fuzz/http_fuzz.h"

using namespace bulwark::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in = parse_input(data, size);
  Window window;
  ResponseChecker checker(window, in.bytes, in.flags);
  Parser parser(Parser::Type::kResponse, &checker);
  parser.set_max_head_size(head_limit(in.flags >> 6));
  FeedResult r = feed(parser, in, in.flags & 1, window, checker.stop);
  FUZZ_CHECK(checker.body_bytes() <= r.parsed, "more body bytes than parsed bytes");
  return 0;
}
