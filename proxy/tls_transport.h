#pragma once
// TLS over a socket, as a Transport: the HTTP code above it is the same as over plain TCP.
//
// Like TcpTransport it watches its socket with a libuv poll handle and does its own I/O, here
// through OpenSSL on the socket itself (SSL_read/SSL_write on the fd: no memory BIO and no copy
// between buffers). What TLS adds:
// - A handshake before any byte: an accepted connection handshakes as a server and then tells
//   its owner on_transport_connected(0); a connect() handshakes as a client after the TCP
//   connect, and on_transport_connected() comes only when both are done. A failed handshake is
//   reported as tls_status(reason) (to on_transport_read() for an accepted connection, to
//   on_transport_connected() for a connect) and counted in its context's TlsStats.
// - Either direction may need the other: a read may have to write (a TLS 1.3 key update), a
//   write may have to read. The poll handle watches what OpenSSL asked for.
// - OpenSSL may hold decrypted bytes the socket no longer shows (read-ahead): after a read that
//   left some, or a read_start() while some wait, a read is run a loop phase later.
// - Writes: small Outbox buffers are gathered into one record (a response head and a small body
//   are one record, one syscall), larger ones go record by record from the Outbox's storage.
//
// The owner times the handshake (its request-headers deadline, the connect timeout), and calls
// note_deadline() before closing for it, so the timeout is counted.

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "proxy/tls.h"
#include "proxy/transport.h"

namespace bulwark {

class TlsTransport final : public Transport, public SlabAllocated<TlsTransport> {
 public:
  // An accepted socket (made non-blocking here; owned from here, closed also when this fails,
  // returning null), handshaking as a server with `context`.
  static TransportPtr accept(const TransportContext* ctx, int fd,
                             std::shared_ptr<const TlsServerContext> context);
  // A transport for connect(): TLS to `server_name` (SNI and the name verified; empty: none),
  // resuming and keeping sessions in `sessions` (optional; it must outlive the transport).
  static TransportPtr create(const TransportContext* ctx,
                             std::shared_ptr<const TlsClientContext> context,
                             std::string server_name, TlsSessionCache* sessions);

  int connect(const sockaddr* addr) override;
  void read_start() override;
  void read_stop() override { reading_ = false; }
  bool reading() const override { return reading_; }
  int write(Outbox& out, bool at_once) override;
  bool writing() const override { return writing_ != nullptr; }
  int shutdown() override;
  void close() override;
  bool closed() const override { return closed_; }
  void peer_ip(char* buf, size_t size) const override;
  const TlsSession* tls() const override { return handshaking_ ? nullptr : session_.get(); }
  uint64_t tls_policy_id() const override { return session_ ? session_->policy_id : 0; }
  bool note_deadline() override;

 private:
  explicit TlsTransport(const TransportContext* ctx);
  ~TlsTransport() override;
  int watch(int fd);
  static void on_poll(uv_poll_t* h, int status, int events);
  void update_events();
  void watch_events(int want);
  void on_tcp_connected();
  void handshake();
  void handshake_done();
  void fail_handshake(TlsError reason);
  TlsError classify_failure(int ssl_error);
  void on_readable();
  bool read_once();
  void schedule_read();
  static void run_scheduled_read(void* self);
  int flush();  // 1: all of the write went; 0: waits for the socket; < 0: failed
  void on_writable();
  void end_write(int status);
  static void report_write_end(void* self);
  void send_shutdown();
  TlsStats* stats() const;

  const TransportContext* ctx_;
  uv_poll_t poll_;
  SSL* ssl_ = nullptr;
  std::shared_ptr<const TlsServerContext> server_;  // one of the two
  std::shared_ptr<const TlsClientContext> client_;
  std::string server_name_;  // client side
  std::unique_ptr<TlsSession> session_;
  TlsConnectionData data_;
  Outbox* writing_ = nullptr;
  // A write OpenSSL took part of and must be given again (same bytes): where and how long.
  const char* pending_ = nullptr;
  size_t pending_len_ = 0;
  char* staging_ = nullptr;  // a pool block gathering small buffers into one record
  int fd_ = -1;
  int events_ = 0;
  int write_status_ = 0;
  bool reading_ = false;
  bool connecting_ = false;  // TCP connect under way
  bool handshaking_ = true;
  bool handshake_wants_write_ = false;
  bool read_wants_write_ = false;  // SSL_read asked for the socket to be writable
  bool write_wants_read_ = false;  // SSL_write asked for it to be readable
  bool read_scheduled_ = false;
  bool waiting_for_socket_ = false;  // the last SSL_read needed more from the socket
  bool write_ended_ = false;
  bool shutdown_pending_ = false;
  bool failed_ = false;    // the handshake failed (and was counted)
  bool fatal_ = false;     // a record or write failed: the session is not worth resuming
  bool got_data_ = false;  // application data has come
  bool peeked_ = false;    // the first byte of a client was looked at
  bool low_water_ = false;  // SO_RCVLOWAT is 9 until a client's first nine bytes are in
  bool closed_ = false;
};

}  // namespace bulwark
