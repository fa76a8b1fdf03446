#include "proxy/tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <unordered_set>

#include "proxy/files.h"
#include "proxy/transport.h"

namespace bulwark {
namespace {

// The ex_data slot of an SSL that points to its TlsConnectionData.
int connection_data_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// Algorithms fetched once for the process: a fetch per handshake takes OpenSSL 3's provider locks.
const EVP_CIPHER* ticket_cipher() {
  static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
  return cipher;
}
const EVP_MD* sha256() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  if (e == 0) return errno != 0 ? std::strerror(errno) : "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  // "error:0A00018F:SSL routines::ee key too small" -> the part after the last "::" or ':'.
  std::string_view s(buf);
  size_t at = s.rfind(':');
  return std::string(at == std::string_view::npos ? s : s.substr(at + 1));
}

// Size bounds of the files TLS reads (read_regular_file): a certificate chain or a key is a
// few KiB; a CA bundle (the system's is about 200 KiB) may be larger.
constexpr size_t kMaxCertificateFile = 1 << 20;
constexpr size_t kMaxCaFile = 16 << 20;
// The most bytes of CA names a listener lists when it asks for a client certificate: the list
// must fit a handshake message field of 64 KiB, or every handshake fails (about 600 names).
constexpr size_t kMaxAdvertisedCaNames = 48 << 10;
// The longest certificate chain a client may send a listener.
constexpr long kMaxClientCertificateChain = 32 << 10;

// A memory BIO over `bytes` (which must outlive it).
BIO* memory_bio(const std::string& bytes) {
  return BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size()));
}

std::string where(const config::SourceLocation& at) {
  if (at.file.empty()) return {};
  return at.file + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) + ": ";
}

int64_t to_epoch(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A certificate chain and key read from PEM files, checked to belong together and to be valid now.
struct LoadedCertificate {
  X509* leaf = nullptr;
  STACK_OF(X509) * chain = nullptr;
  EVP_PKEY* key = nullptr;
  ~LoadedCertificate() {
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
  }
};

// On failure `error` says what is wrong and `at` is the place of the file at fault (the key's or
// the certificate's); a certificate not valid yet sets `valid_from` (when it will be).
bool load_certificate(const std::string& cert_path, const std::string& key_path,
                      const config::SourceLocation& cert_at,
                      const config::SourceLocation& key_at, LoadedCertificate& out,
                      std::string* error, int64_t* valid_from) {
  const auto fail = [&](const config::SourceLocation& at, std::string what) {
    *error = where(at) + what;
    return false;
  };
  // Read as bytes first: OpenSSL's own file reading would block on a FIFO and read /dev/zero
  // until memory ran out, on the main thread.
  std::string bytes, why;
  if (!read_regular_file(cert_path, kMaxCertificateFile, &bytes, &why)) {
    return fail(cert_at, "cannot read certificate " + cert_path + ": " + why);
  }
  BIO* bio = memory_bio(bytes);
  out.leaf = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  if (out.leaf == nullptr) {
    BIO_free(bio);
    return fail(cert_at, "no PEM certificate in " + cert_path + ": " + openssl_error());
  }
  out.chain = sk_X509_new_null();
  while (X509* extra = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    sk_X509_push(out.chain, extra);
  }
  ERR_clear_error();  // the end of the file reads as an error
  BIO_free(bio);

  if (!read_regular_file(key_path, kMaxCertificateFile, &bytes, &why)) {
    return fail(key_at, "cannot read private key " + key_path + ": " + why);
  }
  bio = memory_bio(bytes);
  // No passphrase callback would make OpenSSL ask for one on the terminal, blocking the thread.
  auto no_passphrase = [](char*, int, int, void*) { return -1; };
  out.key = PEM_read_bio_PrivateKey(bio, nullptr, no_passphrase, nullptr);
  BIO_free(bio);
  if (out.key == nullptr) {
    const bool encrypted = bytes.find("ENCRYPTED") != std::string::npos;
    std::string what = encrypted ? "private key " + key_path +
                                       " is encrypted: bulwark cannot ask for a passphrase (store "
                                       "it unencrypted, readable only by bulwark's user)"
                                 : "no PEM private key in " + key_path + ": " + openssl_error();
    ERR_clear_error();
    return fail(key_at, std::move(what));
  }
  if (X509_check_private_key(out.leaf, out.key) != 1) {
    ERR_clear_error();
    return fail(key_at, "private key " + key_path + " does not match certificate " + cert_path);
  }
  if (X509_cmp_current_time(X509_get0_notBefore(out.leaf)) > 0) {
    if (valid_from != nullptr) *valid_from = to_epoch(X509_get0_notBefore(out.leaf));
    return fail(cert_at, "certificate " + cert_path + " is not valid yet");
  }
  if (X509_cmp_current_time(X509_get0_notAfter(out.leaf)) < 0) {
    return fail(cert_at, "certificate " + cert_path + " has expired");
  }
  return true;
}

}  // namespace

