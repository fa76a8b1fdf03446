#pragma once
// A worker: one thread, one libuv loop, its own SO_REUSEPORT listener sockets, its own upstream
// pools and statistics. Workers share nothing on the path of a normal request; the main thread
// talks to a worker only through post().

#include <uv.h>

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "config/config.h"
#include "proxy/access_log.h"
#include "proxy/buffer.h"
#include "proxy/client_connection.h"
#include "proxy/cluster.h"
#include "proxy/codec.h"
#include "proxy/connection_limit.h"
#include "proxy/deadlines.h"
#include "proxy/fwd.h"
#include "proxy/lb.h"
#include "proxy/list.h"
#include "proxy/metrics.h"
#include "proxy/outbox.h"
#include "proxy/pacer.h"
#include "filters/hedge.h"
#include "proxy/route_state.h"
#include "proxy/router.h"
#include "proxy/task_queue.h"
#include "proxy/tls.h"
#include "proxy/transport.h"
#include "proxy/uv_handle.h"

namespace bulwark {

// One route inside one worker: the route's shared policy state, this worker's statistics of it,
// and this worker's requests waiting for a bulkhead slot, in ticket order (see RouteState).
// Shared by the generations of the worker whose configs have this route unchanged.
struct WorkerRoute {
  std::shared_ptr<RouteState> shared;
  std::shared_ptr<RouteStats> stats;
  size_t worker_id;
  std::deque<std::pair<uint64_t, BulkheadWaiter*>> waiters;  // (ticket, request)
  // retry.hedge with `delay: auto`: this worker's recent times to a response head on the route.
  std::unique_ptr<filters::RecentLatency> recent_latency;

  // Queues a request that holds a bulkhead QueuePlace.
  void enqueue(BulkheadWaiter* w);
  void remove_waiter(BulkheadWaiter* w);
  // While slots are free and requests wait, the oldest waiter of all workers gets the next one:
  // served here when it is this worker's, else its worker is told (and dispatches in turn).
  // Called whenever a slot may have freed up or a request joined the queue.
  void dispatch();

 private:
  void publish_oldest();
};

struct WorkerGen;

// One configured listener inside one generation of one worker.
struct ListenerContext {
  ListenerContext(WorkerGen& g, const config::ListenerConfig& c, size_t i, ListenerStats& s,
                  std::shared_ptr<ConnectionLimit> l)
      : gen(g), config(c), index(i), router(c), stats(s), limit(std::move(l)) {}
  WorkerGen& gen;
  const config::ListenerConfig& config;
  size_t index;
  Router router;
  ListenerStats& stats;
  std::shared_ptr<ConnectionLimit> limit;            // the listener's max_connections, all workers
  std::shared_ptr<TlsServerSlot> tls;                // its TLS contexts; null: plaintext
  std::vector<std::shared_ptr<WorkerRoute>> routes;  // index as ListenerConfig::routes
};

// What the main thread hands each worker to apply a config: the config, the shared state built
// for it (clusters and routes that stayed unchanged are the same objects as before), this
// worker's statistics shaped for it, and the listening sockets of addresses new in it.
struct GenerationSpec {
  uint64_t number = 0;
  std::shared_ptr<const config::Config> config;
  std::vector<std::shared_ptr<ClusterState>> clusters;           // index as config->clusters
  std::vector<std::vector<std::shared_ptr<RouteState>>> routes;  // [listener][route]
  std::shared_ptr<WorkerStats> stats;
  std::vector<std::pair<std::string, int>> new_listener_fds;  // listener_key() -> fd
  // Open client connections: of the whole process, and of each listener (index as
  // config->listeners; the same object for a listener name across reloads).
  std::shared_ptr<ConnectionLimit> process_limit;
  std::vector<std::shared_ptr<ConnectionLimit>> listener_limits;
  // TLS contexts of each listener (index as config->listeners; null: plaintext).
  std::vector<std::shared_ptr<TlsServerSlot>> listener_tls;
};

// One config generation inside one worker. A client connection is bound to the generation it
// was accepted under, and moves to the newest one at the start of each request; a request runs
// to its end on the generation it started on. A generation that is no longer the newest is
// freed once no connection is bound to it.
struct WorkerGen {
  uint64_t number = 0;
  std::shared_ptr<const config::Config> config;
  std::shared_ptr<WorkerStats> stats;
  std::vector<std::unique_ptr<ListenerContext>> listeners;  // index as config->listeners
  std::vector<std::shared_ptr<WorkerCluster>> clusters;     // index as config->clusters
  uint32_t users = 0;                                       // client connections bound to it

