// The client part of the TLS kit: TlsClientConn.

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "tests/support/tls_kit.h"
#include "tests/support/tls_openssl.h"

namespace bulwark::test {

using namespace tls_detail;

namespace {

using Clock = std::chrono::steady_clock;

int poll_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

bool is_ip_literal(const std::string& name) {
  unsigned char address[16];
  return ::inet_pton(AF_INET, name.c_str(), address) == 1 ||
         ::inet_pton(AF_INET6, name.c_str(), address) == 1;
}

}  // namespace

// OpenSSL's callbacks reach the connection through the SSL's app data (kept current on moves).
struct TlsClientCallbacks {
  static TlsClientConn& conn(const SSL* ssl) {
    return *static_cast<TlsClientConn*>(SSL_get_app_data(ssl));
  }

  static void info(const SSL* ssl, int where, int value) {
    if (!(where & SSL_CB_ALERT)) return;
    auto& self = conn(ssl);
    (where & SSL_CB_READ ? self.alert_received_ : self.alert_sent_) = alert_text(value);
  }

  // A session the server offered (TLS 1.2: at the handshake; TLS 1.3: each ticket). Returning 1
  // keeps the reference OpenSSL handed over.
  static int new_session(SSL* ssl, SSL_SESSION* session) {
    conn(ssl).session_ = TlsSession(session, SSL_SESSION_free);
    return 1;
  }
};

TlsClientConn::TlsClientConn() = default;

TlsClientConn::TlsClientConn(uint16_t port, TlsClientOptions options, Millis timeout) {
  connect(port, std::move(options), timeout);
}

TlsClientConn::~TlsClientConn() { TlsClientConn::close(); }

TlsClientConn::TlsClientConn(TlsClientConn&& other) noexcept { *this = std::move(other); }

TlsClientConn& TlsClientConn::operator=(TlsClientConn&& other) noexcept {
  if (this == &other) return *this;
  free_tls();
  ClientConn::operator=(std::move(other));
  ctx_ = std::exchange(other.ctx_, nullptr);
  ssl_ = std::exchange(other.ssl_, nullptr);
  if (ssl_) SSL_set_app_data(ssl_, this);
  handshake_ok_ = other.handshake_ok_;
  close_notify_sent_ = other.close_notify_sent_;
  close_notify_received_ = other.close_notify_received_;
  handshake_error_ = std::move(other.handshake_error_);
  alert_received_ = std::move(other.alert_received_);
  alert_sent_ = std::move(other.alert_sent_);
  verify_result_ = std::move(other.verify_result_);
  version_ = std::move(other.version_);
  cipher_ = std::move(other.cipher_);
  alpn_ = std::move(other.alpn_);
  resumed_ = other.resumed_;
  server_cert_ = std::move(other.server_cert_);
  server_chain_length_ = other.server_chain_length_;
  session_ = std::move(other.session_);
  return *this;
}

void TlsClientConn::free_tls() {
  if (ssl_) SSL_free(ssl_);
  if (ctx_) SSL_CTX_free(ctx_);
  ssl_ = nullptr;
  ctx_ = nullptr;
}

bool TlsClientConn::connect(uint16_t port, TlsClientOptions options, Millis timeout) {
  close();
  handshake_ok_ = close_notify_sent_ = close_notify_received_ = resumed_ = false;
  handshake_error_.clear();
  alert_received_.clear();
  alert_sent_.clear();
  verify_result_.clear();
  version_.clear();
  cipher_.clear();
  alpn_.clear();
  server_cert_.reset();
  server_chain_length_ = 0;
  session_.reset();

  auto deadline = Clock::now() + timeout;
  if (!ClientConn::connect(port, timeout)) return false;
  auto give_up = [&](std::string why) {
    handshake_error_ = std::move(why);
    fail(ReadError::kIo, "TLS handshake failed: " + handshake_error_);
    close();
    return false;
  };

  ERR_clear_error();
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (!ctx_) return give_up("SSL_CTX_new: " + drain_errors());
  set_versions(ctx_, options.min_version, options.max_version);
  SSL_CTX_set_mode(ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx_, TlsClientCallbacks::new_session);
  if (!options.ca_file.empty() &&
      SSL_CTX_load_verify_locations(ctx_, options.ca_file.c_str(), nullptr) != 1) {
    return give_up("loading CA file " + options.ca_file + ": " + drain_errors());
  }
  if (!options.cert_file.empty() &&
      (SSL_CTX_use_certificate_chain_file(ctx_, options.cert_file.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx_, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
       SSL_CTX_check_private_key(ctx_) != 1)) {
    return give_up("loading client certificate " + options.cert_file + ": " + drain_errors());
  }

  ssl_ = SSL_new(ctx_);
  SSL_set_app_data(ssl_, this);
  SSL_set_info_callback(ssl_, TlsClientCallbacks::info);
  BIO* bio = socket_bio(fd_);
  SSL_set_bio(ssl_, bio, bio);  // one reference for both directions
  if (!options.sni.empty()) SSL_set_tlsext_host_name(ssl_, options.sni.c_str());
  if (!options.alpn.empty()) {
    std::string wire = alpn_wire(options.alpn);
    SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char*>(wire.data()),
                        static_cast<unsigned int>(wire.size()));
  }
  if (!options.ca_file.empty()) {
    SSL_set_verify(ssl_, SSL_VERIFY_PEER, nullptr);
    const std::string& name = options.verify_name.empty() ? options.sni : options.verify_name;
    if (is_ip_literal(name)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str());
    } else if (!name.empty()) {
      SSL_set1_host(ssl_, name.c_str());
    }
  } else {
    SSL_set_verify(ssl_, SSL_VERIFY_NONE, nullptr);
  }
  if (options.session) SSL_set_session(ssl_, options.session.get());

