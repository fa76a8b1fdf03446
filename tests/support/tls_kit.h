#pragma once
// The TLS test kit: certificates made at test time, a TLS server in front of a plaintext test
// upstream, and a TLS client with the HTTP reading API of ClientConn. Everything runs in the test
// process on 127.0.0.1, with OpenSSL 3 and no `openssl` command.
//
// - TestCa, CertSpec, IssuedCert: a CA (root or intermediate) that issues leaf and CA
//   certificates as PEM files in a directory. TestPki makes the set most TLS tests need.
// - TlsFrontDoor: terminates TLS on an ephemeral port and relays the plaintext to a backend port
//   (a TestUpstream), recording what each handshake negotiated or why it failed.
// - TlsClientConn: a ClientConn over TLS, with the handshake's outcome and the alerts it saw.
//
// Nothing is cached across processes or tests: keys are new each time (ECDSA P-256 unless RSA is
// asked for; a whole TestPki takes about 15 ms).

#include <openssl/types.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/harness.h"

// Declared in <openssl/ssl.h>; repeated so this header needs only <openssl/types.h>.
typedef struct ssl_session_st SSL_SESSION;

namespace bulwark::test {

// ---------------------------------------------------------------------------------------------
// Certificates

enum class KeyType { kEcdsaP256, kRsa2048 };

// What a certificate is for: its extendedKeyUsage (serverAuth, clientAuth or both). CA
// certificates carry no extendedKeyUsage.
enum class CertUsage { kServer, kClient, kServerAndClient };

// What to put in a certificate. Validity is relative to now, in days: the defaults make a
// certificate valid from yesterday for a year; not_after_days < 0 makes one that has already
// expired, not_before_days > 0 one that is not valid yet.
struct CertSpec {
  std::string common_name;            // subject CN; may be empty (then the subject is empty)
  std::vector<std::string> dns_sans;  // "localhost", "*.example.test"
  std::vector<std::string> ip_sans;   // "127.0.0.1", "::1"
  std::vector<std::string> uri_sans;  // "spiffe://cluster.local/ns/shop/sa/web"
  int not_before_days = -1;
  long not_before_seconds = 0;  // added to not_before_days (a certificate valid in a moment)
  int not_after_days = 365;
  KeyType key = KeyType::kEcdsaP256;
  CertUsage usage = CertUsage::kServer;
  // A CA certificate (basicConstraints CA:TRUE, keyCertSign); see TestCa::intermediate().
  bool is_ca = false;
};

// A certificate and its key as issued, in memory and in two PEM files.
struct IssuedCert {
  std::string name;       // the file stem given to TestCa::issue
  std::string cert_file;  // DIR/NAME.crt: this certificate, then the intermediates above it
  std::string key_file;   // DIR/NAME.key: the private key, unencrypted PKCS#8, mode 0600
  std::string cert_pem;   // the contents of cert_file
  std::string key_pem;    // the contents of key_file
  std::string der;        // this certificate alone, DER
  std::string sha256;     // SHA-256 of `der`, lower-case hex (as in Envoy's XFCC Hash=)
  std::string subject;    // RFC 2253, e.g. "CN=localhost"
};

// A certificate authority living in a directory: a self-signed root, or an intermediate made by
// another TestCa. Copies share the same key and certificate. Thread-compatible.
class TestCa {
 public:
  // Makes a root "CN=NAME" and writes DIR/NAME.crt and DIR/NAME.key. Throws std::runtime_error.
  explicit TestCa(std::string dir, std::string name = "ca", KeyType key = KeyType::kEcdsaP256);

  // Issues a certificate signed by this CA and writes DIR/NAME.crt and DIR/NAME.key (replacing
  // files of that name). A leaf issued by an intermediate gets the intermediate chain appended in
  // its .crt file, as a server sends it. Throws std::runtime_error.
  IssuedCert issue(const std::string& name, const CertSpec& spec) const;

