#include "proxy/codec.h"

#include <strings.h>

#include <array>
#include <cstring>

#include "proxy/http_chars.h"

namespace bulwark::http {

const Header* MessageHead::find(std::string_view name) const {
  for (const Header& h : headers) {
    if (h.name.length == name.size() &&
        strncasecmp(base + h.name.offset, name.data(), name.size()) == 0) {
      return &h;
    }
  }
  return nullptr;
}

namespace {

// The callbacks are the same for every parser, so all of them share one settings table (it is
// 184 bytes, and llhttp keeps only a pointer to it): less memory per connection.
const llhttp_settings_t* parser_settings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = &Parser::on_message_begin;
    s.on_status = &Parser::on_status;
    s.on_header_field = &Parser::on_header_field;
    s.on_header_value = &Parser::on_header_value;
    s.on_header_value_complete = &Parser::on_header_value_complete;
    s.on_headers_complete = &Parser::on_headers_complete;
    s.on_body = &Parser::on_body;
    s.on_message_complete = &Parser::on_message_complete;
    return s;
  }();
  return &settings;
}

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

HeaderKind kind_of(std::string_view name) {
  switch (name.size()) {
    case 2:
      return iequal(name, "te") ? HeaderKind::kTE : HeaderKind::kOther;
    case 4:
      return iequal(name, "host") ? HeaderKind::kHost : HeaderKind::kOther;
    case 6:
      return iequal(name, "expect") ? HeaderKind::kExpect : HeaderKind::kOther;
    case 7:
      if (iequal(name, "upgrade")) return HeaderKind::kUpgrade;
      return iequal(name, "trailer") ? HeaderKind::kTrailer : HeaderKind::kOther;
    case 10:
      if (iequal(name, "connection")) return HeaderKind::kConnection;
      return iequal(name, "keep-alive") ? HeaderKind::kKeepAlive : HeaderKind::kOther;
    case 12:
      return iequal(name, "x-request-id") ? HeaderKind::kXRequestId : HeaderKind::kOther;
    case 14:
      if (iequal(name, "content-length")) return HeaderKind::kContentLength;
      return iequal(name, "http2-settings") ? HeaderKind::kHttp2Settings : HeaderKind::kOther;
    case 15:
      if (iequal(name, "x-forwarded-for")) return HeaderKind::kXForwardedFor;
      return iequal(name, "idempotency-key") ? HeaderKind::kIdempotencyKey : HeaderKind::kOther;
    case 16:
      return iequal(name, "proxy-connection") ? HeaderKind::kProxyConnection : HeaderKind::kOther;
    case 17:
      if (iequal(name, "transfer-encoding")) return HeaderKind::kTransferEncoding;
      return iequal(name, "x-forwarded-proto") ? HeaderKind::kXForwardedProto : HeaderKind::kOther;
    case 23:
      return iequal(name, "x-forwarded-client-cert") ? HeaderKind::kXForwardedClientCert
                                                     : HeaderKind::kOther;
    default:
      return HeaderKind::kOther;
  }
}

// The request line llhttp is given once ours has been checked: it only needs the version (for
// its keep-alive bookkeeping); method and target are ours.
constexpr std::string_view kCanonicalLine11 = "GET / HTTP/1.1\r\n";
constexpr std::string_view kCanonicalLine10 = "GET / HTTP/1.0\r\n";

}  // namespace

bool is_valid_host(std::string_view host) {
  // host [ ":" port ], host = IP-literal / IPv4address / reg-name (RFC 3986 3.2.2).
  size_t i = 0;
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (i = 1; i < close; ++i) {
      char c = host[i];
      if (hex_value(c) < 0 && c != ':' && c != '.') return false;
    }
    i = close + 1;
  } else {
    while (i < host.size() && host[i] != ':') {
      if (!kRegNameChar[static_cast<unsigned char>(host[i])]) return false;
      ++i;
    }
  }
  if (i == host.size()) return true;
  if (host[i] != ':') return false;
  for (++i; i < host.size(); ++i) {
    if (host[i] < '0' || host[i] > '9') return false;
  }
  return true;
}

