#pragma once
// The HTTP/1.x codec: hides llhttp from the rest of bulwark, and owns every decision about
// message framing.
//
// A Parser reads one direction of one connection. The owner appends bytes to a contiguous buffer
// and calls execute() on the new part; the parser reports the message head once it is complete
// (as spans into that buffer, so nothing is copied), then body data as pointers into the same
// buffer, then the end of the message. The owner must not move bytes of a head that is still
// being parsed; it may move the buffer as a whole (grow it), since spans are offsets.
//
// Every byte is treated as hostile. What llhttp 8.1 accepts too loosely, the parser does itself:
// - the request line (any RFC 9110 token method, one SP, a target of visible characters, one SP,
//   HTTP/1.x, CRLF); llhttp then sees a canonical line and parses the header fields;
// - chunked bodies (a bare CR or LF in a chunk line, an oversized chunk size, or a malformed
//   extension or trailer is an error; extensions and trailers are dropped);
// - framing: Transfer-Encoding and Content-Length are validated and classified at parse time
//   (RFC 9112 6), so a rewritten head is always framed from what was parsed, never copied.
// llhttp is compiled in strict mode, so a CR not followed by LF ends nothing: it is an error.

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "proxy/chunked.h"

namespace bulwark::http {

// A byte range inside the owner's buffer, as offsets so the buffer may be reallocated.
struct Span {
  uint32_t offset = 0;
  uint32_t length = 0;
};

// What a header field is to the proxy, decided once when the head is complete. Every header
// that framing, routing or forwarding depends on has its own kind, so no code re-scans names.
enum class HeaderKind : uint8_t {
  kOther,  // end to end: forwarded as it came
  kHost,
  kContentLength,     // framing: never copied, written from the parsed length
  kTransferEncoding,  // framing: never copied, written by the proxy when it chunks
  kConnection,        // hop by hop (RFC 9110 7.6.1)
  kKeepAlive,
  kProxyConnection,
  kTE,
  kTrailer,
  kUpgrade,
  kHttp2Settings,  // only meaningful with an h2c upgrade, which bulwark never forwards
  kExpect,
  kListedInConnection,  // an end-to-end name that a Connection header declared hop by hop
  kXForwardedFor,
  kXForwardedProto,
  kXRequestId,
  kIdempotencyKey,
  kXForwardedClientCert,  // set only by bulwark's TLS listeners (forward_client_cert)
};

struct Header {
  Span name;
  Span value;
  HeaderKind kind = HeaderKind::kOther;
};

// The head of a request or a response, valid from on_head() until the buffer is compacted.
struct MessageHead {
  const char* base = nullptr;      // the buffer the spans point into
  std::string_view method;         // requests: the method token as sent (points into the buffer)
  bool is_head_method = false;     // requests: HEAD
  bool is_connect_method = false;  // requests: CONNECT
  Span target;                     // requests: the request-target as sent
  int status = 0;                  // responses
  Span reason;                     // responses: the reason phrase
  uint8_t version_major = 1;
  uint8_t version_minor = 1;  // a request line's HTTP/1.2 and above reads as 1.1 (RFC 9112 2.3)
  std::vector<Header> headers;
  bool keep_alive = true;  // what the peer asked for (HTTP/1.0 defaults to close; TE on
                           // HTTP/1.0 forces close, RFC 9112 6.1)
  bool chunked = false;    // Transfer-Encoding is exactly "chunked"
  bool has_content_length = false;
  uint64_t content_length = 0;
  // Requests: Connection names "upgrade" and an Upgrade header is present (CONNECT aside); the
  // owner's on_head may clear it to refuse the upgrade, and the connection stays HTTP/1.1.
  // Responses: a 101 with both headers.
  bool upgrade = false;
  bool connection_close = false;       // a Connection header lists "close"
  bool connection_keep_alive = false;  // a Connection header lists "keep-alive"
  bool expect_continue = false;        // requests: Expect: 100-continue
  // Index into `headers` of the first header of a kind, or -1.
  int16_t host = -1;
  int16_t upgrade_header = -1;
  int16_t request_id = -1;
  int16_t idempotency_key = -1;
  int16_t keep_alive_header = -1;  // responses: Keep-Alive (its timeout bounds reuse)