  while (true) {
    ERR_clear_error();
    int result = SSL_connect(ssl_);
    if (result == 1) break;
    int error = SSL_get_error(ssl_, result);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      pollfd pfd{fd_, static_cast<short>(error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
      int ready = ::poll(&pfd, 1, poll_ms(deadline));
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0) return give_up("timed out");
      continue;
    }
    int saved_errno = errno;
    verify_result_ = X509_verify_cert_error_string(SSL_get_verify_result(ssl_));
    std::string reasons = drain_errors();
    if (reasons.empty()) {
      reasons = error == SSL_ERROR_SYSCALL && saved_errno != 0
                    ? std::string(std::strerror(saved_errno))
                    : "the server closed the connection during the handshake";
    }
    return give_up(reasons);
  }

  handshake_ok_ = true;
  verify_result_ = X509_verify_cert_error_string(SSL_get_verify_result(ssl_));
  version_ = SSL_get_version(ssl_);
  cipher_ = SSL_get_cipher_name(ssl_);
  const unsigned char* alpn = nullptr;
  unsigned int alpn_size = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &alpn_size);
  if (alpn) alpn_.assign(reinterpret_cast<const char*>(alpn), alpn_size);
  resumed_ = SSL_session_reused(ssl_) == 1;
  if (X509* cert = SSL_get0_peer_certificate(ssl_)) server_cert_ = cert_info(cert);
  if (STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl_)) {
    server_chain_length_ = static_cast<size_t>(sk_X509_num(chain));
  }
  return true;
}

HttpConn::Io TlsClientConn::tls_failure(const char* what, int result) {
  int error = SSL_get_error(ssl_, result);
  int saved_errno = errno;
  if (error == SSL_ERROR_SYSCALL && (saved_errno == ECONNRESET || saved_errno == EPIPE)) {
    ERR_clear_error();
    fail(ReadError::kReset, std::string("TLS ") + what + ": " + std::strerror(saved_errno));
    return Io::kFailed;
  }
  std::string reasons = drain_errors();
  if (reasons.empty()) {
    reasons = saved_errno != 0 ? std::strerror(saved_errno) : "SSL error " + std::to_string(error);
  }
  handshake_error_ = reasons;
  fail(ReadError::kIo, std::string("TLS ") + what + " failed: " + reasons);
  return Io::kFailed;
}

HttpConn::Io TlsClientConn::transport_read(char* out, size_t size, size_t& moved) {
  if (!ssl_) return HttpConn::transport_read(out, size, moved);
  ERR_clear_error();
  errno = 0;
  int n = SSL_read(ssl_, out, static_cast<int>(std::min<size_t>(size, INT_MAX)));
  if (n > 0) {
    moved = static_cast<size_t>(n);
    return Io::kDone;
  }
  switch (SSL_get_error(ssl_, n)) {
    case SSL_ERROR_WANT_READ:
      return Io::kWantRead;
    case SSL_ERROR_WANT_WRITE:
      return Io::kWantWrite;
    case SSL_ERROR_ZERO_RETURN:
      close_notify_received_ = true;
      return Io::kClosed;
    case SSL_ERROR_SSL:
      // A FIN without close_notify: still the end of the stream (close_notify_received() tells).
      if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        return Io::kClosed;
      }
      break;
    case SSL_ERROR_SYSCALL:
      if (errno == 0 && ERR_peek_error() == 0) return Io::kClosed;
      break;
  }
  return tls_failure("read", n);
}

