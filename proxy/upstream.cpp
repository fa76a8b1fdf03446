#include "proxy/upstream.h"

#include "proxy/cluster.h"
#include "proxy/worker.h"

namespace bulwark {

UpstreamConnection::UpstreamConnection(Worker& worker, EndpointPool& pool)
    : worker_(worker), pool_(&pool) {
  uv_tcp_init(worker.loop(), &tcp_);
  uv_timer_init(worker.loop(), &timer_);
  open_handles_ = 2;
  tcp_.data = timer_.data = connect_req_.data = this;
  pool.connections++;
}

void UpstreamConnection::connect(Owner* owner, uint64_t timeout_ms) {
  owner_ = owner;
  state_ = State::kConnecting;
  uv_tcp_nodelay(&tcp_, 1);
  int rc = uv_tcp_connect(&connect_req_, &tcp_,
                          reinterpret_cast<const sockaddr*>(&pool_->endpoint.sockaddr),
                          &UpstreamConnection::on_connect);
  if (rc != 0) {
    // Report asynchronously, as a real connect failure would be, so the owner is never called
    // back from inside its own call; with the real error (EMFILE is not the endpoint's fault).
    connect_error_ = rc;
    uv_timer_start(
        &timer_,
        [](uv_timer_t* t) {
          auto* self = static_cast<UpstreamConnection*>(t->data);
          Owner* o = self->owner_;
          self->owner_ = nullptr;
          self->close();
          if (o != nullptr) o->on_upstream_connected(*self, self->connect_error_);
        },
        0, 0);
    return;
  }
  uv_timer_start(&timer_, &UpstreamConnection::on_timer, timeout_ms, 0);
}

void UpstreamConnection::on_connect(uv_connect_t* req, int status) {
  auto* self = static_cast<UpstreamConnection*>(req->data);
  if (self->state_ == State::kClosed) return;
  uv_timer_stop(&self->timer_);
  Owner* owner = self->owner_;
  if (status != 0) {
    self->owner_ = nullptr;
    self->close();
    if (owner != nullptr) owner->on_upstream_connected(*self, status);
    return;
  }
  self->state_ = State::kBusy;
  if (owner != nullptr) {
    owner->on_upstream_connected(*self, 0);
  } else {
    self->close();
  }
}

void UpstreamConnection::attach(Owner* owner) {
  owner_ = owner;
  state_ = State::kBusy;
  uv_timer_stop(&timer_);
}

void UpstreamConnection::start_reading() {
  if (reading_ || state_ == State::kClosed) return;
  reading_ =
      uv_read_start(stream(), &UpstreamConnection::on_alloc, &UpstreamConnection::on_read) == 0;
}

void UpstreamConnection::stop_reading() {
  if (!reading_) return;
  uv_read_stop(stream());
  reading_ = false;
}

void UpstreamConnection::release(uint64_t idle_timeout_ms) {
  owner_ = nullptr;
  if (pool_->retired || writing_) {
    close();
    return;
  }
  state_ = State::kIdle;
  in.release(worker_.buffers());
  uint64_t timeout = idle_timeout_ms;
  // Leave a margin before the upstream's own keep-alive timeout, so we never reuse a
  // connection the upstream is about to close.
  if (keep_alive_timeout_ms_ > 0) {
    uint64_t limit = keep_alive_timeout_ms_ > 1000 ? keep_alive_timeout_ms_ - 1000 : 0;
    if (limit == 0) {
      close();
      return;
    }
    if (limit < timeout) timeout = limit;
  }
  // An idle connection keeps reading: the upstream closing it shows up at once.
  start_reading();
  uv_timer_start(&timer_, &UpstreamConnection::on_timer, timeout, 0);
  pool_->idle.push_front(this);
  pool_->cluster.on_capacity();
}

void UpstreamConnection::close() {
  if (state_ == State::kClosed) return;
  if (state_ == State::kIdle) {
    pool_->idle.remove(this);
    pool_->cluster.stats.idle_connections.add(-1);
  }
  state_ = State::kClosed;
  owner_ = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &UpstreamConnection::on_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &UpstreamConnection::on_closed);
}

void UpstreamConnection::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* self = static_cast<UpstreamConnection*>(h->data);
  self->in.ensure(self->worker_.buffers());
  *buf = uv_buf_init(self->in.tail(), static_cast<unsigned>(self->in.space()));
}

void UpstreamConnection::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  auto* self = static_cast<UpstreamConnection*>(s->data);
  if (nread == 0) return;
  if (nread == UV_ENOBUFS) {
    self->stop_reading();
    return;
  }
  if (self->owner_ == nullptr) {
    // Idle: the upstream closed the connection, or sent bytes nobody asked for. Either way the
    // connection cannot be reused.
    self->close();
    return;
  }
  self->owner_->on_upstream_read(*self, nread);
}

int UpstreamConnection::write(Outbox& out) {
  write_req_.data = this;
  int rc = out.flush(&write_req_, stream(), &UpstreamConnection::on_written);
  writing_ = rc == 0 && out.in_flight();
  return rc;
}

void UpstreamConnection::on_written(uv_write_t* req, int status) {
  auto* self = static_cast<UpstreamConnection*>(req->data);
  self->writing_ = false;
  // After close() the owner is gone (it dropped the write when it let go of the connection).
  if (self->owner_ != nullptr) self->owner_->on_upstream_written(*self, status);
}

void UpstreamConnection::on_timer(uv_timer_t* t) {
  auto* self = static_cast<UpstreamConnection*>(t->data);
  if (self->state_ == State::kConnecting) {
    Owner* owner = self->owner_;
    self->owner_ = nullptr;
    self->close();
    if (owner != nullptr) owner->on_upstream_connected(*self, UV_ETIMEDOUT);
    return;
  }
  if (self->state_ == State::kIdle) self->close();
}

void UpstreamConnection::on_closed(uv_handle_t* h) {
  auto* self = static_cast<UpstreamConnection*>(h->data);
  if (--self->open_handles_ > 0) return;
  self->in.release(self->worker_.buffers());
  EndpointPool* pool = self->pool_;
  pool->connections--;
  WorkerCluster& cluster = pool->cluster;
  delete self;
  cluster.release_connection_slot();
}

}  // namespace bulwark