std::vector<std::string> sans_of(X509* cert, int type) {
  std::vector<std::string> out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != type) continue;
    const ASN1_IA5STRING* s = type == GEN_DNS ? n->d.dNSName : n->d.uniformResourceIdentifier;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
  }
  GENERAL_NAMES_free(names);
  return out;
}

namespace {

bool san_matches(std::string_view san, const config::SanMatch& m) {
  if (m.prefix) return san.substr(0, m.value.size()) == m.value;
  return san == m.value;
}

// Counts the handshake messages a peer sends after the handshake (TlsConnectionData).
void count_post_handshake(int write_p, int /*version*/, int content_type, const void* /*buf*/,
                          size_t /*len*/, SSL* ssl, void* /*arg*/) {
  if (write_p != 0 || content_type != SSL3_RT_HANDSHAKE) return;
  TlsConnectionData* data = connection_data(ssl);
  if (data != nullptr && data->established) ++data->post_handshake_messages;
}

// The part of SSL_CTX setup listeners and clusters share.
SSL_CTX* new_ctx(const SSL_METHOD* method, config::TlsVersion min_version) {
  SSL_CTX* ctx = SSL_CTX_new(method);
  if (ctx == nullptr) return nullptr;
  SSL_CTX_set_min_proto_version(
      ctx, min_version == config::TlsVersion::k1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
  // No renegotiation (a DoS lever, and nothing HTTP/1.1 needs).
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Writes go out record by record from the Outbox's own storage (which stays put until the
  // write ends), and an idle connection gives its 34 KiB of record buffers back.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  // SSL_read returns once what was read ahead is used up, even with no application data: with
  // auto-retry it went on reading the socket for as long as a peer kept sending KeyUpdates (each
  // answered by a write), a whole worker's time for one connection. The transport counts them.
  SSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY);
  SSL_CTX_set_msg_callback(ctx, count_post_handshake);
  // Read as much as the socket has, not a record header and then its body: half the syscalls.
  SSL_CTX_set_read_ahead(ctx, 1);
  return ctx;
}

// Reads a CA file (a PEM bundle of certificates) as bytes: see load_certificate.
bool read_ca_file(const std::string& path, const config::SourceLocation& at, std::string* pem,
                  std::string* error) {
  std::string why;
  if (read_regular_file(path, kMaxCaFile, pem, &why)) return true;
  *error = where(at) + "cannot load CA file " + path + ": " + why;
  return false;
}

// Loads the CA file `path` (its bytes: `pem`) into `ctx`'s trust store, and the names of its
// certificates into the list a server sends when asking for a client certificate when
// `client_names` (unless they exceed what that message can carry: the list is optional, and
// clients then choose their certificate themselves). CRLs in the file are not used: bulwark
// checks no revocation. A configured file (not the system store) whose every certificate has expired
// is refused, and its expiry (its last certificate's) goes into `facts`, for the metric and
// --check.
bool load_ca(SSL_CTX* ctx, const std::string& path, const std::string& pem,
             const config::SourceLocation& at, std::vector<CertificateFacts>* facts,
             bool client_names, std::string* error) {
  BIO* bio = memory_bio(pem);
  STACK_OF(X509_INFO)* infos = PEM_X509_INFO_read_bio(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ERR_clear_error();  // the end of the bytes reads as an error
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  STACK_OF(X509_NAME)* names = client_names ? sk_X509_NAME_new_null() : nullptr;
  std::unordered_set<std::string> named;  // DER of the names listed (a bundle may repeat one)
  size_t names_bytes = 0;
  int certificates = 0;
  int64_t last_expiry = 0;
  for (int i = 0; infos != nullptr && i < sk_X509_INFO_num(infos); ++i) {
    X509_INFO* info = sk_X509_INFO_value(infos, i);
    if (info->x509 == nullptr) continue;
    ++certificates;
    X509_STORE_add_cert(store, info->x509);
    last_expiry = std::max(last_expiry, to_epoch(X509_get0_notAfter(info->x509)));
    if (names != nullptr) {
      X509_NAME* subject = X509_get_subject_name(info->x509);
      unsigned char* der = nullptr;
      const int len = i2d_X509_NAME(subject, &der);
      if (len > 0 && named.emplace(reinterpret_cast<char*>(der), static_cast<size_t>(len)).second) {
        names_bytes += 2 + static_cast<size_t>(len);
        sk_X509_NAME_push(names, X509_NAME_dup(subject));
      }
      OPENSSL_free(der);
      if (names_bytes > kMaxAdvertisedCaNames) {  // more than a CertificateRequest carries
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        names = nullptr;
      }
    }
  }
  sk_X509_INFO_pop_free(infos, X509_INFO_free);
  ERR_clear_error();  // a certificate already in the store
  if (certificates == 0) {
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    *error = where(at) + "cannot load CA file " + path + ": no PEM certificate in it";
    return false;
  }
  if (names != nullptr) SSL_CTX_set_client_CA_list(ctx, names);  // takes them
  if (facts == nullptr) return true;
  if (last_expiry < static_cast<int64_t>(time(nullptr))) {
    *error = where(at) + "every certificate of CA file " + path + " has expired";
    return false;
  }
  facts->push_back({path, last_expiry, true});
  return true;
}

std::vector<unsigned char> alpn_wire(const std::vector<std::string>& protocols) {
  std::vector<unsigned char> out;
  for (const std::string& p : protocols) {
    out.push_back(static_cast<unsigned char>(p.size()));
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

// Refuses a peer certificate whose identity is not allowed (at depth 0, once the chain verified).
int verify_peer(int ok, X509_STORE_CTX* store) {
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  TlsConnectionData* data = ssl != nullptr ? connection_data(ssl) : nullptr;
  if (!ok || data == nullptr || X509_STORE_CTX_get_error_depth(store) != 0) return ok;
  if (data->allowed_sans == nullptr || data->allowed_sans->empty()) return ok;
  if (san_allowed(X509_STORE_CTX_get_current_cert(store), *data->allowed_sans)) return ok;
  data->san_refused = true;
  X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
  return 0;
}

}  // namespace

const char* tls_error_name(TlsError error) {
  switch (error) {
    case TlsError::kHandshakeTimeout:
      return "handshake_timeout";
    case TlsError::kClosed:
      return "closed_during_handshake";
    case TlsError::kHttpRequest:
      return "http_request_on_tls_port";
    case TlsError::kNotTls:
      return "peer_not_tls";
    case TlsError::kVersion:
      return "version_mismatch";
    case TlsError::kProtocol:
      return "protocol_error";
    case TlsError::kNoCertificate:
      return "no_client_certificate";
    case TlsError::kUntrusted:
      return "certificate_untrusted";
    case TlsError::kExpired:
      return "certificate_expired";
    case TlsError::kHostnameMismatch:
      return "hostname_mismatch";
    case TlsError::kSanNotAllowed:
      return "san_not_allowed";
    case TlsError::kPeerAlert:
      return "peer_alert";
    case TlsError::kInternal:
    case TlsError::kCount:
      break;
  }
  return "internal";
}

void set_connection_data(SSL* ssl, TlsConnectionData* data) {
  SSL_set_ex_data(ssl, connection_data_index(), data);
}

TlsConnectionData* connection_data(const SSL* ssl) {
  return static_cast<TlsConnectionData*>(SSL_get_ex_data(ssl, connection_data_index()));
}

std::optional<std::string> allowed_san(X509* cert, const std::vector<config::SanMatch>& allowed) {
  // A name with a scheme ("spiffe://...") is a URI SAN, anything else a DNS SAN: a DNS SAN
  // spelled like a SPIFFE ID is not that identity.
  for (const config::SanMatch& m : allowed) {
    const int type = m.value.find("://") != std::string::npos ? GEN_URI : GEN_DNS;
    for (const std::string& san : sans_of(cert, type)) {
      if (san_matches(san, m)) return san;
    }
  }
  return std::nullopt;
}

bool san_allowed(X509* cert, const std::vector<config::SanMatch>& allowed) {
  return allowed_san(cert, allowed).has_value();
}

std::string peer_identity(X509* cert, const std::vector<config::SanMatch>& allowed) {
  if (!allowed.empty()) {
    if (auto san = allowed_san(cert, allowed)) return *san;  // the name it was let in by
  }
  std::vector<std::string> uris = sans_of(cert, GEN_URI);
  if (!uris.empty()) return uris.front();
  std::vector<std::string> dns = sans_of(cert, GEN_DNS);
  return dns.empty() ? std::string() : dns.front();
}

std::string forwarded_client_cert(X509* cert) {
  std::string out = "Hash=";
  unsigned char* der = nullptr;
  int len = i2d_X509(cert, &der);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  if (len > 0 && EVP_Digest(der, static_cast<size_t>(len), digest, &dlen, sha256(), nullptr) == 1) {
    static constexpr char kHex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < dlen; ++i) {
      out.push_back(kHex[digest[i] >> 4]);
      out.push_back(kHex[digest[i] & 15]);
    }
  }
  OPENSSL_free(der);
  // A SAN is the CA's text, not ours: a control character (CR LF would end the header and
  // start another), a space, a byte outside ASCII and '%' itself are percent-encoded. Then a
  // value with a character that delimits XFCC elements or fields is quoted (as Envoy does).
  auto append = [&out](const char* key, const std::string& raw) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string value;
    for (char ch : raw) {
      const auto c = static_cast<unsigned char>(ch);
      if (c <= 0x20 || c >= 0x7f || c == '%') {
        value.push_back('%');
        value.push_back(kHex[c >> 4]);
        value.push_back(kHex[c & 15]);
      } else {
        value.push_back(ch);
      }
    }
    out.append(";").append(key).append("=");
    if (value.find_first_of(",;=\"") == std::string::npos) {
      out.append(value);
      return;
    }
    out.push_back('"');
    for (char c : value) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
  };
  for (const std::string& uri : sans_of(cert, GEN_URI)) append("URI", uri);
  for (const std::string& dns : sans_of(cert, GEN_DNS)) append("DNS", dns);
  return out;
}

// ---- Ticket keys ----

bool TicketKeys::current(int64_t now_s, Key& out) {
  std::lock_guard lock(mutex_);
  if (keys_.empty() || now_s - keys_.front().created_s >= kLifetimeS) {
    Key k;
    if (RAND_bytes(k.name.data(), k.name.size()) != 1 ||
        RAND_bytes(k.aes.data(), k.aes.size()) != 1 ||
        RAND_bytes(k.hmac.data(), k.hmac.size()) != 1) {
      return false;
    }
    k.created_s = now_s;
    keys_.insert(keys_.begin(), k);
    if (keys_.size() > 3) keys_.pop_back();
  }
  out = keys_.front();
  return true;
}

bool TicketKeys::find(const unsigned char* name, Key& out, bool& fresh) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (std::memcmp(keys_[i].name.data(), name, keys_[i].name.size()) == 0) {
      out = keys_[i];
      fresh = i == 0;
      return true;
    }
  }
  return false;
}

