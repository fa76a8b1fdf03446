// Fuzz target: the request side of the proxy. Bytes from a client, in pieces chosen by the input,
// go through http::Parser (requests); each head is routed (split_target, request_host) and
// rewritten for the upstream (write_upstream_request), and each complete body re-framed. What
// bulwark would send upstream must parse back into the same request (see http_fuzz.h).
//
// Input: [flags] [n] [n piece sizes] [bytes from the client]. Flags: bit 0 compacts the buffer
// between requests, bits 1-2 pick the head-size limit, bit 3 adds a prefix rewrite, bit 4 allows
// only four header fields, bit 5 trusts two proxies in front (trusted_hops).

#include "tests/fuzz/http_fuzz.h"

using namespace bulwark::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in = parse_input(data, size);
  Window window;
  RequestChecker checker(window, in.bytes, in.flags);
  Parser parser(Parser::Type::kRequest, &checker);
  parser.set_max_head_size(head_limit(in.flags >> 1));
  parser.set_max_headers(in.flags & 16 ? 4 : Parser::kDefaultMaxHeaders);
  FeedResult r = feed(parser, in, in.flags & 1, window, checker.stop);
  FUZZ_CHECK(checker.body_bytes() <= r.parsed, "more body bytes than parsed bytes");
  return 0;
}
