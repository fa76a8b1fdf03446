#include "proxy/admin.h"

#include <cstring>
#include <memory>

#include "proxy/codec.h"
#include "proxy/headers.h"
#include "proxy/net.h"

namespace bulwark {
namespace {

constexpr size_t kMaxAdminRequest = 16 * 1024;

// One admin client connection. Requests are answered one at a time, in order.
class AdminConnection : public http::ParserCallbacks {
 public:
  explicit AdminConnection(AdminServer& server)
      : server_(server), parser_(http::Parser::Type::kRequest, this) {
    parser_.set_max_head_size(kMaxAdminRequest);
    tcp_.data = this;
    write_req_.data = this;
  }

  void start(uv_stream_t* listener) {
    uv_tcp_init(server_.loop(), &tcp_);
    if (uv_accept(listener, stream()) != 0) {
      close();
      return;
    }
    uv_read_start(stream(), &AdminConnection::on_alloc, &AdminConnection::on_read);
  }

  HeadAction on_head(http::MessageHead& head) override {
    request_.method.assign(head.method);
    std::string_view target = head.str(head.target);
    size_t q = target.find('?');
    request_.path.assign(target.substr(0, q));
    request_.query.assign(q == std::string_view::npos ? std::string_view() : target.substr(q));
    keep_alive_ = head.keep_alive;
    head_request_ = head.is_head_method;
    return kProceed;
  }
  void on_body(const char*, size_t) override {}
  void on_message_complete() override { request_ready_ = true; }

 private:
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }

  static void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
    auto* self = static_cast<AdminConnection*>(h->data);
    *buf = uv_buf_init(self->buf_ + self->filled_,
                       static_cast<unsigned>(sizeof self->buf_ - self->filled_));
  }

  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
    auto* self = static_cast<AdminConnection*>(s->data);
    if (nread == 0) return;
    if (nread < 0) {
      if (self->busy_) {
        self->keep_alive_ = false;  // answer what was asked, then close
        uv_read_stop(s);
      } else {
        self->close();
      }
      return;
    }
    self->filled_ += static_cast<size_t>(nread);
    self->parse();
  }

  void parse() {
    if (busy_) return;
    http::Parser::Result r = parser_.execute(buf_, parsed_, filled_);
    parsed_ += r.consumed;
    if (r.status == http::Parser::Status::kError ||
        r.status == http::Parser::Status::kHeadTooLarge ||
        r.status == http::Parser::Status::kUpgrade) {
      keep_alive_ = false;
      respond({400, "text/plain; charset=utf-8", "bad request\n"});
      return;
    }
    if (request_ready_) {
      request_ready_ = false;
      busy_ = true;
      uv_read_stop(stream());
      server_.handler()(request_, [this](AdminResponse resp) { respond(std::move(resp)); });
      return;
    }
    if (filled_ == sizeof buf_) {
      keep_alive_ = false;
      respond({431, "text/plain; charset=utf-8", "request too large\n"});
    }
  }

  void respond(AdminResponse resp) {
    busy_ = true;
    out_.clear();
    out_.append("HTTP/1.1 ").append(std::to_string(resp.status)).append(" ");
    out_.append(http::reason_phrase(resp.status))
        .append("\r\ncontent-type: ")
        .append(resp.content_type);
    out_.append("\r\ncontent-length: ").append(std::to_string(resp.body.size()));
    out_.append("\r\ncache-control: no-store\r\n");
    if (!keep_alive_) out_.append("connection: close\r\n");
    out_.append("\r\n");
    if (!head_request_) out_.append(resp.body);
    uv_buf_t b = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    if (uv_write(&write_req_, stream(), &b, 1, &AdminConnection::on_written) != 0) close();
  }

  static void on_written(uv_write_t* req, int status) {
    auto* self = static_cast<AdminConnection*>(req->data);
    self->busy_ = false;
    if (status < 0 || !self->keep_alive_) {
      self->close();
      return;
    }
    // Next request: move unparsed bytes to the front.
    std::memmove(self->buf_, self->buf_ + self->parsed_, self->filled_ - self->parsed_);
    self->filled_ -= self->parsed_;
    self->parsed_ = 0;
    self->parser_.resume();
    uv_read_start(self->stream(), &AdminConnection::on_alloc, &AdminConnection::on_read);
    if (self->filled_ > 0) self->parse();
  }

  void close() {
    if (closing_) return;
    closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_),
             [](uv_handle_t* h) { delete static_cast<AdminConnection*>(h->data); });
  }

  AdminServer& server_;
  http::Parser parser_;
  uv_tcp_t tcp_;
  uv_write_t write_req_;
  AdminRequest request_;
  std::string out_;
  char buf_[kMaxAdminRequest];
  size_t filled_ = 0;
  size_t parsed_ = 0;
  bool keep_alive_ = true;
  bool head_request_ = false;
  bool request_ready_ = false;
  bool busy_ = false;
  bool closing_ = false;
};

}  // namespace

int AdminServer::listen(const config::SocketAddress& address, std::string* bound) {
  sockaddr_storage addr{};
  int rc = to_sockaddr(address, &addr);
  if (rc != 0) return rc;
  uv_tcp_init(loop_, &tcp_);
  tcp_.data = this;
  open_ = true;
  rc = uv_tcp_bind(&tcp_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&tcp_), 128, [](uv_stream_t* s, int status) {
      if (status != 0) return;
      auto* server = static_cast<AdminServer*>(s->data);
      (new AdminConnection(*server))->start(s);
    });
  }
  if (rc != 0) return rc;
  sockaddr_storage actual{};
  int len = sizeof actual;
  uv_tcp_getsockname(&tcp_, reinterpret_cast<sockaddr*>(&actual), &len);
  *bound = format_sockaddr(actual);
  return 0;
}

void AdminServer::close() {
  if (!open_) return;
  open_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), nullptr);
}

}  // namespace bulwark