// ---- Server contexts ----

std::shared_ptr<const TlsServerContext> TlsServerContext::build(
    const config::ListenerTlsConfig& config, const std::string& listener_name,
    std::shared_ptr<TlsStats> stats, std::shared_ptr<TicketKeys> keys, std::string* error,
    int64_t* valid_from) {
  std::shared_ptr<TlsServerContext> c(new TlsServerContext());
  c->config_ = config;
  c->name_ = listener_name;
  c->stats_ = std::move(stats);
  c->keys_ = std::move(keys);
  c->alpn_ = alpn_wire(config.alpn);
  // Sessions (cached or ticketed) resume only under the same verification policy: the policy
  // is part of the session id context.
  // The CA's contents, not its path: a CA file replaced in place must not let sessions verified
  // against the old one resume.
  // Whether a certificate is required, the versions and ciphers are part of it too: sessions made
  // when a certificate was optional must not resume once it is required.
  std::string client_ca;
  if (!config.client_ca.empty() &&
      !read_ca_file(config.client_ca, config.client_ca_at, &client_ca, error)) {
    return nullptr;
  }
  std::string policy =
      listener_name + "\n" + config.client_ca + "\n" + client_ca +
      "\nrequire=" + (config.require_client_certificate ? "1" : "0") +
      "\nmin=" + config::to_string(config.min_version) + "\nciphers=" + config.ciphers;
  for (const config::SanMatch& m : config.allowed_client_sans) {
    policy += "\n" + m.value + (m.prefix ? "*" : "");
  }
  unsigned char sid[EVP_MAX_MD_SIZE];
  unsigned int sid_len = 0;
  EVP_Digest(policy.data(), policy.size(), sid, &sid_len, sha256(), nullptr);
  sid_len = std::min<unsigned int>(sid_len, SSL_MAX_SID_CTX_LENGTH);
  std::memcpy(&c->policy_id_, sid, std::min<size_t>(sid_len, sizeof c->policy_id_));

  for (const config::TlsCertificateConfig& cc : config.certificates) {
    LoadedCertificate loaded;
    if (!load_certificate(cc.cert, cc.key, cc.cert_at, cc.key_at, loaded, error, valid_from)) {
      return nullptr;
    }
    Cert cert;
    cert.ctx = new_ctx(TLS_server_method(), config.min_version);
    if (cert.ctx == nullptr) {
      *error = where(cc.location) + "cannot make a TLS context: " + openssl_error();
      return nullptr;
    }
    // A client that closes without close_notify ends its stream (browsers and curl do; HTTP
    // frames every request). An upstream that does is another matter (TlsTransport::read_once).
    SSL_CTX_set_options(cert.ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    c->certs_.push_back(cert);  // freed by the destructor from here
    SSL_CTX* ctx = cert.ctx;
    if (SSL_CTX_use_cert_and_key(ctx, loaded.leaf, loaded.key, loaded.chain, 1) != 1) {
      *error = where(cc.cert_at) + "cannot use certificate " + cc.cert + ": " + openssl_error();
      return nullptr;
    }
    if (!config.ciphers.empty() && SSL_CTX_set_cipher_list(ctx, config.ciphers.c_str()) != 1) {
      *error = where(config.ciphers_at) + "no usable cipher in \"" + config.ciphers + "\"";
      ERR_clear_error();
      return nullptr;
    }
    for (const std::string& dns : sans_of(loaded.leaf, GEN_DNS)) {
      c->certs_.back().names.push_back(lower(dns));
    }
    if (c->certs_.back().names.empty()) {
      char cn[256];
      int n = X509_NAME_get_text_by_NID(X509_get_subject_name(loaded.leaf), NID_commonName, cn,
                                        sizeof cn);
      if (n > 0) c->certs_.back().names.push_back(lower(std::string_view(cn, n)));
    }
    c->facts_.push_back({cc.cert, to_epoch(X509_get0_notAfter(loaded.leaf))});

    SSL_CTX_set_session_id_context(ctx, sid, sid_len);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 20000);
    SSL_CTX_set_timeout(ctx, 3 * 3600);  // as long as a ticket key is accepted
    SSL_CTX_set_num_tickets(ctx, 1);     // TLS 1.3 sends two by default; HTTP/1.1 needs one
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &TlsServerContext::on_ticket_key);
    SSL_CTX_set_app_data(ctx, c.get());
    SSL_CTX_set_alpn_select_cb(ctx, &TlsServerContext::on_alpn, c.get());
    SSL_CTX_set_tlsext_servername_callback(ctx, &TlsServerContext::on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, c.get());
    if (!config.client_ca.empty()) {
      // Its expiry is reported once, with the first certificate's context.
      if (!load_ca(ctx, config.client_ca, client_ca, config.client_ca_at,
                   c->certs_.size() == 1 ? &c->facts_ : nullptr, true, error)) {
        return nullptr;
      }
      // A client's certificate chain (a SPIFFE leaf, maybe an intermediate) is a few KiB.
      // OpenSSL allocates the length a Certificate message announces, up to this, as soon as
      // its header is in (100 KiB by default), and holds it until the handshake times out.
      SSL_CTX_set_max_cert_list(ctx, kMaxClientCertificateChain);
      int mode = SSL_VERIFY_PEER;
      if (config.require_client_certificate) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
      SSL_CTX_set_verify(ctx, mode, verify_peer);
    }
  }
  return c;
}

