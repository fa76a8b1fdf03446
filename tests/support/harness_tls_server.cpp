// The server part of the TLS kit: TlsFrontDoor.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "tests/support/tls_kit.h"
#include "tests/support/tls_openssl.h"

namespace bulwark::test {

using namespace tls_detail;

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kRelayChunk = 16 * 1024;   // one TLS record of plaintext at most
constexpr size_t kRelayLimit = 256 * 1024;  // bytes held per direction before reading stops

int poll_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// What the callbacks learn during one handshake. Owned by the connection's thread and reached
// from callbacks through the SSL's app data, so they need no lock.
struct HandshakeNotes {
  const TlsServerOptions* options = nullptr;
  const std::vector<std::pair<std::string, SSL_CTX*>>* sni_contexts = nullptr;
  const std::string* alpn_wire = nullptr;
  std::string sni;
  std::vector<std::string> alpn_offered;
  std::string alert_sent, alert_received;
  std::string verify_error;
  std::optional<CertInfo> client_cert;
};

HandshakeNotes& notes_of(const SSL* ssl) {
  return *static_cast<HandshakeNotes*>(SSL_get_app_data(ssl));
}

void info_callback(const SSL* ssl, int where, int value) {
  if (!(where & SSL_CB_ALERT)) return;
  auto& notes = notes_of(ssl);
  (where & SSL_CB_READ ? notes.alert_received : notes.alert_sent) = alert_text(value);
}

// Records the SNI and switches to the certificate named for it, if any.
int servername_callback(SSL* ssl, int* /*alert*/, void* /*arg*/) {
  auto& notes = notes_of(ssl);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_NOACK;
  notes.sni = name;
  for (const auto& [server_name, ctx] : *notes.sni_contexts) {
    if (iequals(server_name, notes.sni)) {
      SSL_set_SSL_CTX(ssl, ctx);
      break;
    }
  }
  return SSL_TLSEXT_ERR_OK;
}

// Records the client's offer and picks the server's first preference among it.
int alpn_callback(SSL* ssl, const unsigned char** out, unsigned char* out_size,
                  const unsigned char* in, unsigned int in_size, void* /*arg*/) {
  auto& notes = notes_of(ssl);
  for (unsigned int i = 0; i < in_size && i + 1 + in[i] <= in_size; i += 1 + in[i]) {
    notes.alpn_offered.emplace_back(reinterpret_cast<const char*>(in + i + 1), in[i]);
  }
  if (notes.alpn_wire->empty()) return SSL_TLSEXT_ERR_NOACK;
  unsigned char* selected = nullptr;
  int found = SSL_select_next_proto(
      &selected, out_size, reinterpret_cast<const unsigned char*>(notes.alpn_wire->data()),
      static_cast<unsigned int>(notes.alpn_wire->size()), in, in_size);
  if (found == OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return notes.options->alpn_mismatch_fatal ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
}

// Notes the client's certificate (depth 0) and the first verification error; changes nothing.
int verify_callback(int preverify_ok, X509_STORE_CTX* store) {
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto& notes = notes_of(ssl);
  if (X509_STORE_CTX_get_error_depth(store) == 0 && !notes.client_cert) {
    if (X509* cert = X509_STORE_CTX_get_current_cert(store)) notes.client_cert = cert_info(cert);
  }
  if (!preverify_ok && notes.verify_error.empty()) {
    notes.verify_error = X509_verify_cert_error_string(X509_STORE_CTX_get_error(store));
  }
  return preverify_ok;
}

SslCtxPtr make_server_ctx(const TlsServerOptions& options, const std::string& cert_file,
                          const std::string& key_file) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) throw_openssl("SSL_CTX_new");
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    throw_openssl("TlsFrontDoor: loading " + cert_file + " and " + key_file);
  }
  set_versions(ctx.get(), options.min_version, options.max_version);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  static const unsigned char kSessionContext[] = "bulwark-tls-front-door";
  SSL_CTX_set_session_id_context(ctx.get(), kSessionContext, sizeof kSessionContext - 1);
  if (!options.session_tickets) SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
  if (!options.session_cache) SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  if (!options.session_tickets && !options.session_cache) SSL_CTX_set_num_tickets(ctx.get(), 0);
  if (!options.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx.get(), options.client_ca_file.c_str(), nullptr) != 1) {
      throw_openssl("TlsFrontDoor: loading client CA " + options.client_ca_file);
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options.client_ca_file.c_str());
    if (names) SSL_CTX_set_client_CA_list(ctx.get(), names);
    int mode = SSL_VERIFY_PEER;
    if (options.require_client_cert) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx.get(), mode, verify_callback);
  }
  SSL_CTX_set_tlsext_servername_callback(ctx.get(), servername_callback);
  SSL_CTX_set_alpn_select_cb(ctx.get(), alpn_callback, nullptr);
  return ctx;
}

