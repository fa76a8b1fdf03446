#pragma once
// Upstream connections and the per-worker, per-endpoint pools that keep them.
//
// An UpstreamConnection is a transport, its read buffer and one timer. While a request uses it,
// it has an Owner that receives its events and writes to it; while it sits idle in its pool it
// watches the socket itself, and closes when the upstream closes it, sends anything unexpected,
// or the idle timeout passes.

#include <uv.h>

#include <array>
#include <cstdint>

#include "proxy/buffer.h"
#include "proxy/deadlines.h"
#include "proxy/endpoint.h"
#include "proxy/fwd.h"
#include "proxy/list.h"
#include "proxy/outbox.h"
#include "proxy/slab.h"
#include "proxy/tls.h"
#include "proxy/transport.h"
#include "proxy/uv_handle.h"

namespace bulwark {

// The endpoints one request could not reach (connect refused, unreachable or timed out, or the
// connection closed before any response byte), so that its retries go elsewhere. A small fixed
// set: when full, the oldest entry makes room. Only compared, never dereferenced, so an entry may
// outlive its pool.
class UnreachableEndpoints {
 public:
  void clear() { size_ = 0; }
  bool empty() const { return size_ == 0; }
  void add(const EndpointPool* pool) {
    if (pool == nullptr || contains(pool)) return;
    pools_[next_] = pool;
    next_ = (next_ + 1) % pools_.size();
    if (size_ < pools_.size()) ++size_;
  }
  bool contains(const EndpointPool* pool) const {
    for (size_t i = 0; i < size_; ++i) {
      if (pools_[i] == pool) return true;
    }
    return false;
  }

 private:
  std::array<const EndpointPool*, 8> pools_{};
  size_t size_ = 0;
  size_t next_ = 0;
};

class UpstreamConnection : public DeferredDeletable,
                           public SlabAllocated<UpstreamConnection>,
                           private Transport::Callbacks,
                           private DeadlineList::Entry {
 public:
  // Receives the events of a connection in use. Calls come from the worker's loop.
  class Owner {
   public:
    virtual ~Owner() = default;
    // The connect finished: status 0, or a libuv error (refused, timed out as UV_ETIMEDOUT).
    virtual void on_upstream_connected(UpstreamConnection& conn, int status) = 0;
    // Bytes arrived in conn.in (nread > 0), or the upstream closed (UV_EOF) or failed (< 0).
    virtual void on_upstream_read(UpstreamConnection& conn, ssize_t nread) = 0;
    // A write() finished: status 0 or a libuv error. Not called for a write cut by close().
    virtual void on_upstream_written(UpstreamConnection& conn, int status) = 0;
  };

  enum class State { kConnecting, kBusy, kIdle, kClosed };

  UpstreamConnection(Worker& worker, EndpointPool& pool);
  ~UpstreamConnection() override;
  UpstreamConnection(const UpstreamConnection&) = delete;
  UpstreamConnection& operator=(const UpstreamConnection&) = delete;

  // Starts a non-blocking connect with a timeout.
  void connect(Owner* owner, uint64_t timeout_ms);
  // Takes an idle connection out of its pool for `owner`.
  void attach(Owner* owner);
  void start_reading() {
    if (transport_) transport_->read_start();
  }
  void stop_reading() {
    if (transport_) transport_->read_stop();
  }
  // Returns the connection to its pool as idle (or closes it when the pool is gone or full).
  void release(uint64_t idle_timeout_ms);
  // Closes the socket; the object is freed after the current loop phase (DeferredDeleter). A
  // write in flight is cut: libuv reads none of its bytes after this, and its owner hears
  // nothing of it (its Outbox is settled at once, see Transport::close).
  void close();
  // Writes what `out` has not sent yet (Transport::write). 0 or a libuv error.
  int write(Outbox& out, bool at_once = false) {
    return transport_ ? transport_->write(out, at_once) : UV_EPIPE;
  }
  bool writing() const { return transport_ && transport_->writing(); }
  // Ends the sending side after the write in flight (Transport::shutdown).
  int shutdown() { return transport_ ? transport_->shutdown() : UV_EPIPE; }

  State state() const { return state_; }
  EndpointPool& pool() { return *pool_; }
  // The connection served a request before the current one (count_request() counts the
  // current one when it starts).
  bool reused() const { return requests_ > 1; }
  void count_request() { ++requests_; }
  uint32_t requests() const { return requests_; }
  // A deadline for reuse, from the upstream's "Keep-Alive: timeout=N" (0: none).
  void set_keep_alive_timeout_ms(uint64_t ms) { keep_alive_timeout_ms_ = ms; }
  // Loop time it last went idle (release()).
  uint64_t idle_since_ms() const { return idle_since_ms_; }

  InputBuffer in;  // the bytes read from the upstream and not consumed yet
  ListHook<UpstreamConnection> idle_hook;

 private:
  // Transport::Callbacks
  void on_transport_connected(int status) override;
  void on_transport_read(ssize_t nread) override;
  void on_transport_written(int status) override;
  // The connect timed out, a connect error is reported a turn later, or the idle timeout passed.
  void on_deadline() override;
  // Ends a connect that failed or timed out, and tells the owner.
  void connect_failed(int status);

  Worker& worker_;
  EndpointPool* pool_;
  Owner* owner_ = nullptr;
  TransportPtr transport_;
  State state_ = State::kConnecting;
  uint32_t requests_ = 0;
  uint64_t keep_alive_timeout_ms_ = 0;
  uint64_t idle_since_ms_ = 0;
  int connect_error_ = 0;  // a connect that failed before it started (EMFILE, ...)
};

using IdleList = IntrusiveList<UpstreamConnection, &UpstreamConnection::idle_hook>;

// One endpoint's upstream connections within one worker.
class EndpointPool {
 public:
  EndpointPool(WorkerCluster& cluster, const Endpoint& endpoint)
      : cluster(cluster), endpoint(endpoint) {}
  WorkerCluster& cluster;
  const Endpoint endpoint;
  size_t index = 0;          // in the cluster's current endpoint set (while not retired)
  IdleList idle;             // most recently used at the front
  uint32_t connections = 0;  // open connections of this pool, idle or not
  uint32_t active_requests = 0;
  uint32_t holders = 0;  // PoolRefs: exchanges naming this pool as their try's endpoint
  bool retired = false;  // the endpoint left the cluster; close connections as they free up
  // TLS: the session the next connection resumes.
  TlsSessionCache tls_sessions;
};

// A request waiting for a connection slot of its cluster (every one of pool.max_connections is
// taken, across workers). While it waits it counts in the cluster's pending requests (against
// pool.max_pending); the wait ends with on_pool_capacity() or cancel(), which the destructor
// calls: nothing is given back by hand.
class PoolWaiter {
 public:
  PoolWaiter() = default;
  PoolWaiter(const PoolWaiter&) = delete;
  PoolWaiter& operator=(const PoolWaiter&) = delete;
  // A slot may be free: check out again (the waiter is out of the queue already).
  virtual void on_pool_capacity() = 0;
  bool waiting() const { return cluster_ != nullptr; }
  // Leaves the queue, if in it.
  void cancel();

