#include "tests/support/harness_raw_upstream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace bulwark::test {
namespace {

using Status = StrictParse::Status;

bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// VCHAR, SP, HTAB and obs-text: what a field value may hold (RFC 9110 5.5).
bool is_value_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "name: value" into `out`; false (with `error`) when the line is not a valid field line.
bool parse_field_line(std::string_view line, HeaderList& out, std::string& error) {
  size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    error = "field line without a name and colon: \"" + escape_bytes(line) + "\"";
    return false;
  }
  std::string_view name = line.substr(0, colon);
  for (char c : name) {
    if (!is_tchar(static_cast<unsigned char>(c))) {
      error = "field name is not a token: \"" + escape_bytes(name) + "\"";
      return false;
    }
  }
  std::string_view value = trim_ows(line.substr(colon + 1));
  for (char c : value) {
    if (!is_value_char(static_cast<unsigned char>(c))) {
      error =
          "invalid byte in the value of " + std::string(name) + ": \"" + escape_bytes(value) + "\"";
      return false;
    }
  }
  out.emplace_back(std::string(name), std::string(value));
  return true;
}

// Checks the bytes of a line that is still incomplete: no bare LF, no bare CR, no NUL.
bool partial_line_ok(std::string_view partial, std::string& error) {
  for (size_t i = 0; i < partial.size(); ++i) {
    char c = partial[i];
    bool last = i + 1 == partial.size();
    if (c == '\0' || c == '\n' || (c == '\r' && !last)) {
      error = "bad byte in \"" + escape_bytes(partial) + "\"";
      return false;
    }
  }
  return true;
}

}  // namespace

std::optional<std::string> RawRequest::get(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (iequals(n, name)) return v;
  }
  return std::nullopt;
}

size_t RawRequest::count(std::string_view name) const {
  size_t n = 0;
  for (const auto& header : headers) n += iequals(header.first, name) ? 1 : 0;
  return n;
}

