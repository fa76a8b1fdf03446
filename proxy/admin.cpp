#include "proxy/admin.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "proxy/codec.h"
#include "proxy/headers.h"
#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/outbox.h"

namespace bulwark {
namespace {

// The largest request (head and body) a client may send: a longer head gets 400, and a request
// that fills the read buffer (a block of this size) unfinished gets 431.
constexpr size_t kMaxAdminRequest = 16 * 1024;

}  // namespace

// One admin client connection. Requests are answered one at a time, in order: reading stops
// from a request's end until its response is written, and the next request is parsed from what
// is left in the buffer. Owned by itself: close() hands it to the server's DeferredDeleter.
class AdminConnection final : public DeferredDeletable,
                              private Transport::Callbacks,
                              private http::ParserCallbacks {
 public:
  explicit AdminConnection(AdminServer& server)
      : server_(server),
        parser_(http::Parser::Type::kRequest, this),
        timer_(Timer::make<&AdminConnection::on_timeout>(server.loop_, this)) {
    parser_.set_max_head_size(kMaxAdminRequest);
  }
  // Only after close().
  ~AdminConnection() override { in_.release(server_.buffers_); }
  AdminConnection(const AdminConnection&) = delete;
  AdminConnection& operator=(const AdminConnection&) = delete;

  // Takes the accepted socket `fd` of a client at `peer` and waits for a request.
  void open(int fd, const sockaddr_storage& peer) {
    request_.peer = format_sockaddr(peer);
    request_.peer_loopback = is_loopback(peer);
    transport_ = TcpTransport::open(&server_.context_, fd);
    if (!transport_) {
      close();
      return;
    }
    transport_->attach(this, &in_);
    wait_for_request();
  }

  // Closes the socket at once (cutting a response being written) and frees the object once the
  // current loop phase is over (after AdminServer::close(), with the server). A response the
  // handler still owes is then dropped. Idempotent.
  void close() {
    if (phase_ == Phase::kClosed) return;
    phase_ = Phase::kClosed;
    alive_.reset();  // a late respond() finds the connection gone
    timer_.close();
    transport_.reset();
    server_.forget(this);
    server_.deferred_->defer(this);
  }

 private:
  enum class Phase : uint8_t {
    kIdle,      // waiting for a request's first byte (idle timer)
    kRequest,   // reading a request (request timer)
    kHandling,  // the handler has the request (no timer: the handler answers exactly once)
    kWriting,   // writing the response (idle timer: the client must take it)
    kClosed,
  };

  // Transport::Callbacks
  void on_transport_connected(int) override {}
  void on_transport_read(ssize_t nread) override {
    // End of stream, an error, or no buffer: reading is on only while no request is under way,
    // so there is nothing left to answer.
    if (nread < 0) {
      close();
      return;
    }
    if (phase_ == Phase::kIdle) {
      phase_ = Phase::kRequest;
      timer_.start(server_.limits_.request_ms);
    }
    parse();
  }
  void on_transport_written(int status) override {
    if (status < 0 || !keep_alive_) {
      close();
      return;
    }
    out_.clear();  // the copy of the body goes now, not with the next response
    // The next request's facts: a refusal of a head never parsed is no answer to HEAD.
    head_request_ = false;
    next_request();
  }

  // http::ParserCallbacks
  HeadAction on_head(http::MessageHead& head) override {
    request_.method.assign(head.method);
    std::string_view target = head.str(head.target);
    size_t q = target.find('?');
    request_.path.assign(target.substr(0, q));
    request_.query.assign(q == std::string_view::npos ? std::string_view() : target.substr(q));
    keep_alive_ = head.keep_alive;
    head_request_ = head.is_head_method;
    request_.from_browser =
        head.find("origin") != nullptr || head.find("sec-fetch-site") != nullptr;
    const http::Header* authorization = head.find("authorization");
    request_.authorization.assign(authorization != nullptr ? head.str(authorization->value)
                                                           : std::string_view());
    return kProceed;
  }
  void on_body(const char*, size_t) override {}
  void on_message_complete() override { request_ready_ = true; }

  void wait_for_request() {
    phase_ = Phase::kIdle;
    timer_.start(server_.limits_.idle_ms);
    transport_->read_start();
  }

  // Parses what is in the buffer: a complete request goes to the handler, a malformed or
  // oversized one is refused, and the connection closes after the refusal.
  void parse() {
    http::Parser::Result r = parser_.execute(in_.data, in_.parsed, in_.filled);
    in_.parsed += r.consumed;
    if (r.status == http::Parser::Status::kError ||
        r.status == http::Parser::Status::kHeadTooLarge ||
        r.status == http::Parser::Status::kUpgrade) {
      keep_alive_ = false;
      respond({400, "text/plain; charset=utf-8", "bad request\n"});
      return;
    }
    if (request_ready_) {
      request_ready_ = false;
      phase_ = Phase::kHandling;
      timer_.stop();
      transport_->read_stop();
      server_.handler_(request_, [this, alive = std::weak_ptr<void>(alive_)](AdminResponse resp) {
        if (!alive.expired()) respond(std::move(resp));
      });
      return;
    }
    if (in_.space() == 0) {
      keep_alive_ = false;
      respond({431, "text/plain; charset=utf-8", "request too large\n"});
    }
  }

  void respond(AdminResponse resp) {
    phase_ = Phase::kWriting;
    transport_->read_stop();
    out_.clear();
    std::string& head = out_.head;
    head.append("HTTP/1.1 ").append(std::to_string(resp.status)).append(" ");
    head.append(http::reason_phrase(resp.status))
        .append("\r\ncontent-type: ")
        .append(resp.content_type);
    head.append("\r\ncontent-length: ").append(std::to_string(resp.body.size()));
    head.append("\r\ncache-control: no-store\r\n");
    if (!keep_alive_) head.append("connection: close\r\n");
    head.append("\r\n");
    out_.add_head();
    if (!head_request_) out_.add_data_copy(resp.body.data(), resp.body.size());
    if (transport_->write(out_) != 0) {
      close();
      return;
    }
    timer_.start(server_.limits_.idle_ms);
  }

  // The response is out and the connection stays: the next request, pipelined or still to come.
  void next_request() {
    parser_.resume();
    if (in_.empty()) {
      in_.release(server_.buffers_);  // an idle connection holds no buffer
      wait_for_request();
      return;
    }
    in_.compact(server_.buffers_);  // the unparsed bytes to the front
    phase_ = Phase::kRequest;
    timer_.start(server_.limits_.request_ms);
    parse();
    if (phase_ == Phase::kRequest) transport_->read_start();
  }

  void on_timeout() { close(); }

  AdminServer& server_;
  http::Parser parser_;
  Timer timer_;             // the current phase's deadline
  TransportPtr transport_;  // closed by close(), before in_ and out_ go: it reads and writes them
  InputBuffer in_;          // a block of server_.buffers_ while a request is in it
  Outbox out_;              // the response (head and a copy of the body)
  AdminRequest request_;
  // Held while the connection is open; the handler's respond() keeps a weak reference.
  std::shared_ptr<void> alive_ = std::make_shared<char>();
  Phase phase_ = Phase::kIdle;
  bool keep_alive_ = true;
  bool head_request_ = false;
  bool request_ready_ = false;
};

AdminServer::AdminServer(uv_loop_t* loop, AdminHandler handler, AdminLimits limits)
    : loop_(loop),
      handler_(std::move(handler)),
      limits_(limits),
      buffers_(kMaxAdminRequest, 4),
      context_{loop, &buffers_} {}

AdminServer::~AdminServer() { close(); }

int AdminServer::listen(const config::SocketAddress& address, std::string* bound) {
  sockaddr_storage addr{};
  int rc = to_sockaddr(address, &addr);
  if (rc != 0) return rc;
  std::string step;
  const int fd = open_listener(addr, 128, /*reuseport=*/false, &step);
  if (fd < 0) return fd;
  auto* poll = new uv_poll_t;
  rc = uv_poll_init_socket(loop_, poll, fd);
  if (rc != 0) {
    delete poll;
    ::close(fd);
    return rc;
  }
  poll->data = this;
  listen_fd_ = fd;
  listener_ = UvHandle<uv_poll_t>(poll);
  uv_poll_start(poll, UV_READABLE, &AdminServer::on_listener_readable);
  hold_off_timer_ = Timer::make<&AdminServer::resume_accepting>(loop_, this);
  deferred_ = std::make_unique<DeferredDeleter>(loop_);
  context_.later = deferred_.get();
  sockaddr_storage actual{};
  socklen_t len = sizeof actual;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&actual), &len);
  *bound = format_sockaddr(actual);
  return 0;
}

