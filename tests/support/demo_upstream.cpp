// demo-upstream: a tiny HTTP/1.1 server for the README demo, benchmarks and tests.
//
//   demo-upstream --port N [--address 127.0.0.1] [--name NAME]
//
// Every request gets 200 with the body "hello from NAME: METHOD TARGET\n", except /echo, whose
// response body is the request body (Content-Length or chunked), streamed back as it arrives.
// Connections are kept alive (HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with
// "Connection: keep-alive"). Prints "listening on ADDR:PORT" once bound (with the real port when
// --port is 0). Malformed requests get 400 and the connection is closed; nothing a client sends
// can crash the server. One thread per connection, blocking sockets with a 60 s idle timeout.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

constexpr size_t kMaxHeadSize = 64 * 1024;
constexpr int kMaxConnections = 1024;
constexpr int kIdleTimeoutSeconds = 60;

std::atomic<int> g_open_connections{0};

struct Options {
  std::string address = "127.0.0.1";
  int port = -1;
  std::string name = "demo";
};

void usage(FILE* out) {
  std::fprintf(out,
               "usage: demo-upstream --port N [--address 127.0.0.1] [--name NAME]\n"
               "  Answers every request with 200 \"hello from NAME: METHOD TARGET\\n\";\n"
               "  /echo answers with the request body. --port 0 picks a free port.\n");
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool has_token(std::string_view value, std::string_view token) {
  while (true) {
    size_t comma = value.find(',');
    if (iequals(trim(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) return false;
    value.remove_prefix(comma + 1);
  }
}

bool is_tchar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c);
}

// A blocking connection with a read buffer. Every method returns false once the peer is gone, a
// read times out, or the input is malformed; the caller then closes the connection.
class Connection {
 public:
  explicit Connection(int fd) : fd_(fd) {}
  ~Connection() { ::close(fd_); }

  bool write_all(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Appends what the socket has to the buffer; false on close, timeout or error.
  bool fill() {
    if (pos_ > 0 && pos_ * 2 >= buf_.size()) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
    char chunk[65536];
    while (true) {
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      buf_.append(chunk, static_cast<size_t>(n));
      return true;
    }
  }

  std::string_view buffered() const { return std::string_view(buf_).substr(pos_); }
  void consume(size_t n) { pos_ += n; }

  // Reads through the next CRLF (returned without it). Lines are bounded by `max`.
  bool read_line(std::string& line, size_t max) {
    size_t scanned = 0;
    while (true) {
      size_t end = buffered().find("\r\n", scanned);
      if (end != std::string_view::npos) {
        line.assign(buffered().substr(0, end));
        consume(end + 2);
        return true;
      }
      if (buffered().size() > max) return false;
      scanned = buffered().empty() ? 0 : buffered().size() - 1;
      if (!fill()) return false;
    }
  }

  // Reads up to `max` body bytes into `out` (from the buffer first). False at end of stream.
  bool read_some(std::string& out, uint64_t max) {
    if (buffered().empty() && !fill()) return false;
    size_t take = static_cast<size_t>(std::min<uint64_t>(max, buffered().size()));
    out.assign(buffered().substr(0, take));
    consume(take);
    return true;
  }

 private:
  int fd_;
  std::string buf_;
  size_t pos_ = 0;
};

struct Request {
  std::string method, target, version;
  std::vector<std::pair<std::string, std::string>> headers;
  bool chunked = false;
  uint64_t content_length = 0;
  bool keep_alive = true;

  std::optional<std::string_view> get(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (iequals(key, name)) return std::string_view(value);
    }
    return std::nullopt;
  }
};

enum class ParseResult { kOk, kClosed, kBad };

ParseResult read_head(Connection& conn, Request& request) {
  size_t end;
  size_t scanned = 0;
  while ((end = conn.buffered().find("\r\n\r\n", scanned)) == std::string_view::npos) {
    if (conn.buffered().size() > kMaxHeadSize) return ParseResult::kBad;
    scanned = conn.buffered().size() > 3 ? conn.buffered().size() - 3 : 0;
    if (!conn.fill()) return conn.buffered().empty() ? ParseResult::kClosed : ParseResult::kBad;
  }
  std::string head(conn.buffered().substr(0, end + 2));
  conn.consume(end + 4);

  std::string_view rest(head);
  size_t eol = rest.find("\r\n");
  std::string_view line = rest.substr(0, eol);
  rest.remove_prefix(eol + 2);
  size_t first = line.find(' ');
  size_t second = first == std::string_view::npos ? first : line.find(' ', first + 1);
  if (first == 0 || second == std::string_view::npos || second == first + 1 ||
      line.find(' ', second + 1) != std::string_view::npos) {
    return ParseResult::kBad;
  }
  request.method = std::string(line.substr(0, first));
  request.target = std::string(line.substr(first + 1, second - first - 1));
  request.version = std::string(line.substr(second + 1));
  if (!std::all_of(request.method.begin(), request.method.end(), is_tchar) ||
      (request.version != "HTTP/1.1" && request.version != "HTTP/1.0")) {
    return ParseResult::kBad;
  }
  for (char c : request.target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return ParseResult::kBad;
  }

  while (!rest.empty()) {
    eol = rest.find("\r\n");
    line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0 ||
        !std::all_of(line.begin(), line.begin() + static_cast<ptrdiff_t>(colon), is_tchar)) {
      return ParseResult::kBad;  // also rejects obs-fold (a line starting with a space)
    }
    request.headers.emplace_back(std::string(line.substr(0, colon)),
                                 std::string(trim(line.substr(colon + 1))));
  }

  bool has_length = false;
  bool has_te = false;
  for (const auto& [name, value] : request.headers) {
    if (iequals(name, "content-length")) {
      std::string_view digits = value;
      if (digits.empty() || digits.size() > 18 ||
          !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return ParseResult::kBad;
      }
      uint64_t length = std::strtoull(value.c_str(), nullptr, 10);
      if (has_length && length != request.content_length) return ParseResult::kBad;
      request.content_length = length;
      has_length = true;
    } else if (iequals(name, "transfer-encoding")) {
      if (has_te || !iequals(trim(value), "chunked")) return ParseResult::kBad;
      has_te = true;
      request.chunked = true;
    }
  }
  if (has_length && has_te) return ParseResult::kBad;

  auto connection = request.get("connection");
  if (request.version == "HTTP/1.0") {
    request.keep_alive = connection && has_token(*connection, "keep-alive");
  } else {
    request.keep_alive = !(connection && has_token(*connection, "close"));
  }
  return ParseResult::kOk;
}