TlsServerContext::~TlsServerContext() {
  for (Cert& c : certs_) SSL_CTX_free(c.ctx);
}

SSL* TlsServerContext::new_ssl() const {
  SSL* ssl = SSL_new(certs_.front().ctx);
  if (ssl != nullptr) SSL_set_accept_state(ssl);
  return ssl;
}

const TlsServerContext::Cert* TlsServerContext::pick(std::string_view server_name) const {
  std::string name = lower(server_name);
  for (const Cert& c : certs_) {
    if (std::find(c.names.begin(), c.names.end(), name) != c.names.end()) return &c;
  }
  // A wildcard covers one label: "*.example.com" serves "a.example.com", not "a.b.example.com".
  size_t dot = name.find('.');
  if (dot == std::string::npos || dot == 0) return nullptr;
  std::string wildcard = "*" + name.substr(dot);
  for (const Cert& c : certs_) {
    if (std::find(c.names.begin(), c.names.end(), wildcard) != c.names.end()) return &c;
  }
  return nullptr;
}

int TlsServerContext::on_servername(SSL* ssl, int*, void* arg) {
  const auto* self = static_cast<const TlsServerContext*>(arg);
  if (self->certs_.size() < 2) return SSL_TLSEXT_ERR_OK;
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_OK;  // the first certificate
  const Cert* c = self->pick(name);
  if (c != nullptr && c->ctx != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, c->ctx);
  return SSL_TLSEXT_ERR_OK;
}

