#include "proxy/tls_transport.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "proxy/net.h"

namespace bulwark {
namespace {

// The largest TLS record's payload: a write is gathered up to this, and a buffer at least this
// large goes straight from the Outbox.
constexpr size_t kRecord = 16 * 1024;

// The longest ClientHello accepted (one record's worth; browsers send under 2 KiB, with
// post-quantum key shares).
constexpr size_t kMaxClientHello = 16 * 1024;

// What a plaintext HTTP request on a TLS listener gets (nginx answers the same way): said in
// plaintext, since the client speaks it, before the connection closes.
constexpr std::string_view kPlainRequestReply =
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 40\r\n"
    "Connection: close\r\n"
    "x-bulwark-reason: http_request_on_tls_port\r\n"
    "\r\n"
    "This port speaks TLS: use https:// here\n";
static_assert(kPlainRequestReply.size() - kPlainRequestReply.find("\r\n\r\n") - 4 == 40);

}  // namespace

TlsTransport::TlsTransport(const TransportContext* ctx) : ctx_(ctx) { poll_.data = this; }

TlsTransport::~TlsTransport() {
  if (ssl_ != nullptr) SSL_free(ssl_);
}

TransportPtr TlsTransport::accept(const TransportContext* ctx, int fd,
                                  std::shared_ptr<const TlsServerContext> context) {
  TransportPtr t(new TlsTransport(ctx));
  auto* self = static_cast<TlsTransport*>(t.get());
  self->server_ = std::move(context);
  self->ssl_ = self->server_->new_ssl();
  if (self->ssl_ == nullptr || set_nonblocking(fd) != 0 || self->watch(fd) != 0 ||
      SSL_set_fd(self->ssl_, fd) != 1) {
    ERR_clear_error();
    if (self->fd_ < 0) ::close(fd);  // else closed with the transport
    return nullptr;
  }
  set_nodelay(fd);
  self->data_.allowed_sans = &self->server_->config().allowed_client_sans;
  set_connection_data(self->ssl_, &self->data_);
  self->session_ = std::make_unique<TlsSession>();
  self->session_->policy_id = self->server_->policy_id();  // the handshake is this context's
  // The client speaks first: the handshake starts when its hello arrives.
  self->update_events();
  return t;
}

TransportPtr TlsTransport::create(const TransportContext* ctx,
                                  std::shared_ptr<const TlsClientContext> context,
                                  std::string server_name, TlsSessionCache* sessions) {
  TransportPtr t(new TlsTransport(ctx));
  auto* self = static_cast<TlsTransport*>(t.get());
  self->client_ = std::move(context);
  self->server_name_ = std::move(server_name);
  self->data_.allowed_sans = &self->client_->config().allowed_server_sans;
  self->data_.sessions = sessions;
  return t;
}

int TlsTransport::watch(int fd) {
  int rc = uv_poll_init_socket(ctx_->loop, &poll_, fd);
  if (rc != 0) return rc;
  poll_.data = this;
  fd_ = fd;
  return 0;
}

int TlsTransport::connect(const sockaddr* addr) {
  if (closed_ || fd_ >= 0 || client_ == nullptr) return UV_EINVAL;
  data_.context_id = client_->id();
  ssl_ = client_->new_ssl(server_name_,
                          data_.sessions != nullptr ? data_.sessions->get(client_->id()) : nullptr);
  if (ssl_ == nullptr) return UV_ENOMEM;
  set_connection_data(ssl_, &data_);
  int fd = start_connect(addr);
  if (fd < 0) return fd;
  int rc = watch(fd);
  if (rc != 0) {
    ::close(fd);
    return rc;
  }
  SSL_set_fd(ssl_, fd);
  session_ = std::make_unique<TlsSession>();
  session_->sni = server_name_;
  connecting_ = true;
  update_events();
  return 0;
}

// ---- Events ----

void TlsTransport::update_events() {
  if (closed_ || fd_ < 0) return;
  int want = 0;
  if (connecting_) {
    want = UV_WRITABLE;
  } else if (handshaking_) {
    want = handshake_wants_write_ ? UV_WRITABLE : UV_READABLE;
  } else {
    // As TcpTransport: a read stop keeps watching until bytes come that nobody wants.
    if (reading_ || (events_ & UV_READABLE) != 0) {
      want |= read_wants_write_ ? UV_WRITABLE : UV_READABLE;
    }
    if (writing_ != nullptr && !write_ended_) {
      want |= write_wants_read_ ? UV_READABLE : UV_WRITABLE;
    }
  }
  watch_events(want);
}

void TlsTransport::watch_events(int want) {
  if (want == events_) return;
  events_ = want;
  if (want == 0) {
    uv_poll_stop(&poll_);
  } else {
    uv_poll_start(&poll_, want, &TlsTransport::on_poll);
  }
}

void TlsTransport::on_poll(uv_poll_t* h, int status, int events) {
  auto* self = static_cast<TlsTransport*>(h->data);
  if (status < 0) {
    // An error is pending on the socket: the call under way finds it.
    self->events_ = 0;
    events = UV_READABLE | UV_WRITABLE;
  }
  if (self->connecting_) {
    if (events & UV_WRITABLE) self->on_tcp_connected();
  } else if (self->handshaking_) {
    self->handshake();
  } else {
    const int write_event = self->write_wants_read_ ? UV_READABLE : UV_WRITABLE;
    if ((events & write_event) && self->writing_ != nullptr) self->on_writable();
    const int read_event = self->read_wants_write_ ? UV_WRITABLE : UV_READABLE;
    if ((events & read_event) && !self->closed_) {
      if (self->reading_) {
        self->on_readable();
      } else if (!self->write_wants_read_) {
        self->watch_events(self->events_ & ~UV_READABLE);
      }
    }
  }
  self->update_events();
}

void TlsTransport::on_tcp_connected() {
  int error = 0;
  socklen_t len = sizeof error;
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
  connecting_ = false;
  if (error != 0) {
    update_events();
    if (callbacks_ != nullptr) callbacks_->on_transport_connected(-error);
    return;
  }
  handshake();
}

// ---- Handshake ----

void TlsTransport::handshake() {
  if (server_ != nullptr && !peeked_) {
    // What the client starts with, before OpenSSL reads it:
    // - a letter: a plaintext request (OpenSSL itself knows only GET, POST, HEAD and PUT); it
    //   gets told in words.
    // - a handshake record (0x16): the ClientHello's announced length is checked first. OpenSSL
    //   allocates a message's whole length when it reads its header, up to 128 KiB for a hello,
    //   and would hold it for request_headers_timeout for nine bytes sent; real hellos are a
    //   few KiB. Fewer than nine bytes so far: the socket is told not to wake us before nine
    //   (SO_RCVLOWAT; an end or an error still does), and the handshake deadline bounds the wait.
    unsigned char head[9];
    ssize_t n = ::recv(fd_, head, sizeof head, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n > 0 && n < 9 && head[0] == 0x16 && !low_water_) {
      const int nine = 9;
      if (::setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &nine, sizeof nine) == 0) {
        low_water_ = true;
        return;
      }
    }
    if (low_water_) {
      const int one = 1;  // a TLS alert is seven bytes
      (void)::setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
      low_water_ = false;
    }
    peeked_ = true;
    if (n >= 1 && head[0] >= 'A' && head[0] <= 'Z') {
      fail_handshake(TlsError::kHttpRequest);
      return;
    }
    if (n >= 1 && head[0] == 0x16) {
      const size_t hello = n == 9 ? (size_t{head[6]} << 16 | size_t{head[7]} << 8 | head[8]) : 0;
      if (n < 9 || head[5] != 1 || hello > kMaxClientHello) {
        // A fatal decode_error alert, as OpenSSL would send for a malformed hello.
        static constexpr char kAlert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32};
        (void)::send(fd_, kAlert, sizeof kAlert, MSG_NOSIGNAL | MSG_DONTWAIT);
        fail_handshake(TlsError::kProtocol);
        return;
      }
    }
  }
  ERR_clear_error();
  errno = 0;
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    handshake_done();
    return;
  }
  int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    handshake_wants_write_ = err == SSL_ERROR_WANT_WRITE;
    update_events();
    return;
  }
  fail_handshake(classify_failure(err));
}