// Why a TLS call failed, as the record and failure messages show it.
std::string failure_text(SSL* ssl, int result) {
  int error = SSL_get_error(ssl, result);
  int saved_errno = errno;
  std::string reasons = drain_errors();
  if (!reasons.empty()) return reasons;
  if (error == SSL_ERROR_SYSCALL) {
    if (saved_errno == 0) return "unexpected eof";
    return std::strerror(saved_errno);
  }
  return "SSL error " + std::to_string(error);
}

// Connects to 127.0.0.1:port within `timeout`; -1 and `error` set on failure.
int connect_backend(uint16_t port, Millis timeout, std::string& error) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto address = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    int status = errno;
    if (status == EINPROGRESS) {
      pollfd pfd{fd, POLLOUT, 0};
      socklen_t size = sizeof status;
      status = ::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0 ? ETIMEDOUT : 0;
      if (status == 0) ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &status, &size);
    }
    if (status != 0) {
      error = "connect to backend port " + std::to_string(port) + ": " + std::strerror(status);
      ::close(fd);
      return -1;
    }
  }
  return fd;
}

// Moves bytes between the TLS client and the plaintext backend until either side ends or
// `wake_fd` becomes readable (the front door stops). Both descriptors are non-blocking.
void relay(SSL* ssl, int client_fd, int backend_fd, int wake_fd) {
  std::string to_backend, to_client;
  char chunk[kRelayChunk];
  bool client_done = false;         // nothing more will come from the client
  bool backend_done = false;        // nothing more will come from the backend
  bool backend_write_shut = false;  // the client's end has been passed on
  while (true) {
    bool read_wants_write = false, write_wants_read = false;
    while (!client_done && to_backend.size() < kRelayLimit) {
      ERR_clear_error();
      int n = SSL_read(ssl, chunk, sizeof chunk);
      if (n > 0) {
        to_backend.append(chunk, static_cast<size_t>(n));
        continue;
      }
      int error = SSL_get_error(ssl, n);
      if (error == SSL_ERROR_WANT_READ) break;
      if (error == SSL_ERROR_WANT_WRITE) {
        read_wants_write = true;
        break;
      }
      // close_notify, a FIN without it, or a broken connection: the client has ended.
      ERR_clear_error();
      client_done = true;
    }
    while (!to_backend.empty()) {
      ssize_t n = ::send(backend_fd, to_backend.data(), to_backend.size(), MSG_NOSIGNAL);
      if (n > 0) {
        to_backend.erase(0, static_cast<size_t>(n));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        return;  // the backend is gone
      }
    }
    if (client_done && to_backend.empty() && !backend_write_shut) {
      ::shutdown(backend_fd, SHUT_WR);
      backend_write_shut = true;
    }
    while (!backend_done && to_client.size() < kRelayLimit) {
      ssize_t n = ::recv(backend_fd, chunk, sizeof chunk, 0);
      if (n > 0) {
        to_client.append(chunk, static_cast<size_t>(n));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else {
        backend_done = true;
      }
    }
    while (!to_client.empty()) {
      ERR_clear_error();
      int n = SSL_write(ssl, to_client.data(), static_cast<int>(to_client.size()));
      if (n > 0) {
        to_client.erase(0, static_cast<size_t>(n));
        continue;
      }
      int error = SSL_get_error(ssl, n);
      if (error == SSL_ERROR_WANT_WRITE) break;
      if (error == SSL_ERROR_WANT_READ) {
        write_wants_read = true;
        break;
      }
      ERR_clear_error();
      return;  // the client is gone
    }
    if (backend_done && to_client.empty()) {
      ERR_clear_error();
      SSL_shutdown(ssl);  // close_notify, one attempt
      return;
    }

    short client_events = 0, backend_events = 0;
    if ((!client_done && to_backend.size() < kRelayLimit) || write_wants_read) {
      client_events |= POLLIN;
    }
    if ((!to_client.empty() && !write_wants_read) || read_wants_write) client_events |= POLLOUT;
    if (!backend_done && to_client.size() < kRelayLimit) backend_events |= POLLIN;
    if (!to_backend.empty()) backend_events |= POLLOUT;
    // A descriptor with nothing to wait for is left out, so a hung-up socket cannot spin us.
    pollfd fds[3] = {{client_events ? client_fd : -1, client_events, 0},
                     {backend_events ? backend_fd : -1, backend_events, 0},
                     {wake_fd, POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0 && errno != EINTR) return;
    if (fds[2].revents) return;
  }
}

}  // namespace

struct TlsFrontDoor::Contexts {
  SslCtxPtr main;
  std::vector<SslCtxPtr> named;
  std::vector<std::pair<std::string, SSL_CTX*>> by_name;
  std::string alpn_wire;
};

TlsFrontDoor::TlsFrontDoor(TlsServerOptions options, uint16_t backend_port)
    : options_(std::move(options)),
      backend_port_(backend_port),
      contexts_(std::make_unique<Contexts>()) {
  if (options_.mode == TlsServerOptions::Mode::kTls) {
    contexts_->alpn_wire = alpn_wire(options_.alpn);
    contexts_->main = make_server_ctx(options_, options_.cert_file, options_.key_file);
    for (const auto& named : options_.sni_certs) {
      contexts_->named.push_back(make_server_ctx(options_, named.cert_file, named.key_file));
      contexts_->by_name.emplace_back(named.server_name, contexts_->named.back().get());
    }
  }
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  auto address = loopback(0);
  if (listen_fd_ < 0 ||
      ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listen_fd_, 256) != 0 || ::pipe2(wake_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
    std::string error = std::strerror(errno);
    if (listen_fd_ >= 0) ::close(listen_fd_);
    throw std::runtime_error("TlsFrontDoor: cannot listen: " + error);
  }
  sockaddr_in bound{};
  socklen_t size = sizeof bound;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &size);
  port_ = ntohs(bound.sin_port);
  accept_thread_ = std::thread([this] { accept_loop(); });
}