int TlsServerContext::on_alpn(SSL*, const unsigned char** out, unsigned char* outlen,
                              const unsigned char* in, unsigned int inlen, void* arg) {
  const auto* self = static_cast<const TlsServerContext*>(arg);
  // Our order wins: the first of our protocols the client offers.
  const std::vector<unsigned char>& ours = self->alpn_;
  for (size_t i = 0; i < ours.size(); i += 1 + ours[i]) {
    const unsigned char* p = &ours[i];
    for (unsigned int j = 0; j < inlen; j += 1 + in[j]) {
      if (in[j] == p[0] && j + 1 + in[j] <= inlen && std::memcmp(&in[j + 1], p + 1, p[0]) == 0) {
        *out = &in[j + 1];
        *outlen = in[j];
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  // A client of HTTP/1.0 only (curl --http1.0) is served as on a plaintext listener, where
  // bulwark answers HTTP/1.0 too: http/1.1 in the list stands for both.
  static constexpr unsigned char kHttp10[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '0'};
  static constexpr unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  const bool speaks_11 = std::search(ours.begin(), ours.end(), std::begin(kHttp11),
                                     std::end(kHttp11)) != ours.end();
  for (unsigned int j = 0; speaks_11 && j < inlen; j += 1 + in[j]) {
    if (j + sizeof kHttp10 <= inlen && std::memcmp(&in[j], kHttp10, sizeof kHttp10) == 0) {
      *out = &in[j + 1];
      *outlen = in[j];
      return SSL_TLSEXT_ERR_OK;
    }
  }
  // The client speaks none of our protocols (h2 only, say): RFC 7301's no_application_protocol.
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int TlsServerContext::on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv,
                                    EVP_CIPHER_CTX* ectx, EVP_MAC_CTX* hctx, int enc) {
  const auto* self =
      static_cast<const TlsServerContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (self == nullptr || self->keys_ == nullptr || ticket_cipher() == nullptr) return -1;
  TicketKeys::Key key;
  bool fresh = true;
  if (enc == 1) {
    if (!self->keys_->current(static_cast<int64_t>(time(nullptr)), key)) return -1;
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(ticket_cipher())) != 1) return -1;
    std::memcpy(name, key.name.data(), key.name.size());
    if (EVP_EncryptInit_ex(ectx, ticket_cipher(), nullptr, key.aes.data(), iv) != 1) return -1;
  } else {
    if (!self->keys_->find(name, key, fresh)) return 0;  // unknown key: a full handshake
    if (EVP_DecryptInit_ex(ectx, ticket_cipher(), nullptr, key.aes.data(), iv) != 1) return -1;
  }
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac.data(), key.hmac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_end()};
  if (EVP_MAC_CTX_set_params(hctx, params) != 1) return -1;
  // 2: issue a new ticket. Always in TLS 1.3, where clients use a ticket once (with 1, OpenSSL
  // sends none after a resumption, so every other connection would be a full handshake); in
  // TLS 1.2 when an older key made it.
  return fresh && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
}