TlsError TlsTransport::classify_failure(int ssl_error) {
  if (data_.san_refused) return TlsError::kSanNotAllowed;
  long verify = SSL_get_verify_result(ssl_);
  unsigned long e = ERR_peek_last_error();
  int lib = ERR_GET_LIB(e);
  int reason = ERR_GET_REASON(e);
  ERR_clear_error();
  if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
    return e == 0 ? TlsError::kClosed : TlsError::kInternal;
  }
  if (lib == ERR_LIB_SSL) {
    switch (reason) {
      case SSL_R_HTTP_REQUEST:
        return TlsError::kHttpRequest;
      case SSL_R_WRONG_VERSION_NUMBER:
        return client_ != nullptr ? TlsError::kNotTls : TlsError::kProtocol;
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
        return TlsError::kVersion;
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return TlsError::kNoCertificate;
      case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        return TlsError::kClosed;
      case SSL_R_CERTIFICATE_VERIFY_FAILED:
        break;  // the verify result below says why
      default:
        // Alerts the peer sent us (SSL_R_SSLV3_ALERT_* and SSL_R_TLSV1_ALERT_*, 1000 + the
        // alert): it refused our certificate, version or parameters.
        if (reason >= 1000 && reason < 1256) return TlsError::kPeerAlert;
        if (verify == X509_V_OK) return TlsError::kProtocol;
    }
  }
  switch (verify) {
    case X509_V_OK:
      return TlsError::kProtocol;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return TlsError::kExpired;
    case X509_V_ERR_HOSTNAME_MISMATCH:
      return TlsError::kHostnameMismatch;
    case X509_V_ERR_APPLICATION_VERIFICATION:
      return TlsError::kSanNotAllowed;
    default:
      return TlsError::kUntrusted;
  }
}

