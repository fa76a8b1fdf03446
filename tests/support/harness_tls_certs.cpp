// The certificate part of the TLS kit (TestCa, TestPki, CertInfo) and the OpenSSL helpers the
// rest of the kit shares (tls_openssl.h).

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <stdexcept>

#include "tests/support/tls_kit.h"
#include "tests/support/tls_openssl.h"

namespace bulwark::test {

namespace tls_detail {

std::string drain_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    if (!text.empty()) text += "; ";
    if (const char* reason = ERR_reason_error_string(code)) {
      text += reason;
    } else {
      char line[256];
      ERR_error_string_n(code, line, sizeof line);
      text += line;
    }
  }
  return text;
}

void throw_openssl(const std::string& what) {
  throw std::runtime_error(what + ": " + drain_errors());
}

std::string sha256_hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (!EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr)) {
    throw_openssl("SHA-256");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < size; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return hex;
}

namespace {

std::string name_text(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string der_of(X509* cert) {
  unsigned char* der = nullptr;
  int size = i2d_X509(cert, &der);
  if (size <= 0) throw_openssl("i2d_X509");
  std::string bytes(reinterpret_cast<char*>(der), static_cast<size_t>(size));
  OPENSSL_free(der);
  return bytes;
}

std::string asn1_text(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
}

}  // namespace

CertInfo cert_info(X509* cert) {
  CertInfo info;
  info.subject = name_text(X509_get_subject_name(cert));
  info.issuer = name_text(X509_get_issuer_name(cert));
  info.sha256 = sha256_hex(der_of(cert));
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_DNS) {
      info.dns_sans.push_back(asn1_text(name->d.dNSName));
    } else if (name->type == GEN_URI) {
      info.uri_sans.push_back(asn1_text(name->d.uniformResourceIdentifier));
    } else if (name->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = name->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = {};
      int family = ASN1_STRING_length(ip) == 4 ? AF_INET : AF_INET6;
      ::inet_ntop(family, ASN1_STRING_get0_data(ip), text, sizeof text);
      info.ip_sans.emplace_back(text);
    }
  }
  GENERAL_NAMES_free(names);
  return info;
}

int protocol_version(TlsVersion version) {
  switch (version) {
    case TlsVersion::kDefault:
      return 0;
    case TlsVersion::kTls1_0:
      return TLS1_VERSION;
    case TlsVersion::kTls1_1:
      return TLS1_1_VERSION;
    case TlsVersion::kTls1_2:
      return TLS1_2_VERSION;
    case TlsVersion::kTls1_3:
      return TLS1_3_VERSION;
  }
  return 0;
}

void set_versions(SSL_CTX* ctx, TlsVersion min, TlsVersion max) {
  // OpenSSL's own floor is TLS 1.0 (then failing on SHA-1 signatures); the kit's is TLS 1.2,
  // or the maximum when that is lower.
  if (min == TlsVersion::kDefault) {
    min = max != TlsVersion::kDefault && max < TlsVersion::kTls1_2 ? max : TlsVersion::kTls1_2;
  }
  SSL_CTX_set_min_proto_version(ctx, protocol_version(min));
  if (max != TlsVersion::kDefault) SSL_CTX_set_max_proto_version(ctx, protocol_version(max));
  if (min == TlsVersion::kTls1_0 || min == TlsVersion::kTls1_1 || max == TlsVersion::kTls1_0 ||
      max == TlsVersion::kTls1_1) {
    SSL_CTX_set_security_level(ctx, 0);
    SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
  }
}