  // An intermediate CA "CN=NAME" signed by this one (spec.is_ca is implied; its common name
  // defaults to NAME). Its cert_file holds it and the intermediates above it, not the root.
  TestCa intermediate(const std::string& name, CertSpec spec = {}) const;

  const std::string& name() const { return name_; }
  const std::string& dir() const { return dir_; }
  // This CA's certificate (and, for an intermediate, the intermediates above it), PEM.
  const std::string& cert_file() const { return self_.cert_file; }
  const std::string& key_file() const { return self_.key_file; }
  const std::string& cert_pem() const { return self_.cert_pem; }
  // The root this CA chains to: the file to trust. A root returns its own cert_file.
  const std::string& root_cert_file() const { return root_cert_file_; }
  const IssuedCert& cert() const { return self_; }

 private:
  TestCa() = default;
  // Makes and writes a certificate signed by this CA; hands out its key and certificate too when
  // asked (for an intermediate).
  IssuedCert sign(const std::string& name, const CertSpec& spec,
                  std::shared_ptr<EVP_PKEY>* made_key = nullptr,
                  std::shared_ptr<X509>* made_cert = nullptr) const;

  std::string dir_;
  std::string name_;
  std::shared_ptr<EVP_PKEY> key_;
  std::shared_ptr<X509> x509_;
  IssuedCert self_;
  std::string chain_pem_;  // what a leaf's .crt carries after the leaf: empty for a root
  std::string root_cert_file_;
};

// The certificates most TLS tests need, made in `dir` (each file named after its member, e.g.
// "server.crt", "other-ca.crt"), all ECDSA P-256: RSA only where a test asks TestCa::issue for it.
// SPIFFE IDs: kSpiffeWeb is the allowed client, kSpiffeIntruder one that is not.
struct TestPki {
  static constexpr const char* kSpiffeWeb = "spiffe://cluster.local/ns/shop/sa/web";
  static constexpr const char* kSpiffeIntruder = "spiffe://cluster.local/ns/evil/sa/intruder";

  explicit TestPki(const std::string& dir);

  TestCa ca;                   // "ca": the CA everyone trusts
  TestCa other_ca;             // "other-ca": an unrelated CA, trusted by no one
  TestCa intermediate;         // "intermediate": signed by `ca`
  IssuedCert server;           // CN=localhost, DNS:localhost, IP:127.0.0.1
  IssuedCert second_server;    // CN=api.example.test, DNS:api.example.test (for SNI selection)
  IssuedCert wildcard;         // CN=*.example.test, DNS:*.example.test
  IssuedCert wrong_host;       // CN=wrong.example.test, DNS:wrong.example.test (not localhost)
  IssuedCert expired;          // localhost, expired yesterday
  IssuedCert not_yet_valid;    // localhost, valid from tomorrow
  IssuedCert chained_server;   // localhost, signed by `intermediate`; its .crt carries the chain
  IssuedCert client_web;       // client usage, URI:kSpiffeWeb
  IssuedCert client_intruder;  // client usage, URI:kSpiffeIntruder
  IssuedCert client_dns_only;  // client usage, CN and DNS:client.example.test, no URI SAN
  IssuedCert other_ca_server;  // localhost, signed by `other_ca`
  IssuedCert other_ca_client;  // client usage, URI:kSpiffeWeb, signed by `other_ca`
};

// ---------------------------------------------------------------------------------------------
// TLS versions, sessions, inspection

// A protocol version bound; kDefault is TLS 1.2 as the minimum (or the maximum when that is
// lower) and TLS 1.3 as the maximum. A bound below TLS 1.2 also lowers that side's security
// level to 0, which OpenSSL 3 needs to speak TLS 1.0 or 1.1.
enum class TlsVersion { kDefault, kTls1_0, kTls1_1, kTls1_2, kTls1_3 };

// A session a client can offer for resumption; freed with its last copy.
using TlsSession = std::shared_ptr<SSL_SESSION>;

// The parts of a certificate the kit reports.
struct CertInfo {
  std::string subject;  // RFC 2253, e.g. "CN=localhost"
  std::string issuer;
  std::vector<std::string> dns_sans, ip_sans, uri_sans;
  std::string sha256;  // of the DER, lower-case hex
};

// Reads the certificate in a PEM file (the first one, when it holds a chain).
CertInfo cert_info_from_file(const std::string& pem_file);

// ---------------------------------------------------------------------------------------------
// The server side

struct TlsServerOptions {
  // What the front door does with an accepted connection:
  // - kTls: a TLS handshake, then relaying to the backend;
  // - kGarbage: writes `garbage` instead of a ServerHello, then holds the connection until the
  //   peer closes it or the front door stops;
  // - kSilent: reads and ignores everything, never answers, holds the connection likewise.
  enum class Mode { kTls, kGarbage, kSilent };
  Mode mode = Mode::kTls;
  std::string garbage = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";