void AdminServer::on_listener_readable(uv_poll_t* h, int status, int) {
  auto* self = static_cast<AdminServer*>(h->data);
  if (status < 0) {
    // libuv stopped watching the socket: look again in a while.
    log::warn("admin listener failed").str("error", uv_strerror(status));
    self->hold_off();
    return;
  }
  self->accept_connections();
}

void AdminServer::resume_accepting() {
  uv_poll_start(listener_.get(), UV_READABLE, &AdminServer::on_listener_readable);
  accept_connections();
}

void AdminServer::accept_connections() {
  for (int i = 0; i < 16; ++i) {  // a flood of connects does not hold up the main loop
    if (connections_.size() >= limits_.max_connections) {
      hold_off();
      return;
    }
    sockaddr_storage peer{};
    socklen_t peer_size = sizeof peer;
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_size,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int error = errno;
      if (error == EAGAIN) return;
      if (error == EINTR || error == ECONNABORTED) continue;
      log::warn("admin listener cannot accept").str("error", uv_strerror(-error));
      hold_off();
      return;
    }
    auto* connection = new AdminConnection(*this);
    connections_.push_back(connection);
    connection->open(fd, peer);
  }
}

void AdminServer::hold_off() {
  uv_poll_stop(listener_.get());
  hold_off_timer_.start(100);
}

void AdminServer::forget(AdminConnection* connection) {
  auto at = std::find(connections_.begin(), connections_.end(), connection);
  if (at != connections_.end()) connections_.erase(at);
}

void AdminServer::close() {
  if (listener_) {
    listener_.reset();  // stops watching the socket at once (libuv removes it from epoll)
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  hold_off_timer_.close();
  // The deleter's handles close first, freeing what it holds; the connections closed after it
  // wait in it for the destructor. So a connection whose callback led here is not freed under
  // that callback.
  if (deferred_ != nullptr) deferred_->close();
  // Each close() takes its connection out of the list.
  while (!connections_.empty()) connections_.back()->close();
}

}  // namespace bulwark