void TlsTransport::handshake_done() {
  handshaking_ = false;
  handshake_wants_write_ = false;
  data_.established = true;
  TlsSession& s = *session_;
  const int version = SSL_version(ssl_);
  s.version = SSL_get_version(ssl_);
  s.cipher = SSL_get_cipher_name(ssl_);
  s.resumed = SSL_session_reused(ssl_) == 1;
  if (server_ != nullptr) {
    const char* sni = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
    if (sni != nullptr) s.sni = sni;
  }
  X509* peer = SSL_get0_peer_certificate(ssl_);
  if (peer == nullptr && server_ != nullptr && server_->asks_client_certificate() &&
      server_->config().require_client_certificate) {
    // A session resumed from before a certificate was required (the session id context
    // already refuses those; this is the belt).
    fail_handshake(TlsError::kNoCertificate);
    return;
  }
  if (peer != nullptr) {
    // A resumed session skipped verification: its identity is checked again here, against the
    // policy in force (the session id context already ties a session to the policy it was
    // made under; this is the belt to those braces).
    if (!data_.allowed_sans->empty() && !san_allowed(peer, *data_.allowed_sans)) {
      fail_handshake(TlsError::kSanNotAllowed);
      return;
    }
    s.peer_identity = peer_identity(peer, *data_.allowed_sans);
    s.peer_certificate = true;
    if (server_ != nullptr &&
        server_->config().forward_client_cert != config::ForwardClientCert::kSanitize) {
      s.forwarded_client_cert = forwarded_client_cert(peer);
    }
  }
  ERR_clear_error();  // what parsing the peer's certificate may have left
  stats()->handshakes[version == TLS1_3_VERSION ? 1 : 0][s.resumed ? 1 : 0].fetch_add(
      1, std::memory_order_relaxed);
  update_events();
  if (callbacks_ != nullptr) callbacks_->on_transport_connected(0);
  // The first request may have come with the client's last handshake message: OpenSSL holds it.
  if (!closed_ && reading_ && SSL_has_pending(ssl_) == 1) schedule_read();
}

