#pragma once
// What the HTTP fuzz targets share: the layout of an input, a feeder that drives a Parser over
// it the way a connection does, a re-parser, and the two checkers that play the proxy's part on
// each side (Exchange::on_request_head, Exchange::on_try_head and Http1Connection::send_head,
// without sockets).
//
// The property they check is the one that catches request smuggling and response splitting:
// whatever bulwark's parser accepts, what bulwark writes on to the other side parses back, alone
// and whole, into the same message: same method, target or status, same framing, same body, the
// same end-to-end headers and the same routing host. A failed check prints the property and the
// bytes involved and aborts, which libFuzzer reports as a crash with the input saved.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/codec.h"
#include "proxy/headers.h"
#include "proxy/router.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/unit/proxy/http_test_util.h"

namespace bulwark::fuzz {

using http::BodyFraming;
using http::MessageHead;
using http::Parser;
using http::ParserCallbacks;

// An input is [flags] [n] [n piece sizes] [message bytes]. What the flags mean is up to each
// target. The message bytes arrive in pieces of 1 + size bytes, cycling through the n sizes
// (n is the low nibble of the second byte); with n = 0 they arrive all at once.
struct Input {
  uint8_t flags = 0;
  std::vector<size_t> pieces;
  std::string_view bytes;
};

inline Input parse_input(const uint8_t* data, size_t size) {
  Input in;
  size_t pos = 0;
  if (pos < size) in.flags = data[pos++];
  size_t n = pos < size ? data[pos++] & 0x0f : 0;
  for (size_t i = 0; i < n && pos < size; ++i) in.pieces.push_back(size_t{data[pos++]} + 1);
  in.bytes = {reinterpret_cast<const char*>(data) + pos, size - pos};
  return in;
}

// A head-size limit picked by two flag bits: the default, and three small enough that fuzzed
// inputs reach them.
inline size_t head_limit(unsigned two_bits) {
  static constexpr size_t kLimits[] = {64 * 1024, 4096, 256, 48};
  return kLimits[two_bits & 3];
}

// The part of the connection buffer the current execute() call parses. Body data must lie in it.
struct Window {
  const char* begin = nullptr;
  const char* end = nullptr;
  bool contains(const char* p, size_t n) const {
    return begin != nullptr && p >= begin && p <= end && n <= static_cast<size_t>(end - p);
  }
};

struct FeedResult {
  Parser::Status status = Parser::Status::kOk;  // of the last execute(), or of finish()
  size_t parsed = 0;                            // bytes of the input the parser used
  std::vector<size_t> message_ends;             // input offset right after each complete message
  bool stopped = false;                         // the callbacks asked to stop
};

// Drives `parser` over in.bytes as a connection does. Each execute() sees a fresh heap copy of
// exactly the bytes received so far, so ASan reports any read past them and any pointer kept
// from an earlier call. After a complete message it resumes; between messages, when `compact`
// is set, it drops the parsed bytes as a connection compacts its buffer, which moves every
// offset. It stops at an error, an upgrade, or when `stop` turns true at a pause (the callbacks
// returned kPause); at the end of the input it calls finish().
inline FeedResult feed(Parser& parser, const Input& in, bool compact, Window& window,
                       const bool& stop) {
  FeedResult result;
  const std::string_view bytes = in.bytes;
  size_t received = 0;
  size_t dropped = 0;  // bytes compacted away: the buffer starts at this input offset
  size_t next_piece = 0;
  bool need_more = true;  // the parser used what it could of the bytes received so far
  int idle_rounds = 0;    // pauses in a row that used no byte
  while (true) {
    if (need_more) {
      if (received == bytes.size()) break;
      size_t n = bytes.size() - received;
      if (!in.pieces.empty()) n = std::min(n, in.pieces[next_piece++ % in.pieces.size()]);
      received += n;
      need_more = false;
    }
    const size_t len = received - dropped;
    std::unique_ptr<char[]> buffer(new char[len]);
    std::memcpy(buffer.get(), bytes.data() + dropped, len);
    const size_t from = result.parsed - dropped;
    window = {buffer.get() + from, buffer.get() + len};
    Parser::Result r = parser.execute(buffer.get(), from, len);
    window = {};
    FUZZ_CHECK(r.consumed <= len - from,
               "consumed " + std::to_string(r.consumed) + " of " + std::to_string(len - from));
    result.parsed += r.consumed;
    result.status = r.status;
    switch (r.status) {
      case Parser::Status::kOk:
        // Everything, or all but the start of a line it cannot judge yet (a CR before a
        // request line stays until its LF comes): either way it needs more bytes.
        need_more = true;
        break;
      case Parser::Status::kPaused:
        idle_rounds = r.consumed == 0 ? idle_rounds + 1 : 0;
        FUZZ_CHECK(idle_rounds < 8, "the parser makes no progress at input offset " +
                                        std::to_string(result.parsed) + ": " + escaped(bytes));
        if (stop) {
          result.stopped = true;
          return result;
        }
        if (!parser.in_message()) result.message_ends.push_back(result.parsed);
        parser.resume();
        if (compact && !parser.in_message()) dropped = result.parsed;
        need_more = result.parsed == received;
        break;
      case Parser::Status::kUpgrade:
        if (!parser.in_message()) result.message_ends.push_back(result.parsed);
        return result;
      default:  // kError, kHeadTooLarge
        return result;
    }
  }
  Parser::Result f = parser.finish();
  result.status = f.status;
  if (f.status == Parser::Status::kPaused && !parser.in_message())
    result.message_ends.push_back(result.parsed);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Re-parsing what the proxy wrote.

// A message as re-parsed from what the proxy wrote, with what the router would see.
struct Message : test::RecordedMessage {
  std::string host;  // requests: what the router would see (request_host), "<bad target>" if none

  size_t count(std::string_view name) const {
    size_t n = 0;
    for (const auto& h : headers) n += http::iequals(h.first, name) ? 1 : 0;
    return n;
  }
  const std::string* value(std::string_view name) const {
    for (const auto& h : headers) {
      if (http::iequals(h.first, name)) return &h.second;
    }
    return nullptr;
  }
};

// The routing host of a request head, as the Exchange computes it.
inline std::string routing_host(const MessageHead& head) {
  RequestTarget target;
  if (!split_target(head.str(head.target), &target)) return "<bad target>";
  char buf[256];
  return std::string(request_host(head, target, buf, sizeof buf));
}

inline Message copy_head(const MessageHead& h, bool request) {
  Message m;
  static_cast<test::RecordedMessage&>(m) = test::record_head(h);
  if (request) m.host = routing_host(h);
  return m;
}

class Collector : public ParserCallbacks {
 public:
  Collector(bool request, HeadAction action) : request_(request), action_(action) {}
  std::vector<Message> messages;

  HeadAction on_head(MessageHead& head) override {
    messages.push_back(copy_head(head, request_));
    return action_;
  }
  void on_body(const char* data, size_t n) override { messages.back().body.append(data, n); }
  void on_message_complete() override { messages.back().complete = true; }

 private:
  bool request_;
  HeadAction action_;
};

struct Reparse {
  std::vector<Message> messages;
  Parser::Status status = Parser::Status::kOk;
  size_t consumed = 0;
  bool in_message = false;
  const char* error = "";
};

// Parses `bytes` at once with a fresh parser (resuming after each message), then finish() when
// `at_eof` (the peer closes after these bytes).
inline Reparse reparse(Parser::Type type, std::string_view bytes,
                       ParserCallbacks::HeadAction action, bool at_eof) {
  Collector collector(type == Parser::Type::kRequest, action);
  Parser parser(type, &collector);
  // The limits are policy, not validity: bulwark adds a few fields (forwarding headers, a
  // request id, framing), so a head at the original parser's limit may pass it afterwards.
  parser.set_max_head_size(1 << 20);
  parser.set_max_headers(Parser::kDefaultMaxHeaders + 16);
  std::unique_ptr<char[]> buffer(new char[bytes.size() + 1]);
  std::memcpy(buffer.get(), bytes.data(), bytes.size());
  Reparse out;
  for (int round = 0; round < 64; ++round) {
    Parser::Result r = parser.execute(buffer.get(), out.consumed, bytes.size());
    out.consumed += r.consumed;
    out.status = r.status;
    out.error = r.error;
    if (r.status != Parser::Status::kPaused || out.consumed == bytes.size()) break;
    parser.resume();
  }
  if (at_eof && out.status == Parser::Status::kOk) {
    Parser::Result f = parser.finish();
    out.status = f.status;
    if (f.status == Parser::Status::kError) out.error = f.error;
  }
  out.in_message = parser.in_message();
  out.messages = std::move(collector.messages);
  return out;
}

inline std::string describe(const Reparse& r) {
  std::string s = "re-parse: status " + std::to_string(static_cast<int>(r.status)) + " (" +
                  r.error + "), consumed " + std::to_string(r.consumed) + ", " +
                  std::to_string(r.messages.size()) + " message(s)";
  for (const Message& m : r.messages) {
    s += "\n  [" + escaped(m.method) + " " + escaped(m.target) + " " + std::to_string(m.status) +
         " " + std::to_string(m.version_major) + "." + std::to_string(m.version_minor) +
         (m.chunked ? " chunked" : "") +
         (m.has_content_length ? " cl=" + std::to_string(m.content_length) : "") +
         (m.keep_alive ? " keep-alive" : " close") + (m.upgrade ? " upgrade" : "") +
         " body=" + std::to_string(m.body.size()) + (m.complete ? " complete" : " incomplete") +
         "]";
  }
  return s;
}

// Frames `pieces` as the proxy does: one chunk per piece (an empty piece is
// skipped, as Outbox::add_chunk does), then the last chunk; or the bytes as they are.
inline void append_body(std::string& out, BodyFraming framing,
                        const std::vector<std::string>& pieces) {
  for (const std::string& p : pieces) {
    if (framing == BodyFraming::kChunked) {
      if (p.empty()) continue;
      char line[20];
      out.append(line, http::write_chunk_header(line, p.size()));
      out.append(p);
      out.append(http::kChunkEnd);
    } else {
      out.append(p);
    }
  }
  if (framing == BodyFraming::kChunked) out.append(http::kLastChunk);
}

inline bool is_named(std::string_view name, std::initializer_list<std::string_view> names) {
  for (std::string_view n : names) {
    if (http::iequals(name, n)) return true;
  }
  return false;
}

// Whether a header of `message` is end to end (RFC 9110 7.6.1): not one of the hop-by-hop or
// framing fields, which the proxy drops and writes itself, and not named by a Connection option,
// unless it is one of the fields the proxy reads itself (a client cannot strip those).
inline bool forwarded(const Message& message, std::string_view name) {
  if (is_named(name, {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
                      "proxy-connection", "te", "trailer", "upgrade", "http2-settings",
                      "x-forwarded-for", "x-forwarded-proto"}))
    return false;
  if (is_named(name, {"expect", "x-request-id", "idempotency-key"})) return true;
  bool listed = false;
  for (const auto& h : message.headers) {
    if (!http::iequals(h.first, "connection")) continue;
    http::for_each_list_element(
        h.second, [&](std::string_view token) { listed = listed || http::iequals(token, name); });
  }
  return !listed;
}

// ---------------------------------------------------------------------------------------------
// The proxy's two sides.

// One message passing through: what the parser reported, what was written, the body pieces.
struct Passage {
  bool active = false;  // a head was rewritten for this message
  BodyFraming framing = BodyFraming::kNone;
  bool upgrade = false;
  std::string head_out;
  Message original;
  std::vector<std::string> pieces;
  size_t body_size = 0;
};

// Body checks both sides share: the data lies in the bytes being parsed, de-chunking never
// produces more than came in, and a message framed without a body gets none (bytes the proxy
// would forward unframed are how a second, smuggled message starts).
class BodyChecks {
 protected:
  BodyChecks(const Window& window, std::string_view input) : window_(window), input_(input) {}

  void body(Passage& passage, const char* data, size_t n) {
    FUZZ_CHECK(window_.contains(data, n), "body data outside the bytes being parsed");
    body_bytes_ += n;
    FUZZ_CHECK(body_bytes_ <= input_.size(), "more body bytes than input bytes");
    if (!passage.active) return;
    FUZZ_CHECK(passage.framing != BodyFraming::kNone,
               "body bytes for a message framed without a body: " + context());
    passage.pieces.emplace_back(data, n);
    passage.body_size += n;
  }

  // The message as the parser reported it, body included.
  Message completed(const Passage& passage) {
    Message done = passage.original;
    for (const std::string& p : passage.pieces) done.body += p;
    done.complete = true;
    if (passage.framing == BodyFraming::kContentLength) {
      FUZZ_CHECK(passage.body_size == passage.original.content_length,
                 "body size differs from Content-Length: " + context());
    }
    return done;
  }

  std::string context() const { return "input message bytes: " + escaped(input_); }

  const Window& window_;
  std::string_view input_;
  size_t body_bytes_ = 0;
};

// The request side: for each request head, what bulwark would send upstream.
class RequestChecker : public ParserCallbacks, BodyChecks {
 public:
  // Flag bit 3 adds a prefix_rewrite of "/api" to "/v2", bit 5 trusts two proxies in front
  // (trusted_hops: their X-Forwarded-For entries and X-Forwarded-Proto are kept).
  RequestChecker(const Window& window, std::string_view input, uint8_t flags)
      : BodyChecks(window, input), rewrite_(flags & 8), trusted_hops_(flags & 32 ? 2 : 0) {}

  bool stop = false;               // the proxy would answer locally and close: stop feeding
  std::vector<Message> completed;  // each complete message, as the parser reported it
  size_t body_bytes() const { return body_bytes_; }

  HeadAction on_head(MessageHead& head) override {
    passage_ = {};
    passage_.original = copy_head(head, true);
    // As Exchange::on_request_head. An upgrade goes on only for a protocol bulwark forwards
    // (websocket); otherwise the connection stays HTTP/1.1.
    const bool wants_upgrade = head.upgrade;
    head.upgrade = false;
    // Refused with a local reply, after which the connection closes: CONNECT, and a target that
    // is neither origin-form, nor absolute-form with a valid authority, nor "*" for OPTIONS.
    RequestTarget target;
    std::string_view raw_target = head.str(head.target);
    if (head.is_connect_method || raw_target.empty() || !split_target(raw_target, &target) ||
        (target.path == "*" && head.method != "OPTIONS") ||
        (raw_target.front() != '/' && raw_target != "*" &&
         (target.authority.empty() || !http::is_valid_host(target.authority)))) {
      stop = true;
      return kPause;
    }
    passage_.framing = http::request_framing(head);
    std::string path;
    if (rewrite_ && target.path.substr(0, 4) == "/api") {
      path = "/v2";
      path.append(target.path.substr(4));
      path.append(target.query);
    } else if (!target.authority.empty()) {
      path.assign(target.path);
      path.append(target.query);
    } else {
      path.assign(raw_target);
    }
    http::UpstreamRequestHead how;
    std::string protocols;
    if (wants_upgrade) {
      static const std::vector<std::string> kWebSocket = {"websocket"};
      http::forwarded_upgrades(head.value_of(head.upgrade_header), kWebSocket, protocols);
      head.upgrade = !protocols.empty();
      how.upgrade_protocols = protocols;
    }
    passage_.upgrade = head.upgrade;
    // The client's request id is kept when the proxy keeps it (Exchange::take_request_id).
    std::string_view rid = head.value_of(head.request_id);
    how.path = path;
    how.authority = target.authority;
    how.client_address = kClientAddress;
    how.trusted_hops = trusted_hops_;
    how.add_request_id = !http::usable_request_id(rid);
    how.request_id =
        how.add_request_id ? std::string_view("0123456789abcdef0123456789abcdef") : rid;
    how.upgrade = passage_.upgrade;
    how.framing = passage_.framing;
    http::write_upstream_request(head, how, passage_.head_out);
    passage_.active = true;
    check_head(head, how);
    return kProceed;
  }

  void on_body(const char* data, size_t n) override { body(passage_, data, n); }

  void on_message_complete() override {
    if (!passage_.active) return;
    completed.push_back(BodyChecks::completed(passage_));
    const std::string& body = completed.back().body;
    if (passage_.upgrade) return;  // what follows is a tunnel
    // Head and body as they go upstream parse back into one complete message, the same body.
    std::string upstream = passage_.head_out;
    append_body(upstream, passage_.framing, passage_.pieces);
    Reparse r = reparse(Parser::Type::kRequest, upstream, kProceed, false);
    std::string why = describe(r) + "\nupstream bytes: " + escaped(upstream) + "\n" + context();
    FUZZ_CHECK(r.messages.size() == 1 && r.messages[0].complete &&
                   r.status == Parser::Status::kPaused && r.consumed == upstream.size(),
               why);
    FUZZ_CHECK(r.messages[0].body == body, "the body parses back differently\n" + why);
  }

 private:
  void check_head(const MessageHead& head, const http::UpstreamRequestHead& how) {
    const std::string& out = passage_.head_out;
    const Message& in = passage_.original;
    bool no_body = how.framing == BodyFraming::kNone ||
                   (how.framing == BodyFraming::kContentLength && head.content_length == 0);
    Reparse r = reparse(Parser::Type::kRequest, out, kProceed, false);
    std::string why = describe(r) + "\nrewritten head: " + escaped(out) + "\n" + context();
    // One head, every byte of it, and nothing after it.
    FUZZ_CHECK(r.messages.size() == 1 && r.consumed == out.size(), why);
    if (how.upgrade) {
      FUZZ_CHECK(r.status == Parser::Status::kUpgrade || r.status == Parser::Status::kOk, why);
    } else if (no_body) {
      FUZZ_CHECK(r.status == Parser::Status::kPaused && r.messages[0].complete, why);
    } else {
      FUZZ_CHECK(r.status == Parser::Status::kOk && r.in_message, why);
    }
    const Message& m = r.messages[0];
    FUZZ_CHECK(m.method == in.method && m.target == how.path, why);
    FUZZ_CHECK(m.version_major == 1 && m.version_minor == 1, why);
    FUZZ_CHECK(m.chunked == (how.framing == BodyFraming::kChunked), why);
    FUZZ_CHECK(m.has_content_length == (how.framing == BodyFraming::kContentLength), why);
    FUZZ_CHECK(
        m.content_length == head.content_length || how.framing != BodyFraming::kContentLength, why);
    FUZZ_CHECK(m.count("content-length") <= 1 && m.count("transfer-encoding") <= 1, why);
    FUZZ_CHECK(m.upgrade == how.upgrade, why);
    // The upstream routes on the host bulwark routed on, and sees only one.
    FUZZ_CHECK(m.count("host") == 1, "not one Host header upstream\n" + why);
    FUZZ_CHECK(m.host == in.host, "upstream host [" + escaped(m.host) + "] differs from routed [" +
                                      escaped(in.host) + "]\n" + why);
    // X-Forwarded-For ends with the client bulwark saw, after at most trusted_hops others.
    FUZZ_CHECK(m.count("x-forwarded-for") == 1 && m.count("x-forwarded-proto") == 1, why);
    std::string_view xff = *m.value("x-forwarded-for");
    size_t hops = 0;
    http::for_each_list_element(xff, [&](std::string_view) { ++hops; });
    FUZZ_CHECK(xff.size() >= kClientAddress.size() &&
                   xff.substr(xff.size() - kClientAddress.size()) == kClientAddress &&
                   hops <= trusted_hops_ + 1,
               why);
    if (trusted_hops_ == 0)
      FUZZ_CHECK(xff == kClientAddress && *m.value("x-forwarded-proto") == "http", why);
    FUZZ_CHECK(m.count("x-request-id") >= 1, why);
    if (how.add_request_id) FUZZ_CHECK(m.count("x-request-id") == 1, why);
    // Every end-to-end header goes through once, unchanged, in order; so does Host, unless an
    // absolute-form authority replaced it.
    std::vector<std::pair<std::string, std::string>> expected, got;
    for (const auto& h : in.headers) {
      if (http::iequals(h.first, "host")) {
        expected.emplace_back("Host",
                              how.authority.empty() ? h.second : std::string(how.authority));
      } else if (how.add_request_id && http::iequals(h.first, "x-request-id")) {
        continue;  // an id bulwark cannot use is replaced by the one it adds, not forwarded
      } else if (forwarded(in, h.first)) {
        expected.push_back(h);
      }
    }
    if (in.count("host") == 0 && !how.authority.empty())
      expected.emplace_back("Host", std::string(how.authority));
    bool skipped_added_id = false;
    for (const auto& h : m.headers) {
      if (is_named(h.first, {"content-length", "transfer-encoding", "x-forwarded-for",
                             "x-forwarded-proto", "connection", "upgrade"}))
        continue;
      // The id bulwark added in place of the client's (none, empty or too long to keep).
      if (how.add_request_id && !skipped_added_id && http::iequals(h.first, "x-request-id") &&
          h.second == how.request_id) {
        skipped_added_id = true;
        continue;
      }
      got.push_back(h);
      if (http::iequals(h.first, "host"))
        got.back().first = "Host";  // the name as bulwark writes it
    }
    FUZZ_CHECK(expected == got, "end-to-end headers differ\n" + why);
  }

  static constexpr std::string_view kClientAddress = "192.0.2.7";

  bool rewrite_;
  uint32_t trusted_hops_;
  Passage passage_;
};

// The response side: for each response head, what bulwark would send to the client.
class ResponseChecker : public ParserCallbacks, BodyChecks {
 public:
  // Flag bits: 1 the request was HEAD, 2 the client speaks HTTP/1.0, 3 the client wants to keep
  // the connection, 4 the request asked to upgrade to websocket, 5 it took three tries.
  ResponseChecker(const Window& window, std::string_view input, uint8_t flags)
      : BodyChecks(window, input),
        head_request_(flags & 2),
        client_http10_(flags & 4),
        client_keep_alive_(flags & 8),
        request_upgrade_(flags & 16),
        attempts_(flags & 32 ? 3 : 1) {}

  bool stop = false;
  std::vector<Message> completed;
  size_t body_bytes() const { return body_bytes_; }

  HeadAction on_head(MessageHead& head) override {
    passage_ = {};
    passage_.original = copy_head(head, false);
    interim_ = false;
    FUZZ_CHECK(head.status >= 100 && head.status <= 599,
               "status " + std::to_string(head.status) + " accepted: " + context());
    // As Exchange::on_try_head and Http1Connection::send_head.
    http::DownstreamResponseHead how;
    how.request_id = kRequestId;
    how.attempts = attempts_;
    if (head.status >= 100 && head.status < 200 && head.status != 101) {
      // Goes to the client as it comes (the HTTP/1.0 client does not get it; checked anyway).
      interim_ = true;
      if (++interim_count_ > 16) {  // the upstream is broken: 502
        stop = true;
        return kPause;
      }
      how = {};
      how.framing = BodyFraming::kNone;
    } else if (head.status == 101) {
      bool offered = http::iequals(head.value_of(head.upgrade_header), "websocket");
      if (!request_upgrade_ || !offered) {  // bulwark fails the try: 502
        stop = true;
        return kPause;
      }
      how.upgrade = true;
      how.framing = BodyFraming::kNone;
      passage_.upgrade = true;
    } else {
      how.framing = http::response_framing(
          head, http::response_has_no_body(head_request_, head.status), client_http10_);
      how.keep_alive = client_keep_alive_ && how.framing != BodyFraming::kClose;
      how.http10_keep_alive = client_http10_ && how.keep_alive;
    }
    passage_.framing = how.framing;
    http::write_downstream_response(head, how, passage_.head_out);
    passage_.active = true;
    check_head(head, how);
    return how.framing == BodyFraming::kNone && !how.upgrade ? kNoBody : kProceed;
  }

  void on_body(const char* data, size_t n) override { body(passage_, data, n); }

  void on_message_complete() override {
    if (!passage_.active) return;
    completed.push_back(BodyChecks::completed(passage_));
    const std::string& body = completed.back().body;
    if (passage_.upgrade || interim_) return;
    std::string client = passage_.head_out;
    append_body(client, passage_.framing, passage_.pieces);
    bool close_delimited = passage_.framing == BodyFraming::kClose;
    Reparse r =
        reparse(Parser::Type::kResponse, client,
                passage_.framing == BodyFraming::kNone ? kNoBody : kProceed, close_delimited);
    std::string why = describe(r) + "\nclient bytes: " + escaped(client) + "\n" + context();
    FUZZ_CHECK(r.messages.size() == 1 && r.messages[0].complete && r.consumed == client.size(),
               why);
    FUZZ_CHECK(
        r.status == Parser::Status::kPaused || (close_delimited && r.status == Parser::Status::kOk),
        why);
    FUZZ_CHECK(r.messages[0].body == body, "the body parses back differently\n" + why);
  }

 private:
  static constexpr std::string_view kRequestId = "0123456789abcdef0123456789abcdef";

  void check_head(const MessageHead& head, const http::DownstreamResponseHead& how) {
    const std::string& out = passage_.head_out;
    const Message& in = passage_.original;
    bool no_body = how.framing == BodyFraming::kNone ||
                   (how.framing == BodyFraming::kContentLength && head.content_length == 0);
    Reparse r = reparse(Parser::Type::kResponse, out,
                        how.framing == BodyFraming::kNone ? kNoBody : kProceed, false);
    std::string why = describe(r) + "\nrewritten head: " + escaped(out) + "\n" + context();
    FUZZ_CHECK(r.messages.size() == 1 && r.consumed == out.size(), why);
    if (how.upgrade) {
      FUZZ_CHECK(r.status == Parser::Status::kUpgrade, why);
    } else if (no_body) {
      FUZZ_CHECK(r.status == Parser::Status::kPaused && r.messages[0].complete, why);
    } else {
      FUZZ_CHECK(r.status == Parser::Status::kOk && r.in_message, why);
    }
    const Message& m = r.messages[0];
    FUZZ_CHECK(m.status == in.status, why);
    FUZZ_CHECK(
        m.reason == (in.reason.empty() ? std::string(http::reason_phrase(in.status)) : in.reason),
        why);
    FUZZ_CHECK(m.version_major == 1 && m.version_minor == 1, why);
    FUZZ_CHECK(m.upgrade == how.upgrade, why);
    switch (how.framing) {
      case BodyFraming::kContentLength:
        FUZZ_CHECK(m.has_content_length && !m.chunked && m.content_length == head.content_length,
                   why);
        break;
      case BodyFraming::kChunked:
        FUZZ_CHECK(m.chunked && !m.has_content_length, why);
        break;
      case BodyFraming::kClose:
        FUZZ_CHECK(!m.chunked && !m.has_content_length && !m.keep_alive, why);
        break;
      case BodyFraming::kNone:
        FUZZ_CHECK(!m.chunked, why);
        break;
    }
    FUZZ_CHECK(m.count("content-length") <= 1 && m.count("transfer-encoding") <= 1, why);
    // The client closes when bulwark will, and keeps the connection when bulwark does. (After
    // a HEAD request only the client knows the response has no body; a parser that does not
    // know it reads a response without length as close-delimited.)
    if (!how.upgrade && !(head_request_ && how.framing == BodyFraming::kNone)) {
      FUZZ_CHECK(m.keep_alive == how.keep_alive, "keep-alive differs\n" + why);
    }
    bool added_id = !interim_ && in.count("x-request-id") == 0;
    if (added_id) {
      FUZZ_CHECK(m.count("x-request-id") == 1 && *m.value("x-request-id") == kRequestId, why);
    }
    bool replaced_attempts = !interim_ && attempts_ > 1;
    if (replaced_attempts) {
      FUZZ_CHECK(m.count("x-bulwark-attempts") == 1 && *m.value("x-bulwark-attempts") == "3", why);
    }
    // Every end-to-end header goes through once, unchanged, in order (Host means nothing in a
    // response and is dropped; X-Forwarded-* pass, they are the upstream's own).
    std::vector<std::pair<std::string, std::string>> expected, got;
    for (const auto& h : in.headers) {
      if (replaced_attempts && http::iequals(h.first, "x-bulwark-attempts")) continue;
      if (is_named(h.first, {"x-forwarded-for", "x-forwarded-proto"}) || forwarded(in, h.first))
        expected.push_back(h);
    }
    for (const auto& h : m.headers) {
      if (is_named(h.first, {"content-length", "transfer-encoding", "connection", "upgrade"}))
        continue;
      if (added_id && http::iequals(h.first, "x-request-id")) continue;
      if (replaced_attempts && http::iequals(h.first, "x-bulwark-attempts")) continue;
      got.push_back(h);
    }
    FUZZ_CHECK(expected == got, "end-to-end headers differ\n" + why);
  }

  bool head_request_;
  bool client_http10_;
  bool client_keep_alive_;
  bool request_upgrade_;
  uint32_t attempts_;
  bool interim_ = false;
  uint32_t interim_count_ = 0;
  Passage passage_;
};

}  // namespace bulwark::fuzz