namespace {

intptr_t fd_of(BIO* bio) { return reinterpret_cast<intptr_t>(BIO_get_data(bio)); }

int socket_bio_write(BIO* bio, const char* data, size_t size, size_t* written) {
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do {
    n = ::send(static_cast<int>(fd_of(bio)), data, size, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) {
    *written = static_cast<size_t>(n);
    return 1;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
  return 0;
}

int socket_bio_read(BIO* bio, char* out, size_t size, size_t* read) {
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do {
    n = ::recv(static_cast<int>(fd_of(bio)), out, size, 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    *read = static_cast<size_t>(n);
    return 1;
  }
  if (n == 0) {
    BIO_set_flags(bio, BIO_FLAGS_IN_EOF);  // what OpenSSL asks BIO_eof() to tell it
  } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
    BIO_set_retry_read(bio);
  }
  return 0;
}

long socket_bio_ctrl(BIO* bio, int command, long /*number*/, void* /*pointer*/) {
  switch (command) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_EOF:
      return BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0;
    default:
      return 0;
  }
}

const BIO_METHOD* socket_bio_method() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "test socket");
    BIO_meth_set_write_ex(m, socket_bio_write);
    BIO_meth_set_read_ex(m, socket_bio_read);
    BIO_meth_set_ctrl(m, socket_bio_ctrl);
    return m;
  }();
  return method;
}

}  // namespace

BIO* socket_bio(int fd) {
  BIO* bio = BIO_new(socket_bio_method());
  if (!bio) throw_openssl("BIO_new");
  BIO_set_data(bio, reinterpret_cast<void*>(static_cast<intptr_t>(fd)));
  BIO_set_init(bio, 1);
  return bio;
}

std::string alert_text(int value) {
  switch (value & 0xff) {
    case 86:
      return "inappropriate fallback";
    case 109:
      return "missing extension";
    case 116:
      return "certificate required";
    default:
      return SSL_alert_desc_string_long(value);
  }
}

std::string alpn_wire(const std::vector<std::string>& protocols) {
  std::string wire;
  for (const auto& protocol : protocols) {
    if (protocol.empty() || protocol.size() > 255) {
      throw std::runtime_error("ALPN protocol names are 1 to 255 bytes: \"" + protocol + "\"");
    }
    wire += static_cast<char>(protocol.size());
    wire += protocol;
  }
  return wire;
}

}  // namespace tls_detail

using namespace tls_detail;

namespace {

PkeyPtr make_key(KeyType type) {
  PkeyPtr key(type == KeyType::kRsa2048 ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
  if (!key) throw_openssl("key generation");
  return key;
}

// Adds an extension given in openssl.cnf syntax ("critical,CA:TRUE").
void add_extension(X509* cert, X509V3_CTX& ctx, int nid, const std::string& value) {
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!extension) throw_openssl("extension " + std::string(OBJ_nid2sn(nid)) + "=" + value);
  X509_add_ext(cert, extension, -1);
  X509_EXTENSION_free(extension);
}

void add_subject_alt_names(X509* cert, const CertSpec& spec) {
  if (spec.dns_sans.empty() && spec.ip_sans.empty() && spec.uri_sans.empty()) return;
  GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
  auto add = [&](int type, const std::string& value) {
    GENERAL_NAME* name = a2i_GENERAL_NAME(nullptr, nullptr, nullptr, type, value.c_str(), 0);
    if (!name) {
      GENERAL_NAMES_free(names);
      throw_openssl("subjectAltName \"" + value + "\"");
    }
    sk_GENERAL_NAME_push(names, name);
  };
  for (const auto& dns : spec.dns_sans) add(GEN_DNS, dns);
  for (const auto& ip : spec.ip_sans) add(GEN_IPADD, ip);
  for (const auto& uri : spec.uri_sans) add(GEN_URI, uri);
  // RFC 5280 4.2.1.6: critical when the subject is empty.
  int critical = spec.common_name.empty() ? 1 : 0;
  int added = X509_add1_ext_i2d(cert, NID_subject_alt_name, names, critical, X509V3_ADD_DEFAULT);
  GENERAL_NAMES_free(names);
  if (added != 1) throw_openssl("subjectAltName");
}

void set_random_serial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw_openssl("RAND_bytes");
  bytes[0] &= 0x7f;  // positive
  bytes[0] |= 0x40;  // and never shorter than 16 bytes
  BIGNUM* number = BN_bin2bn(bytes, sizeof bytes, nullptr);
  BN_to_ASN1_INTEGER(number, X509_get_serialNumber(cert));
  BN_free(number);
}