void TlsTransport::fail_handshake(TlsError reason) {
  if (failed_) return;
  failed_ = true;
  ERR_clear_error();
  stats()->count_error(reason);
  if (reason == TlsError::kHttpRequest) {
    // Best effort, into an empty socket buffer: the client reads why before the close.
    (void)::send(fd_, kPlainRequestReply.data(), kPlainRequestReply.size(),
                 MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  reading_ = false;
  watch_events(0);
  if (callbacks_ == nullptr) return;
  if (client_ != nullptr) {
    callbacks_->on_transport_connected(tls_status(reason));
  } else {
    callbacks_->on_transport_read(tls_status(reason));
  }
}

bool TlsTransport::note_deadline() {
  // A connect that has not reached TCP's end is a connect timeout, not TLS's.
  if (!handshaking_ || connecting_ || fd_ < 0 || failed_ || closed_) return false;
  failed_ = true;
  stats()->count_error(TlsError::kHandshakeTimeout);
  return true;
}

TlsStats* TlsTransport::stats() const {
  return server_ != nullptr ? &server_->stats() : &client_->stats();
}

// ---- Reading ----

void TlsTransport::read_start() {
  if (reading_ || closed_ || fd_ < 0 || failed_) return;
  reading_ = true;
  if (handshaking_) return;  // the handshake watches the socket
  update_events();
  // Bytes OpenSSL already decrypted or read ahead: the socket will not say so.
  if (SSL_has_pending(ssl_) == 1) schedule_read();
}

void TlsTransport::schedule_read() {
  // Not while the last read found only part of a record: the rest must come from the socket,
  // and the poll handle says when. (A read scheduled for it would find the same part again,
  // and schedule itself again, forever: the loop would never poll.)
  if (read_scheduled_ || waiting_for_socket_) return;
  read_scheduled_ = true;
  ctx_->later->defer(this, &TlsTransport::run_scheduled_read);
}

void TlsTransport::run_scheduled_read(void* p) {
  // Alive: close() cancels this.
  auto* self = static_cast<TlsTransport*>(p);
  self->read_scheduled_ = false;
  if (self->closed_ || !self->reading_ || self->handshaking_) return;
  self->on_readable();
  self->update_events();
}

void TlsTransport::on_readable() {
  int i = 0;
  while (i++ < 16 && read_once()) {
  }
  // Stopped with whole records still inside OpenSSL (the socket is drained, so no event would
  // come): read them a loop phase later. Part of a record waits for the socket (schedule_read).
  if (!closed_ && reading_ && SSL_has_pending(ssl_) == 1) schedule_read();
}

bool TlsTransport::read_once() {
  if (in_ == nullptr) {
    reading_ = false;
    if (callbacks_ != nullptr) callbacks_->on_transport_read(UV_ENOBUFS);
    return false;
  }
  in_->ensure(*ctx_->buffers);
  const size_t room = in_->space();
  ssize_t n = UV_ENOBUFS;
  if (room > 0) {
    // No ERR_clear_error() first (2% of a request's CPU): the thread's error queue is empty
    // here, since every OpenSSL failure on a loop is cleared where it happens (here, in
    // flush(), classify_failure(), handshake_done(), send_shutdown()).
    errno = 0;
    int rc = SSL_read(ssl_, in_->tail(), static_cast<int>(std::min<size_t>(room, INT32_MAX)));
    read_wants_write_ = false;
    waiting_for_socket_ = false;
    if (data_.post_handshake_messages > kMaxPostHandshakeMessages) {
      // KeyUpdates (or tickets) by the dozen and no data: a peer keeping us busy answering.
      ERR_clear_error();
      fatal_ = true;
      stats()->count_error(TlsError::kProtocol);
      n = UV_EPROTO;
    } else if (rc > 0) {
      n = rc;
      got_data_ = true;
      data_.post_handshake_messages = 0;
    } else {
      int err = SSL_get_error(ssl_, rc);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        // What OpenSSL holds (if anything) is part of a record: the socket has the rest.
        waiting_for_socket_ = true;
        read_wants_write_ = err == SSL_ERROR_WANT_WRITE;
        return false;
      }
      const bool bare_fin = (err == SSL_ERROR_SYSCALL && errno == 0) ||
                            (err == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_last_error()) ==
                                                         SSL_R_UNEXPECTED_EOF_WHILE_READING);
      if (err == SSL_ERROR_ZERO_RETURN) {
        n = UV_EOF;  // close_notify (or, from a client, a bare FIN: SSL_OP_IGNORE_UNEXPECTED_EOF)
      } else if (bare_fin) {
        // From an upstream, a FIN without close_notify may be an attacker cutting a response
        // short (RFC 9112 9.8): only close_notify ends a body the close delimits, so this reads
        // as a reset (and an idle connection the upstream dropped is dropped all the same).
        fatal_ = true;
        n = client_ != nullptr ? UV_ECONNRESET : UV_EOF;
      } else if (err == SSL_ERROR_SYSCALL) {
        n = -errno;
      } else if (client_ != nullptr && !got_data_) {
        // Before any byte of the answer: the upstream refused the session it just agreed to
        // (TLS 1.3 judges our certificate after our side of the handshake is done).
        fatal_ = true;
        TlsError reason = classify_failure(err);
        stats()->count_error(reason);
        n = tls_status(reason);
      } else {
        fatal_ = true;
        n = UV_EPROTO;  // a bad record: the stream cannot go on
      }
      ERR_clear_error();
    }
  }
  if (n > 0) {
    in_->filled += static_cast<size_t>(n);
  } else {
    reading_ = false;
  }
  if (callbacks_ != nullptr) callbacks_->on_transport_read(n);
  // Again only while OpenSSL holds more: an empty buffer means the socket gave what it had (read
  // ahead takes as much as fits), and another read would mostly be a syscall for EAGAIN. Bytes
  // still in the socket wake the poll handle again.
  return n > 0 && reading_ && !closed_ && SSL_has_pending(ssl_) == 1;
}

