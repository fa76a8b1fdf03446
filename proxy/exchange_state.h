#pragma once
// The per-request state of an exchange that is worth keeping between requests (its buffers),
// lent from a per-worker free list (see DownstreamExchange).

#include <string>

#include "proxy/codec.h"
#include "proxy/outbox.h"
#include "proxy/upstream.h"

namespace bulwark {

// What only an exchange under way needs: the response parser, the two outboxes and the
// request's strings (about 1.2 KiB with their buffers). A connection borrows one from its
// worker's free list when a request starts and gives it back when it goes idle, so an idle
// keep-alive connection holds none of it, and a busy one allocates nothing per request.
struct DownstreamExchange {
  DownstreamExchange();
  http::Parser response_parser;
  Outbox to_upstream;
  Outbox to_client;
  std::string path_buf;           // the rewritten path when prefix_rewrite applies
  std::string upgrade_protocols;  // of an Upgrade request: the protocols forwarded
  // The failed tries of a retried request, "ENDPOINT OUTCOME" joined by ", " (empty when the
  // first try was the last): for the debug log and the access log.
  std::string failed_tries;
  std::string log_request;  // "METHOD TARGET", kept only when logged
  // The endpoints this request's tries could not reach: its retries go elsewhere.
  UnreachableEndpoints unreachable;
};

}  // namespace bulwark