std::string pem_of(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(bio.get(), cert)) throw_openssl("PEM_write_bio_X509");
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string pem_of(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    throw_openssl("PEM_write_bio_PrivateKey");
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

// Makes a certificate for `key` as `spec` says, signed by issuer_key (self-signed when
// issuer_cert is null).
X509Ptr make_cert(const CertSpec& spec, EVP_PKEY* key, X509* issuer_cert, EVP_PKEY* issuer_key) {
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), X509_VERSION_3);
  set_random_serial(cert.get());
  X509_time_adj_ex(X509_getm_notBefore(cert.get()), spec.not_before_days,
                   spec.not_before_seconds, nullptr);
  X509_time_adj_ex(X509_getm_notAfter(cert.get()), spec.not_after_days, 0, nullptr);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (!spec.common_name.empty() &&
      !X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(spec.common_name.c_str()),
                                  -1, -1, 0)) {
    throw_openssl("subject CN=" + spec.common_name);
  }
  X509_set_issuer_name(cert.get(), issuer_cert ? X509_get_subject_name(issuer_cert) : subject);

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer_cert ? issuer_cert : cert.get(), cert.get(), nullptr, nullptr, 0);
  add_extension(cert.get(), ctx, NID_basic_constraints,
                spec.is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  if (spec.is_ca) {
    add_extension(cert.get(), ctx, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
  } else {
    add_extension(cert.get(), ctx, NID_key_usage,
                  spec.key == KeyType::kRsa2048 ? "critical,digitalSignature,keyEncipherment"
                                                : "critical,digitalSignature");
    const char* usage = spec.usage == CertUsage::kServer   ? "serverAuth"
                        : spec.usage == CertUsage::kClient ? "clientAuth"
                                                           : "serverAuth,clientAuth";
    add_extension(cert.get(), ctx, NID_ext_key_usage, usage);
  }
  add_extension(cert.get(), ctx, NID_subject_key_identifier, "hash");
  add_extension(cert.get(), ctx, NID_authority_key_identifier, "keyid:always");
  add_subject_alt_names(cert.get(), spec);

  if (!X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256())) {
    throw_openssl("X509_sign");
  }
  return cert;
}

IssuedCert write_issued(const std::string& dir, const std::string& name, X509* cert, EVP_PKEY* key,
                        const std::string& chain_pem) {
  IssuedCert issued;
  issued.name = name;
  issued.cert_file = dir + "/" + name + ".crt";
  issued.key_file = dir + "/" + name + ".key";
  issued.cert_pem = pem_of(cert) + chain_pem;
  issued.key_pem = pem_of(key);
  issued.der = der_of(cert);
  issued.sha256 = sha256_hex(issued.der);
  issued.subject = name_text(X509_get_subject_name(cert));
  write_file(issued.cert_file, issued.cert_pem);
  write_file(issued.key_file, issued.key_pem);
  ::chmod(issued.key_file.c_str(), 0600);
  return issued;
}

}  // namespace

CertInfo cert_info_from_file(const std::string& pem_file) {
  BioPtr bio(BIO_new_file(pem_file.c_str(), "r"));
  if (!bio) throw_openssl("cannot open " + pem_file);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) throw_openssl("no certificate in " + pem_file);
  return cert_info(cert.get());
}

// ---------------------------------------------------------------------------------------------
// TestCa

TestCa::TestCa(std::string dir, std::string name, KeyType key_type)
    : dir_(std::move(dir)), name_(std::move(name)) {
  CertSpec spec;
  spec.common_name = name_;
  spec.is_ca = true;
  spec.key = key_type;
  spec.not_after_days = 3650;
  PkeyPtr key = make_key(key_type);
  X509Ptr cert = make_cert(spec, key.get(), nullptr, nullptr);
  self_ = write_issued(dir_, name_, cert.get(), key.get(), "");
  root_cert_file_ = self_.cert_file;
  key_ = std::shared_ptr<EVP_PKEY>(key.release(), EVP_PKEY_free);
  x509_ = std::shared_ptr<X509>(cert.release(), X509_free);
}