// Reads the next chunk of a chunked body into `data`; an empty `data` with true means the last
// chunk (and the trailer) has been read.
bool read_chunk(Connection& conn, std::string& data) {
  std::string line;
  if (!conn.read_line(line, 4096)) return false;
  std::string_view size_text = trim(std::string_view(line).substr(0, line.find(';')));
  if (size_text.empty() || size_text.size() > 15 ||
      !std::all_of(size_text.begin(), size_text.end(),
                   [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); })) {
    return false;
  }
  uint64_t size = std::strtoull(std::string(size_text).c_str(), nullptr, 16);
  data.clear();
  if (size == 0) {
    while (true) {  // trailer fields until the empty line
      if (!conn.read_line(line, kMaxHeadSize)) return false;
      if (line.empty()) return true;
    }
  }
  std::string piece;
  while (data.size() < size) {
    if (!conn.read_some(piece, size - data.size())) return false;
    data += piece;
  }
  return conn.read_line(line, 2) && line.empty();
}

std::string hex(size_t n) {
  char text[32];
  std::snprintf(text, sizeof text, "%zx", n);
  return text;
}

// Streams the request body back. Returns false when the connection must be closed.
bool echo(Connection& conn, const Request& request, bool& keep_alive) {
  bool http10 = request.version == "HTTP/1.0";
  std::string head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n";
  std::string piece;
  if (!request.chunked) {
    head += "Content-Length: " + std::to_string(request.content_length) + "\r\n";
    if (http10 && keep_alive) head += "Connection: keep-alive\r\n";
    if (!keep_alive) head += "Connection: close\r\n";
    if (!conn.write_all(head + "\r\n")) return false;
    uint64_t left = request.content_length;
    while (left > 0) {
      if (!conn.read_some(piece, std::min<uint64_t>(left, 65536))) return false;
      left -= piece.size();
      if (request.method != "HEAD" && !conn.write_all(piece)) return false;
    }
    return true;
  }
  // Chunked in: chunked out, or close-delimited for an HTTP/1.0 client that cannot read chunks.
  if (http10) keep_alive = false;
  head += http10 ? "Connection: close\r\n" : "Transfer-Encoding: chunked\r\n";
  if (!http10 && !keep_alive) head += "Connection: close\r\n";
  if (!conn.write_all(head + "\r\n")) return false;
  while (true) {
    if (!read_chunk(conn, piece)) return false;
    if (request.method == "HEAD") {
      if (piece.empty()) return true;
      continue;
    }
    if (piece.empty()) return http10 || conn.write_all("0\r\n\r\n");
    if (!conn.write_all(http10 ? piece : hex(piece.size()) + "\r\n" + piece + "\r\n")) {
      return false;
    }
  }
}