std::string escape_bytes(std::string_view data, size_t limit) {
  std::string out;
  for (size_t i = 0; i < data.size() && i < limit; ++i) {
    auto c = static_cast<unsigned char>(data[i]);
    switch (c) {
      case '\r':
        out += "\\r";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\0':
        out += "\\0";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\x%02x", c);
          out += hex;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  if (data.size() > limit) out += "...(" + std::to_string(data.size()) + " bytes)";
  return out;
}

StrictParse parse_strict_request(std::string_view data, RawRequest& out) {
  StrictParse result;
  auto fail = [&](std::string error) {
    result.status = Status::kError;
    result.error = std::move(error);
    return result;
  };
  size_t head_end = data.find("\r\n\r\n");
  size_t scan = head_end == std::string_view::npos ? data.size() : head_end + 4;
  for (size_t i = 0; i < scan; ++i) {
    char c = data[i];
    if (c == '\0') return fail("NUL in the head at byte " + std::to_string(i));
    if (c == '\r' && i + 1 < scan && data[i + 1] != '\n') {
      return fail("bare CR in the head at byte " + std::to_string(i));
    }
    if (c == '\n' && (i == 0 || data[i - 1] != '\r')) {
      return fail("bare LF in the head at byte " + std::to_string(i));
    }
  }
  if (head_end == std::string_view::npos) {
    if (data.size() > (1u << 20)) return fail("no end of the head within 1 MiB");
    return result;
  }

  RawRequest request;
  std::string_view head = data.substr(0, head_end + 2);  // each line ends in CRLF
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  head.remove_prefix(eol + 2);
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return fail("request line is not METHOD SP TARGET SP VERSION: \"" + escape_bytes(line) + "\"");
  }
  request.method = std::string(line.substr(0, sp1));
  request.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  request.version = std::string(line.substr(sp2 + 1));
  if (request.method.empty()) return fail("empty method");
  for (char c : request.method) {
    if (!is_tchar(static_cast<unsigned char>(c))) {
      return fail("method is not a token: \"" + escape_bytes(request.method) + "\"");
    }
  }
  if (request.target.empty()) return fail("empty request target");
  for (char c : request.target) {
    if (c < 0x21 || c > 0x7e)
      return fail("bad byte in target \"" + escape_bytes(request.target) + "\"");
  }
  if (request.version != "HTTP/1.1") {
    return fail("version is not HTTP/1.1: \"" + escape_bytes(request.version) + "\"");
  }
  while (!head.empty()) {
    eol = head.find("\r\n");
    line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    if (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
      return fail("folded field line \"" + escape_bytes(line) + "\"");
    }
    std::string error;
    if (!parse_field_line(line, request.headers, error)) return fail(error);
  }

  size_t te = request.count("transfer-encoding");
  size_t cl = request.count("content-length");
  if (te > 1) return fail("more than one Transfer-Encoding field");
  if (cl > 1) return fail("more than one Content-Length field");
  if (te == 1 && cl == 1) return fail("both Transfer-Encoding and Content-Length");
  uint64_t length = 0;
  if (te == 1) {
    if (!iequals(*request.get("transfer-encoding"), "chunked")) {
      return fail("Transfer-Encoding is not \"chunked\": \"" +
                  escape_bytes(*request.get("transfer-encoding")) + "\"");
    }
    request.framing = RawRequest::Framing::kChunked;
  } else if (cl == 1) {
    std::string value = *request.get("content-length");
    if (value.empty() || value.size() > 15 ||
        value.find_first_not_of("0123456789") != std::string::npos) {
      return fail("Content-Length is not a plain number: \"" + escape_bytes(value) + "\"");
    }
    length = std::stoull(value);
    request.framing = RawRequest::Framing::kContentLength;
  }
  out = request;  // the head, so the caller can see it while the body is incomplete
  result.head_complete = true;

  size_t pos = head_end + 4;
  if (request.framing == RawRequest::Framing::kContentLength) {
    if (data.size() - pos < length) return result;
    request.body = std::string(data.substr(pos, length));
    pos += length;
  } else if (request.framing == RawRequest::Framing::kChunked) {
    while (true) {
      eol = data.find("\r\n", pos);
      std::string_view size_line =
          data.substr(pos, eol == std::string_view::npos ? eol : eol - pos);
      std::string_view digits = size_line;
      if (eol == std::string_view::npos && !digits.empty() && digits.back() == '\r') {
        digits.remove_suffix(1);
      }
      for (char c : digits) {
        if (!is_hex(c)) return fail("bad chunk size line \"" + escape_bytes(size_line) + "\"");
      }
      if (digits.size() > 15) return fail("chunk size with more than 15 digits");
      if (eol == std::string_view::npos) return result;
      if (digits.empty()) return fail("empty chunk size line");
      uint64_t size = std::stoull(std::string(digits), nullptr, 16);
      pos = eol + 2;
      if (size == 0) break;
      if (data.size() - pos < size) return result;
      request.body.append(data.substr(pos, size));
      pos += size;
      std::string_view crlf = data.substr(pos, 2);
      if (crlf != std::string_view("\r\n").substr(0, crlf.size())) {
        return fail("chunk data not followed by CRLF");
      }
      if (crlf.size() < 2) return result;
      pos += 2;
    }
    while (true) {  // trailer section
      eol = data.find("\r\n", pos);
      if (eol == std::string_view::npos) {
        std::string error;
        if (!partial_line_ok(data.substr(pos), error)) return fail("trailer section: " + error);
        return result;
      }
      line = data.substr(pos, eol - pos);
      pos = eol + 2;
      if (line.empty()) break;
      std::string error;
      if (!partial_line_ok(line, error) || !parse_field_line(line, request.trailers, error)) {
        return fail("trailer section: " + error);
      }
    }
  }
  request.raw = std::string(data.substr(0, pos));
  out = std::move(request);
  result.status = Status::kComplete;
  result.consumed = pos;
  return result;
}

// ---------------------------------------------------------------------------------------------
// RawUpstream

RawReply RawUpstream::ok_reply(const RawRequest& request) {
  RawReply reply;
  reply.bytes = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
  if (request.method != "HEAD") reply.bytes += "ok";
  return reply;
}

RawUpstream::RawUpstream(Replier replier)
    : replier_(replier ? std::move(replier) : Replier(&RawUpstream::ok_reply)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address = loopback(0);
  socklen_t size = sizeof address;
  if (listen_fd_ < 0 ||
      ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listen_fd_, 256) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &size) != 0 ||
      ::pipe2(wake_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
    if (listen_fd_ >= 0) ::close(listen_fd_);
    throw std::runtime_error("RawUpstream: cannot listen: " + std::string(std::strerror(errno)));
  }
  port_ = ntohs(address.sin_port);
  accept_thread_ = std::thread([this] { accept_loop(); });
}