  std::string_view str(Span s) const { return {base + s.offset, s.length}; }
  std::string_view value_of(int16_t index) const {
    return index < 0 ? std::string_view() : str(headers[static_cast<size_t>(index)].value);
  }
  // The first header of that name (ASCII case-insensitive), or nullptr.
  const Header* find(std::string_view name) const;
};

// Calls fn(element) for each element of a comma-separated list header value, trimmed of
// optional whitespace; empty elements are skipped (RFC 9110 5.6.1).
template <typename Fn>
void for_each_list_element(std::string_view value, Fn&& fn) {
  size_t i = 0;
  while (i <= value.size()) {
    size_t comma = value.find(',', i);
    if (comma == std::string_view::npos) comma = value.size();
    std::string_view t = value.substr(i, comma - i);
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    if (!t.empty()) fn(t);
    i = comma + 1;
  }
}

// True if every character may appear in a Host value or an authority (RFC 3986 reg-name,
// IP-literal, port): no spaces, controls, userinfo "@", path or query characters.
bool is_valid_host(std::string_view host);

// Why a message was refused. Each maps to one reply (see reasons.h): a request's to a 4xx/5xx
// of its own, a response's always to 502.
enum class ParseError : uint8_t {
  kNone,
  kMalformed,           // 400: any syntax or framing violation
  kHeadTooLarge,        // 431: the head passed max_head_size
  kTooManyHeaders,      // 431: more header fields than max_headers
  kUnsupportedCoding,   // 501: a transfer coding other than chunked (RFC 9112 6.1)
  kVersionNotSupported  // 505: a request line of HTTP/2 or later
};

// What the codec tells its owner. Each call happens inside Parser::execute()/finish().
class ParserCallbacks {
 public:
  virtual ~ParserCallbacks() = default;
  // The head is complete. Return kNoBody to tell the parser this message has no body whatever
  // its headers say (a response to HEAD), kPause to stop parsing right after the head.
  enum HeadAction { kProceed = 0, kNoBody = 1, kPause = 2 };
  virtual HeadAction on_head(MessageHead& head) = 0;
  // Body bytes, de-chunked. `data` points into the owner's buffer.
  virtual void on_body(const char* data, size_t length) = 0;
  // The message is complete. Parsing pauses right after it, so the owner handles one message at
  // a time; resume() continues with the next one.
  virtual void on_message_complete() = 0;
};

class Parser {
 public:
  enum class Type { kRequest, kResponse };
  enum class Status {
    kOk,            // bytes consumed, message incomplete or complete; all of them but a CR
                    // that may start an empty line before a request line (kept until its LF)
    kPaused,        // stopped after a message (or head); `consumed` tells where
    kUpgrade,       // the connection switches protocol; bytes after `consumed` are raw
    kError,         // malformed; `error` and `code` say why
    kHeadTooLarge,  // the head exceeded the limit
  };
  struct Result {
    Status status = Status::kOk;
    size_t consumed = 0;     // bytes of [from, to) the parser used
    const char* error = "";  // for kError: a static string
    ParseError code = ParseError::kNone;
  };

  static constexpr size_t kDefaultMaxHeaders = 100;
  static constexpr size_t kMaxConnectionTokens = 32;  // more in one head is refused

  Parser(Type type, ParserCallbacks* callbacks);
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // Parses base[from, to). `base` is the start of the owner's buffer (spans are relative to it).
  Result execute(const char* base, size_t from, size_t to);
  // The peer closed: completes a close-delimited body, or reports a truncated message.
  Result finish();
  // Continues after kPaused.
  void resume();
  // After kUpgrade, when the peer refused the switch (a request answered without 101): the
  // connection goes on as HTTP/1.1 with the next message.
  void resume_after_refused_upgrade();
  // Forgets everything, ready for a new connection or a new message after an error.
  void reset();
  // Between messages: gives back header storage a large head grew beyond the usual size.
  void trim();

  void set_max_head_size(size_t bytes) { max_head_size_ = bytes; }
  void set_max_headers(size_t count) { max_headers_ = count; }
  void set_callbacks(ParserCallbacks* callbacks) { callbacks_ = callbacks; }
  // True between the first byte of a message and its head being complete.
  bool in_head() const { return in_head_; }
  // True between a message's first byte and its end.
  bool in_message() const { return in_message_; }
  // True if the message being parsed ends only when the peer closes (a response without length).
  bool needs_eof() const;

  // llhttp's callbacks (public for the shared settings table).
  static int on_message_begin(llhttp_t* p);
  static int on_status(llhttp_t* p, const char* at, size_t len);
  static int on_header_field(llhttp_t* p, const char* at, size_t len);
  static int on_header_value(llhttp_t* p, const char* at, size_t len);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, size_t len);
  static int on_message_complete(llhttp_t* p);

 private:
  // Which part of a message the next byte belongs to.
  enum class Stage : uint8_t {
    kRequestLine,  // requests: ours, before llhttp sees the header fields
    kLlhttp,       // header fields, status line, Content-Length and close-delimited bodies
    kChunked,      // a chunked body: ours
    kChunkedDone,  // our chunked body ended; llhttp resumes with the next message
  };
  enum class LineScan { kMore, kDone, kError };

  static bool extend(Span& span, uint32_t offset, size_t len);
  // True (and remembered) when a head piece ending at offset + len passes the size limit.
  bool over_limit(uint32_t offset, size_t len);
  Result fail(ParseError code, const char* why, size_t consumed);
  LineScan scan_request_line(size_t& pos, size_t to, Result& error);
  Result run_llhttp(size_t from, size_t to);
  // Classifies the complete head's headers and checks framing; false (with error_) if invalid.
  bool classify(llhttp_t* p);
  struct FieldFacts;
  // Each header's kind and the indexes of the ones the proxy reads; Connection and
  // Transfer-Encoding into `facts`.
  bool classify_fields(bool request, FieldFacts& facts);
  // Content-Length and Transfer-Encoding together (RFC 9112 6), and keep-alive.
  bool check_framing(llhttp_t* p, const FieldFacts& facts);
  // What the start line requires: Host for requests, a valid status, a 101's Upgrade.
  bool check_start(bool request, const FieldFacts& facts);
  bool reject(ParseError code, const char* why);

  llhttp_t parser_;
  ParserCallbacks* callbacks_;
  MessageHead head_;
  const char* base_ = nullptr;
  size_t head_start_ = 0;  // offset of the message's first byte
  size_t max_head_size_ = 64 * 1024;
  size_t max_headers_ = kDefaultMaxHeaders;
  Span method_;  // requests: from our request-line scan
  Span request_target_;
  uint8_t request_minor_ = 1;
  Stage stage_;
  ChunkedDecoder chunked_;    // a chunked body's framing (ours, not llhttp's)
  bool own_chunked_ = false;  // the head just parsed starts a chunked body (ours to decode)
  bool in_head_ = false;
  bool in_message_ = false;
  bool in_value_ = false;  // the last header span seen was a value
  bool head_too_large_ = false;
  ParseError error_ = ParseError::kNone;  // set by a callback that fails the message
  const char* error_why_ = "";
};

}  // namespace bulwark::http
