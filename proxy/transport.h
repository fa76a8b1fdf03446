#pragma once
// The only code that touches a connection's socket: client connections, upstream connections and
// health-check probes all read, write, shut down and close through a Transport.
//
// A Transport reads into the InputBuffer its owner gives it (blocks of the loop's BufferPool) and
// writes an Outbox, one write at a time. It speaks bytes, not HTTP: the HTTP/1 code above it never
// sees a socket, so TLS is a second implementation of this interface (decrypting into input(),
// encrypting what write() is given), with no change to the code that parses and proxies.
//
// Lifetime: the owner holds a TransportPtr; letting go of it (or calling close()) closes the
// socket at once: no callback reaches the owner afterwards, a write in flight is cut (none of its
// bytes are read after the close, so its Outbox is free again at once) and the transport's memory
// goes when libuv is done with it. The owner may be freed right after.

#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <memory>

#include "proxy/buffer.h"
#include "proxy/outbox.h"
#include "proxy/slab.h"

namespace bulwark {

// What a transport needs from the loop it lives on.
struct TransportContext {
  uv_loop_t* loop = nullptr;
  BufferPool* buffers = nullptr;
  // Write requests for writes that wait for the socket, kept for reuse (a transport holds one
  // only while such a write is in flight, so an idle connection holds none); null: allocated
  // for each such write.
  FreeList<uv_write_t>* write_requests = nullptr;
};

class Transport {
 public:
  // Receives a transport's events. Each is called from the loop, never from inside a call the
  // owner made into the transport, and never after close().
  class Callbacks {
   public:
    // connect() finished: 0, or a libuv error (refused, unreachable, ...). The caller times a
    // connect itself (a closed transport reports nothing).
    virtual void on_transport_connected(int status) = 0;
    // Bytes were appended to the input buffer (nread > 0), the peer closed (UV_EOF), reading
    // failed (< 0), or the input buffer is full (UV_ENOBUFS). Reading stops after anything but
    // bytes, until read_start().
    virtual void on_transport_read(ssize_t nread) = 0;
    // The write started by write() finished (its Outbox has been told: Outbox::on_written()):
    // 0, or a libuv error. Not called for a write that write() completed at once, nor for one
    // cut by close().
    virtual void on_transport_written(int status) = 0;

   protected:
    ~Callbacks() = default;
  };

  virtual ~Transport() = default;

  // Events go to `callbacks`; bytes read are appended to `in` (the owner's: it parses and
  // advances it, and keeps it as long as the transport is open).
  void attach(Callbacks* callbacks, InputBuffer* in) {
    callbacks_ = callbacks;
    in_ = in;
  }

  // Starts a connect to `addr`; the result comes to on_transport_connected(). 0, or a libuv
  // error when it could not even start (then nothing will be reported).
  virtual int connect(const sockaddr* addr) = 0;
  // Reading is idempotent in both directions; bytes are read while it is on and input() has room.
  virtual void read_start() = 0;
  virtual void read_stop() = 0;
  virtual bool reading() const = 0;
  // Writes what `out` has not sent yet (Outbox::flush). With `at_once`, the bytes the socket
  // takes now go before this returns; if it takes them all the write is complete on return
  // (out.in_flight() false, no callback). 0, or a libuv error (nothing in flight then). `out`
  // must outlive the write: close the transport before freeing an Outbox it is writing.
  virtual int write(Outbox& out, bool at_once = false) = 0;
  virtual bool writing() const = 0;
  // Sends FIN after what is queued (reads go on). 0 or a libuv error.
  virtual int shutdown() = 0;
  // Closes at once (see the top of the file). Idempotent.
  virtual void close() = 0;
  virtual bool closed() const = 0;
  // The peer's IP address as text, into buf (empty when unknown).
  virtual void peer_ip(char* buf, size_t size) const = 0;

 protected:
  Callbacks* callbacks_ = nullptr;
  InputBuffer* in_ = nullptr;
};

// Closes a transport when its owner lets go of it.
struct TransportCloser {
  void operator()(Transport* t) const { t->close(); }
};
using TransportPtr = std::unique_ptr<Transport, TransportCloser>;

// Plain TCP (any stream socket, in fact: tests use a socketpair).
class TcpTransport final : public Transport, public SlabAllocated<TcpTransport> {
 public:
  // A new socket, for connect().
  static TransportPtr create(const TransportContext* ctx);
  // Takes the connection pending on `server` (a listening socket); nullptr if accept failed.
  static TransportPtr accept(const TransportContext* ctx, uv_stream_t* server);
  // Takes an open socket descriptor.
  static TransportPtr open(const TransportContext* ctx, int fd);

  int connect(const sockaddr* addr) override;
  void read_start() override;
  void read_stop() override;
  bool reading() const override { return reading_; }
  int write(Outbox& out, bool at_once) override;
  bool writing() const override { return writing_ != nullptr; }
  int shutdown() override;
  void close() override;
  bool closed() const override { return closed_; }
  void peer_ip(char* buf, size_t size) const override;

 private:
  explicit TcpTransport(const TransportContext* ctx);
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }

  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_written(uv_write_t* req, int status);
  static void on_connect(uv_connect_t* req, int status);

  const TransportContext* ctx_;  // the loop's, outliving its transports
  uv_tcp_t tcp_;
  Outbox* writing_ = nullptr;  // the Outbox of the write in flight
  bool reading_ = false;
  bool closed_ = false;
};

}  // namespace bulwark