// ---- Writing ----

int TlsTransport::write(Outbox& out, bool at_once) {
  if (closed_ || fd_ < 0 || connecting_ || handshaking_ || failed_) return UV_EPIPE;
  if (writing_ != nullptr) return UV_EBUSY;
  if (!out.begin_write()) return 0;
  writing_ = &out;
  int rc = flush();
  if (rc == 1 && at_once) {
    writing_ = nullptr;
    out.on_written();
    return 0;
  }
  if (rc != 0) {
    // As TcpTransport: the end is reported once the current loop phase is over.
    write_ended_ = true;
    write_status_ = rc < 0 ? rc : 0;
    ctx_->later->defer(this, &TlsTransport::report_write_end);
    return 0;
  }
  update_events();
  return 0;
}

int TlsTransport::flush() {
  for (;;) {
    if (pending_ == nullptr) {
      size_t count = 0;
      const uv_buf_t* bufs = writing_->unsent(&count);
      if (count == 0) return 1;
      if (bufs[0].len >= kRecord || count == 1) {
        pending_ = bufs[0].base;
        pending_len_ = std::min<size_t>(bufs[0].len, INT32_MAX);
      } else {
        // Several small buffers (a head, chunk framing, a small body): one record.
        if (staging_ == nullptr && (staging_ = ctx_->buffers->acquire()) == nullptr) {
          return UV_ENOMEM;
        }
        size_t room = std::min(kRecord, ctx_->buffers->block_size());
        size_t used = 0;
        for (size_t i = 0; i < count && used < room; ++i) {
          size_t take = std::min<size_t>(bufs[i].len, room - used);
          std::memcpy(staging_ + used, bufs[i].base, take);
          used += take;
        }
        pending_ = staging_;
        pending_len_ = used;
      }
    }
    errno = 0;  // the error queue is empty (see read_once())
    int rc = SSL_write(ssl_, pending_, static_cast<int>(pending_len_));
    write_wants_read_ = false;
    if (rc <= 0) {
      int err = SSL_get_error(ssl_, rc);
      if (err == SSL_ERROR_WANT_WRITE) return 0;
      if (err == SSL_ERROR_WANT_READ) {
        write_wants_read_ = true;
        return 0;
      }
      int status = err == SSL_ERROR_SYSCALL && errno != 0 ? -errno : UV_EPIPE;
      fatal_ = true;
      ERR_clear_error();
      return status;
    }
    // With partial writes a call may take less (a record at a time).
    writing_->advance(static_cast<size_t>(rc));
    // Gathered bytes that did not all go (never more than a record, so this is rare) are
    // gathered again from the Outbox next time round.
    pending_ = nullptr;
    pending_len_ = 0;
  }
}