// ---- Client contexts ----

std::shared_ptr<const TlsClientContext> TlsClientContext::build(
    const config::ClusterTlsConfig& config, const std::string& cluster_name,
    std::shared_ptr<TlsStats> stats, std::string* error, int64_t* valid_from) {
  std::shared_ptr<TlsClientContext> c(new TlsClientContext());
  c->config_ = config;
  c->name_ = cluster_name;
  c->stats_ = std::move(stats);
  c->ctx_ = new_ctx(TLS_client_method(), config.min_version);
  if (c->ctx_ == nullptr) {
    *error = where(config.location) + "cannot make a TLS context: " + openssl_error();
    return nullptr;
  }
  SSL_CTX* ctx = c->ctx_;
  if (config.verify) {
    // The system store is the bundle file, loaded now: the hashed directory would be searched
    // file by file during handshakes.
    std::string ca = config.ca;
    if (ca.empty()) {
      const char* env = getenv(X509_get_default_cert_file_env());
      ca = env != nullptr ? env : X509_get_default_cert_file();
    }
    // The system store is not ours to judge: only a configured file's expiry is reported.
    const config::SourceLocation& at = config.ca.empty() ? config.location : config.ca_at;
    std::string pem;
    if (!read_ca_file(ca, at, &pem, error) ||
        !load_ca(ctx, ca, pem, at, config.ca.empty() ? nullptr : &c->facts_, false, error)) {
      return nullptr;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_peer);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!config.cert.empty()) {
    LoadedCertificate loaded;
    if (!load_certificate(config.cert, config.key, config.cert_at, config.key_at, loaded, error,
                          valid_from)) {
      return nullptr;
    }
    if (SSL_CTX_use_cert_and_key(ctx, loaded.leaf, loaded.key, loaded.chain, 1) != 1) {
      *error =
          where(config.cert_at) + "cannot use certificate " + config.cert + ": " + openssl_error();
      return nullptr;
    }
    c->facts_.push_back({config.cert, to_epoch(X509_get0_notAfter(loaded.leaf))});
  }
  std::vector<unsigned char> alpn = alpn_wire(config.alpn);
  if (!alpn.empty() && SSL_CTX_set_alpn_protos(ctx, alpn.data(), alpn.size()) != 0) {
    *error = where(config.location) + "cannot set ALPN: " + openssl_error();
    return nullptr;
  }
  // Sessions are kept by each worker's pool of an endpoint (TlsSessionCache), not by OpenSSL's
  // shared cache with its lock.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &TlsClientContext::on_new_session);
  return c;
}