Parser::Parser(Type type, ParserCallbacks* callbacks)
    : callbacks_(callbacks), stage_(type == Type::kRequest ? Stage::kRequestLine : Stage::kLlhttp) {
  // llhttp_init takes a non-const pointer but never writes through it.
  llhttp_init(&parser_, type == Type::kRequest ? HTTP_REQUEST : HTTP_RESPONSE,
              const_cast<llhttp_settings_t*>(parser_settings()));
  parser_.data = this;
  // Enough for most messages; the vector grows for more and trim() gives that back. Not more
  // up front: a request parser lives as long as its connection, idle ones included.
  head_.headers.reserve(8);
}

void Parser::reset() {
  llhttp_reset(&parser_);
  in_head_ = in_message_ = in_value_ = head_too_large_ = own_chunked_ = false;
  stage_ = parser_.type == HTTP_REQUEST ? Stage::kRequestLine : Stage::kLlhttp;
  error_ = ParseError::kNone;
}

void Parser::trim() {
  if (head_.headers.capacity() <= 16 || in_message_) return;
  std::vector<Header> small;
  small.reserve(8);
  head_.headers.swap(small);
}

void Parser::resume() {
  if (stage_ == Stage::kChunkedDone) {
    stage_ = parser_.type == HTTP_REQUEST ? Stage::kRequestLine : Stage::kLlhttp;
  }
  llhttp_resume(&parser_);
}

void Parser::resume_after_refused_upgrade() {
  llhttp_resume_after_upgrade(&parser_);
  in_message_ = in_head_ = false;
  if (parser_.type == HTTP_REQUEST) stage_ = Stage::kRequestLine;
}

bool Parser::needs_eof() const {
  return stage_ == Stage::kLlhttp && llhttp_message_needs_eof(&parser_) != 0;
}

Parser::Result Parser::fail(ParseError code, const char* why, size_t consumed) {
  Result r;
  r.status = code == ParseError::kHeadTooLarge ? Status::kHeadTooLarge : Status::kError;
  r.code = code;
  r.error = why;
  r.consumed = consumed;
  return r;
}

Parser::Result Parser::execute(const char* base, size_t from, size_t to) {
  base_ = base;
  size_t pos = from;
  while (true) {
    switch (stage_) {
      case Stage::kRequestLine: {
        Result error;
        LineScan scan = scan_request_line(pos, to, error);
        if (scan == LineScan::kError) {
          error.consumed = pos - from;
          return error;
        }
        if (scan == LineScan::kMore) {
          Result r;
          r.consumed = pos - from;
          if (in_head_ && to - head_start_ > max_head_size_) {
            return fail(ParseError::kHeadTooLarge, "request line too long", r.consumed);
          }
          return r;
        }
        std::string_view line = request_minor_ == 0 ? kCanonicalLine10 : kCanonicalLine11;
        if (llhttp_execute(&parser_, line.data(), line.size()) != HPE_OK) {
          // The previous message asked to close (llhttp is strict about it): nothing may follow.
          return fail(ParseError::kMalformed, "data after a message that closes the connection",
                      pos - from);
        }
        stage_ = Stage::kLlhttp;
        continue;
      }
      case Stage::kLlhttp: {
        Result r = run_llhttp(pos, to);
        pos += r.consumed;
        // Our chunked decoder takes over from llhttp right after the head.
        if (r.status == Status::kPaused && stage_ == Stage::kChunked) continue;
        r.consumed = pos - from;
        return r;
      }
      case Stage::kChunked: {
        const ChunkedDecoder::Status st =
            chunked_.decode(base_, pos, to, *callbacks_, max_head_size_);
        if (st == ChunkedDecoder::Status::kError) {
          Result error = fail(ParseError::kMalformed, chunked_.error(), 0);
          error.consumed = pos - from;
          return error;
        }
        Result r;
        r.consumed = pos - from;
        if (st == ChunkedDecoder::Status::kDone) {
          stage_ = Stage::kChunkedDone;
          in_message_ = false;
          callbacks_->on_message_complete();
          r.status = Status::kPaused;
        }
        return r;
      }
      case Stage::kChunkedDone: {
        Result r;  // the owner has not resumed yet: nothing is parsed until it does
        r.status = Status::kPaused;
        return r;
      }
    }
  }
}