IssuedCert TestCa::sign(const std::string& name, const CertSpec& spec,
                        std::shared_ptr<EVP_PKEY>* made_key,
                        std::shared_ptr<X509>* made_cert) const {
  PkeyPtr key = make_key(spec.key);
  X509Ptr cert = make_cert(spec, key.get(), x509_.get(), key_.get());
  // A leaf's file carries the intermediates up to the root; a root issuer adds nothing.
  IssuedCert issued = write_issued(dir_, name, cert.get(), key.get(), chain_pem_);
  if (made_key) *made_key = std::shared_ptr<EVP_PKEY>(key.release(), EVP_PKEY_free);
  if (made_cert) *made_cert = std::shared_ptr<X509>(cert.release(), X509_free);
  return issued;
}

IssuedCert TestCa::issue(const std::string& name, const CertSpec& spec) const {
  return sign(name, spec);
}

TestCa TestCa::intermediate(const std::string& name, CertSpec spec) const {
  spec.is_ca = true;
  if (spec.common_name.empty()) spec.common_name = name;
  TestCa ca;
  ca.dir_ = dir_;
  ca.name_ = name;
  ca.self_ = sign(name, spec, &ca.key_, &ca.x509_);
  // The intermediate's own certificate followed by what sits above it, as a server sends it.
  ca.chain_pem_ = ca.self_.cert_pem;
  ca.root_cert_file_ = root_cert_file_;
  return ca;
}

// ---------------------------------------------------------------------------------------------
// TestPki

namespace {

CertSpec server_spec(const std::string& host, std::vector<std::string> ips = {}) {
  CertSpec spec;
  spec.common_name = host;
  spec.dns_sans = {host};
  spec.ip_sans = std::move(ips);
  return spec;
}

CertSpec client_spec(const std::string& common_name, std::vector<std::string> uris,
                     std::vector<std::string> dns = {}) {
  CertSpec spec;
  spec.common_name = common_name;
  spec.uri_sans = std::move(uris);
  spec.dns_sans = std::move(dns);
  spec.usage = CertUsage::kClient;
  return spec;
}

CertSpec with_validity(CertSpec spec, int not_before_days, int not_after_days) {
  spec.not_before_days = not_before_days;
  spec.not_after_days = not_after_days;
  return spec;
}

}  // namespace

TestPki::TestPki(const std::string& dir)
    : ca(dir, "ca"),
      other_ca(dir, "other-ca"),
      intermediate(ca.intermediate("intermediate")),
      server(ca.issue("server", server_spec("localhost", {"127.0.0.1"}))),
      second_server(ca.issue("second_server", server_spec("api.example.test"))),
      wildcard(ca.issue("wildcard", server_spec("*.example.test"))),
      wrong_host(ca.issue("wrong_host", server_spec("wrong.example.test"))),
      expired(ca.issue("expired", with_validity(server_spec("localhost", {"127.0.0.1"}), -30, -1))),
      not_yet_valid(ca.issue("not_yet_valid",
                             with_validity(server_spec("localhost", {"127.0.0.1"}), 1, 365))),
      chained_server(intermediate.issue("chained_server", server_spec("localhost", {"127.0.0.1"}))),
      client_web(ca.issue("client_web", client_spec("web", {kSpiffeWeb}))),
      client_intruder(ca.issue("client_intruder", client_spec("intruder", {kSpiffeIntruder}))),
      client_dns_only(ca.issue("client_dns_only",
                               client_spec("client.example.test", {}, {"client.example.test"}))),
      other_ca_server(other_ca.issue("other_ca_server", server_spec("localhost", {"127.0.0.1"}))),
      other_ca_client(other_ca.issue("other_ca_client", client_spec("web", {kSpiffeWeb}))) {}

}  // namespace bulwark::test