TlsClientContext::TlsClientContext() {
  static std::atomic<uint64_t> next{1};
  id_ = next.fetch_add(1, std::memory_order_relaxed);
}

TlsClientContext::~TlsClientContext() { SSL_CTX_free(ctx_); }

std::string TlsClientContext::server_name_for(std::string_view endpoint_name) const {
  if (!config_.sni.empty()) return config_.sni;
  std::string_view host = endpoint_name;
  if (!host.empty() && host.front() == '[') return {};  // an IPv6 literal
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(AF_INET6, std::string(host).c_str(), buf) == 1) return {};  // one without a port
  size_t colon = host.rfind(':');
  if (colon != std::string_view::npos) host = host.substr(0, colon);
  std::string h(host);
  if (inet_pton(AF_INET, h.c_str(), buf) == 1 || inet_pton(AF_INET6, h.c_str(), buf) == 1) {
    return {};
  }
  return h;
}

SSL* TlsClientContext::new_ssl(const std::string& server_name, SSL_SESSION* session) const {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr) return nullptr;
  SSL_set_connect_state(ssl);
  if (!server_name.empty()) {
    SSL_set_tlsext_host_name(ssl, server_name.c_str());
    if (config_.verify && config_.verify_hostname && config_.allowed_server_sans.empty()) {
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      SSL_set1_host(ssl, server_name.c_str());
    }
  }
  if (session != nullptr) SSL_set_session(ssl, session);
  return ssl;
}

int TlsClientContext::on_new_session(SSL* ssl, SSL_SESSION* session) {
  TlsConnectionData* data = connection_data(ssl);
  if (data == nullptr || data->sessions == nullptr) return 0;
  data->sessions->put(session, data->context_id);
  return 1;  // we keep the reference
}

TlsSessionCache::~TlsSessionCache() { SSL_SESSION_free(session_); }

void TlsSessionCache::put(SSL_SESSION* session, uint64_t context_id) {
  SSL_SESSION_free(session_);
  session_ = session;
  context_id_ = context_id;
}

}  // namespace bulwark
