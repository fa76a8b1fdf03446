#pragma once
// Helpers for driving http::Parser in tests: a callback recorder that copies what it is told
// (spans only live as long as the buffer), and a feeder that appends pieces to one growing buffer
// the way a connection does, resuming after each pause.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/codec.h"
#include "proxy/headers.h"

namespace bulwark::test {

struct RecordedMessage {
  std::string method;
  std::string target;
  int status = 0;
  std::string reason;
  int version_major = 0;
  int version_minor = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  bool keep_alive = false;
  bool chunked = false;
  bool has_content_length = false;
  uint64_t content_length = 0;
  bool upgrade = false;
  bool is_head_method = false;
  bool is_connect_method = false;
  std::string body;
  bool complete = false;

  // A one-line summary; equal summaries mean the parser reported the same thing.
  std::string describe() const {
    std::string s = method + " " + target + " " + std::to_string(status) + " [" + reason + "] " +
                    std::to_string(version_major) + "." + std::to_string(version_minor);
    for (const auto& [n, v] : headers) s += " {" + n + "=" + v + "}";
    s += keep_alive ? " ka" : " close";
    if (chunked) s += " chunked";
    if (has_content_length) s += " cl=" + std::to_string(content_length);
    if (upgrade) s += " upgrade";
    if (is_head_method) s += " HEAD";
    if (is_connect_method) s += " CONNECT";
    s += " body=[" + body + "]";
    s += complete ? " complete" : " incomplete";
    return s;
  }
};

// What a parser reported of one head, copied out of the buffer its spans point into.
inline RecordedMessage record_head(const http::MessageHead& head) {
  RecordedMessage m;
  m.method = std::string(head.method);
  m.target = std::string(head.str(head.target));
  m.status = head.status;
  m.reason = std::string(head.str(head.reason));
  m.version_major = head.version_major;
  m.version_minor = head.version_minor;
  for (const http::Header& h : head.headers) {
    m.headers.emplace_back(std::string(head.str(h.name)), std::string(head.str(h.value)));
  }
  m.keep_alive = head.keep_alive;
  m.chunked = head.chunked;
  m.has_content_length = head.has_content_length;
  m.content_length = head.content_length;
  m.upgrade = head.upgrade;
  m.is_head_method = head.is_head_method;
  m.is_connect_method = head.is_connect_method;
  return m;
}

class Recorder : public http::ParserCallbacks {
 public:
  std::vector<RecordedMessage> messages;
  // Decides the head action; by default every message proceeds.
  std::function<HeadAction(const http::MessageHead&)> decide;
  // Body bytes must point into the buffer the parser was given: set by the feeder.
  const char* buffer_begin = nullptr;
  const char* buffer_end = nullptr;
  bool body_outside_buffer = false;

  HeadAction on_head(http::MessageHead& head) override {
    messages.push_back(record_head(head));
    return decide ? decide(head) : kProceed;
  }
  void on_body(const char* data, size_t length) override {
    if (buffer_begin != nullptr && (data < buffer_begin || data + length > buffer_end)) {
      body_outside_buffer = true;
    }
    if (messages.empty()) {
      body_outside_buffer = true;  // body before any head: record it as a failure
      return;
    }
    messages.back().body.append(data, length);
  }
  void on_message_complete() override {
    if (!messages.empty()) messages.back().complete = true;
  }

  std::string describe() const {
    std::string s;
    for (const RecordedMessage& m : messages) s += m.describe() + "\n";
    return s;
  }
};

struct FeedResult {
  http::Parser::Status status = http::Parser::Status::kOk;  // kOk unless upgrade/error/too large
  size_t parsed = 0;                                        // offset the parser stopped at
  int pauses = 0;
};

// Appends each piece to `buffer` (one contiguous, growing buffer) and parses the new bytes,
// resuming after every pause. Stops at kUpgrade, kError or kHeadTooLarge.
inline FeedResult feed(http::Parser& parser, Recorder& recorder, std::string& buffer,
                       const std::vector<std::string>& pieces) {
  FeedResult out;
  for (const std::string& piece : pieces) {
    buffer.append(piece);
    while (out.parsed < buffer.size()) {
      recorder.buffer_begin = buffer.data();
      recorder.buffer_end = buffer.data() + buffer.size();
      http::Parser::Result r = parser.execute(buffer.data(), out.parsed, buffer.size());
      out.parsed += r.consumed;
      if (r.status == http::Parser::Status::kPaused) {
        ++out.pauses;
        parser.resume();
        continue;
      }
      if (r.status == http::Parser::Status::kOk) break;
      out.status = r.status;
      return out;
    }
  }
  return out;
}

inline std::vector<std::string> whole(std::string_view s) { return {std::string(s)}; }

inline std::vector<std::string> split_at(std::string_view s, size_t at) {
  return {std::string(s.substr(0, at)), std::string(s.substr(at))};
}

inline std::vector<std::string> bytewise(std::string_view s) {
  std::vector<std::string> out;
  for (char c : s) out.emplace_back(1, c);
  return out;
}

// A message parsed into a MessageHead that stays valid as long as this object lives.
// Not movable: the head points into `buffer`.
class ParsedHead : public http::ParserCallbacks {
 public:
  ParsedHead(http::Parser::Type type, std::string text) : buffer(std::move(text)) {
    http::Parser parser(type, this);
    result = parser.execute(buffer.data(), 0, buffer.size());
  }
  ParsedHead(const ParsedHead&) = delete;
  ParsedHead& operator=(const ParsedHead&) = delete;

  HeadAction on_head(http::MessageHead& h) override {
    head = h;
    have_head = true;
    return kProceed;
  }
  void on_body(const char* data, size_t length) override { body.append(data, length); }
  void on_message_complete() override { complete = true; }

  // Every value of headers with that name (case-insensitive), in order.
  std::vector<std::string> values(std::string_view name) const {
    std::vector<std::string> out;
    for (const http::Header& h : head.headers) {
      if (http::iequals(head.str(h.name), name)) out.emplace_back(head.str(h.value));
    }
    return out;
  }

  std::string buffer;
  http::MessageHead head;
  http::Parser::Result result;
  bool have_head = false;
  bool complete = false;
  std::string body;
};

}  // namespace bulwark::test