  // This generation's listener of that socket key (listener_key()), or null.
  ListenerContext* listener_at(std::string_view key);
  ListenerContext* listener_named(std::string_view name);
};

// What identifies a listening socket across reloads: the listener's name and address. A
// listener keeps its socket while both stay (with port 0 the address alone is not unique).
std::string listener_key(const config::ListenerConfig& listener);

// A listening socket of a worker.
struct Acceptor {
  Worker* worker = nullptr;
  std::string key;  // listener_key()
  int fd = -1;      // the listening socket (shared with the other workers, SO_REUSEPORT or not)
  uv_poll_t poll;   // readable: connections wait to be accepted
  bool watched = false;
  // A connection limit was reached, or accepting failed for want of descriptors or memory: the
  // socket is not watched, so new connections wait in the kernel's backlog; a timer tries again.
  bool paused = false;
  bool held_back = false;  // the last try found the limit (or the error) still there
  // Paused for an accept error (out of descriptors): a closing connection does not resume it,
  // since its descriptor is freed only a loop turn later; the timer does.
  bool backing_off = false;
};

class Worker {
 public:
  // `first` is the generation to start with (its new_listener_fds are bound, listening
  // SO_REUSEPORT sockets; the worker takes ownership). `on_drained` is called (on the worker
  // thread) once the worker is draining and has no client connection left.
  Worker(size_t id, GenerationSpec first, std::function<void()> on_drained);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void start();
  void join();
  // Runs `fn` on the worker's loop thread soon. Safe from any thread.
  void post(std::function<void()> fn);

  // Thread-safe requests, carried out on the worker thread.
  // A new config: new requests use it; requests under way finish on theirs. Listening sockets
  // whose address is not in it close.
  void apply(std::shared_ptr<GenerationSpec> spec);
  void update_endpoints(ClusterState* cluster, std::shared_ptr<const EndpointSet> set);
  // Stops accepting, closes idle connections and finishes in-flight ones: of inbound listeners
  // only (the first step of a drain in a pod, while the app still calls out), or of all
  // (`everything`), after which the worker reports drained once no connection is left.
  void begin_drain(bool everything = true);
  // A bulkhead slot of that route freed up in another worker: serve this worker's waiters.
  void wake_bulkhead_waiters(RouteState* route);
  // A connection slot of that cluster freed up in another worker: serve this worker's waiters.
  void wake_pool_waiters(ClusterState* cluster);
  void stop();  // close everything and end the loop

  size_t id() const { return id_; }

  // The rest is for objects living on this worker's loop.
  uv_loop_t* loop() { return &loop_; }
  WorkerGen& current() { return *gen_; }
  BufferPool& buffers() { return buffers_; }
  // What transports on this loop use (the loop and its read buffers).
  const TransportContext& transport_context() const { return transport_context_; }
  // Frees connections after the loop phase that closed them (see uv_handle.h).
  DeferredDeleter& deferred() { return *deferred_; }
  // The deadlines of this duration (see deadlines.h), made on first use.
  DeadlineList& deadlines(uint64_t duration_ms);
  // Takes turns between large transfers (see Pacer).
  Pacer& pacer() { return *pacer_; }
  // Exchanges for the requests under way, lent to connections (see ExchangePool).
  ExchangePool& exchanges() { return *exchanges_; }
  // The Outboxes of responses under way, lent to connections.
  FreeList<Outbox>& outboxes() { return outboxes_; }
  // Request parsers, lent to client connections while they read a request.
  FreeList<http::Parser>& request_parsers() { return request_parsers_; }
  FastRandom& random() { return random_; }
  LocalReplyCounters& local_replies() { return gen_->stats->local_replies; }
  bool draining() const { return draining_; }
  void connection_opened(ClientConnection* c);
  void connection_closed(ClientConnection* c);
  ConnectionLimit& process_limit() { return *process_limit_; }
  // Accepts again on paused listening sockets (with `limits_only`, for a connection slot given
  // back: not on those backing off an error).
  void resume_accepting(bool limits_only = false);
  // A connection stops using `gen` (closed, or moved to the newest generation).
  void release(WorkerGen& gen);
  // Writes a fresh request id (32 hex digits) into out[0..32).
  void new_request_id(char* out);