  ListHook<PoolWaiter> hook;

 protected:
  ~PoolWaiter() { cancel(); }

 private:
  friend class WorkerCluster;
  WorkerCluster* cluster_ = nullptr;  // the queue it is in
};

// An exchange's hold on the upstream connection of its current try, from checkout (see
// WorkerCluster::checkout) to release. It counts as one of the endpoint's active requests and one
// of the cluster's active connections while held; release() (or the destructor) gives the
// connection back: to its pool's idle list when `reusable` and the pool can keep it, else closed.
class UpstreamLease {
 public:
  UpstreamLease() = default;
  UpstreamLease(const UpstreamLease&) = delete;
  UpstreamLease& operator=(const UpstreamLease&) = delete;
  ~UpstreamLease() { release(false); }

  UpstreamConnection* get() const { return conn_; }
  UpstreamConnection* operator->() const { return conn_; }
  UpstreamConnection& operator*() const { return *conn_; }
  bool operator==(std::nullptr_t) const { return conn_ == nullptr; }
  bool operator!=(std::nullptr_t) const { return conn_ != nullptr; }
  bool operator==(const UpstreamConnection* c) const { return conn_ == c; }
  bool operator!=(const UpstreamConnection* c) const { return conn_ != c; }

  // Takes a connection WorkerCluster::checkout() handed out.
  void hold(UpstreamConnection* conn) {
    release(false);
    conn_ = conn;
  }
  // Gives the connection back (see above); nothing when none is held.
  void release(bool reusable);

 private:
  UpstreamConnection* conn_ = nullptr;
};

// An exchange's pointer to the pool of its current (or last) try. While one is held, the pool is
// not freed even if a DNS change retires it (WorkerCluster frees a retired pool only when no
// connection and no PoolRef is left), so the exchange can still record the try's outcome and
// name the endpoint in its access log line.
class PoolRef {
 public:
  PoolRef() = default;
  PoolRef(const PoolRef&) = delete;
  PoolRef& operator=(const PoolRef&) = delete;
  ~PoolRef() { reset(); }
  PoolRef& operator=(EndpointPool* pool) {
    if (pool != nullptr) ++pool->holders;
    reset();
    pool_ = pool;
    return *this;
  }
  void reset() {
    if (pool_ != nullptr) --pool_->holders;
    pool_ = nullptr;
  }
  EndpointPool* get() const { return pool_; }
  EndpointPool* operator->() const { return pool_; }
  EndpointPool& operator*() const { return *pool_; }
  bool operator==(std::nullptr_t) const { return pool_ == nullptr; }
  bool operator!=(std::nullptr_t) const { return pool_ != nullptr; }

 private:
  EndpointPool* pool_ = nullptr;
};

}  // namespace bulwark
