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
#include <string>
#include <vector>

#include "proxy/buffer.h"
#include "proxy/outbox.h"
#include "proxy/slab.h"
#include "proxy/uv_handle.h"

namespace bulwark {

// What a TLS handshake settled, for headers (X-Forwarded-Proto, X-Forwarded-Client-Cert) and
// the access log.
struct TlsSession {
  const char* version = "";  // "TLSv1.3"; static strings
  const char* cipher = "";
  std::string sni;  // the server name the client asked for (listeners) or we sent (clusters)
  bool resumed = false;
  std::string peer_identity;      // the peer certificate's first URI SAN, else DNS SAN; empty: none
  bool peer_certificate = false;  // the peer presented a (verified) certificate
  uint64_t policy_id = 0;  // listeners: TlsServerContext::policy_id() of the handshake
  std::string forwarded_client_cert;  // listeners: Envoy's XFCC element for the client's cert
};

// What a transport needs from the loop it lives on.
struct TransportContext {
  uv_loop_t* loop = nullptr;
  BufferPool* buffers = nullptr;
  // Runs what must wait for the current loop phase to end: the end of a write that went out
  // whole but was not asked to end at once is reported from here.
  DeferredDeleter* later = nullptr;
};

class Transport {
 public:
  // Receives a transport's events. Each is called from the loop, never from inside a call the
  // owner made into the transport, and never after close().
  class Callbacks {
   public:
    // connect() finished: 0, or a libuv error (refused, unreachable, ...), or for TLS a
    // tls_status() (see tls.h); a TLS transport reports only once its handshake is done. An
    // accepted TLS connection reports 0 here when its handshake is done (and a failed handshake
    // as a read error, tls_status()). The caller times a connect itself (a closed transport
    // reports nothing).
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
  // Writes what `out` has not sent yet (Outbox::begin_write). With `at_once`, the bytes the socket
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
  // TLS: what the handshake settled (null for plain TCP, and until the handshake is done).
  virtual const TlsSession* tls() const { return nullptr; }
  // A listener's TLS transport: TlsServerContext::policy_id() of the context it was accepted
  // with, from the start of its handshake; 0 otherwise.
  virtual uint64_t tls_policy_id() const { return 0; }
  // The owner is about to close the transport for one of its deadlines: a TLS handshake still
  // under way (the TCP connect done) is counted as timed out, and true returned.
  virtual bool note_deadline() { return false; }

 protected:
  Callbacks* callbacks_ = nullptr;
  InputBuffer* in_ = nullptr;
};

// Closes a transport when its owner lets go of it.
struct TransportCloser {
  void operator()(Transport* t) const { t->close(); }
};
using TransportPtr = std::unique_ptr<Transport, TransportCloser>;

// Plain TCP (any stream socket, in fact: tests use a socketpair), on a libuv poll handle: the
// transport reads (read(2)) and writes (sendmsg(2)) the socket itself when the loop says it can.
// A uv_poll_t is libuv's smallest socket watcher (160 B, against 248 for a uv_tcp_t stream), and
// it is most of what an idle keep-alive connection holds. TLS will use the socket the same way.
class TcpTransport final : public Transport, public SlabAllocated<TcpTransport> {
 public:
  // A transport for connect(), which makes its socket.
  static TransportPtr create(const TransportContext* ctx);
  // A connected socket, made non-blocking here; the transport owns it (closes it also when this
  // fails, returning null).
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
  int watch(int fd);     // the socket is ours from here: poll handle set up
  void update_events();  // what the poll handle waits for: reading, a write, a connect
  static void on_poll(uv_poll_t* h, int status, int events);
  void on_readable();
  bool read_once();  // true when the read filled the room there was and reading goes on
  void on_writable();
  void on_connected();
  void end_write(int status);
  static void report_write_end(void* self);
  void stop_watching_reads();
  void watch_events(int want);  // what poll_ waits for, changed only when it differs

  const TransportContext* ctx_;  // the loop's, outliving its transports
  uv_poll_t poll_;
  Outbox* writing_ = nullptr;  // the Outbox of the write in flight
  int fd_ = -1;
  int write_status_ = 0;  // of a write that ended (or failed) before its callback was due
  int events_ = 0;        // what poll_ waits for now
  bool reading_ = false;  // the owner wants bytes (the poll handle may still watch after a
                          // stop: it stops watching once bytes come that nobody wants)
  bool connecting_ = false;
  bool write_ended_ = false;       // the write in flight ended; its end is reported a phase later
  bool shutdown_pending_ = false;  // after the write in flight
  bool closed_ = false;
};

}  // namespace bulwark
