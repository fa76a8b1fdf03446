#pragma once
// A client connection as its worker sees it. The worker keeps every open one in a list, to drain,
// reload and shut down; everything else about it is the connection's own business (today an
// HTTP/1 connection, proxy/http1_connection.h; HTTP/2 later).

#include <uv.h>

#include <cstddef>

#include "proxy/fwd.h"

namespace bulwark {

class ClientConnection {
 public:
  // Drain: an idle connection closes now; a busy one closes after its current response.
  virtual void drain() = 0;
  // Closes at once (shutdown of the worker).
  virtual void abort() = 0;
  // The worker installed a new config: an idle connection moves to it now (or closes, when its
  // listener is gone); a busy one whose listener is gone answers its request with
  // Connection: close.
  virtual void on_reload() = 0;

  size_t worker_slot = 0;  // index in the worker's connection list
  // Accepted by an outbound listener: the first step of a drain leaves it serving.
  bool outbound = false;

 protected:
  ~ClientConnection() = default;
};

// Takes the accepted socket `fd` (of a listening socket of `listener`) as an HTTP/1
// connection. It registers with the worker (Worker::connection_opened) and owns itself from then
// on, together with the connection slots the worker took for it.
void accept_http1_connection(Worker& worker, ListenerContext& listener, int fd);

}  // namespace bulwark
