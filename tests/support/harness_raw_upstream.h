#pragma once
// A raw upstream for hostile-input tests: it records every byte the proxy sends on every
// connection, frames requests with its own strict parser, and answers each request it frames
// with a scripted reply written byte for byte, however malformed.
//
// It trusts nothing the proxy does. The strict parser accepts only what a correct proxy writes:
// "METHOD SP TARGET SP HTTP/1.1" and "name: value" lines ended by CRLF, no bare CR, LF or NUL,
// token names, at most one of Content-Length (digits only) or Transfer-Encoding (exactly
// "chunked"), and chunked bodies without extensions. Anything else stops framing on that
// connection and is reported as an error, with the bytes kept for the failure message.

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/support/harness.h"

namespace bulwark::test {

// A request as the strict parser framed it.
struct RawRequest {
  enum class Framing { kNone, kContentLength, kChunked };

  size_t connection = 0;  // 1-based index of the upstream connection it arrived on
  size_t sequence = 0;    // 0-based arrival order among all requests the upstream framed
  std::string raw;        // every byte of it, as received
  std::string method;
  std::string target;
  std::string version;
  HeaderList headers;  // names as sent; values without surrounding whitespace
  Framing framing = Framing::kNone;
  std::string body;     // decoded
  HeaderList trailers;  // after a chunked body

  // The first value of a header (ASCII case-insensitive name), or nullopt.
  std::optional<std::string> get(std::string_view name) const;
  size_t count(std::string_view name) const;
};

// What the strict parser made of the front of a byte stream.
struct StrictParse {
  enum class Status { kComplete, kNeedMore, kError };
  Status status = Status::kNeedMore;
  size_t consumed = 0;         // kComplete: the bytes of the request
  bool head_complete = false;  // the head (through CRLF CRLF) is complete and valid
  std::string error;           // kError: what was wrong
};

// Parses one request from the front of `data` into `out` (strict, see the top of this file).
// Also used on the normalised requests tests expect, so both sides go through one parser.
StrictParse parse_strict_request(std::string_view data, RawRequest& out);

// `data` with CR, LF, NUL and other unprintable bytes escaped (\r \n \0 \xNN), at most
// `limit` bytes of it, for failure messages.
std::string escape_bytes(std::string_view data, size_t limit = 600);

// What the upstream writes for a request it framed.
struct RawReply {
  std::string bytes;   // written as is
  size_t repeat = 1;   // written this many times (stops early when the peer goes away)
  bool close = false;  // close the connection after writing
};

// One accepted connection, as recorded.
struct RawConnection {
  size_t index = 0;          // 1-based
  std::string received;      // every byte, in order
  size_t framed = 0;         // bytes taken by complete requests
  std::string error;         // the strict parser's complaint; framing stopped there
  bool peer_closed = false;  // the proxy closed or reset the connection
  bool closed_here = false;  // the upstream closed it (RawReply::close)
};

// A raw HTTP/1.1 upstream on 127.0.0.1 and an ephemeral port; one thread per connection.
// Destruction (or stop()) shuts every connection down and joins all threads.
class RawUpstream {
 public:
  using Replier = std::function<RawReply(const RawRequest&)>;

  // The default replier answers "HTTP/1.1 200 OK", Content-Length: 2, body "ok" (no body for
  // HEAD). Whatever the replier, a request head with "Expect: 100-continue" and a body gets
  // "HTTP/1.1 100 Continue" first, as an origin server would send.
  explicit RawUpstream(Replier replier = {});
  ~RawUpstream();
  RawUpstream(const RawUpstream&) = delete;
  RawUpstream& operator=(const RawUpstream&) = delete;

  static RawReply ok_reply(const RawRequest& request);

  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"

  // A point in the upstream's history: bytes received per connection and requests framed.
  struct Mark {
    std::vector<size_t> received;  // by connection index - 1
    size_t requests = 0;
  };
  Mark mark() const;
  // Requests framed after `mark`, in arrival order.
  std::vector<RawRequest> requests_since(const Mark& mark) const;
  // Copies of every connection's record.
  std::vector<RawConnection> connections() const;
  // Waits until the proxy closed connection `index` (or the upstream did); false on timeout.
  bool wait_closed(size_t index, Millis timeout = kDefaultTimeout) const;

  void stop();

 private:
  void accept_loop();
  void serve(int fd, size_t index);
  bool write_all(int fd, std::string_view data);

  Replier replier_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  uint16_t port_ = 0;
  bool stopping_ = false;  // guarded by mutex_
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<RawConnection> connections_;
  std::vector<RawRequest> requests_;
  std::set<int> open_fds_;
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

}  // namespace bulwark::test
