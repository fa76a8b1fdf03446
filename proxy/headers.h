#pragma once
// Header rewriting between the two sides of the proxy (RFC 9110 7.6, RFC 9112).
//
// Every header was classified once by the codec (HeaderKind); the writers here only switch on
// that. bulwark removes hop-by-hop headers (Connection and every end-to-end name it lists,
// Keep-Alive, TE, Trailer, Upgrade unless tunnelling, Proxy-Connection, HTTP2-Settings), writes
// the framing headers (Content-Length, Transfer-Encoding) itself from what the codec parsed,
// never copying them, and adds the forwarding headers. Heads are written into a caller-owned
// std::string whose capacity is reused from request to request.

#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/codec.h"

namespace bulwark::http {

bool iequals(std::string_view a, std::string_view b);
std::string_view reason_phrase(int status);

// How the body of an outgoing message is framed.
enum class BodyFraming {
  kNone,           // no body (HEAD response, 1xx, 204, 304, bodiless request)
  kContentLength,  // the Content-Length is passed through
  kChunked,        // bulwark writes chunked framing
  kClose,          // the body ends when bulwark closes the connection (HTTP/1.0 peer)
};

inline constexpr uint32_t kMaxTrustedHops = 64;

// The framing decisions of a message passing through, in one place (the proxy and the fuzz
// targets that check it both use these).
// A request's body as it came: chunked, a Content-Length, or none.
BodyFraming request_framing(const MessageHead& request);
// Whether a response has no body whatever it announces: to a HEAD request, 204 and 304
// (RFC 9112 6.3).
inline bool response_has_no_body(bool head_request, int status) {
  return head_request || status == 204 || status == 304;
}
// How a final response goes to the client: no body, its Content-Length, or chunked (to an
// HTTP/1.0 client, which knows no chunks: delimited by closing the connection).
BodyFraming response_framing(const MessageHead& response, bool no_body, bool client_http10);
// The protocols of an Upgrade request (`offered`, the Upgrade header) that may go upstream:
// those whose name is in `allowed` (case-insensitively, any version), joined by ", " into `out`
// (empty: none, and the request stays HTTP/1.1).
void forwarded_upgrades(std::string_view offered, const std::vector<std::string>& allowed,
                        std::string& out);
// The longest client X-Request-Id kept as it is; a longer one (or none) gets a new id.
inline constexpr size_t kMaxRequestIdLength = 39;
inline bool usable_request_id(std::string_view id) {
  return !id.empty() && id.size() <= kMaxRequestIdLength;
}

struct UpstreamRequestHead {
  std::string_view path;  // the request-target to send (after prefix_rewrite)
  // The authority of an absolute-form target, or the route's host_rewrite: it replaces the Host
  // header (RFC 9112 3.2.2).
  std::string_view authority;
  std::string_view client_address;  // appended to X-Forwarded-For
  // How many proxies in front are trusted: the last `trusted_hops` addresses of the incoming
  // X-Forwarded-For are kept before client_address, and with any, its X-Forwarded-Proto too.
  uint32_t trusted_hops = 0;
  // The scheme the client used: X-Forwarded-Proto, unless a trusted hop set one.
  std::string_view proto = "http";
  // X-Forwarded-Client-Cert: an incoming one is dropped, unless `keep_client_cert` (the
  // listener's append_forward); `client_cert` (this hop's element, empty: none) is added.
  bool keep_client_cert = false;
  std::string_view client_cert;
  std::string_view request_id;  // the request's id, kept or generated
  bool add_request_id = false;  // the request had no X-Request-Id
  // Forward an upgrade: `Upgrade: upgrade_protocols` and `Connection: upgrade`.
  bool upgrade = false;
  std::string_view upgrade_protocols;
  BodyFraming framing = BodyFraming::kNone;
};
// Where the Host value is in the written head: [at, at + length); `at` is npos without one.
struct HostValueSpan {
  size_t at = std::string::npos;
  size_t length = 0;
};
HostValueSpan write_upstream_request(const MessageHead& request, const UpstreamRequestHead& how,
                                     std::string& out);

struct DownstreamResponseHead {
  bool keep_alive = true;          // false: add Connection: close
  bool http10_keep_alive = false;  // an HTTP/1.0 client that asked to keep the connection
  bool upgrade = false;            // 101: forward Upgrade and Connection: upgrade
  BodyFraming framing = BodyFraming::kContentLength;
  std::string_view request_id;  // added as X-Request-Id if the response has none
  uint32_t attempts = 1;        // tries it took; > 1 adds x-bulwark-attempts
};
void write_downstream_response(const MessageHead& response, const DownstreamResponseHead& how,
                               std::string& out);

// Optional headers of a local reply.
struct LocalReplyExtras {
  uint32_t attempts = 1;       // tries it took; > 1 adds x-bulwark-attempts
  uint32_t retry_after_s = 0;  // > 0 adds Retry-After (seconds)
};
// An active health check's request: GET `path` with Host `host`, a User-Agent naming bulwark and
// Connection: close (one check per connection).
void write_health_check_request(std::string_view path, std::string_view host, std::string& out);

// A local reply: status, x-bulwark-reason token, a short text body. Returns the body bytes
// written (0 for a HEAD request).
size_t write_local_reply(int status, std::string_view reason_token, bool keep_alive,
                         std::string_view request_id, bool head_request, std::string& out,
                         const LocalReplyExtras& extras = {});

// Chunk framing: "1f4\r\n" before `size` bytes of data (the data is followed by "\r\n").
size_t write_chunk_header(char* out, size_t size);  // out needs 20 bytes
inline constexpr std::string_view kChunkEnd = "\r\n";
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

}  // namespace bulwark::http