  std::string cert_file, key_file;  // required for kTls; cert_file may carry a chain
  // Certificates chosen by the SNI the client sends (exact, case-insensitive match); any other or
  // no SNI gets cert_file.
  struct NamedCert {
    std::string server_name, cert_file, key_file;
  };
  std::vector<NamedCert> sni_certs;

  // Client certificates: with a client CA the server asks for one and verifies it against that
  // file; with require_client_cert too, a handshake without one fails (TLS 1.3 alert
  // "certificate required"; TLS 1.2 "handshake failure").
  std::string client_ca_file;
  bool require_client_cert = false;

  // ALPN: the protocols the server accepts, in its order of preference; it selects its first one
  // the client offered. Empty: no ALPN is selected (offers are still recorded). When the client
  // offers only others, the handshake goes on without ALPN, or with alpn_mismatch_fatal fails
  // with "no application protocol".
  std::vector<std::string> alpn;
  bool alpn_mismatch_fatal = false;

  TlsVersion min_version = TlsVersion::kDefault;
  TlsVersion max_version = TlsVersion::kDefault;

  // Resumption. session_tickets: stateless tickets (off: SSL_OP_NO_TICKET, and TLS 1.3 then uses
  // stateful tickets from the cache). session_cache: the server's session cache. Both off: no
  // resumption at all (no tickets are sent).
  bool session_tickets = true;
  bool session_cache = true;

  Millis handshake_timeout = kDefaultTimeout;
};

// What the front door saw on one accepted connection. Fields about the handshake are final once
// handshake_done is true; `closed` once the connection has ended.
struct TlsConnectionRecord {
  size_t index = 0;             // 1-based, in accept order
  bool handshake_done = false;  // the handshake ended, well or not (never, in kGarbage/kSilent)
  bool handshake_ok = false;
  // Why the handshake failed: OpenSSL's reasons, e.g. "peer did not return a certificate",
  // "tlsv1 alert unknown ca", "no shared cipher", "wrong version number", or "timed out".
  std::string failure;
  // Why the client's certificate did not verify, e.g. "certificate has expired"; "" when it did.
  std::string verify_error;
  std::string alert_sent, alert_received;  // OpenSSL's long alert descriptions, e.g. "unknown CA"
  std::string sni;                         // the server name the client sent, "" when none
  std::vector<std::string> alpn_offered;   // in the client's order
  std::string alpn;                        // selected, "" when none
  // What was negotiated; set when the handshake succeeded.
  bool resumed = false;
  std::string version;  // "TLSv1.3", "TLSv1.2"
  std::string cipher;   // "TLS_AES_256_GCM_SHA384"
  // The client's certificate when it sent one, as received (also when verifying it failed).
  std::optional<CertInfo> client_cert;
  std::string backend_error;  // the backend could not be reached after the handshake
  bool closed = false;
};

// A TLS server on 127.0.0.1 and an ephemeral port, one thread per connection. In kTls mode each
// connection, once the handshake succeeds, is connected to 127.0.0.1:backend_port and bytes are
// relayed both ways until either side ends (a client's close_notify or FIN becomes a FIN to the
// backend; the backend's end becomes close_notify and the connection closes). With backend_port
// 0 the connection is closed right after the handshake. Destruction (or stop()) ends every
// connection and joins all threads. Throws std::runtime_error when the options do not load.
class TlsFrontDoor {
 public:
  TlsFrontDoor(TlsServerOptions options, uint16_t backend_port);
  ~TlsFrontDoor();
  TlsFrontDoor(const TlsFrontDoor&) = delete;
  TlsFrontDoor& operator=(const TlsFrontDoor&) = delete;

