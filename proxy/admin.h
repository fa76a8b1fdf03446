#pragma once
// The admin listener: a small HTTP/1.1 server on the main loop for probes, metrics and state.
// It shares the codec with the proxy but nothing else; what each path answers is decided by the
// handler the Server passes in (see admin_api.h).

#include <uv.h>

#include <functional>
#include <string>

#include "config/config.h"

namespace bulwark {

struct AdminRequest {
  std::string method;
  std::string path;   // without the query
  std::string query;  // from "?" on
};

struct AdminResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Answers a request now or later: `respond` may be called after the handler returns (on the
// main loop), exactly once.
using AdminHandler =
    std::function<void(const AdminRequest&, std::function<void(AdminResponse)> respond)>;

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, AdminHandler handler) : loop_(loop), handler_(std::move(handler)) {}
  // Binds and listens. On success sets *bound to the actual "host:port"; else returns a libuv
  // error.
  int listen(const config::SocketAddress& address, std::string* bound);
  void close();
  const AdminHandler& handler() const { return handler_; }
  uv_loop_t* loop() const { return loop_; }

 private:
  uv_loop_t* loop_;
  AdminHandler handler_;
  uv_tcp_t tcp_;
  bool open_ = false;
};

}  // namespace bulwark
