#pragma once
// OpenSSL helpers shared by the TLS kit's sources (harness_tls_*.cpp). Tests include tls_kit.h,
// not this.

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "tests/support/tls_kit.h"

namespace bulwark::test::tls_detail {

// Owners that free OpenSSL objects with their own free functions.
template <auto Free>
struct Freer {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using BioPtr = std::unique_ptr<BIO, Freer<BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, Freer<X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Freer<EVP_PKEY_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, Freer<SSL_CTX_free>>;

// Takes every error queued on this thread and joins their reasons with "; " (e.g. "certificate
// verify failed"; the full "error:..." line when OpenSSL has no reason text). "" when none.
std::string drain_errors();

// Throws std::runtime_error("WHAT: " + drain_errors()).
[[noreturn]] void throw_openssl(const std::string& what);

// The subject, issuer, SANs and SHA-256 of a certificate.
CertInfo cert_info(X509* cert);

// SHA-256 of `data`, lower-case hex.
std::string sha256_hex(const std::string& data);

// The OpenSSL protocol version for a bound; 0 for kDefault.
int protocol_version(TlsVersion version);

// Applies min/max versions to a context (kDefault: 1.2 to 1.3); a bound below TLS 1.2 lowers the
// security level to 0, without which OpenSSL 3 refuses to negotiate TLS 1.0 or 1.1.
void set_versions(SSL_CTX* ctx, TlsVersion min, TlsVersion max);

// A BIO over a connected non-blocking socket that it does not own: like OpenSSL's socket BIO,
// but writing with MSG_NOSIGNAL, so a peer that has gone away gives EPIPE instead of killing the
// test process with SIGPIPE.
BIO* socket_bio(int fd);

// An alert's description in OpenSSL's long style ("unknown CA"), including the TLS 1.3 ones
// OpenSSL 3.0 calls "unknown" ("certificate required"). `value` is the info callback's.
std::string alert_text(int value);

// ALPN protocol names in wire format (each prefixed by its length).
std::string alpn_wire(const std::vector<std::string>& protocols);

}  // namespace bulwark::test::tls_detail