  uint16_t port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"

  size_t accepted() const;
  // Copies of the records so far, in accept order.
  std::vector<TlsConnectionRecord> connections() const;
  // The record of connection `index` (1-based) once its handshake has ended; nullopt on timeout.
  std::optional<TlsConnectionRecord> wait_for_handshake(size_t index,
                                                        Millis timeout = kDefaultTimeout) const;
  // Waits until `n` connections have been accepted / have ended.
  bool wait_for_accepted(size_t n, Millis timeout = kDefaultTimeout) const;
  bool wait_closed(size_t index, Millis timeout = kDefaultTimeout) const;

  // Stops accepting, ends every connection and joins all threads. Idempotent.
  void stop();

 private:
  struct Contexts;
  void accept_loop();
  void serve(int fd, size_t index);
  void serve_tls(int fd, size_t index);
  void hold(int fd, bool send_garbage);
  template <typename F>
  void update(size_t index, F&& change);

  TlsServerOptions options_;
  uint16_t backend_port_;
  std::unique_ptr<Contexts> contexts_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  uint16_t port_ = 0;
  bool stopping_ = false;  // guarded by mutex_
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<TlsConnectionRecord> records_;
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

// ---------------------------------------------------------------------------------------------
// The client side

struct TlsClientOptions {
  std::string sni = "localhost";  // "" sends no server_name extension
  std::vector<std::string> alpn;  // offered in this order; empty: no ALPN extension
  // Verification: with a CA file the server's chain must verify against it and match
  // verify_name (a DNS name or an IP literal; "" means the SNI, and no name check without one).
  // Without a CA file anything is accepted (verify_result() then reports a check against an
  // empty store, usually "unable to get local issuer certificate").
  std::string ca_file;
  std::string verify_name;
  std::string cert_file, key_file;  // a client certificate (and chain) to present
  TlsVersion min_version = TlsVersion::kDefault;
  TlsVersion max_version = TlsVersion::kDefault;
  TlsSession session;  // offered for resumption
};

// A ClientConn over TLS: connect() makes the TCP connection and the handshake; then every
// reader and writer of ClientConn works over TLS. shutdown_write() sends close_notify and FIN;
// close() sends close_notify unless `reset`.
//
// A failed handshake leaves the connection closed, with handshake_error(), alert_received() and
// verify_result() saying why. In TLS 1.3 the server judges the client's certificate after the
// client's handshake has completed: its alert ("certificate required", "unknown CA") is seen by
// the next read or write, which fails with it in last_error_text() and alert_received(). (A
// write reads what has arrived first, so the alert is not lost to the reset the server's close
// causes.)
//
// A clean end of the stream is close_notify; a FIN without one also reads as kClosed (many
// servers skip it) and close_notify_received() tells them apart.
class TlsClientConn : public ClientConn {
 public:
  TlsClientConn();
  // Connects and handshakes; see connected() and handshake_error().
  TlsClientConn(uint16_t port, TlsClientOptions options, Millis timeout = kDefaultTimeout);
  ~TlsClientConn() override;
  TlsClientConn(TlsClientConn&& other) noexcept;
  TlsClientConn& operator=(TlsClientConn&& other) noexcept;