Parser::LineScan Parser::scan_request_line(size_t& pos, size_t to, Result& error) {
  if (!in_message_) {
    // RFC 9112 2.2: empty lines (CRLF) before a request line are ignored.
    while (pos < to && base_[pos] == '\r') {
      if (pos + 1 == to) return LineScan::kMore;  // the CR stays unconsumed until its LF comes
      if (base_[pos + 1] != '\n') {
        error = fail(ParseError::kMalformed, "bare CR before the request line", 0);
        return LineScan::kError;
      }
      pos += 2;
    }
    if (pos == to) return LineScan::kMore;
    in_head_ = in_message_ = true;
    head_too_large_ = false;
    error_ = ParseError::kNone;
    head_start_ = pos;
  }
  // The line may come in pieces, each consumed as it comes (the owner keeps a head's bytes in
  // place): only the new bytes are searched for its end.
  const char* begin = base_ + head_start_;
  const void* lf = std::memchr(base_ + pos, '\n', to - pos);
  if (lf == nullptr) {
    pos = to;
    return LineScan::kMore;
  }
  size_t line_length = static_cast<size_t>(static_cast<const char*>(lf) - begin);
  auto bad = [&](ParseError code, const char* why) {
    error = fail(code, why, 0);
    return LineScan::kError;
  };
  if (line_length == 0 || begin[line_length - 1] != '\r')
    return bad(ParseError::kMalformed, "request line not ended by CRLF");
  std::string_view line(begin, line_length - 1);
  size_t i = 0;
  while (i < line.size() && is_tchar(line[i])) ++i;
  if (i == 0 || i == line.size() || line[i] != ' ')
    return bad(ParseError::kMalformed, "invalid method");
  size_t method_end = i++;
  size_t target_start = i;
  while (i < line.size() && is_target_char(line[i])) ++i;
  if (i == target_start) return bad(ParseError::kMalformed, "invalid request target");
  if (i == line.size())
    return bad(ParseError::kMalformed, "no HTTP version (HTTP/0.9 is not served)");
  if (line[i] != ' ') return bad(ParseError::kMalformed, "invalid character in request target");
  size_t target_end = i++;
  std::string_view version = line.substr(i);
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
    return bad(ParseError::kMalformed, "invalid protocol version");
  }
  if (version[5] == '0') return bad(ParseError::kMalformed, "invalid protocol version");
  if (version[5] != '1') return bad(ParseError::kVersionNotSupported, "HTTP version not supported");
  request_minor_ = version[7] == '0' ? 0 : 1;  // HTTP/1.2 and later minors: 1.1 (RFC 9112 2.3)
  method_ = {static_cast<uint32_t>(head_start_), static_cast<uint32_t>(method_end)};
  request_target_ = {static_cast<uint32_t>(head_start_ + target_start),
                     static_cast<uint32_t>(target_end - target_start)};
  if (line_length + 1 > max_head_size_) {
    error = fail(ParseError::kHeadTooLarge, "request line too long", 0);
    return LineScan::kError;
  }
  pos = head_start_ + line_length + 1;
  return LineScan::kDone;
}

