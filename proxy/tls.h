#pragma once
// TLS contexts: what a listener terminates with and what a cluster originates with.
//
// Each context wraps the OpenSSL SSL_CTX objects built from one listener's or cluster's `tls`
// settings and the files they name. It is built once, on the main thread (at start, at a reload,
// when a certificate file changes), and is immutable afterwards: every worker makes its
// connections' SSL objects from the same one, and OpenSSL looks nothing up per handshake (the
// certificates, keys, CA store and ciphers are all loaded and fetched when the context is built).
// A context in use by open connections lives as long as they do (shared_ptr); a rotation
// publishes a new one in the listener's or cluster's TlsContextSlot, which new handshakes take.
//
// Failures are counted by reason (TlsError), and a transport reports a failed handshake to its
// owner as the status tls_status(reason), so the owner can tell a TLS failure from a socket error.

#include <openssl/ssl.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace bulwark {

// Why a handshake failed (or a session was refused after it). Metric label and log text:
// tls_error_name().
enum class TlsError : uint8_t {
  kHandshakeTimeout,  // the peer did not finish the handshake in time
  kClosed,            // the peer closed or reset the connection during the handshake
  kHttpRequest,       // a plaintext HTTP request on a TLS listener
  kNotTls,            // the upstream answered something that is not TLS
  kVersion,           // no protocol version both sides accept
  kProtocol,          // a malformed or unexpected handshake message, no shared cipher, ...
  kNoCertificate,     // a listener requires a client certificate and got none
  kUntrusted,         // the peer's chain does not lead to a trusted CA
  kExpired,           // the peer's certificate expired or is not valid yet
  kHostnameMismatch,  // the upstream's certificate is not for the name we asked for
  kSanNotAllowed,     // the peer's identity is not in allowed_client_sans/server_sans
  kPeerAlert,         // the peer refused us (its alert: our certificate, our version, ...)
  kInternal,          // out of memory, a socket error, ...
  kCount,
};
const char* tls_error_name(TlsError error);

// The status a transport reports for a TLS failure (to on_transport_connected() or
// on_transport_read()): negative, and outside libuv's error range.
inline constexpr int kTlsStatusBase = -20000;
constexpr int tls_status(TlsError e) { return kTlsStatusBase - static_cast<int>(e); }
constexpr bool is_tls_status(int status) {
  return status <= kTlsStatusBase && status > kTlsStatusBase - static_cast<int>(TlsError::kCount);
}
constexpr TlsError tls_error_of(int status) {
  return static_cast<TlsError>(kTlsStatusBase - status);
}

// A listener's or a cluster's TLS statistics, all workers together (a handshake costs a hundred
// microseconds; the relaxed atomic add it also costs is lost in that).
struct TlsStats {
  // [version][resumed]: version 0 = TLS 1.2, 1 = TLS 1.3.
  std::array<std::array<std::atomic<uint64_t>, 2>, 2> handshakes{};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(TlsError::kCount)> errors{};
  std::atomic<uint64_t> reload_errors{0};  // certificate files that could not replace the old ones

  void count_error(TlsError e) {
    errors[static_cast<size_t>(e)].fetch_add(1, std::memory_order_relaxed);
  }
};

// A certificate as loaded from its files: what metrics and --check report.
struct CertificateFacts {
  std::string path;       // the certificate file, or a CA file
  int64_t not_after = 0;  // seconds since the epoch; of a CA file, its last certificate's
  bool ca = false;
};

// Keys for TLS session tickets, shared by all of a listener's contexts (so a ticket survives a
// certificate rotation) and so by all its workers. A new key is made every hour; tickets made
// with the two before it are still accepted (and renewed).
class TicketKeys {
 public:
  struct Key {
    std::array<unsigned char, 16> name{};
    std::array<unsigned char, 32> aes{};
    std::array<unsigned char, 32> hmac{};
    int64_t created_s = 0;
  };
  // The key to encrypt with now (rotating when it is due). False when randomness failed.
  bool current(int64_t now_s, Key& out);
  // The key named `name`; `fresh` tells whether it is the current one.
  bool find(const unsigned char* name, Key& out, bool& fresh);