TlsFrontDoor::~TlsFrontDoor() { stop(); }

std::string TlsFrontDoor::address() const { return "127.0.0.1:" + std::to_string(port_); }

void TlsFrontDoor::accept_loop() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents) return;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard lock(mutex_);
    if (stopping_) {
      ::close(fd);
      return;
    }
    TlsConnectionRecord record;
    record.index = records_.size() + 1;
    records_.push_back(record);
    threads_.emplace_back([this, fd, index = record.index] { serve(fd, index); });
    cv_.notify_all();
  }
}

template <typename F>
void TlsFrontDoor::update(size_t index, F&& change) {
  {
    std::lock_guard lock(mutex_);
    change(records_[index - 1]);
  }
  cv_.notify_all();
}

void TlsFrontDoor::serve(int fd, size_t index) {
  switch (options_.mode) {
    case TlsServerOptions::Mode::kTls:
      serve_tls(fd, index);
      break;
    case TlsServerOptions::Mode::kGarbage:
      hold(fd, true);
      break;
    case TlsServerOptions::Mode::kSilent:
      hold(fd, false);
      break;
  }
  ::close(fd);
  update(index, [](TlsConnectionRecord& record) { record.closed = true; });
}

void TlsFrontDoor::hold(int fd, bool send_garbage) {
  if (send_garbage) {
    [[maybe_unused]] auto ignored =
        ::send(fd, options_.garbage.data(), options_.garbage.size(), MSG_NOSIGNAL);
  }
  char discard[4096];
  while (true) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents) return;
    ssize_t n = ::recv(fd, discard, sizeof discard, 0);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return;
  }
}