Parser::Result Parser::run_llhttp(size_t from, size_t to) {
  // Parsing pauses after each message, so a new message always starts at `from`.
  if (!in_message_) head_start_ = from;
  Result result;
  llhttp_errno_t err = llhttp_execute(&parser_, base_ + from, to - from);
  switch (err) {
    case HPE_OK:
      result.consumed = to - from;
      if (in_head_ && to - head_start_ > max_head_size_) {
        return fail(ParseError::kHeadTooLarge, "head too large", result.consumed);
      }
      return result;
    case HPE_PAUSED:
      result.status = Status::kPaused;
      break;
    case HPE_PAUSED_UPGRADE:
      result.status = Status::kUpgrade;
      break;
    default: {
      ParseError code = error_ != ParseError::kNone ? error_
                        : head_too_large_           ? ParseError::kHeadTooLarge
                                                    : ParseError::kMalformed;
      const char* why =
          error_ != ParseError::kNone ? error_why_ : llhttp_get_error_reason(&parser_);
      if (why == nullptr) why = llhttp_errno_name(err);
      result = fail(code, why, 0);
      break;
    }
  }
  const char* pos = llhttp_get_error_pos(&parser_);
  result.consumed =
      pos != nullptr && pos >= base_ + from ? static_cast<size_t>(pos - (base_ + from)) : 0;
  return result;
}

Parser::Result Parser::finish() {
  Result result;
  if (!in_message_) return result;  // the peer closed between messages: nothing lost
  if (!needs_eof()) {
    return fail(ParseError::kMalformed, "connection closed before the message was complete", 0);
  }
  llhttp_errno_t err = llhttp_finish(&parser_);
  if (err == HPE_OK) return result;
  if (err == HPE_PAUSED) {
    result.status = Status::kPaused;
    return result;
  }
  const char* why = llhttp_get_error_reason(&parser_);
  return fail(ParseError::kMalformed, why != nullptr ? why : llhttp_errno_name(err), 0);
}

bool Parser::extend(Span& span, uint32_t offset, size_t len) {
  // The owner's buffer is contiguous, so a span split across two execute() calls continues
  // exactly where the previous piece ended. A gap means llhttp skipped bytes inside the value:
  // an obs-fold line continuation (RFC 9112 5.2), which we reject.
  if (span.length == 0) {
    span.offset = offset;
  } else if (span.offset + span.length != offset) {
    return false;
  }
  span.length += static_cast<uint32_t>(len);
  return true;
}

int Parser::on_message_begin(llhttp_t* p) {
  auto* self = static_cast<Parser*>(p->data);
  self->in_head_ = true;
  self->in_message_ = true;
  self->in_value_ = false;
  self->own_chunked_ = false;
  if (p->type != HTTP_REQUEST) {
    // Requests start in our request-line scan, which has already set these.
    self->head_too_large_ = false;
    self->error_ = ParseError::kNone;
  }
  MessageHead& h = self->head_;
  h.base = self->base_;
  h.method = {};
  h.target = {};
  h.reason = {};
  h.status = 0;
  h.headers.clear();
  return 0;
}

bool Parser::over_limit(uint32_t offset, size_t len) {
  if (offset + len - head_start_ <= max_head_size_) return false;
  head_too_large_ = true;
  return true;
}

int Parser::on_status(llhttp_t* p, const char* at, size_t len) {
  auto* self = static_cast<Parser*>(p->data);
  auto offset = static_cast<uint32_t>(at - self->base_);
  if (self->over_limit(offset, len)) return -1;
  for (size_t i = 0; i < len; ++i) {
    if (!is_reason_char(at[i])) {
      llhttp_set_error_reason(p, "Invalid character in reason phrase");
      return HPE_USER;
    }
  }
  extend(self->head_.reason, offset, len);
  return 0;
}

