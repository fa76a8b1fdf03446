#include "proxy/transport.h"

namespace bulwark {

TcpTransport::TcpTransport(const TransportContext* ctx) : ctx_(ctx) {
  uv_tcp_init(ctx->loop, &tcp_);
  tcp_.data = this;
}

TransportPtr TcpTransport::create(const TransportContext* ctx) {
  return TransportPtr(new TcpTransport(ctx));
}

TransportPtr TcpTransport::accept(const TransportContext* ctx, uv_stream_t* server) {
  TransportPtr t(new TcpTransport(ctx));
  auto* self = static_cast<TcpTransport*>(t.get());
  if (uv_accept(server, self->stream()) != 0) return nullptr;  // closes it
  uv_tcp_nodelay(&self->tcp_, 1);
  return t;
}

TransportPtr TcpTransport::open(const TransportContext* ctx, int fd) {
  TransportPtr t(new TcpTransport(ctx));
  if (uv_tcp_open(&static_cast<TcpTransport*>(t.get())->tcp_, fd) != 0) return nullptr;
  return t;
}

int TcpTransport::connect(const sockaddr* addr) {
  uv_tcp_nodelay(&tcp_, 1);
  // Only while connecting: a transport that is not an outgoing one never holds a request.
  auto* req = new uv_connect_t;
  req->data = this;
  int rc = uv_tcp_connect(req, &tcp_, addr, &TcpTransport::on_connect);
  if (rc != 0) delete req;
  return rc;
}

void TcpTransport::on_connect(uv_connect_t* req, int status) {
  auto* self = static_cast<TcpTransport*>(req->data);
  delete req;
  // A transport closed while connecting is still alive: its close callback comes after this.
  if (self->closed_ || self->callbacks_ == nullptr) return;
  self->callbacks_->on_transport_connected(status);
}

void TcpTransport::read_start() {
  if (reading_ || closed_) return;
  reading_ = uv_read_start(stream(), &TcpTransport::on_alloc, &TcpTransport::on_read) == 0;
}

void TcpTransport::read_stop() {
  if (!reading_) return;
  uv_read_stop(stream());
  reading_ = false;
}

void TcpTransport::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* self = static_cast<TcpTransport*>(h->data);
  if (self->in_ == nullptr) {
    *buf = uv_buf_init(nullptr, 0);  // UV_ENOBUFS
    return;
  }
  self->in_->ensure(*self->ctx_->buffers);
  *buf = uv_buf_init(self->in_->tail(), static_cast<unsigned>(self->in_->space()));
}

void TcpTransport::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  auto* self = static_cast<TcpTransport*>(s->data);
  if (nread == 0) return;  // EAGAIN
  if (nread > 0) {
    self->in_->filled += static_cast<size_t>(nread);
  } else {
    // No room (UV_ENOBUFS), end of stream or an error: no more reading until told to.
    self->read_stop();
    if (self->in_ != nullptr) self->in_->release_if_empty(*self->ctx_->buffers);
  }
  if (self->callbacks_ != nullptr) self->callbacks_->on_transport_read(nread);
}

int TcpTransport::write(Outbox& out, bool at_once) {
  if (closed_) return UV_EPIPE;
  FreeList<uv_write_t>* reqs = ctx_->write_requests;
  uv_write_t* req = reqs != nullptr ? reqs->acquire() : new uv_write_t;
  req->data = this;
  int rc = out.flush(req, stream(), &TcpTransport::on_written, at_once);
  if (rc == 0 && out.in_flight()) {
    writing_ = &out;
  } else if (reqs != nullptr) {
    reqs->release(req);  // written at once, or failed: libuv never saw it
  } else {
    delete req;
  }
  return rc;
}

void TcpTransport::on_written(uv_write_t* req, int status) {
  auto* self = static_cast<TcpTransport*>(req->data);
  // The request goes back first: it is called for a write cut by close() too, before the
  // transport is freed. After close() the context may be gone with the transport's owner (an
  // admin server or a health checker destroyed right after closing): the request is freed, not
  // handed back.
  if (!self->closed_ && self->ctx_->write_requests != nullptr) {
    self->ctx_->write_requests->release(req);
  } else {
    delete req;
  }
  Outbox* out = self->writing_;
  self->writing_ = nullptr;
  // A write cut by close() was settled there.
  if (self->closed_ || out == nullptr) return;
  out->on_written();
  if (self->callbacks_ != nullptr) self->callbacks_->on_transport_written(status);
}

int TcpTransport::shutdown() {
  if (closed_) return UV_EPIPE;
  // Rare (a lingering close): the request is allocated only then. Closing the handle cancels it,
  // and its callback (which frees it) still runs.
  auto* req = new uv_shutdown_t;
  int rc = uv_shutdown(req, stream(), [](uv_shutdown_t* r, int) { delete r; });
  if (rc != 0) delete req;
  return rc;
}

void TcpTransport::close() {
  if (closed_) return;
  closed_ = true;
  callbacks_ = nullptr;
  reading_ = false;
  if (writing_ != nullptr) {
    // uv_close stops the write at once: libuv reads none of its bytes after this, so the Outbox
    // may be cleared or rewound now. Its callback still comes (cancelled) and finds writing_ null.
    Outbox* out = writing_;
    writing_ = nullptr;
    out->on_written();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_),
           [](uv_handle_t* h) { delete static_cast<TcpTransport*>(h->data); });
}

void TcpTransport::peer_ip(char* buf, size_t size) const {
  if (size == 0) return;
  buf[0] = '\0';
  sockaddr_storage peer{};
  int len = sizeof peer;
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return;
  if (peer.ss_family == AF_INET) {
    uv_ip4_name(reinterpret_cast<sockaddr_in*>(&peer), buf, size);
  } else if (peer.ss_family == AF_INET6) {
    uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&peer), buf, size);
  }
}

}  // namespace bulwark
