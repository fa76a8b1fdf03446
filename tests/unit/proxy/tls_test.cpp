// What tls.h decides without a socket: ticket keys over time, the identity a client certificate
// carries and whether a policy lets it in, the X-Forwarded-Client-Cert element written for it,
// and the name a cluster sends and checks for an endpoint. (Handshakes are the integration
// tests' part: tests/integration/tls_*_test.cpp.)

#include "proxy/tls.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

namespace bulwark {
namespace {

using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;

// A self-signed certificate carrying exactly these SANs, byte for byte (a CA may put anything in
// an IA5String; openssl's config syntax could not write a ',' or a CR LF into one).
X509Ptr cert_with_sans(const std::vector<std::string>& uris, const std::vector<std::string>& dns) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  X509Ptr cert(X509_new(), X509_free);
  X509_set_version(cert.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_set_pubkey(cert.get(), key.get());
  GENERAL_NAMES* names = GENERAL_NAMES_new();
  auto add = [names](int type, const std::string& value) {
    GENERAL_NAME* n = GENERAL_NAME_new();
    ASN1_IA5STRING* s = ASN1_IA5STRING_new();
    ASN1_STRING_set(s, value.data(), static_cast<int>(value.size()));
    GENERAL_NAME_set0_value(n, type, s);
    sk_GENERAL_NAME_push(names, n);
  };
  for (const std::string& u : uris) add(GEN_URI, u);
  for (const std::string& d : dns) add(GEN_DNS, d);
  X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names, 0, 0);
  GENERAL_NAMES_free(names);
  X509_sign(cert.get(), key.get(), EVP_sha256());
  return cert;
}

config::SanMatch san(std::string text) {
  config::SanMatch m;
  if (!text.empty() && text.back() == '*') {
    text.pop_back();
    m.prefix = true;
  }
  m.value = std::move(text);
  return m;
}

TEST_CASE("ticket keys: one key an hour, the two before it still found, older ones gone") {
  TicketKeys keys;
  TicketKeys::Key first;
  REQUIRE(keys.current(1000, first));
  TicketKeys::Key k;
  REQUIRE(keys.current(1000 + 3599, k));
  CHECK(k.name == first.name);  // not an hour yet
  CHECK(k.aes == first.aes);

  TicketKeys::Key second, third, fourth;
  REQUIRE(keys.current(1000 + 3600, second));
  CHECK(second.name != first.name);
  CHECK(second.hmac != first.hmac);
  bool fresh = true;
  TicketKeys::Key found;
  REQUIRE(keys.find(first.name.data(), found, fresh));
  CHECK_FALSE(fresh);  // tickets made with it are renewed
  CHECK(found.aes == first.aes);
  REQUIRE(keys.find(second.name.data(), found, fresh));
  CHECK(fresh);

  REQUIRE(keys.current(1000 + 2 * 3600, third));
  CHECK(keys.find(first.name.data(), found, fresh));  // two before the current one: kept
  REQUIRE(keys.current(1000 + 3 * 3600, fourth));
  CHECK_FALSE(keys.find(first.name.data(), found, fresh));  // three before: gone
  CHECK(keys.find(second.name.data(), found, fresh));
  CHECK(keys.find(fourth.name.data(), found, fresh));
  CHECK(fresh);
  const unsigned char unknown[16] = {};
  CHECK_FALSE(keys.find(unknown, found, fresh));
}

TEST_CASE("allowed SANs: URI names against URI SANs, others against DNS SANs, * a prefix") {
  X509Ptr web = cert_with_sans({"spiffe://cluster.local/ns/shop/sa/web"}, {"web.shop.svc"});
  CHECK(san_allowed(web.get(), {san("spiffe://cluster.local/ns/shop/sa/web")}));
  CHECK(san_allowed(web.get(), {san("spiffe://cluster.local/ns/shop/*")}));
  CHECK(san_allowed(web.get(), {san("web.shop.svc")}));
  CHECK_FALSE(san_allowed(web.get(), {san("spiffe://cluster.local/ns/shop/sa/we")}));
  // '*' is a plain prefix of the text: "sho*" admits "shop/...", so lists end prefixes in '/'.
  CHECK(san_allowed(web.get(), {san("spiffe://cluster.local/ns/sho*")}));
  // A prefix ending in '/' does not admit a sibling whose name merely starts the same way.
  X509Ptr opsx = cert_with_sans({"spiffe://cluster.local/ns/opsx/sa/a"}, {});
  CHECK_FALSE(san_allowed(opsx.get(), {san("spiffe://cluster.local/ns/ops/*")}));
  // A DNS SAN spelled like a SPIFFE ID is not that identity, nor is a URI SAN a DNS name.
  X509Ptr spoof = cert_with_sans({"web.shop.svc"}, {"spiffe://cluster.local/ns/shop/sa/web"});
  CHECK_FALSE(san_allowed(spoof.get(), {san("spiffe://cluster.local/ns/shop/sa/web")}));
  CHECK_FALSE(san_allowed(spoof.get(), {san("web.shop.svc")}));
  // Case matters in a URI path, and no SAN at all admits nothing.
  CHECK_FALSE(san_allowed(web.get(), {san("spiffe://cluster.local/ns/SHOP/sa/web")}));
  X509Ptr none = cert_with_sans({}, {});
  CHECK_FALSE(san_allowed(none.get(), {san("*")}));
}

TEST_CASE("peer identity: the SAN it was let in by, else the first URI SAN, else the first DNS") {
  X509Ptr two = cert_with_sans({"spiffe://a/one", "spiffe://a/two"}, {"host.example"});
  CHECK(peer_identity(two.get(), {}) == "spiffe://a/one");
  CHECK(peer_identity(two.get(), {san("spiffe://a/two")}) == "spiffe://a/two");
  CHECK(peer_identity(two.get(), {san("host.example")}) == "host.example");
  X509Ptr dns = cert_with_sans({}, {"only.example"});
  CHECK(peer_identity(dns.get(), {}) == "only.example");
  X509Ptr none = cert_with_sans({}, {});
  CHECK(peer_identity(none.get(), {}).empty());
}

TEST_CASE("X-Forwarded-Client-Cert: Envoy's element, and a SAN can neither split nor end it") {
  X509Ptr web = cert_with_sans({"spiffe://cluster.local/ns/shop/sa/web"}, {"a.example", "b"});
  const std::string xfcc = forwarded_client_cert(web.get());
  // Hash= the SHA-256 of the DER, lower-case hex.
  unsigned char* der = nullptr;
  const int len = i2d_X509(web.get(), &der);
  unsigned char digest[32];
  unsigned int dlen = 0;
  REQUIRE(EVP_Digest(der, static_cast<size_t>(len), digest, &dlen, EVP_sha256(), nullptr) == 1);
  OPENSSL_free(der);
  std::string hex;
  for (unsigned int i = 0; i < dlen; ++i) {
    static constexpr char kHex[] = "0123456789abcdef";
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  CHECK(xfcc == "Hash=" + hex + ";URI=spiffe://cluster.local/ns/shop/sa/web;DNS=a.example;DNS=b");

  // Delimiters are quoted; quotes and backslashes escaped; CR LF, spaces, bytes outside ASCII
  // and '%' percent-encoded, so the header cannot end and no field or element can be added.
  X509Ptr hostile = cert_with_sans({"spiffe://x/a,By=evil;URI=\"forged\""},
                                   {"line\r\nX-Injected: 1", "caf\xc3\xa9 50%", "back\\slash"});
  const std::string h = forwarded_client_cert(hostile.get());
  const std::string tail = h.substr(h.find(';'));
  CHECK(tail ==
        ";URI=\"spiffe://x/a,By=evil;URI=\\\"forged\\\"\""
        ";DNS=line%0D%0AX-Injected:%201"
        ";DNS=caf%C3%A9%2050%25"
        ";DNS=back\\slash");
  CHECK(h.find_first_of("\r\n") == std::string::npos);
}

TEST_CASE("a cluster sends and checks its endpoint's DNS name, never an address, or tls.sni") {
  config::ClusterTlsConfig tls;
  tls.verify = false;  // no CA to load: the names are the point here
  std::string error;
  auto context = TlsClientContext::build(tls, "c", std::make_shared<TlsStats>(), &error);
  REQUIRE_MESSAGE(context, error);
  CHECK(context->server_name_for("payments.internal:443") == "payments.internal");
  CHECK(context->server_name_for("payments.internal") == "payments.internal");
  CHECK(context->server_name_for("10.0.0.7:443").empty());
  CHECK(context->server_name_for("[::1]:8443").empty());
  CHECK(context->server_name_for("::1").empty());
  tls.sni = "api.example";
  auto named = TlsClientContext::build(tls, "c", std::make_shared<TlsStats>(), &error);
  REQUIRE_MESSAGE(named, error);
  CHECK(named->server_name_for("10.0.0.7:443") == "api.example");
  CHECK(named->server_name_for("other.internal:443") == "api.example");
  CHECK(named->id() != context->id());  // sessions are tied to the context that made them
}

}  // namespace
}  // namespace bulwark