HttpConn::Io TlsClientConn::read_arrived() {
  char chunk[16 * 1024];
  while (!eof_) {
    pollfd pfd{fd_, POLLIN, 0};
    if (SSL_pending(ssl_) == 0 && ::poll(&pfd, 1, 0) <= 0) break;
    size_t moved = 0;
    Io io = transport_read(chunk, sizeof chunk, moved);
    if (io == Io::kDone) {
      buf_.append(chunk, moved);
      continue;
    }
    if (io == Io::kClosed || io == Io::kFailed) eof_ = true;
    if (io == Io::kFailed) return io;
    break;
  }
  return Io::kDone;
}

HttpConn::Io TlsClientConn::transport_write(const char* data, size_t size, size_t& moved) {
  if (!ssl_) return HttpConn::transport_write(data, size, moved);
  // A server that refuses the client after the handshake (TLS 1.3 client certificates) sends an
  // alert and closes; our write would then meet a reset and hide the alert. So what has arrived
  // is read first, and read again after a failed write.
  if (read_arrived() == Io::kFailed) return Io::kFailed;
  ERR_clear_error();
  errno = 0;
  int n = SSL_write(ssl_, data, static_cast<int>(std::min<size_t>(size, INT_MAX)));
  if (n > 0) {
    moved = static_cast<size_t>(n);
    return Io::kDone;
  }
  switch (SSL_get_error(ssl_, n)) {
    case SSL_ERROR_WANT_READ:
      return Io::kWantRead;
    case SSL_ERROR_WANT_WRITE:
      return Io::kWantWrite;
  }
  tls_failure("write", n);
  read_arrived();  // an alert found now replaces the write's error
  return Io::kFailed;
}

void TlsClientConn::shutdown_write() {
  if (ssl_ && handshake_ok_ && !close_notify_sent_) {
    ERR_clear_error();
    SSL_shutdown(ssl_);  // sends close_notify; reading goes on until the server's
    ERR_clear_error();
    close_notify_sent_ = true;
  }
  ClientConn::shutdown_write();
}

void TlsClientConn::close(bool reset) {
  if (ssl_ && handshake_ok_ && !close_notify_sent_ && !reset && fd_ >= 0) {
    ERR_clear_error();
    SSL_shutdown(ssl_);  // one attempt at close_notify
    ERR_clear_error();
    close_notify_sent_ = true;
  }
  free_tls();
  ClientConn::close(reset);
}

size_t TlsClientConn::send_key_updates(size_t count, bool request_update, Millis timeout) {
  if (!ssl_ || !handshake_ok_) return 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const int type = request_update ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED;
  for (size_t sent = 0; sent < count; ++sent) {
    ERR_clear_error();
    if (SSL_key_update(ssl_, type) != 1) return sent;
    for (;;) {
      const int rc = SSL_do_handshake(ssl_);  // writes the KeyUpdate
      if (rc == 1) break;
      const int err = SSL_get_error(ssl_, rc);
      const auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      if ((err != SSL_ERROR_WANT_WRITE && err != SSL_ERROR_WANT_READ) || left.count() <= 0) {
        ERR_clear_error();
        return sent;
      }
      pollfd p{fd(), static_cast<short>(err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
    }
  }
  return count;
}

TlsSession TlsClientConn::get_session(Millis wait) {
  auto deadline = Clock::now() + wait;
  char chunk[16 * 1024];
  while (!session_ && ssl_ && !eof_) {
    // Not fill(): a ticket is read without any data, and fill() would then wait on for data.
    size_t moved = 0;
    Io io = transport_read(chunk, sizeof chunk, moved);
    if (io == Io::kDone) {
      buf_.append(chunk, moved);
      continue;
    }
    if (io == Io::kClosed || io == Io::kFailed) {
      eof_ = true;  // as fill() would; the next read reports it
      break;
    }
    if (session_) break;  // the ticket came without data
    pollfd pfd{fd_, static_cast<short>(io == Io::kWantRead ? POLLIN : POLLOUT), 0};
    if (::poll(&pfd, 1, poll_ms(deadline)) == 0) break;
  }
  return session_;
}

std::optional<Response> https_request(uint16_t port, const TlsClientOptions& options,
                                      std::string_view method, std::string_view target,
                                      const HeaderList& headers, std::string_view body,
                                      Millis timeout, std::string* error) {
  TlsClientConn conn;
  std::optional<Response> response;
  if (conn.connect(port, options, timeout) &&
      conn.send(make_request(method, target, headers, body), timeout)) {
    response = conn.read_response(method == "HEAD", timeout);
  }
  if (!response && error) {
    *error = std::string(to_string(conn.last_error())) + ": " + conn.last_error_text();
  }
  return response;
}

std::optional<Response> https_get(uint16_t port, const TlsClientOptions& options,
                                  std::string_view target, const HeaderList& headers,
                                  Millis timeout, std::string* error) {
  return https_request(port, options, "GET", target, headers, {}, timeout, error);
}

}  // namespace bulwark::test