int Parser::on_header_field(llhttp_t* p, const char* at, size_t len) {
  auto* self = static_cast<Parser*>(p->data);
  // Trailer fields (after a chunked body) are not part of the head; bulwark drops them.
  if (!self->in_head_) return 0;
  auto offset = static_cast<uint32_t>(at - self->base_);
  if (self->over_limit(offset, len)) return -1;
  auto& headers = self->head_.headers;
  if (headers.empty() || self->in_value_) {
    if (headers.size() >= self->max_headers_) {
      self->error_ = ParseError::kTooManyHeaders;
      self->error_why_ = "too many header fields";
      return -1;
    }
    headers.push_back({});
    self->in_value_ = false;
  }
  for (size_t i = 0; i < len; ++i) {
    if (!is_tchar(at[i])) {
      llhttp_set_error_reason(p, "Invalid character in header name");
      return HPE_USER;
    }
  }
  extend(headers.back().name, offset, len);
  return 0;
}

int Parser::on_header_value(llhttp_t* p, const char* at, size_t len) {
  auto* self = static_cast<Parser*>(p->data);
  // Trailers are dropped; an empty value can come as an empty piece placed past the line end.
  if (!self->in_head_ || len == 0) return 0;
  if (self->head_.headers.empty()) {
    llhttp_set_error_reason(p, "Header value without a name");
    return HPE_USER;
  }
  auto offset = static_cast<uint32_t>(at - self->base_);
  if (self->over_limit(offset, len)) return -1;
  Header& h = self->head_.headers.back();
  bool folded = false;
  if (h.value.length == 0) {
    // The value's first piece must be on the name's line: a line break between the colon and
    // the value is an obs-fold with an empty first line.
    for (uint32_t i = h.name.offset + h.name.length; i < offset; ++i) {
      char c = self->base_[i];
      if (c == '\r' || c == '\n') folded = true;
    }
  }
  self->in_value_ = true;
  if (folded || !extend(h.value, offset, len)) {
    llhttp_set_error_reason(p, "Header line folding (obs-fold) is not allowed");
    return HPE_USER;
  }
  return 0;
}

int Parser::on_header_value_complete(llhttp_t* p) {
  auto* self = static_cast<Parser*>(p->data);
  // Marks the end of a header line even when its value was empty (no value span at all), so the
  // next name starts a new header.
  if (self->in_head_ && self->head_.headers.empty()) {
    llhttp_set_error_reason(p, "Header value without a name");
    return HPE_USER;
  }
  self->in_value_ = true;
  return 0;
}

// What the header fields of a head said about its framing and its hop-by-hop handling, as
// classify_fields() gathers it for the checks after.
struct Parser::FieldFacts {
  bool connection_upgrade = false;
  std::array<std::string_view, kMaxConnectionTokens> listed;  // Connection options to drop
  size_t listed_count = 0;
  size_t te_headers = 0, te_codings = 0;
  bool te_chunked_last = false, te_chunked_twice = false, te_invalid = false;
};

bool Parser::classify(llhttp_t* p) {
  MessageHead& h = head_;
  h.host = h.upgrade_header = h.request_id = h.idempotency_key = h.keep_alive_header = -1;
  h.connection_close = h.connection_keep_alive = h.expect_continue = false;
  h.chunked = false;
  h.upgrade = false;
  FieldFacts facts;
  return classify_fields(p->type == HTTP_REQUEST, facts) && check_framing(p, facts) &&
         check_start(p->type == HTTP_REQUEST, facts);
}

bool Parser::reject(ParseError code, const char* why) {
  error_ = code;
  error_why_ = why;
  return false;
}

