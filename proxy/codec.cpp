#include "proxy/codec.h"

#include <strings.h>

#include <array>

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
    s.on_url = &Parser::on_url;
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

}  // namespace

Parser::Parser(Type type, ParserCallbacks* callbacks) : callbacks_(callbacks) {
  // llhttp_init takes a non-const pointer but never writes through it.
  llhttp_init(&parser_, type == Type::kRequest ? HTTP_REQUEST : HTTP_RESPONSE,
              const_cast<llhttp_settings_t*>(parser_settings()));
  parser_.data = this;
  // Enough for most messages; the vector grows (once per connection) for more. Not more up
  // front: a request parser lives as long as its connection, idle ones included.
  head_.headers.reserve(8);
}

void Parser::reset() {
  llhttp_reset(&parser_);
  in_head_ = in_message_ = in_value_ = head_too_large_ = false;
}

void Parser::resume() { llhttp_resume(&parser_); }

Parser::Result Parser::execute(const char* base, size_t from, size_t to) {
  base_ = base;
  // Parsing pauses after each message, so a new message always starts at `from`.
  if (!in_message_) head_start_ = from;
  Result result;
  llhttp_errno_t err = llhttp_execute(&parser_, base + from, to - from);
  switch (err) {
    case HPE_OK:
      result.consumed = to - from;
      if (in_head_ && to - head_start_ > max_head_size_) result.status = Status::kHeadTooLarge;
      return result;
    case HPE_PAUSED:
      result.status = Status::kPaused;
      break;
    case HPE_PAUSED_UPGRADE:
      result.status = Status::kUpgrade;
      break;
    default:
      result.status = head_too_large_ ? Status::kHeadTooLarge : Status::kError;
      result.error = llhttp_get_error_reason(&parser_);
      if (result.error == nullptr) result.error = llhttp_errno_name(err);
      break;
  }
  const char* pos = llhttp_get_error_pos(&parser_);
  result.consumed = pos != nullptr ? static_cast<size_t>(pos - (base + from)) : 0;
  return result;
}

Parser::Result Parser::finish() {
  Result result;
  if (!in_message_) return result;  // the peer closed between messages: nothing lost
  if (!needs_eof()) {
    result.status = Status::kError;
    result.error = "connection closed before the message was complete";
    return result;
  }
  llhttp_errno_t err = llhttp_finish(&parser_);
  if (err == HPE_OK) return result;
  if (err == HPE_PAUSED) {
    result.status = Status::kPaused;
    return result;
  }
  result.status = Status::kError;
  result.error = llhttp_get_error_reason(&parser_);
  if (result.error == nullptr) result.error = llhttp_errno_name(err);
  return result;
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

namespace {
// RFC 9110 5.6.2: tchar.
bool is_tchar(unsigned char c) {
  static constexpr auto kTable = [] {
    std::array<bool, 256> t{};
    for (int c = '0'; c <= '9'; ++c) t[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
    for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
    return t;
  }();
  return kTable[c];
}
}  // namespace

int Parser::on_message_begin(llhttp_t* p) {
  auto* self = static_cast<Parser*>(p->data);
  self->in_head_ = true;
  self->in_message_ = true;
  self->in_value_ = false;
  self->head_too_large_ = false;
  MessageHead& h = self->head_;
  h.base = self->base_;
  h.method = {};
  h.target = {};
  h.reason = {};
  h.status = 0;
  h.headers.clear();
  h.keep_alive = true;
  h.chunked = false;
  h.has_content_length = false;
  h.content_length = 0;
  h.upgrade = false;
  h.is_head_method = false;
  h.is_connect_method = false;
  return 0;
}

bool Parser::over_limit(uint32_t offset, size_t len) {
  if (offset + len - head_start_ <= max_head_size_) return false;
  head_too_large_ = true;
  return true;
}

int Parser::on_url(llhttp_t* p, const char* at, size_t len) {
  auto* self = static_cast<Parser*>(p->data);
  auto offset = static_cast<uint32_t>(at - self->base_);
  if (self->over_limit(offset, len)) return -1;
  extend(self->head_.target, offset, len);
  return 0;
}

int Parser::on_status(llhttp_t* p, const char* at, size_t len) {
  auto* self = static_cast<Parser*>(p->data);
  auto offset = static_cast<uint32_t>(at - self->base_);
  if (self->over_limit(offset, len)) return -1;
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
    headers.push_back({});
    self->in_value_ = false;
  }
  for (size_t i = 0; i < len; ++i) {
    if (!is_tchar(static_cast<unsigned char>(at[i]))) {
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
  // Marks the end of a header line even when its value was empty (no value span at all), so the
  // next name starts a new header.
  static_cast<Parser*>(p->data)->in_value_ = true;
  return 0;
}

int Parser::on_headers_complete(llhttp_t* p) {
  auto* self = static_cast<Parser*>(p->data);
  MessageHead& h = self->head_;
  h.base = self->base_;
  h.version_major = p->http_major;
  h.version_minor = p->http_minor;
  if (p->type == HTTP_REQUEST) {
    h.method = llhttp_method_name(static_cast<llhttp_method_t>(p->method));
    h.is_head_method = p->method == HTTP_HEAD;
    h.is_connect_method = p->method == HTTP_CONNECT;
  } else {
    h.status = p->status_code;
  }
  h.keep_alive = llhttp_should_keep_alive(p) != 0;
  h.chunked = (p->flags & F_CHUNKED) != 0;
  h.has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
  h.content_length = h.has_content_length ? p->content_length : 0;
  h.upgrade = p->upgrade != 0;
  self->in_head_ = false;
  // Trim trailing whitespace llhttp leaves in values (optional whitespace, RFC 9110 5.5).
  for (Header& hd : h.headers) {
    while (hd.value.length > 0) {
      char c = self->base_[hd.value.offset + hd.value.length - 1];
      if (c != ' ' && c != '\t') break;
      --hd.value.length;
    }
  }
  ParserCallbacks::HeadAction action = self->callbacks_->on_head(h);
  if (action == ParserCallbacks::kPause) return HPE_PAUSED;
  // 1xx (but 101), 204 and 304 responses never have a body, whatever Content-Length says
  // (RFC 9112 6.3); llhttp would otherwise wait for the announced bytes.
  bool bodiless = p->type == HTTP_RESPONSE &&
                  ((h.status >= 100 && h.status < 200 && h.status != 101) || h.status == 204 || h.status == 304);
  return action == ParserCallbacks::kNoBody || bodiless ? 1 : 0;
}

int Parser::on_body(llhttp_t* p, const char* at, size_t len) {
  auto* self = static_cast<Parser*>(p->data);
  self->callbacks_->on_body(at, len);
  return 0;
}

int Parser::on_message_complete(llhttp_t* p) {
  auto* self = static_cast<Parser*>(p->data);
  self->in_message_ = false;
  self->in_head_ = false;
  self->callbacks_->on_message_complete();
  // An upgrade ends in HPE_PAUSED_UPGRADE by itself; everything else pauses so the owner
  // handles one message at a time.
  return p->upgrade ? 0 : HPE_PAUSED;
}

}  // namespace bulwark::http
