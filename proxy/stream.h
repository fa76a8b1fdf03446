#pragma once
// The seam between a client connection and the exchange it carries: what an Exchange may ask of
// its connection, in protocol-neutral terms. The HTTP/1 connection (http1_connection.h) implements
// it for one exchange at a time; an HTTP/2 connection will implement it once per stream, with no
// change to the exchange, the policies or the pools.
//
// Calls come from the exchange, on the worker's loop. A call that writes (flush) may find the
// connection broken and close it: the exchange then hears Exchange::on_stream_closed() before
// the call returns, and must check closed() before going on.

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/fwd.h"
#include "proxy/reasons.h"

namespace bulwark {

class ExchangeStream {
 public:
  // What the exchange adds to a response head it forwards.
  struct HeadInfo {
    std::string_view request_id;  // added as X-Request-Id when the response has none
    uint32_t attempts = 1;        // tries it took (> 1: x-bulwark-attempts)
    bool no_body = false;         // the response has no body whatever it announces (HEAD, 204, 304)
    bool upgrade = false;         // a 101 the request asked for: the stream becomes a tunnel
  };
  // A reply of bulwark's own.
  struct LocalReply {
    int status = 0;
    LocalReason reason = LocalReason::kCount;
    std::string_view request_id;
    uint32_t attempts = 1;
    uint32_t retry_after_s = 0;  // > 0: Retry-After
    bool close_after = false;    // the connection cannot carry another request after it
  };

  // ---- The response, toward the client.
  // A 1xx other than 101, forwarded as it came (where the client's protocol allows it).
  virtual void send_interim(const http::MessageHead& response) = 0;
  // The final response head (or a 101).
  virtual void send_head(const http::MessageHead& response, const HeadInfo& info) = 0;
  // Body bytes that live in `block` (referenced until written: no copy).
  virtual void send_body(const char* data, size_t n, BufferBlock* block) = 0;
  // The response is complete.
  virtual void send_end() = 0;
  // Queues a local reply; returns its body bytes.
  virtual size_t send_local_reply(const LocalReply& reply) = 0;
  // Writes what is queued. With `at_once` the bytes the socket takes go now (Transport::write);
  // when all do, the write is over on return and on_downstream_written() is not called for it.
  virtual void flush(bool at_once = false) = 0;
  // A write to the client is under way (its bytes are not all taken yet).
  virtual bool writing() const = 0;
  // Something is queued that no write has taken yet.
  virtual bool has_unsent() const = 0;
  // The response cannot be completed: no more bytes; the connection closes after what is queued.
  virtual void cut() = 0;
  // Closes the connection now (a tunnel's end, a stalled response).
  virtual void close() = 0;
  // Ends the sending side toward the client after what is written (the upstream half-closed a
  // tunnel); reading goes on. False when it cannot (the connection is then closed).
  virtual bool end_sending() = 0;

  // ---- The request, from the client.
  // The bytes the exchange forwarded from the client's read buffer were written upstream: the
  // buffer may be reused, unless `keep` (they may be sent again). Reading and parsing go on.
  virtual void request_forwarded(bool keep) = 0;
  // The client's read buffer is full: it cannot both keep what was forwarded and read more.
  virtual bool request_buffer_full() const = 0;
  // The exchange wants request bytes again (or no more of them): the connection looks at
  // Exchange::wants_request_bytes().
  virtual void update_reading() = 0;
  // A 101 went out: from now on the client's bytes go to Exchange::on_tunnel_data(). Bytes the
  // client sent after its request head are handed over at once.
  virtual void start_tunnel() = 0;
  // The exchange is over (its response complete, or its local reply written and its request
  // read); the connection goes on to its next request, or closes. `answered`: a whole response
  // went out.
  virtual void exchange_done() = 0;

  virtual bool closed() const = 0;
  virtual std::string_view client_address() const = 0;
  // What the client's TLS handshake settled; null on a plaintext connection.
  virtual const TlsSession* tls() const = 0;
  // Where the client meant to connect before iptables redirected it (listener
  // original_destination: true); null when not redirected, or not asked for.
  virtual const sockaddr* original_destination() const = 0;

 protected:
  ~ExchangeStream() = default;
};

}  // namespace bulwark