// Reads and drops a request body.
bool discard_body(Connection& conn, const Request& request) {
  std::string piece;
  if (request.chunked) {
    do {
      if (!read_chunk(conn, piece)) return false;
    } while (!piece.empty());
    return true;
  }
  uint64_t left = request.content_length;
  while (left > 0) {
    if (!conn.read_some(piece, std::min<uint64_t>(left, 65536))) return false;
    left -= piece.size();
  }
  return true;
}

void serve(int fd, const std::string& name) {
  Connection conn(fd);
  while (true) {
    Request request;
    ParseResult parsed = read_head(conn, request);
    if (parsed == ParseResult::kClosed) return;
    if (parsed == ParseResult::kBad) {
      std::string body = "bad request\n";
      conn.write_all("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
      return;
    }
    auto expect = request.get("expect");
    if (expect && iequals(*expect, "100-continue") && request.version == "HTTP/1.1" &&
        (request.chunked || request.content_length > 0) &&
        !conn.write_all("HTTP/1.1 100 Continue\r\n\r\n")) {
      return;
    }
    bool keep_alive = request.keep_alive;
    std::string path = request.target.substr(0, request.target.find('?'));
    if (path == "/echo") {
      if (!echo(conn, request, keep_alive)) return;
    } else {
      if (!discard_body(conn, request)) return;
      std::string body = "hello from " + name + ": " + request.method + " " + request.target + "\n";
      std::string response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\n";
      if (request.version == "HTTP/1.0" && keep_alive) response += "Connection: keep-alive\r\n";
      if (!keep_alive) response += "Connection: close\r\n";
      response += "\r\n";
      if (request.method != "HEAD") response += body;
      if (!conn.write_all(response)) return;
    }
    if (!keep_alive) return;
  }
}

std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) return std::nullopt;
    std::string value = argv[++i];
    if (arg == "--port") {
      char* end = nullptr;
      long port = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || port < 0 || port > 65535) return std::nullopt;
      options.port = static_cast<int>(port);
    } else if (arg == "--address") {
      options.address = value;
    } else if (arg == "--name") {
      options.name = value;
    } else {
      return std::nullopt;
    }
  }
  if (options.port < 0) return std::nullopt;
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  auto options = parse_options(argc, argv);
  if (!options) {
    usage(stderr);
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);

  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(options->port));
  if (::inet_pton(AF_INET, options->address.c_str(), &address.sin_addr) != 1) {
    std::fprintf(stderr, "demo-upstream: --address must be an IPv4 address: %s\n",
                 options->address.c_str());
    return 2;
  }
  int listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (listen_fd < 0 ||
      ::bind(listen_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listen_fd, 1024) != 0) {
    std::fprintf(stderr, "demo-upstream: cannot listen on %s:%d: %s\n", options->address.c_str(),
                 options->port, std::strerror(errno));
    return 1;
  }
  socklen_t size = sizeof address;
  ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&address), &size);
  std::printf("listening on %s:%u\n", options->address.c_str(), ntohs(address.sin_port));
  std::fflush(stdout);

  while (true) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    if (g_open_connections.load() >= kMaxConnections) {
      ::close(fd);
      continue;
    }
    timeval idle{kIdleTimeoutSeconds, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ++g_open_connections;
    try {
      std::thread([fd, name = options->name] {
        try {
          serve(fd, name);
        } catch (const std::exception&) {
          // Out of memory or similar on one connection: drop it, keep serving the others.
        }
        --g_open_connections;
      }).detach();
    } catch (const std::exception&) {
      ::close(fd);
      --g_open_connections;
    }
  }
}