void TlsFrontDoor::serve_tls(int fd, size_t index) {
  HandshakeNotes notes;
  notes.options = &options_;
  notes.sni_contexts = &contexts_->by_name;
  notes.alpn_wire = &contexts_->alpn_wire;
  std::unique_ptr<SSL, Freer<SSL_free>> ssl(SSL_new(contexts_->main.get()));
  SSL_set_app_data(ssl.get(), &notes);
  SSL_set_info_callback(ssl.get(), info_callback);
  BIO* bio = socket_bio(fd);
  SSL_set_bio(ssl.get(), bio, bio);

  std::string failure;
  auto deadline = Clock::now() + options_.handshake_timeout;
  while (true) {
    ERR_clear_error();
    int result = SSL_accept(ssl.get());
    if (result == 1) break;
    int error = SSL_get_error(ssl.get(), result);
    if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
      failure = failure_text(ssl.get(), result);
      break;
    }
    pollfd fds[2] = {{fd, static_cast<short>(error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0},
                     {wake_pipe_[0], POLLIN, 0}};
    int ready = ::poll(fds, 2, poll_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      failure = "timed out";
      break;
    }
    if (fds[1].revents) {
      failure = "the front door stopped";
      break;
    }
  }

  const unsigned char* alpn = nullptr;
  unsigned int alpn_size = 0;
  SSL_get0_alpn_selected(ssl.get(), &alpn, &alpn_size);
  update(index, [&](TlsConnectionRecord& record) {
    record.handshake_done = true;
    record.handshake_ok = failure.empty();
    record.failure = failure;
    record.verify_error = notes.verify_error;
    record.alert_sent = notes.alert_sent;
    record.alert_received = notes.alert_received;
    record.sni = notes.sni;
    record.alpn_offered = notes.alpn_offered;
    record.alpn.assign(reinterpret_cast<const char*>(alpn), alpn ? alpn_size : 0);
    if (failure.empty()) {
      record.resumed = SSL_session_reused(ssl.get()) == 1;
      record.version = SSL_get_version(ssl.get());
      record.cipher = SSL_get_cipher_name(ssl.get());
    }
    record.client_cert = notes.client_cert;
    if (!record.client_cert && failure.empty()) {
      // A resumed session skips verification; the session still has the certificate.
      if (X509* cert = SSL_get0_peer_certificate(ssl.get())) record.client_cert = cert_info(cert);
    }
  });
  if (!failure.empty()) return;

  if (backend_port_ == 0) {
    ERR_clear_error();
    SSL_shutdown(ssl.get());
    return;
  }
  std::string error;
  int backend_fd = connect_backend(backend_port_, options_.handshake_timeout, error);
  if (backend_fd < 0) {
    update(index, [&](TlsConnectionRecord& record) { record.backend_error = error; });
    return;
  }
  relay(ssl.get(), fd, backend_fd, wake_pipe_[0]);
  ::close(backend_fd);
}

size_t TlsFrontDoor::accepted() const {
  std::lock_guard lock(mutex_);
  return records_.size();
}

std::vector<TlsConnectionRecord> TlsFrontDoor::connections() const {
  std::lock_guard lock(mutex_);
  return records_;
}

std::optional<TlsConnectionRecord> TlsFrontDoor::wait_for_handshake(size_t index,
                                                                    Millis timeout) const {
  std::unique_lock lock(mutex_);
  if (!cv_.wait_for(lock, timeout, [&] {
        return records_.size() >= index && records_[index - 1].handshake_done;
      })) {
    return std::nullopt;
  }
  return records_[index - 1];
}

bool TlsFrontDoor::wait_for_accepted(size_t n, Millis timeout) const {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return records_.size() >= n; });
}

bool TlsFrontDoor::wait_closed(size_t index, Millis timeout) const {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout,
                      [&] { return records_.size() >= index && records_[index - 1].closed; });
}

void TlsFrontDoor::stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  char byte = 1;
  [[maybe_unused]] auto ignored = ::write(wake_pipe_[1], &byte, 1);
  if (accept_thread_.joinable()) accept_thread_.join();
  {
    std::lock_guard lock(mutex_);
    threads.swap(threads_);
  }
  for (auto& thread : threads) thread.join();
  ::close(listen_fd_);
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
}

}  // namespace bulwark::test