RawUpstream::~RawUpstream() { stop(); }

std::string RawUpstream::address() const { return "127.0.0.1:" + std::to_string(port_); }

void RawUpstream::accept_loop() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents & POLLIN) return;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard lock(mutex_);
    if (stopping_) {
      ::close(fd);
      return;
    }
    open_fds_.insert(fd);
    RawConnection record;
    record.index = connections_.size() + 1;
    connections_.push_back(record);
    threads_.emplace_back([this, fd, index = record.index] { serve(fd, index); });
    cv_.notify_all();
  }
}

bool RawUpstream::write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void RawUpstream::serve(int fd, size_t index) {
  std::vector<char> buf(64 * 1024);
  size_t continue_sent_at = static_cast<size_t>(-1);  // offset of the request answered with 100
  bool close_here = false;
  while (!close_here) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) break;
    if (fds[1].revents & POLLIN) break;
    if (fds[0].revents == 0) continue;
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    std::vector<RawReply> replies;
    bool send_continue = false;
    {
      std::lock_guard lock(mutex_);
      RawConnection& record = connections_[index - 1];
      if (n <= 0) {
        record.peer_closed = true;
        cv_.notify_all();
        break;
      }
      record.received.append(buf.data(), static_cast<size_t>(n));
      while (record.error.empty()) {
        RawRequest request;
        StrictParse parse =
            parse_strict_request(std::string_view(record.received).substr(record.framed), request);
        if (parse.status == Status::kError) {
          record.error = parse.error;
          close_here = true;  // answer nothing more on bytes we cannot frame
          break;
        }
        if (parse.status == Status::kNeedMore) {
          auto expect = request.get("expect");
          if (parse.head_complete && expect && iequals(*expect, "100-continue") &&
              request.framing != RawRequest::Framing::kNone && continue_sent_at != record.framed) {
            send_continue = true;
            continue_sent_at = record.framed;
          }
          break;
        }
        request.connection = index;
        request.sequence = requests_.size();
        record.framed += parse.consumed;
        replies.push_back(replier_(request));
        requests_.push_back(std::move(request));
      }
    }
    cv_.notify_all();
    if (send_continue) write_all(fd, "HTTP/1.1 100 Continue\r\n\r\n");
    for (const RawReply& reply : replies) {
      for (size_t i = 0; i < reply.repeat; ++i) {
        if (!write_all(fd, reply.bytes)) break;
      }
      if (reply.close) {
        close_here = true;
        break;
      }
    }
  }
  std::lock_guard lock(mutex_);
  if (close_here) connections_[index - 1].closed_here = true;
  open_fds_.erase(fd);
  ::close(fd);
  cv_.notify_all();
}

RawUpstream::Mark RawUpstream::mark() const {
  std::lock_guard lock(mutex_);
  Mark mark;
  for (const RawConnection& c : connections_) mark.received.push_back(c.received.size());
  mark.requests = requests_.size();
  return mark;
}

std::vector<RawRequest> RawUpstream::requests_since(const Mark& mark) const {
  std::lock_guard lock(mutex_);
  return {requests_.begin() + static_cast<ptrdiff_t>(std::min(mark.requests, requests_.size())),
          requests_.end()};
}

std::vector<RawConnection> RawUpstream::connections() const {
  std::lock_guard lock(mutex_);
  return connections_;
}

bool RawUpstream::wait_closed(size_t index, Millis timeout) const {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] {
    return index >= 1 && index <= connections_.size() &&
           (connections_[index - 1].peer_closed || connections_[index - 1].closed_here);
  });
}

void RawUpstream::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  char byte = 1;
  [[maybe_unused]] auto ignored = ::write(wake_pipe_[1], &byte, 1);
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (auto& thread : threads) thread.join();
  ::close(listen_fd_);
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
}

}  // namespace bulwark::test
