// The socket and HTTP/1.1 parts of the harness: HttpConn, ClientConn, TestUpstream.

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "tests/support/harness.h"

namespace bulwark::test {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxHeadSize = 1024 * 1024;
constexpr size_t kReadSize = 256 * 1024;

int poll_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c);
}

// True when the comma-separated header value contains `token` (case-insensitive).
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    if (iequals(trim(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

// The last transfer coding of a Transfer-Encoding header list, lowercased.
std::string last_transfer_coding(const HeaderAccess& message) {
  std::string last;
  for (const auto& value : message.get_all("transfer-encoding")) {
    std::string_view rest = value;
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      auto coding = trim(rest.substr(0, comma));
      if (!coding.empty()) last = to_lower(coding);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return last;
}

// The Content-Length of a message: nullopt when absent; throws std::invalid_argument when invalid
// or when repeated values differ.
std::optional<uint64_t> content_length(const HeaderAccess& message) {
  std::optional<uint64_t> length;
  for (const auto& value : message.get_all("content-length")) {
    std::string_view rest = value;
    while (true) {
      size_t comma = rest.find(',');
      auto digits = trim(rest.substr(0, comma));
      if (digits.empty() || digits.size() > 19 ||
          !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        throw std::invalid_argument("invalid Content-Length: " + value);
      }
      uint64_t n = std::stoull(std::string(digits));
      if (length && *length != n) throw std::invalid_argument("differing Content-Length values");
      length = n;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return length;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Status";
  }
}

int make_socket() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed: " + std::string(std::strerror(errno)));
  return fd;
}

uint16_t local_port(int fd) {
  sockaddr_in address{};
  socklen_t size = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
  return ntohs(address.sin_port);
}

}  // namespace

sockaddr_in loopback(uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

// ---------------------------------------------------------------------------------------------
// Headers

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string to_lower(std::string_view s) {
  std::string lower(s);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower;
}

std::string HeaderAccess::get(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return {};
}

bool HeaderAccess::has(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(),
                     [&](const auto& header) { return iequals(header.first, name); });
}

std::vector<std::string> HeaderAccess::get_all(std::string_view name) const {
  std::vector<std::string> values;
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) values.push_back(value);
  }
  return values;
}

const char* to_string(ReadError error) {
  switch (error) {
    case ReadError::kNone:
      return "none";
    case ReadError::kTimeout:
      return "timeout";
    case ReadError::kClosed:
      return "closed";
    case ReadError::kReset:
      return "reset";
    case ReadError::kMalformed:
      return "malformed";
    case ReadError::kIo:
      return "io";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// HttpConn

HttpConn::HttpConn(int fd) : fd_(fd) {}

HttpConn::~HttpConn() { HttpConn::close(); }

HttpConn::HttpConn(HttpConn&& other) noexcept { *this = std::move(other); }

HttpConn& HttpConn::operator=(HttpConn&& other) noexcept {
  if (this != &other) {
    HttpConn::close();
    fd_ = std::exchange(other.fd_, -1);
    buf_ = std::move(other.buf_);
    pos_ = std::exchange(other.pos_, 0);
    eof_ = other.eof_;
    error_ = other.error_;
    error_text_ = std::move(other.error_text_);
  }
  return *this;
}

void HttpConn::close(bool reset) {
  if (fd_ < 0) return;
  if (reset) {
    linger option{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &option, sizeof option);
  }
  ::close(fd_);
  fd_ = -1;
}

void HttpConn::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void HttpConn::set_send_buffer(int bytes) {
  if (fd_ >= 0) ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

void HttpConn::set_receive_buffer(int bytes) {
  if (fd_ >= 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

bool HttpConn::fail(ReadError error, std::string text) {
  error_ = error;
  error_text_ = std::move(text);
  return false;
}

HttpConn::Io HttpConn::transport_write(const char* data, size_t size, size_t& moved) {
  while (true) {
    ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
    if (n > 0) {
      moved = static_cast<size_t>(n);
      return Io::kDone;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Io::kWantWrite;
    fail(errno == ECONNRESET ? ReadError::kReset : ReadError::kIo,
         std::string("write failed: ") + std::strerror(errno));
    return Io::kFailed;
  }
}

HttpConn::Io HttpConn::transport_read(char* out, size_t size, size_t& moved) {
  while (true) {
    ssize_t n = ::recv(fd_, out, size, 0);
    if (n > 0) {
      moved = static_cast<size_t>(n);
      return Io::kDone;
    }
    if (n == 0) return Io::kClosed;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::kWantRead;
    if (errno == ECONNRESET) {
      fail(ReadError::kReset, "the peer reset the connection");
    } else {
      fail(ReadError::kIo, std::string("read failed: ") + std::strerror(errno));
    }
    return Io::kFailed;
  }
}

bool HttpConn::write(std::string_view raw, Millis timeout) {
  if (fd_ < 0) return fail(ReadError::kIo, "write on a closed connection");
  while (!raw.empty()) {
    size_t moved = 0;
    Io io = transport_write(raw.data(), raw.size(), moved);
    if (io == Io::kDone) {
      raw.remove_prefix(moved);
      continue;
    }
    if (io == Io::kFailed) return false;
    if (io == Io::kClosed) return fail(ReadError::kClosed, "write after the transport closed");
    pollfd pfd{fd_, static_cast<short>(io == Io::kWantRead ? POLLIN : POLLOUT), 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
    if (ready == 0)
      return fail(ReadError::kTimeout,
                  "write made no progress for " + std::to_string(timeout.count()) + " ms");
  }
  return true;
}

bool HttpConn::write_pattern(uint64_t offset, uint64_t size, Millis timeout) {
  std::string block(std::min<uint64_t>(size, kReadSize), '\0');
  while (size > 0) {
    size_t take = static_cast<size_t>(std::min<uint64_t>(size, block.size()));
    pattern_fill(offset, block.data(), take);
    if (!write(std::string_view(block.data(), take), timeout)) return false;
    offset += take;
    size -= take;
  }
  return true;
}

bool HttpConn::fill(Millis timeout) {
  if (fd_ < 0) return fail(ReadError::kIo, "read on a closed connection");
  if (eof_) return fail(ReadError::kClosed, "the peer closed the connection");
  if (pos_ > 0 && pos_ * 2 >= buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  auto deadline = Clock::now() + timeout;
  while (true) {
    size_t old_size = buf_.size();
    buf_.resize(old_size + kReadSize);
    size_t moved = 0;
    Io io = transport_read(buf_.data() + old_size, kReadSize, moved);
    buf_.resize(old_size + (io == Io::kDone ? moved : 0));
    if (io == Io::kDone) return true;
    if (io == Io::kClosed) {
      eof_ = true;
      return fail(ReadError::kClosed, "the peer closed the connection");
    }
    if (io == Io::kFailed) {
      eof_ = true;
      return false;
    }
    pollfd pfd{fd_, static_cast<short>(io == Io::kWantRead ? POLLIN : POLLOUT), 0};
    int ready = ::poll(&pfd, 1, poll_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      return fail(ReadError::kTimeout, "no data for " + std::to_string(timeout.count()) + " ms");
    }
  }
}

void HttpConn::consume(size_t n) {
  pos_ += n;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
}

bool HttpConn::is_closed(Millis timeout) {
  auto deadline = Clock::now() + timeout;
  while (!eof_) {
    if (!fill(Millis{poll_ms(deadline)})) {
      return error_ == ReadError::kClosed || error_ == ReadError::kReset;
    }
  }
  return true;
}

std::string HttpConn::read_some(size_t min_bytes, Millis timeout) {
  error_ = ReadError::kNone;
  while (buffered().size() < min_bytes) {
    if (!fill(timeout)) break;
  }
  std::string data(buffered());
  consume(data.size());
  return data;
}

std::optional<std::string> HttpConn::read_exact(size_t n, Millis timeout) {
  error_ = ReadError::kNone;
  while (buffered().size() < n) {
    if (!fill(timeout)) return std::nullopt;
  }
  std::string data(buffered().substr(0, n));
  consume(n);
  return data;
}

std::string HttpConn::read_until_close(Millis timeout) {
  error_ = ReadError::kNone;
  while (fill(timeout)) {
  }
  if (error_ == ReadError::kClosed || error_ == ReadError::kReset) error_ = ReadError::kNone;
  std::string data(buffered());
  consume(data.size());
  return data;
}

bool HttpConn::read_line(std::string& line, Millis timeout, size_t max_size) {
  size_t scanned = 0;
  while (true) {
    auto data = buffered();
    size_t end = data.find("\r\n", scanned);
    if (end != std::string_view::npos) {
      line.assign(data.substr(0, end));
      consume(end + 2);
      return true;
    }
    if (data.size() > max_size) return fail(ReadError::kMalformed, "line too long");
    scanned = data.empty() ? 0 : data.size() - 1;
    if (!fill(timeout)) return false;
  }
}

bool HttpConn::read_head(std::string& head, std::string& start_line, HeaderList& headers,
                         Millis timeout) {
  error_ = ReadError::kNone;
  size_t scanned = 0;
  size_t end;
  while ((end = buffered().find("\r\n\r\n", scanned)) == std::string_view::npos) {
    if (buffered().size() > kMaxHeadSize) return fail(ReadError::kMalformed, "head too large");
    scanned = buffered().size() > 3 ? buffered().size() - 3 : 0;
    if (!fill(timeout)) {
      if (error_ == ReadError::kClosed && !buffered().empty()) {
        error_text_ = "the peer closed the connection in the middle of a message head: " +
                      std::string(buffered().substr(0, 200));
      }
      return false;
    }
  }
  head.assign(buffered().substr(0, end + 4));
  consume(end + 4);

  std::string_view rest(head);
  rest.remove_suffix(2);  // the empty line's CRLF
  size_t eol = rest.find("\r\n");
  start_line.assign(rest.substr(0, eol));
  rest.remove_prefix(eol + 2);
  headers.clear();
  while (!rest.empty()) {
    eol = rest.find("\r\n");
    std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    if (line.empty() || line.front() == ' ' || line.front() == '\t') {
      return fail(ReadError::kMalformed, "folded or empty header line in: " + head);
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0 ||
        !std::all_of(line.begin(), line.begin() + static_cast<ptrdiff_t>(colon), is_token_char)) {
      return fail(ReadError::kMalformed, "bad header line \"" + std::string(line) + "\"");
    }
    headers.emplace_back(std::string(line.substr(0, colon)),
                         std::string(trim(line.substr(colon + 1))));
  }
  return true;
}

bool HttpConn::read_fixed_body(uint64_t length, std::string& out, uint64_t& counter,
                               const BodySink& sink, Millis timeout) {
  while (length > 0) {
    if (buffered().empty() && !fill(timeout)) {
      if (error_ == ReadError::kClosed || error_ == ReadError::kReset) {
        error_text_ += " with " + std::to_string(length) + " body bytes still missing";
      }
      return false;
    }
    auto data =
        buffered().substr(0, static_cast<size_t>(std::min<uint64_t>(length, buffered().size())));
    if (sink) {
      sink(data);
    } else {
      out.append(data);
    }
    counter += data.size();
    length -= data.size();
    consume(data.size());
  }
  return true;
}

bool HttpConn::read_chunked_body(std::string& out, uint64_t& counter, const BodySink& sink,
                                 Millis timeout) {
  std::string line;
  while (true) {
    if (!read_line(line, timeout)) return false;
    std::string_view size_text = trim(std::string_view(line).substr(0, line.find(';')));
    if (size_text.empty() || size_text.size() > 15 ||
        !std::all_of(size_text.begin(), size_text.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); })) {
      return fail(ReadError::kMalformed, "bad chunk size line \"" + line + "\"");
    }
    uint64_t size = std::stoull(std::string(size_text), nullptr, 16);
    if (size == 0) {
      // Trailer fields, then the empty line.
      while (true) {
        if (!read_line(line, timeout)) return false;
        if (line.empty()) return true;
      }
    }
    if (!read_fixed_body(size, out, counter, sink, timeout)) return false;
    if (!read_line(line, timeout)) return false;
    if (!line.empty()) return fail(ReadError::kMalformed, "chunk data not followed by CRLF");
  }
}

bool HttpConn::read_close_delimited_body(std::string& out, uint64_t& counter, const BodySink& sink,
                                         Millis timeout) {
  while (true) {
    auto data = buffered();
    if (!data.empty()) {
      if (sink) {
        sink(data);
      } else {
        out.append(data);
      }
      counter += data.size();
      consume(data.size());
    }
    if (!fill(timeout)) {
      if (error_ == ReadError::kClosed) {
        error_ = ReadError::kNone;
        return true;
      }
      return false;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ClientConn

ClientConn::ClientConn(uint16_t port, Millis timeout) { connect(port, timeout); }

bool ClientConn::connect(uint16_t port, Millis timeout, int receive_buffer) {
  return connect(loopback(port), nullptr, timeout, receive_buffer);
}

bool ClientConn::connect(const sockaddr_in& destination, const sockaddr_in* source, Millis timeout,
                         int receive_buffer) {
  close();
  buf_.clear();
  pos_ = 0;
  eof_ = false;
  error_ = ReadError::kNone;
  int fd = make_socket();
  if (receive_buffer > 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (source != nullptr &&
      ::bind(fd, reinterpret_cast<const sockaddr*>(source), sizeof *source) != 0) {
    ::close(fd);
    return fail(ReadError::kIo, std::string("bind to the source failed: ") + std::strerror(errno));
  }
  const sockaddr_in address = destination;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    if (errno != EINPROGRESS) {
      ::close(fd);
      return fail(ReadError::kIo, std::string("connect failed: ") + std::strerror(errno));
    }
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) {
      ::close(fd);
      return fail(ReadError::kTimeout, "connect timed out");
    }
    int error = 0;
    socklen_t size = sizeof error;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error != 0) {
      ::close(fd);
      return fail(ReadError::kIo, std::string("connect failed: ") + std::strerror(error));
    }
  }
  fd_ = fd;
  return true;
}

std::optional<Response> ClientConn::read_response_head(Millis timeout) {
  partial_ = Response{};
  std::string start_line;
  if (!read_head(partial_.head, start_line, partial_.headers, timeout)) return std::nullopt;
  // HTTP-version SP 3DIGIT SP [reason-phrase]
  std::string_view line(start_line);
  size_t space = line.find(' ');
  if (line.substr(0, 5) != "HTTP/" || space == std::string_view::npos || line.size() < space + 4 ||
      !std::all_of(line.begin() + static_cast<ptrdiff_t>(space) + 1,
                   line.begin() + static_cast<ptrdiff_t>(space) + 4,
                   [](char c) { return c >= '0' && c <= '9'; }) ||
      (line.size() > space + 4 && line[space + 4] != ' ')) {
    fail(ReadError::kMalformed, "bad status line \"" + start_line + "\"");
    return std::nullopt;
  }
  partial_.version = std::string(line.substr(0, space));
  partial_.status = std::stoi(std::string(line.substr(space + 1, 3)));
  partial_.reason = line.size() > space + 5 ? std::string(line.substr(space + 5)) : "";
  return partial_;
}

bool ClientConn::read_response_body(Response& response, bool head_request, Millis timeout,
                                    const BodySink& sink) {
  error_ = ReadError::kNone;
  int status = response.status;
  if (head_request || (status >= 100 && status < 200) || status == 204 || status == 304) {
    return true;
  }
  if (response.has("transfer-encoding")) {
    if (last_transfer_coding(response) == "chunked") {
      response.chunked = true;
      return read_chunked_body(response.body, response.body_size, sink, timeout);
    }
    response.close_delimited = true;
    return read_close_delimited_body(response.body, response.body_size, sink, timeout);
  }
  std::optional<uint64_t> length;
  try {
    length = content_length(response);
  } catch (const std::exception& e) {
    return fail(ReadError::kMalformed, e.what());
  }
  if (length) return read_fixed_body(*length, response.body, response.body_size, sink, timeout);
  response.close_delimited = true;
  return read_close_delimited_body(response.body, response.body_size, sink, timeout);
}

std::optional<Response> ClientConn::read_response(bool head_request, Millis timeout,
                                                  const BodySink& sink) {
  if (!read_response_head(timeout)) return std::nullopt;
  if (!read_response_body(partial_, head_request, timeout, sink)) return std::nullopt;
  return std::move(partial_);
}

std::string make_request(std::string_view method, std::string_view target,
                         const HeaderList& headers, std::string_view body,
                         bool force_content_length) {
  std::string request = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\n";
  HeaderAccess access{headers};
  if (!access.has("host")) request += "Host: localhost\r\n";
  for (const auto& [name, value] : headers) request += name + ": " + value + "\r\n";
  if ((!body.empty() || force_content_length) && !access.has("content-length") &&
      !access.has("transfer-encoding")) {
    request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  request += "\r\n";
  request += body;
  return request;
}

std::string chunk(std::string_view data) {
  std::ostringstream out;
  out << std::hex << data.size() << "\r\n" << data << "\r\n";
  return out.str();
}

std::optional<Response> http_request(uint16_t port, std::string_view method,
                                     std::string_view target, const HeaderList& headers,
                                     std::string_view body, Millis timeout, std::string* error) {
  ClientConn conn;
  std::optional<Response> response;
  if (conn.connect(port, timeout) &&
      conn.send(make_request(method, target, headers, body), timeout)) {
    response = conn.read_response(method == "HEAD", timeout);
  }
  if (!response && error) {
    *error = std::string(to_string(conn.last_error())) + ": " + conn.last_error_text();
  }
  return response;
}

std::optional<Response> http_get(uint16_t port, std::string_view target, const HeaderList& headers,
                                 Millis timeout, std::string* error) {
  return http_request(port, "GET", target, headers, {}, timeout, error);
}

std::string describe(const std::optional<Response>& response) {
  if (!response) return "(no response)";
  std::string text = response->head;
  text += response->body.substr(0, 200);
  if (response->body.size() > 200) text += "...";
  return text;
}

// ---------------------------------------------------------------------------------------------
// UpstreamConn

UpstreamConn::UpstreamConn(int fd, TestUpstream& upstream, size_t index)
    : HttpConn(fd), upstream_(upstream), index_(index) {}

UpstreamConn::~UpstreamConn() { UpstreamConn::close(); }

void UpstreamConn::close(bool reset) {
  if (fd_ < 0) return;
  {
    // Forget the descriptor before closing it, so stop() never shuts down a reused number.
    std::lock_guard lock(upstream_.mutex_);
    upstream_.open_fds_.erase(fd_);
  }
  HttpConn::close(reset);
}

std::optional<Request> UpstreamConn::read_request_head(Millis timeout) {
  Request request;
  std::string start_line;
  if (!read_head(request.head, start_line, request.headers, timeout)) return std::nullopt;
  // method SP request-target SP HTTP-version
  size_t first = start_line.find(' ');
  size_t second = first == std::string::npos ? first : start_line.find(' ', first + 1);
  if (second == std::string::npos || start_line.find(' ', second + 1) != std::string::npos ||
      start_line.compare(second + 1, 5, "HTTP/") != 0) {
    fail(ReadError::kMalformed, "bad request line \"" + start_line + "\"");
    return std::nullopt;
  }
  request.method = start_line.substr(0, first);
  request.target = start_line.substr(first + 1, second - first - 1);
  request.version = start_line.substr(second + 1);
  recorded_ = upstream_.record(request);
  return request;
}

bool UpstreamConn::read_request_body(Request& request, Millis timeout, const BodySink& sink) {
  error_ = ReadError::kNone;
  if (request.has("transfer-encoding")) {
    if (last_transfer_coding(request) != "chunked") {
      return fail(ReadError::kMalformed, "request Transfer-Encoding does not end in chunked");
    }
    request.chunked = true;
    return read_chunked_body(request.body, request.body_size, sink, timeout);
  }
  std::optional<uint64_t> length;
  try {
    length = content_length(request);
  } catch (const std::exception& e) {
    return fail(ReadError::kMalformed, e.what());
  }
  if (!length) return true;
  return read_fixed_body(*length, request.body, request.body_size, sink, timeout);
}

std::optional<Request> UpstreamConn::read_request(Millis timeout, const BodySink& sink) {
  auto request = read_request_head(timeout);
  if (!request) return std::nullopt;
  if (!read_request_body(*request, timeout, sink)) return std::nullopt;
  upstream_.record_body(recorded_, *request);
  return request;
}

bool UpstreamConn::write_response(int status, std::string_view body, const HeaderList& headers,
                                  bool head_request) {
  std::string response =
      "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  HeaderAccess access{headers};
  for (const auto& [name, value] : headers) response += name + ": " + value + "\r\n";
  bool bodiless = (status >= 100 && status < 200) || status == 204 || status == 304;
  if (!bodiless && !access.has("content-length") && !access.has("transfer-encoding")) {
    response += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  response += "\r\n";
  if (!head_request && !bodiless) response += body;
  return write(response);
}

bool UpstreamConn::wait_peer_close(Millis timeout) { return is_closed(timeout); }

bool UpstreamConn::pause(Millis duration) {
  std::unique_lock lock(upstream_.mutex_);
  return !upstream_.cv_.wait_for(lock, duration, [this] { return upstream_.stopping_.load(); });
}

// ---------------------------------------------------------------------------------------------
// TestUpstream

TestUpstream::Handler TestUpstream::echo_handler(std::string name) {
  return [name](UpstreamConn& conn) {
    while (auto request = conn.read_request(Millis{30000})) {
      std::string connection = request->get("connection");
      bool close = has_token(connection, "close") ||
                   (request->version == "HTTP/1.0" && !has_token(connection, "keep-alive"));
      HeaderList headers{{"x-upstream", name},
                         {"x-upstream-connection", std::to_string(conn.index())}};
      if (close) headers.emplace_back("Connection", "close");
      if (!conn.write_response(200, request->method + " " + request->target + "\n", headers,
                               request->method == "HEAD") ||
          close) {
        return;
      }
    }
  };
}

TestUpstream::TestUpstream(Handler handler, std::string name)
    : TestUpstream(std::move(handler), std::move(name), "127.0.0.1") {}

TestUpstream::TestUpstream(Handler handler, std::string name, const std::string& host)
    : handler_(handler ? std::move(handler) : echo_handler(name)),
      name_(std::move(name)),
      host_(host) {
  listen_fd_ = make_socket();
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  auto address = loopback(0);
  if (::inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) {
    ::close(listen_fd_);
    throw std::runtime_error("TestUpstream: not an IPv4 address: " + host);
  }
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listen_fd_, 256) != 0 || ::pipe2(wake_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error("TestUpstream: cannot listen: " + std::string(std::strerror(errno)));
  }
  port_ = local_port(listen_fd_);
  accept_thread_ = std::thread([this] { accept_loop(); });
}

TestUpstream::~TestUpstream() { stop(); }

std::string TestUpstream::address() const { return host_ + ":" + std::to_string(port_); }

void TestUpstream::accept_loop() {
  while (!stopping_) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (stopping_ || (fds[1].revents & POLLIN)) return;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard lock(mutex_);
    open_fds_.insert(fd);
    size_t index = connections_.fetch_add(1) + 1;
    threads_.emplace_back([this, fd, index] { serve(fd, index); });
    cv_.notify_all();
  }
}

void TestUpstream::serve(int fd, size_t index) {
  UpstreamConn conn(fd, *this, index);
  try {
    handler_(conn);
  } catch (const std::exception& e) {
    // A failing handler must not take the test process down; the test sees the closed socket.
    std::fprintf(stderr, "TestUpstream handler threw: %s\n", e.what());
  }
  conn.close();
}

size_t TestUpstream::record(const Request& request) {
  size_t index;
  {
    std::lock_guard lock(mutex_);
    index = received_.size();
    received_.push_back(request);
    requests_.fetch_add(1);
  }
  cv_.notify_all();
  return index;
}

void TestUpstream::record_body(size_t index, const Request& request) {
  std::lock_guard lock(mutex_);
  if (index >= received_.size()) return;
  auto& recorded = received_[index];
  // Bodies of a few MiB are kept for assertions; bigger ones are only counted.
  if (request.body.size() <= 8 * 1024 * 1024) recorded.body = request.body;
  recorded.body_size = request.body_size;
  recorded.chunked = request.chunked;
}

bool TestUpstream::wait_for_connections(size_t n, Millis timeout) const {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return connections_.load() >= n; });
}

bool TestUpstream::wait_for_requests(size_t n, Millis timeout) const {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return requests_.load() >= n; });
}

std::vector<Request> TestUpstream::received() const {
  std::lock_guard lock(mutex_);
  return received_;
}

std::optional<Request> TestUpstream::last_request() const {
  std::lock_guard lock(mutex_);
  if (received_.empty()) return std::nullopt;
  return received_.back();
}

void TestUpstream::stop() {
  if (stopping_.exchange(true)) return;
  char byte = 1;
  [[maybe_unused]] auto ignored = ::write(wake_pipe_[1], &byte, 1);
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (auto& thread : threads) thread.join();
  ::close(listen_fd_);
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
}

std::optional<std::string> non_loopback_ipv4() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return std::nullopt;
  std::optional<std::string> found;
  for (ifaddrs* i = list; i != nullptr && !found; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    if ((i->ifa_flags & IFF_UP) == 0 || (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char text[INET_ADDRSTRLEN];
    const auto* a = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
    if (::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text) != nullptr) found = text;
  }
  ::freeifaddrs(list);
  return found;
}

uint16_t unused_port() {
  int fd = make_socket();
  auto address = loopback(0);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  uint16_t port = local_port(fd);
  ::close(fd);
  return port;
}

RefusingPort::RefusingPort() {
  fd_ = make_socket();
  sockaddr_in address = loopback(0);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    std::string why = std::strerror(errno);
    ::close(fd_);
    throw std::runtime_error("RefusingPort: " + why);
  }
  port_ = local_port(fd_);
}

RefusingPort::~RefusingPort() { ::close(fd_); }

}  // namespace bulwark::test