  // Connects to 127.0.0.1:port and completes the handshake within `timeout`. False on failure:
  // the socket is then closed, last_error_text() says why and handshake_error() has the TLS
  // reason ("" when the TCP connection itself failed). Closes a previous connection first and
  // forgets its state.
  bool connect(uint16_t port, TlsClientOptions options, Millis timeout = kDefaultTimeout);
  void shutdown_write() override;
  void close(bool reset = false) override;

  bool handshake_ok() const { return handshake_ok_; }
  // OpenSSL's reasons for a failed handshake (or TLS read/write), e.g. "certificate verify
  // failed", "tlsv1 alert unknown ca", "wrong version number"; "" when none.
  const std::string& handshake_error() const { return handshake_error_; }
  // The last alert received / sent, as OpenSSL's long descriptions ("unknown CA", "certificate
  // required", "handshake failure", "close notify"); "" when none.
  const std::string& alert_received() const { return alert_received_; }
  const std::string& alert_sent() const { return alert_sent_; }
  // The outcome of checking the server's chain (and name, when asked): "ok" or OpenSSL's text,
  // e.g. "certificate has expired", "unable to get local issuer certificate".
  const std::string& verify_result() const { return verify_result_; }
  bool close_notify_received() const { return close_notify_received_; }

  const std::string& version() const { return version_; }  // "TLSv1.3"
  const std::string& cipher() const { return cipher_; }
  const std::string& alpn() const { return alpn_; }  // selected, "" when none
  bool resumed() const { return resumed_; }
  const std::optional<CertInfo>& server_cert() const { return server_cert_; }
  size_t server_chain_length() const { return server_chain_length_; }  // certificates sent

  // The latest session the server offered for resumption, or null. A TLS 1.2 session is there
  // once connected; a TLS 1.3 server sends tickets after the handshake, which arrive with a later
  // read. With `wait` > 0 this reads until one arrives or `wait` passes, keeping any data read
  // for the readers (a failure or close found meanwhile is reported by the next read).
  TlsSession get_session(Millis wait = Millis{0});

  // Sends `count` TLS 1.3 KeyUpdate messages, each asking the server to update its keys too when
  // `request_update`, reading nothing meanwhile. Returns how many went before the connection
  // failed or `timeout` passed.
  size_t send_key_updates(size_t count, bool request_update, Millis timeout = kDefaultTimeout);

 protected:
  Io transport_read(char* out, size_t size, size_t& moved) override;
  Io transport_write(const char* data, size_t size, size_t& moved) override;

 private:
  friend struct TlsClientCallbacks;
  void free_tls();
  Io tls_failure(const char* what, int result);
  // Reads, without waiting, whatever has arrived into the read buffer; kFailed (with fail()
  // called) when that meets an alert or error, else kDone.
  Io read_arrived();

  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  bool handshake_ok_ = false;
  bool close_notify_sent_ = false;
  bool close_notify_received_ = false;
  std::string handshake_error_;
  std::string alert_received_, alert_sent_;
  std::string verify_result_;
  std::string version_, cipher_, alpn_;
  bool resumed_ = false;
  std::optional<CertInfo> server_cert_;
  size_t server_chain_length_ = 0;
  TlsSession session_;
};

// One request on a new TLS connection, as http_request; nullopt when it fails (`error` says why,
// the TLS reason included).
std::optional<Response> https_request(uint16_t port, const TlsClientOptions& options,
                                      std::string_view method, std::string_view target,
                                      const HeaderList& headers = {}, std::string_view body = {},
                                      Millis timeout = kDefaultTimeout,
                                      std::string* error = nullptr);
std::optional<Response> https_get(uint16_t port, const TlsClientOptions& options,
                                  std::string_view target, const HeaderList& headers = {},
                                  Millis timeout = kDefaultTimeout, std::string* error = nullptr);

}  // namespace bulwark::test