 private:
  static constexpr int64_t kLifetimeS = 3600;
  std::mutex mutex_;
  std::vector<Key> keys_;  // newest first, at most 3
};

// The TLS policy of one listener, with its certificates loaded.
class TlsServerContext {
 public:
  // Loads the files `config` names. Null with `error` set (naming the file and what is wrong,
  // prefixed with the file:line:col of its path in the config) when a file cannot be used; a
  // certificate that is not valid yet also sets `valid_from` (when it will be, for rotation to
  // try again then).
  static std::shared_ptr<const TlsServerContext> build(const config::ListenerTlsConfig& config,
                                                       const std::string& listener_name,
                                                       std::shared_ptr<TlsStats> stats,
                                                       std::shared_ptr<TicketKeys> keys,
                                                       std::string* error,
                                                       int64_t* valid_from = nullptr);
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  // A new server-side SSL object (null when out of memory).
  SSL* new_ssl() const;
  const config::ListenerTlsConfig& config() const { return config_; }
  TlsStats& stats() const { return *stats_; }
  const std::vector<CertificateFacts>& certificates() const { return facts_; }
  bool asks_client_certificate() const { return !config_.client_ca.empty(); }
  // Identifies the policy a client was admitted under: the client CA's contents, whether a
  // certificate is required, the allowed SANs, versions and ciphers (not the certificates
  // served). Sessions resume only under the same policy (it makes their id context), and a
  // connection whose policy a reload changed is ended (Http1Connection::move_to_newest_config).
  uint64_t policy_id() const { return policy_id_; }

 private:
  struct Cert {
    SSL_CTX* ctx = nullptr;
    std::vector<std::string> names;  // DNS SANs (or the CN), lowercased; "*.x" for wildcards
  };
  TlsServerContext() = default;
  static int on_servername(SSL* ssl, int* alert, void* arg);
  static int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                     const unsigned char* in, unsigned int inlen, void* arg);
  static int on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* ectx,
                           EVP_MAC_CTX* hctx, int enc);
  const Cert* pick(std::string_view server_name) const;

  config::ListenerTlsConfig config_;
  std::string name_;
  std::vector<Cert> certs_;          // certs_[0].ctx makes every SSL; SNI may switch to another
  std::vector<unsigned char> alpn_;  // our protocols, in ALPN wire format
  std::vector<CertificateFacts> facts_;
  std::shared_ptr<TlsStats> stats_;
  std::shared_ptr<TicketKeys> keys_;
  uint64_t policy_id_ = 0;
};

// The TLS policy of one cluster, with its CA and client certificate loaded.
class TlsClientContext {
 public:
  static std::shared_ptr<const TlsClientContext> build(const config::ClusterTlsConfig& config,
                                                       const std::string& cluster_name,
                                                       std::shared_ptr<TlsStats> stats,
                                                       std::string* error,
                                                       int64_t* valid_from = nullptr);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  // A new client-side SSL object for a connection to `server_name` (SNI and the name checked;
  // empty: neither), resuming `session` when not null. Null when out of memory.
  SSL* new_ssl(const std::string& server_name, SSL_SESSION* session) const;
  const config::ClusterTlsConfig& config() const { return config_; }
  TlsStats& stats() const { return *stats_; }
  const std::vector<CertificateFacts>& certificates() const { return facts_; }
  // The name to send and check for an endpoint configured as `endpoint_name` ("host:port"):
  // tls.sni, else the endpoint's host when it is a DNS name, else empty.
  std::string server_name_for(std::string_view endpoint_name) const;
  // Unique among the contexts of the process, never reused (sessions are tied to it).
  uint64_t id() const { return id_; }

