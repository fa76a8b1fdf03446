#pragma once
// The HTTP/1.x codec: a thin wrapper that hides llhttp from the rest of bulwark.
//
// A Parser reads one direction of one connection. The owner appends bytes to a contiguous buffer
// and calls execute() on the new part; the parser reports the message head once it is complete
// (as spans into that buffer, so nothing is copied), then body data as pointers into the same
// buffer, then the end of the message. The owner must not move bytes of a head that is still
// being parsed; it may move the buffer as a whole (grow it), since spans are offsets.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <llhttp.h>

namespace bulwark::http {

// A byte range inside the owner's buffer, as offsets so the buffer may be reallocated.
struct Span {
  uint32_t offset = 0;
  uint32_t length = 0;
};

struct Header {
  Span name;
  Span value;
};

// The head of a request or a response, valid from on_head() until the buffer is compacted.
struct MessageHead {
  const char* base = nullptr;  // the buffer the spans point into
  std::string_view method;     // requests: a static string ("GET")
  bool is_head_method = false;   // requests: HEAD
  bool is_connect_method = false;  // requests: CONNECT
  Span target;                 // requests: the request-target as sent
  int status = 0;              // responses
  Span reason;                 // responses: the reason phrase
  uint8_t version_major = 1;
  uint8_t version_minor = 1;
  std::vector<Header> headers;
  bool keep_alive = true;        // what the peer asked for (HTTP/1.0 defaults to close)
  bool chunked = false;          // Transfer-Encoding ends in chunked
  bool has_content_length = false;
  uint64_t content_length = 0;
  bool upgrade = false;          // the message asks to (request) or agrees to (101) switch protocols

  std::string_view str(Span s) const { return {base + s.offset, s.length}; }
  // The first header of that name (ASCII case-insensitive), or an empty view with found=false.
  const Header* find(std::string_view name) const;
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
    kOk,              // all bytes consumed, message incomplete or complete
    kPaused,          // stopped after a message (or head); `consumed` tells where
    kUpgrade,         // the connection switches protocol; bytes after `consumed` are raw
    kError,           // malformed; `error` says why
    kHeadTooLarge,    // the head exceeded the limit
  };
  struct Result {
    Status status = Status::kOk;
    size_t consumed = 0;     // bytes of [from, to) the parser used
    const char* error = "";  // for kError: llhttp's reason, a static string
  };

  Parser(Type type, ParserCallbacks* callbacks);
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // Parses base[from, to). `base` is the start of the owner's buffer (spans are relative to it).
  Result execute(const char* base, size_t from, size_t to);
  // The peer closed: completes a close-delimited body, or reports a truncated message.
  Result finish();
  // Continues after kPaused.
  void resume();
  // Forgets everything, ready for a new connection or a new message after an error.
  void reset();

  void set_max_head_size(size_t bytes) { max_head_size_ = bytes; }
  void set_callbacks(ParserCallbacks* callbacks) { callbacks_ = callbacks; }
  // True between the first byte of a message and its head being complete.
  bool in_head() const { return in_head_; }
  // True between a message's first byte and its end.
  bool in_message() const { return in_message_; }
  // True if the message being parsed ends only when the peer closes (a response without length).
  bool needs_eof() const { return llhttp_message_needs_eof(&parser_) != 0; }

  // llhttp's callbacks (public for the shared settings table).
  static int on_message_begin(llhttp_t* p);
  static int on_url(llhttp_t* p, const char* at, size_t len);
  static int on_status(llhttp_t* p, const char* at, size_t len);
  static int on_header_field(llhttp_t* p, const char* at, size_t len);
  static int on_header_value(llhttp_t* p, const char* at, size_t len);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, size_t len);
  static int on_message_complete(llhttp_t* p);

 private:
  static bool extend(Span& span, uint32_t offset, size_t len);
  // True (and remembered) when a head piece ending at offset + len passes the size limit.
  bool over_limit(uint32_t offset, size_t len);

  llhttp_t parser_;
  ParserCallbacks* callbacks_;
  MessageHead head_;
  const char* base_ = nullptr;
  size_t head_start_ = 0;       // offset of the message's first byte
  size_t max_head_size_ = 64 * 1024;
  bool in_head_ = false;
  bool in_message_ = false;
  bool in_value_ = false;       // the last header span seen was a value
  bool head_too_large_ = false;
};

}  // namespace bulwark::http