bool Parser::classify_fields(bool request, FieldFacts& f) {
  MessageHead& h = head_;
  for (size_t i = 0; i < h.headers.size(); ++i) {
    Header& hd = h.headers[i];
    std::string_view name = h.str(hd.name);
    if (name.empty()) return reject(ParseError::kMalformed, "empty header name");
    hd.kind = kind_of(name);
    std::string_view value = h.str(hd.value);
    auto index = static_cast<int16_t>(i);
    switch (hd.kind) {
      case HeaderKind::kHost:
        if (h.host >= 0) return reject(ParseError::kMalformed, "more than one Host header");
        h.host = index;
        break;
      case HeaderKind::kTransferEncoding:
        ++f.te_headers;
        for_each_list_element(value, [&](std::string_view coding) {
          ++f.te_codings;
          bool chunked = iequal(coding, "chunked");
          if (chunked && f.te_chunked_last) f.te_chunked_twice = true;
          f.te_chunked_last = chunked;
          for (char c : coding) f.te_invalid = f.te_invalid || !is_tchar(c);
        });
        break;
      case HeaderKind::kConnection:
        for_each_list_element(value, [&](std::string_view token) {
          if (iequal(token, "close")) {
            h.connection_close = true;
          } else if (iequal(token, "keep-alive")) {
            h.connection_keep_alive = true;
          } else if (iequal(token, "upgrade")) {
            f.connection_upgrade = true;
          } else if (f.listed_count < f.listed.size()) {
            f.listed[f.listed_count++] = token;
          } else {
            f.listed_count = f.listed.size() + 1;  // too many: refused below
          }
        });
        break;
      case HeaderKind::kUpgrade:
        if (h.upgrade_header < 0) h.upgrade_header = index;
        break;
      case HeaderKind::kExpect:
        if (request && iequal(value, "100-continue")) h.expect_continue = true;
        break;
      case HeaderKind::kXRequestId:
        if (h.request_id < 0) h.request_id = index;
        break;
      case HeaderKind::kIdempotencyKey:
        if (h.idempotency_key < 0) h.idempotency_key = index;
        break;
      case HeaderKind::kKeepAlive:
        if (h.keep_alive_header < 0) h.keep_alive_header = index;
        break;
      default:
        break;
    }
  }
  if (f.listed_count > f.listed.size())
    return reject(ParseError::kMalformed, "too many Connection options");
  // Names a Connection header declares hop by hop are dropped, unless they are framing, Host or
  // another header the proxy itself owns: a client cannot strip what defines the message.
  for (size_t t = 0; t < f.listed_count; ++t) {
    for (Header& hd : h.headers) {
      if (hd.kind == HeaderKind::kOther && iequal(h.str(hd.name), f.listed[t])) {
        hd.kind = HeaderKind::kListedInConnection;
      }
    }
  }
  return true;
}

bool Parser::check_framing(llhttp_t* p, const FieldFacts& f) {
  MessageHead& h = head_;
  const bool request = p->type == HTTP_REQUEST;
  h.has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
  h.content_length = h.has_content_length ? p->content_length : 0;
  // Past 2^63 - 1 a length overflows the signed integers many peers parse it into.
  if (h.content_length > static_cast<uint64_t>(INT64_MAX)) {
    return reject(ParseError::kMalformed, "Content-Length too large");
  }
  if (f.te_headers > 0) {
    // RFC 9112 6.1-6.3. Both framings at once is how CL.TE and TE.CL smuggling starts.
    if (h.has_content_length)
      return reject(ParseError::kMalformed, "both Transfer-Encoding and Content-Length");
    if (f.te_codings == 0 || f.te_invalid)
      return reject(ParseError::kMalformed, "invalid Transfer-Encoding");
    if (!f.te_chunked_last || f.te_chunked_twice) {
      return reject(ParseError::kMalformed, "chunked is not the final transfer coding");
    }
    if (f.te_codings > 1) {
      return reject(request ? ParseError::kUnsupportedCoding : ParseError::kMalformed,
                    "unsupported transfer coding");
    }
    h.chunked = true;
  }
  bool http11 = h.version_minor >= 1;
  h.keep_alive = http11 ? !h.connection_close : h.connection_keep_alive && !h.connection_close;
  // HTTP/1.0 has no chunked framing: a 1.0 message that uses it closes after (RFC 9112 6.1).
  if (!http11 && h.chunked) h.keep_alive = false;
  return true;
}