  // The access log (set before start(); null when off). A request is logged when
  // sample_access_log() says so; its line is appended to access_log_buffer(), then
  // access_log_appended() hands the buffer to the writer when it is full enough.
  void set_access_log(AccessLog* log) { access_log_ = log; }
  AccessLog* access_log() const { return access_log_; }
  bool sample_access_log();
  std::string& access_log_buffer() { return access_buf_; }
  void access_log_appended();

 private:
  void run();
  void trim();
  void install(GenerationSpec& spec);
  void open_acceptor(const std::string& key, int fd);
  void close_acceptor(Acceptor* a);
  void on_accept(Acceptor& a);
  void on_accept_error(Acceptor& a, int status);
  // Accepts one connection of `a` if the limits allow: false when none is waiting, or paused.
  bool accept_one(Acceptor& a);
  void pause_accepting(Acceptor& a, ListenerContext& l, const char* limit);
  void back_off_accepting(Acceptor& a);
  void start_accept_timer();
  static void on_acceptor_poll(uv_poll_t* h, int status, int events);
  // Out of descriptors: takes and closes what waits in `a`'s backlog with the reserve descriptor,
  // so the loop is not woken for it again and again.
  void shed_backlog(Acceptor& a);
  void free_generation(WorkerGen* gen);
  void sweep_retired_clusters();
  // Every WorkerCluster / WorkerRoute of the live generations, once each.
  std::vector<WorkerCluster*> all_clusters();
  std::vector<WorkerRoute*> all_routes();
  void drain_step();
  void close_listeners();
  void flush_access_log();

  size_t id_;
  uv_loop_t loop_;
  TaskQueue tasks_;
  std::thread thread_;
  BufferPool buffers_;
  TransportContext transport_context_;
  std::unique_ptr<Pacer> pacer_;
  std::unique_ptr<ExchangePool> exchanges_;
  std::vector<std::unique_ptr<DeadlineList>> deadlines_;  // one per duration in use
  FreeList<Outbox> outboxes_{256};
  FreeList<http::Parser> request_parsers_{256};
  FastRandom random_;
  std::unique_ptr<WorkerGen> gen_;                                // the newest
  std::vector<std::unique_ptr<WorkerGen>> old_;                   // older ones still in use
  std::vector<std::shared_ptr<WorkerCluster>> retired_clusters_;  // closing their connections
  uv_timer_t retire_timer_;
  uv_timer_t trim_timer_;  // every second: trim()
  std::vector<Acceptor*> acceptors_;
  std::shared_ptr<ConnectionLimit> process_limit_;
  // While a listening socket is paused: looks again every 50 ms, since the slot that frees up
  // may be another worker's.
  uv_timer_t accept_timer_;
  uint64_t last_accept_error_log_ms_ = 0;
  int reserve_fd_ = -1;  // given up for a moment when out of descriptors (shed_backlog)
  std::vector<ClientConnection*> connections_;  // all open client connections
  std::function<void()> on_drained_;
  AccessLog* access_log_ = nullptr;
  std::string access_buf_;
  uv_timer_t access_timer_;  // flushes access_buf_ soon after its first line
  bool draining_ = false;          // everything drains (begin_drain(true))
  bool inbound_draining_ = false;  // inbound listeners drain (either begin_drain)
  bool drained_reported_ = false;
  bool stopping_ = false;
  // Last: connections it still holds are freed before the generations they refer to.
  std::unique_ptr<DeferredDeleter> deferred_;
};

}  // namespace bulwark