 private:
  TlsClientContext();
  static int on_new_session(SSL* ssl, SSL_SESSION* session);

  config::ClusterTlsConfig config_;
  std::string name_;
  uint64_t id_;
  SSL_CTX* ctx_ = nullptr;
  std::vector<CertificateFacts> facts_;
  std::shared_ptr<TlsStats> stats_;
};

// The TLS session to resume on the next connection to one endpoint, kept by one worker's pool of
// that endpoint (so it is only ever touched by that worker's loop).
//
// A session is only resumed with the context that made it: a resumed handshake skips
// verification, so a session made before the CA, the allowed SANs or our client certificate
// changed must not carry the old verdict (or the old identity) over.
class TlsSessionCache {
 public:
  TlsSessionCache() = default;
  ~TlsSessionCache();
  TlsSessionCache(const TlsSessionCache&) = delete;
  TlsSessionCache& operator=(const TlsSessionCache&) = delete;
  // The session to offer on a connection made with context `context_id` (null: none).
  SSL_SESSION* get(uint64_t context_id) const {
    return context_id == context_id_ ? session_ : nullptr;
  }
  void put(SSL_SESSION* session, uint64_t context_id);  // takes the caller's reference

 private:
  SSL_SESSION* session_ = nullptr;
  uint64_t context_id_ = 0;
};

// What a connection's TLS transport keeps for OpenSSL's callbacks (its SSL's ex_data).
struct TlsConnectionData {
  const std::vector<config::SanMatch>* allowed_sans = nullptr;  // checked at depth 0
  TlsSessionCache* sessions = nullptr;                          // client side: where to keep one
  uint64_t context_id = 0;                       // client side: TlsClientContext::id()
  TlsError verify_error = TlsError::kUntrusted;  // why verification refused
  bool san_refused = false;
  bool established = false;  // the handshake is done: what comes now is post-handshake
  // Handshake messages received after the handshake (KeyUpdate, NewSessionTicket) since the last
  // application data: a peer flooding them would keep a worker busy answering (read_once).
  uint32_t post_handshake_messages = 0;
};
// More post-handshake messages than this with no application data between ends a connection.
inline constexpr uint32_t kMaxPostHandshakeMessages = 32;
void set_connection_data(SSL* ssl, TlsConnectionData* data);
TlsConnectionData* connection_data(const SSL* ssl);

// Holds the newest context of a listener or a cluster. Workers take it for each new connection;
// the main thread replaces it when certificate files change.
template <class Context>
class TlsContextSlot {
 public:
  explicit TlsContextSlot(std::shared_ptr<const Context> c) : current_(std::move(c)) {}
  std::shared_ptr<const Context> get() const {
    std::lock_guard lock(mutex_);
    return current_;
  }
  void set(std::shared_ptr<const Context> c) {
    std::lock_guard lock(mutex_);
    current_.swap(c);
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const Context> current_;
};
using TlsServerSlot = TlsContextSlot<TlsServerContext>;
using TlsClientSlot = TlsContextSlot<TlsClientContext>;

// SAN values of `cert` of one GENERAL_NAME type (GEN_DNS, GEN_URI), in order.
std::vector<std::string> sans_of(X509* cert, int type);

// The identity a peer certificate carries: the SAN `allowed` let it in by, else (no list) its
// first URI SAN, else its first DNS SAN.
std::string peer_identity(X509* cert, const std::vector<config::SanMatch>& allowed);
// Envoy's X-Forwarded-Client-Cert element for a peer certificate:
// Hash=<sha256 of the DER, hex>;URI=<uri san>;DNS=<dns san> (each SAN of the certificate).
std::string forwarded_client_cert(X509* cert);
// Whether `cert` has a SAN that one of `allowed` matches: a name with a scheme ("spiffe://")
// against the URI SANs, any other against the DNS SANs.
bool san_allowed(X509* cert, const std::vector<config::SanMatch>& allowed);

}  // namespace bulwark
