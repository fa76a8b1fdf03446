#pragma once
// The admin listener: a small HTTP/1.1 server on the main loop for probes, metrics and state.
// It shares the codec and the transport seam with the proxy but nothing else; what each path
// answers is decided by the handler the Server passes in (see admin_api.h).
//
// A client connection is answered one request at a time, in order (pipelined requests wait,
// unparsed, in its read buffer), and keeps alive unless the client or an error says otherwise.
// Each connection state has a timer: waiting for a request (idle), reading one (request) and
// writing its response (idle again: the client must take it); while the handler works on a
// request the connection waits for it.

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/buffer.h"
#include "proxy/transport.h"
#include "proxy/uv_handle.h"

namespace bulwark {

struct AdminRequest {
  std::string method;
  std::string path;   // without the query
  std::string query;  // from "?" on
  // A browser sent it for a web page (it carries Origin or Sec-Fetch-Site): a page on any site
  // can make a browser on this host POST to 127.0.0.1 without asking.
  bool from_browser = false;
  std::string authorization;   // the Authorization header's value, if any
  std::string peer;            // the client's "address:port"
  bool peer_loopback = false;  // the client connected from 127.0.0.0/8 or ::1 (or ::ffff:127.x)
};

struct AdminResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Answers a request now or later: `respond` may be called after the handler returns (on the
// main loop), exactly once. Called after its connection closed, it does nothing.
using AdminHandler =
    std::function<void(const AdminRequest&, std::function<void(AdminResponse)> respond)>;

class AdminConnection;

// How long an admin client connection may stay in a state before it is closed, and how many
// may be open at once.
struct AdminLimits {
  // No request begun (after the connect, or between requests), or a response not taken.
  uint64_t idle_ms = 10'000;
  // From a request's first byte to its end.
  uint64_t request_ms = 10'000;
  // Open client connections. At the limit new ones wait in the kernel's backlog (up to 128),
  // looked at again every 100 ms, so a client that opens many cannot take the memory of the
  // process (each reading connection holds a 16 KiB buffer).
  size_t max_connections = 128;
};

class AdminServer {
 public:
  // Nothing touches `loop` before listen(): the loop may be initialised after this.
  AdminServer(uv_loop_t* loop, AdminHandler handler, AdminLimits limits = {});
  // Closes what is still open (see close()) and frees the connections.
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds and listens. On success sets *bound to the actual "host:port"; else returns a libuv
  // error (and nothing is left open).
  int listen(const config::SocketAddress& address, std::string* bound);
  // Closes the listener and every client connection (a response being written is cut; one the
  // handler still owes is dropped). Idempotent. The handles go when the loop next runs their
  // close callbacks, and none of them refers to this object: it may be destroyed at once. The
  // connection objects are freed with it (so this may be called from inside the handler).
  void close();
  // Client connections open now.
  size_t connections() const { return connections_.size(); }

 private:
  friend class AdminConnection;

  static void on_listener_readable(uv_poll_t* h, int status, int events);
  // Accepts what waits on the listening socket, up to the connection limit.
  void accept_connections();
  // Watches the listening socket again after hold_off().
  void resume_accepting();
  // Stops watching the listening socket for 100 ms: at the connection limit, or out of
  // descriptors (the socket stays readable, and the loop would spin on it).
  void hold_off();
  void forget(AdminConnection* connection);

  uv_loop_t* loop_;
  AdminHandler handler_;
  AdminLimits limits_;
  // The connections' read buffers: one block holds the largest request (kMaxAdminRequest).
  BufferPool buffers_;
  // Admin writes are few: each allocates its write request (no free list), so a transport
  // closed with a write in flight never refers back to this object.
  TransportContext context_;
  // The listening socket, accepted from with accept4 as the workers do (worker.cpp): each
  // connection's socket goes straight to its transport (TcpTransport::open).
  int listen_fd_ = -1;
  UvHandle<uv_poll_t> listener_;
  Timer hold_off_timer_;  // made by listen()
  std::vector<AdminConnection*> connections_;
  // Frees connections closed from inside their own callbacks. Made by listen(), when the loop
  // is ready; declared after buffers_, so the connections it frees last find their pool.
  std::unique_ptr<DeferredDeleter> deferred_;
};

}  // namespace bulwark