bool Parser::check_start(bool request, const FieldFacts& f) {
  MessageHead& h = head_;
  if (request) {
    // Required in HTTP/1.1 (RFC 9112 3.2); bulwark forwards as HTTP/1.1, so a 1.0 request
    // needs one too.
    if (h.host < 0) return reject(ParseError::kMalformed, "no Host header");
    if (!is_valid_host(h.value_of(h.host)))
      return reject(ParseError::kMalformed, "invalid Host header");
    // An Upgrade in an HTTP/1.0 request is ignored (RFC 9110 7.8).
    h.upgrade = h.version_minor >= 1 && f.connection_upgrade && h.upgrade_header >= 0 &&
                !h.is_connect_method && !h.chunked;
  } else {
    if (h.version_major != 1) return reject(ParseError::kMalformed, "not an HTTP/1.x response");
    if (h.status < 100 || h.status > 599)
      return reject(ParseError::kMalformed, "invalid status code");
    if (h.status == 101) {
      if (!f.connection_upgrade || h.upgrade_header < 0) {
        return reject(ParseError::kMalformed, "101 without Upgrade and Connection: upgrade");
      }
      h.upgrade = true;
    }
  }
  return true;
}

int Parser::on_headers_complete(llhttp_t* p) {
  auto* self = static_cast<Parser*>(p->data);
  MessageHead& h = self->head_;
  h.base = self->base_;
  if (p->type == HTTP_REQUEST) {
    h.method = h.str(self->method_);
    h.target = self->request_target_;
    h.version_major = 1;
    h.version_minor = self->request_minor_;
    h.is_head_method = h.method == "HEAD";
    h.is_connect_method = h.method == "CONNECT";
  } else {
    h.status = p->status_code;
    h.version_major = p->http_major;
    h.version_minor = p->http_minor;
  }
  self->in_head_ = false;
  // Trim trailing whitespace llhttp leaves in values (optional whitespace, RFC 9110 5.5).
  for (Header& hd : h.headers) {
    while (hd.value.length > 0) {
      char c = self->base_[hd.value.offset + hd.value.length - 1];
      if (c != ' ' && c != '\t') break;
      --hd.value.length;
    }
  }
  if (!self->classify(p)) return -1;
  ParserCallbacks::HeadAction action = self->callbacks_->on_head(h);
  // The owner may have refused an upgrade; llhttp must not switch protocols then.
  p->upgrade = h.upgrade ? 1 : 0;
  // 1xx, 204 and 304 responses never have a body, whatever Content-Length says (RFC 9112 6.3);
  // llhttp would otherwise wait for the announced bytes.
  bool bodiless = p->type == HTTP_RESPONSE &&
                  ((h.status >= 100 && h.status < 200) || h.status == 204 || h.status == 304);
  if (action == ParserCallbacks::kNoBody || bodiless) {
    p->flags |= F_SKIPBODY;
  } else if (h.chunked) {
    // llhttp sees no body; ours decodes it once llhttp reports the (empty) message complete.
    p->flags |= F_SKIPBODY;
    self->own_chunked_ = true;
  }
  return action == ParserCallbacks::kPause ? HPE_PAUSED : 0;
}

int Parser::on_body(llhttp_t* p, const char* at, size_t len) {
  auto* self = static_cast<Parser*>(p->data);
  self->callbacks_->on_body(at, len);
  return 0;
}

int Parser::on_message_complete(llhttp_t* p) {
  auto* self = static_cast<Parser*>(p->data);
  self->in_head_ = false;
  if (self->own_chunked_) {
    // The head of a chunked message: the body is ours to decode, llhttp waits.
    self->own_chunked_ = false;
    self->stage_ = Stage::kChunked;
    self->chunked_.reset();
    return HPE_PAUSED;
  }
  self->in_message_ = false;
  if (p->type == HTTP_REQUEST && !p->upgrade) self->stage_ = Stage::kRequestLine;
  self->callbacks_->on_message_complete();
  // An upgrade ends in HPE_PAUSED_UPGRADE by itself; everything else pauses so the owner
  // handles one message at a time.
  return p->upgrade ? 0 : HPE_PAUSED;
}

}  // namespace bulwark::http