void TlsTransport::report_write_end(void* p) {
  auto* self = static_cast<TlsTransport*>(p);
  if (self->closed_ || self->writing_ == nullptr || !self->write_ended_) return;
  self->end_write(self->write_status_);
}

void TlsTransport::on_writable() {
  if (write_ended_) return;
  int rc = flush();
  if (rc == 0) return;
  end_write(rc < 0 ? rc : 0);
}

void TlsTransport::end_write(int status) {
  Outbox* out = writing_;
  writing_ = nullptr;
  write_ended_ = false;
  write_status_ = 0;
  pending_ = nullptr;
  pending_len_ = 0;
  if (staging_ != nullptr) {
    ctx_->buffers->release(staging_);
    staging_ = nullptr;
  }
  out->on_written();
  if (shutdown_pending_ && status == 0) send_shutdown();
  shutdown_pending_ = false;
  update_events();
  if (callbacks_ != nullptr) callbacks_->on_transport_written(status);
}

int TlsTransport::shutdown() {
  if (closed_ || fd_ < 0 || handshaking_ || failed_) return UV_EPIPE;
  if (writing_ != nullptr) {
    shutdown_pending_ = true;
    return 0;
  }
  send_shutdown();
  return 0;
}

void TlsTransport::send_shutdown() {
  // close_notify, then FIN; reading goes on (TLS 1.3 half-close; OpenSSL keeps reading after
  // it sent its close_notify). A close_notify the socket cannot take now is given up.
  ERR_clear_error();
  SSL_shutdown(ssl_);
  ERR_clear_error();
  ::shutdown(fd_, SHUT_WR);
}

void TlsTransport::close() {
  if (closed_) return;
  closed_ = true;
  callbacks_ = nullptr;
  reading_ = connecting_ = false;
  if (writing_ != nullptr) {
    Outbox* out = writing_;
    writing_ = nullptr;
    out->on_written();
  }
  if (staging_ != nullptr) {
    ctx_->buffers->release(staging_);  // nothing reads it after the close
    staging_ = nullptr;
  }
  // Closing without close_notify makes OpenSSL drop the session as bad (and take its context's
  // lock to do so): a connection that simply ends keeps its session resumable.
  if (ssl_ != nullptr && !handshaking_ && !failed_ && !fatal_) {
    SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  }
  if (write_ended_ || read_scheduled_) ctx_->later->cancel(this);
  write_ended_ = read_scheduled_ = false;
  if (fd_ < 0) {
    delete this;
    return;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), [](uv_handle_t* h) {
    auto* self = static_cast<TlsTransport*>(h->data);
    ::close(self->fd_);
    delete self;
  });
}

void TlsTransport::peer_ip(char* buf, size_t size) const { socket_peer_ip(fd_, buf, size); }

}  // namespace bulwark
