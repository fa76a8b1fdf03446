#include "proxy/upstream.h"

#include <bit>

#include "proxy/cluster.h"
#include "proxy/tls_transport.h"
#include "proxy/worker.h"

namespace bulwark {

namespace {

// Plain TCP, or TLS with the cluster's newest context, resuming the pool's last session.
TransportPtr make_transport(Worker& worker, EndpointPool& pool) {
  const std::shared_ptr<TlsClientSlot>& tls = pool.cluster.shared.tls;
  if (tls == nullptr) return TcpTransport::create(&worker.transport_context());
  std::shared_ptr<const TlsClientContext> context = tls->get();
  std::string name = context->server_name_for(pool.endpoint.name);
  return TlsTransport::create(&worker.transport_context(), std::move(context), std::move(name),
                              &pool.tls_sessions);
}

}  // namespace

UpstreamConnection::UpstreamConnection(Worker& worker, EndpointPool& pool)
    : worker_(worker), pool_(&pool), transport_(make_transport(worker, pool)) {
  transport_->attach(this, &in);
  pool.connections++;
}

// Only after close() (see there).
UpstreamConnection::~UpstreamConnection() {
  in.release(worker_.buffers());
  pool_->connections--;
  pool_->cluster.announce_connection_slot();
}

void UpstreamConnection::connect(Owner* owner, uint64_t timeout_ms) {
  owner_ = owner;
  state_ = State::kConnecting;
  int rc = transport_->connect(reinterpret_cast<const sockaddr*>(&pool_->endpoint.sockaddr));
  if (rc != 0) {
    // Report asynchronously, as a real connect failure would be, so the owner is never called
    // back from inside its own call; with the real error (EMFILE is not the endpoint's fault).
    connect_error_ = rc;
    worker_.deadlines(0).add(*this);
    return;
  }
  worker_.deadlines(timeout_ms).add(*this);
}

void UpstreamConnection::on_transport_connected(int status) {
  DeadlineList::Entry::cancel();
  if (status != 0) {
    connect_failed(status);
    return;
  }
  state_ = State::kBusy;
  if (owner_ != nullptr) {
    owner_->on_upstream_connected(*this, 0);
  } else {
    close();
  }
}

void UpstreamConnection::connect_failed(int status) {
  Owner* owner = owner_;
  owner_ = nullptr;
  close();
  if (owner != nullptr) owner->on_upstream_connected(*this, status);
}

void UpstreamConnection::attach(Owner* owner) {
  owner_ = owner;
  state_ = State::kBusy;
  DeadlineList::Entry::cancel();
}

void UpstreamConnection::release(uint64_t idle_timeout_ms) {
  owner_ = nullptr;
  if (pool_->retired || writing()) {
    close();
    return;
  }
  // Idle from here: counted as such until close() or attach() takes it out.
  state_ = State::kIdle;
  idle_since_ms_ = uv_now(worker_.loop());
  pool_->cluster.stats.idle_connections.add(1);
  in.release(worker_.buffers());
  uint64_t timeout = idle_timeout_ms;
  // Leave a margin before the upstream's own keep-alive timeout, so we never reuse a
  // connection the upstream is about to close.
  if (keep_alive_timeout_ms_ > 0) {
    uint64_t limit = keep_alive_timeout_ms_ > 1000 ? keep_alive_timeout_ms_ - 1000 : 0;
    if (limit < 1000) {
      close();
      return;
    }
    // Rounded down to a power of two seconds: the upstream picks the number, and each distinct
    // duration is one of the worker's deadline lists.
    if (limit < timeout) timeout = std::bit_floor(limit / 1000) * 1000;
  }
  // An idle connection keeps reading: the upstream closing it shows up at once.
  start_reading();
  worker_.deadlines(timeout).add(*this);
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
  transport_.reset();
  pool_->cluster.return_connection_slot();
  DeadlineList::Entry::cancel();
  worker_.deferred().defer(this);
}

void UpstreamConnection::on_transport_read(ssize_t nread) {
  if (nread == UV_ENOBUFS) return;  // reading stopped until the owner makes room
  if (owner_ == nullptr) {
    // Idle: the upstream closed the connection, or sent bytes nobody asked for. Either way the
    // connection cannot be reused.
    close();
    return;
  }
  owner_->on_upstream_read(*this, nread);
}

void UpstreamConnection::on_transport_written(int status) {
  if (owner_ != nullptr) owner_->on_upstream_written(*this, status);
}

void UpstreamConnection::on_deadline() {
  if (state_ == State::kConnecting) {
    // A TLS handshake that did not finish in time is a TLS failure (the endpoint answered TCP).
    const bool handshake = connect_error_ == 0 && transport_ && transport_->note_deadline();
    connect_failed(connect_error_ != 0 ? connect_error_
                   : handshake         ? tls_status(TlsError::kHandshakeTimeout)
                                       : UV_ETIMEDOUT);
    return;
  }
  if (state_ == State::kIdle) close();
}

}  // namespace bulwark
