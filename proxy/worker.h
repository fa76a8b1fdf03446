#pragma once
// A worker: one thread, one libuv loop, its own SO_REUSEPORT listener sockets, its own upstream
// pools and statistics. Workers share nothing on the path of a normal request; the main thread
// talks to a worker only through post().

#include <uv.h>

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "config/config.h"
#include "proxy/access_log.h"
#include "proxy/buffer.h"
#include "proxy/cluster.h"
#include "proxy/lb.h"
#include "proxy/list.h"
#include "proxy/metrics.h"
#include "proxy/route_state.h"
#include "proxy/router.h"
#include "proxy/task_queue.h"

namespace bulwark {

class DownstreamConnection;
class Worker;

// One route inside one worker: the route's shared policy state, this worker's statistics of it,
// and this worker's requests waiting for a bulkhead slot, in ticket order (see RouteState).
struct WorkerRoute {
  RouteState* shared;
  RouteStats* stats;
  size_t worker_id;
  std::deque<std::pair<uint64_t, DownstreamConnection*>> waiters;  // (ticket, request)

  // Queues a request that holds a bulkhead QueuePlace.
  void enqueue(DownstreamConnection* d);
  void remove_waiter(DownstreamConnection* d);
  // While slots are free and requests wait, the oldest waiter of all workers gets the next one:
  // served here when it is this worker's, else its worker is told (and dispatches in turn).
  // Called whenever a slot may have freed up or a request joined the queue.
  void dispatch();

 private:
  void publish_oldest();
};

// One configured listener inside one worker.
struct ListenerContext {
  ListenerContext(Worker& w, size_t worker_id, const config::ListenerConfig& c, size_t i,
                  ListenerStats& s, const std::vector<RouteState*>& route_states)
      : worker(w), config(c), index(i), router(c), stats(s) {
    for (size_t r = 0; r < c.routes.size(); ++r) {
      routes.push_back({route_states[r], s.routes[r].get(), worker_id, {}});
    }
  }
  Worker& worker;
  const config::ListenerConfig& config;
  size_t index;
  Router router;
  ListenerStats& stats;
  std::vector<WorkerRoute> routes;  // index as ListenerConfig::routes
  uv_tcp_t handle;
  bool open = false;
};

class Worker {
 public:
  // `listener_fds[i]` is a bound, listening SO_REUSEPORT socket for config->listeners[i]; the
  // worker takes ownership. `on_drained` is called (on the worker thread) once the worker is
  // draining and has no client connection left.
  // `routes[l][r]` is the shared state of route r of listener l.
  Worker(size_t id, std::shared_ptr<const config::Config> config,
         const std::vector<ClusterState*>& clusters,
         const std::vector<std::vector<RouteState*>>& routes, std::vector<int> listener_fds,
         std::function<void()> on_drained);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void start();
  void join();
  // Runs `fn` on the worker's loop thread soon. Safe from any thread.
  void post(std::function<void()> fn);

  // Thread-safe requests, carried out on the worker thread.
  void update_endpoints(size_t cluster, std::shared_ptr<const EndpointSet> set);
  void begin_drain();   // stop accepting, close idle connections, finish in-flight ones
  // A bulkhead slot of that route freed up in another worker: serve this worker's waiters.
  void wake_bulkhead_waiters(size_t listener, size_t route);
  // A connection slot of that cluster freed up in another worker: serve this worker's waiters.
  void wake_pool_waiters(size_t cluster);
  void stop();          // close everything and end the loop

  const WorkerStats& stats() const { return stats_; }
  size_t id() const { return id_; }

  // The rest is for objects living on this worker's loop.
  uv_loop_t* loop() { return &loop_; }
  const config::Config& config() const { return *config_; }
  BufferPool& buffers() { return buffers_; }
  FastRandom& random() { return random_; }
  WorkerStats& mutable_stats() { return stats_; }
  WorkerCluster& cluster(size_t i) { return *clusters_[i]; }
  const std::vector<std::unique_ptr<WorkerCluster>>& clusters() const { return clusters_; }
  bool draining() const { return draining_; }
  void connection_opened(DownstreamConnection* d);
  void connection_closed(DownstreamConnection* d);
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
  void on_accept(ListenerContext& l);
  void drain_step();
  void close_listeners();
  void flush_access_log();

  size_t id_;
  std::shared_ptr<const config::Config> config_;
  uv_loop_t loop_;
  TaskQueue tasks_;
  std::thread thread_;
  BufferPool buffers_;
  FastRandom random_;
  WorkerStats stats_;
  std::vector<std::unique_ptr<WorkerCluster>> clusters_;
  std::vector<std::unique_ptr<ListenerContext>> listeners_;
  std::vector<int> listener_fds_;
  std::vector<DownstreamConnection*> connections_;  // all open client connections
  std::function<void()> on_drained_;
  AccessLog* access_log_ = nullptr;
  std::string access_buf_;
  uv_timer_t access_timer_;  // flushes access_buf_ soon after its first line
  bool draining_ = false;
  bool drained_reported_ = false;
  bool stopping_ = false;
};

}  // namespace bulwark
