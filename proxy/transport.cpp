#include "proxy/transport.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "proxy/net.h"

namespace bulwark {

TcpTransport::TcpTransport(const TransportContext* ctx) : ctx_(ctx) { poll_.data = this; }

TransportPtr TcpTransport::create(const TransportContext* ctx) {
  return TransportPtr(new TcpTransport(ctx));
}

TransportPtr TcpTransport::open(const TransportContext* ctx, int fd) {
  TransportPtr t(new TcpTransport(ctx));
  auto* self = static_cast<TcpTransport*>(t.get());
  if (set_nonblocking(fd) != 0 || self->watch(fd) != 0) {
    ::close(fd);
    return nullptr;
  }
  set_nodelay(fd);
  return t;
}

int TcpTransport::watch(int fd) {
  int rc = uv_poll_init_socket(ctx_->loop, &poll_, fd);
  if (rc != 0) return rc;
  poll_.data = this;
  fd_ = fd;
  return 0;
}

int TcpTransport::connect(const sockaddr* addr) {
  if (closed_ || fd_ >= 0) return UV_EINVAL;
  int fd = start_connect(addr);
  if (fd < 0) return fd;
  int rc = 0;
  if ((rc = watch(fd)) != 0) {
    ::close(fd);
    return rc;
  }
  // The result (also of a connect that finished at once) is reported when the socket is
  // writable: from the loop, never from inside this call.
  connecting_ = true;
  update_events();
  return 0;
}

void TcpTransport::update_events() {
  if (closed_ || fd_ < 0) return;
  // A read stop keeps watching (it is often undone within the turn, and each change of what a
  // poll handle watches costs two epoll_ctl calls); on_readable() stops watching when bytes come
  // that nobody wants.
  watch_events((reading_ || (events_ & UV_READABLE) != 0 ? UV_READABLE : 0) |
               (connecting_ || (writing_ != nullptr && !write_ended_) ? UV_WRITABLE : 0));
}

void TcpTransport::watch_events(int want) {
  if (want == events_) return;
  events_ = want;
  if (want == 0) {
    uv_poll_stop(&poll_);
  } else {
    uv_poll_start(&poll_, want, &TcpTransport::on_poll);
  }
}

void TcpTransport::on_poll(uv_poll_t* h, int status, int events) {
  auto* self = static_cast<TcpTransport*>(h->data);
  if (status < 0) {
    // An error is pending on the socket (libuv stopped the handle): what is under way finds it
    // with its own call (connect, read, write).
    self->events_ = 0;
    events = UV_READABLE | UV_WRITABLE;
  }
  if (self->connecting_) {
    if (events & UV_WRITABLE) self->on_connected();
  } else {
    // The write first: its end is reported before bytes read after it.
    if ((events & UV_WRITABLE) && self->writing_ != nullptr) self->on_writable();
    if ((events & UV_READABLE) && !self->closed_) {
      if (self->reading_) {
        self->on_readable();
      } else {
        self->stop_watching_reads();
      }
    }
  }
  self->update_events();
}

void TcpTransport::on_connected() {
  int error = 0;
  socklen_t len = sizeof error;
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
  connecting_ = false;
  update_events();
  if (callbacks_ != nullptr) callbacks_->on_transport_connected(-error);
}

void TcpTransport::read_start() {
  if (reading_ || closed_ || fd_ < 0) return;
  reading_ = true;
  update_events();
}

void TcpTransport::read_stop() { reading_ = false; }

void TcpTransport::stop_watching_reads() { watch_events(events_ & ~UV_READABLE); }

void TcpTransport::on_readable() {
  // Reads again while each read filled the room there was (more may wait), up to 16 times a
  // wake-up, so a large body needs fewer loop turns and one connection cannot hold the loop.
  for (int i = 0; i < 16 && read_once(); ++i) {
  }
}

bool TcpTransport::read_once() {
  if (in_ == nullptr) {
    reading_ = false;
    stop_watching_reads();
    if (callbacks_ != nullptr) callbacks_->on_transport_read(UV_ENOBUFS);
    return false;
  }
  in_->ensure(*ctx_->buffers);
  const size_t room = in_->space();
  ssize_t n = room == 0 ? UV_ENOBUFS : 0;
  if (n == 0) {
    do {
      n = ::read(fd_, in_->tail(), in_->space());
    } while (n < 0 && errno == EINTR);
    // Nothing more now. The buffer stays, even when all of it was parsed: a head being parsed
    // points into it (only its owner knows, and gives drained storage back itself).
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    if (n < 0) n = -errno;
    if (n == 0) n = UV_EOF;
  }
  if (n > 0) {
    in_->filled += static_cast<size_t>(n);
  } else {
    // No room, end of stream or an error: no more reading until told to.
    reading_ = false;
    stop_watching_reads();
  }
  if (callbacks_ != nullptr) callbacks_->on_transport_read(n);
  return n > 0 && static_cast<size_t>(n) == room && reading_ && !closed_;
}

int TcpTransport::write(Outbox& out, bool at_once) {
  if (closed_ || fd_ < 0 || connecting_) return UV_EPIPE;
  if (writing_ != nullptr) return UV_EBUSY;
  if (!out.begin_write()) return 0;
  writing_ = &out;
  int rc = out.write_some(fd_);
  if (rc == 1 && at_once) {
    writing_ = nullptr;
    out.on_written();
    return 0;
  }
  if (rc != 0) {
    // Written whole, or failed: reported once the current loop phase is over, so the caller
    // never sees its write end, or its connection fail, under it. (Not on the next writable
    // event: a socket the write just filled is not writable.)
    write_ended_ = true;
    write_status_ = rc < 0 ? rc : 0;
    ctx_->later->defer(this, &TcpTransport::report_write_end);
    return 0;
  }
  update_events();  // the rest when the socket takes it
  return 0;
}

void TcpTransport::report_write_end(void* p) {
  // The transport is alive: close() cancels this report.
  auto* self = static_cast<TcpTransport*>(p);
  if (self->closed_ || self->writing_ == nullptr || !self->write_ended_) return;
  self->end_write(self->write_status_);
}

void TcpTransport::on_writable() {
  if (write_ended_) return;  // its end is reported by report_write_end()
  int rc = writing_->write_some(fd_);
  if (rc == 0) return;  // still more than the socket takes
  end_write(rc < 0 ? rc : 0);
}

void TcpTransport::end_write(int status) {
  Outbox* out = writing_;
  writing_ = nullptr;
  write_ended_ = false;
  write_status_ = 0;
  out->on_written();
  if (shutdown_pending_ && status == 0) ::shutdown(fd_, SHUT_WR);
  shutdown_pending_ = false;
  update_events();
  if (callbacks_ != nullptr) callbacks_->on_transport_written(status);
}

int TcpTransport::shutdown() {
  if (closed_ || fd_ < 0) return UV_EPIPE;
  if (writing_ != nullptr) {
    shutdown_pending_ = true;  // after what is queued
    return 0;
  }
  return ::shutdown(fd_, SHUT_WR) == 0 ? 0 : -errno;
}

void TcpTransport::close() {
  if (closed_) return;
  closed_ = true;
  callbacks_ = nullptr;
  reading_ = connecting_ = false;
  if (writing_ != nullptr) {
    // Nothing of the Outbox is read after this: it may be cleared or rewound at once.
    Outbox* out = writing_;
    writing_ = nullptr;
    out->on_written();
  }
  // A write end still to be reported is not: the report could otherwise run after the memory
  // went (when the deleter no longer runs before close callbacks, as at shutdown).
  if (write_ended_) ctx_->later->cancel(this);
  write_ended_ = false;
  if (fd_ < 0) {
    delete this;  // no socket, no handle: nothing for libuv to finish
    return;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), [](uv_handle_t* h) {
    auto* self = static_cast<TcpTransport*>(h->data);
    ::close(self->fd_);  // once libuv no longer watches it
    delete self;
  });
}

void TcpTransport::peer_ip(char* buf, size_t size) const { socket_peer_ip(fd_, buf, size); }

}  // namespace bulwark
