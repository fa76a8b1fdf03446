// Certificates over their life, as an operator handles them: files replaced in place, a
// Kubernetes Secret volume's ..data symlink swapped, bad new files that must not replace good
// ones, SIGHUP and POST /reload re-reading the files, sessions that outlive a rotation,
// `bulwark --check` on certificate files, a start or a reload with a certificate that cannot be
// used.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/integration/tls_listener_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kRotatedLog[] = "\"msg\":\"TLS certificates reloaded\"";
constexpr char kRotationFailedLog[] =
    "\"msg\":\"cannot use new TLS files; the previous ones stay\"";
constexpr char kReloadedLog[] = "\"msg\":\"config reloaded\"";
constexpr char kReloadFailedLog[] = "\"msg\":\"config reload failed; the running config stays\"";

// A server certificate for localhost and 127.0.0.1 with its own common name.
IssuedCert issue_server(const TestCa& ca, const std::string& name, int not_after_days = 365) {
  CertSpec spec;
  spec.common_name = name;
  spec.dns_sans = {"localhost"};
  spec.ip_sans = {"127.0.0.1"};
  spec.not_after_days = not_after_days;
  return ca.issue(name, spec);
}

// The certificate and key files a listener serves, in their own directory, replaced the way
// `cp` does (rewritten in place: same inode).
struct LiveFiles {
  explicit LiveFiles(const TempDir& dir) : path(dir.file("live")) {
    std::filesystem::create_directory(path);
  }
  std::string cert() const { return path + "/tls.crt"; }
  std::string key() const { return path + "/tls.key"; }
  std::string entry() const { return cert_entry(cert(), key()); }
  void install(const IssuedCert& c) const {
    write_file(key(), c.key_pem);
    write_file(cert(), c.cert_pem);
  }

  std::string path;
};

// The certificate a new connection is served (its SHA-256), "" when the handshake fails.
std::string served(uint16_t port, const std::string& sni = "localhost") {
  TlsClientOptions options;
  options.sni = sni;
  TlsClientConn conn(port, options);
  if (!conn.connected() || !conn.server_cert()) return "";
  return conn.server_cert()->sha256;
}

size_t count_lines(const std::vector<std::string>& lines, const std::vector<std::string>& needles) {
  size_t n = 0;
  for (const std::string& line : lines) {
    bool all = true;
    for (const std::string& needle : needles) all = all && line.find(needle) != std::string::npos;
    if (all) ++n;
  }
  return n;
}

// The last stderr line of `bulwark` that contains `needle`, or "".
std::string last_log_line(const BulwarkProcess& bulwark, const std::string& needle) {
  std::string found;
  for (const std::string& line : bulwark.logs()) {
    if (line.find(needle) != std::string::npos) found = line;
  }
  return found;
}

double reload_errors(const BulwarkProcess& bulwark) {
  return scrape_metric(bulwark, "bulwark_tls_certificate_reload_errors_total",
                       {{"side", "listener"}, {"name", "secure"}})
      .value_or(-1);
}

std::optional<double> expiry_of(const BulwarkProcess& bulwark, const std::string& path) {
  return scrape_metric(bulwark, "bulwark_tls_certificate_expiry_timestamp_seconds",
                       {{"side", "listener"}, {"name", "secure"}, {"path", path}});
}

double days_from_now(double timestamp) {
  return (timestamp - static_cast<double>(time(nullptr))) / 86400.0;
}

// Replaces the config file of a running bulwark as editors do (a new file renamed over it).
void write_config(const BulwarkProcess& bulwark, const std::string& yaml) {
  const std::string next = bulwark.config_path() + ".next";
  write_file(next, yaml);
  REQUIRE(std::rename(next.c_str(), bulwark.config_path().c_str()) == 0);
}

// Sends SIGHUP and waits for its outcome in the log: true for "config reloaded", false for
// "config reload failed", nullopt when neither comes in time.
std::optional<bool> sighup_reload(BulwarkProcess& bulwark) {
  const auto before = bulwark.logs();
  const size_t ok0 = count_lines(before, {kReloadedLog});
  const size_t failed0 = count_lines(before, {kReloadFailedLog});
  if (!bulwark.signal(SIGHUP)) return std::nullopt;
  std::optional<bool> outcome;
  bulwark.process().wait_for_lines(Subprocess::Stream::kStderr,
                                   [&](const std::vector<std::string>& lines) {
                                     if (count_lines(lines, {kReloadedLog}) > ok0) outcome = true;
                                     if (count_lines(lines, {kReloadFailedLog}) > failed0) {
                                       outcome = false;
                                     }
                                     return outcome.has_value();
                                   });
  return outcome;
}

// Writes `content` over `path` in place and gives it back its modification time, so that its
// device, inode, size and mtime (what bulwark's file watch compares) stay as they were: only a
// reload that re-reads every file can see the change. `content` must be as long as the file.
void rewrite_unnoticed(const std::string& path, const std::string& content) {
  struct stat before {};
  REQUIRE(::stat(path.c_str(), &before) == 0);
  REQUIRE(static_cast<size_t>(before.st_size) == content.size());
  write_file(path, content);
  const timespec times[2] = {before.st_atim, before.st_mtim};
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
}

// A server certificate whose PEM files are exactly as long as `like`'s (ECDSA signatures and
// serials vary in length by a byte or two, so a few tries are enough).
IssuedCert issue_same_size(const TestCa& ca, const std::string& name, const IssuedCert& like) {
  for (int i = 0; i < 200; ++i) {
    IssuedCert c = issue_server(ca, name);
    if (c.cert_pem.size() == like.cert_pem.size() && c.key_pem.size() == like.key_pem.size()) {
      return c;
    }
  }
  throw std::runtime_error("no certificate of the same size in 200 tries");
}

// The 1-based line of the first line of `text` that contains `needle` (0 when none does).
int line_of(const std::string& text, const std::string& needle) {
  int line = 1;
  size_t start = 0;
  while (start < text.size()) {
    size_t eol = text.find('\n', start);
    if (eol == std::string::npos) eol = text.size();
    if (text.substr(start, eol - start).find(needle) != std::string::npos) return line;
    start = eol + 1;
    ++line;
  }
  return 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Rotation by the file watch

TEST_CASE("tls rotation: a replaced certificate is served to new connections, open ones go on") {
  TempDir dir;
  TestPki pki(dir.path());
  LiveFiles live(dir);
  live.install(pki.server);
  TlsListenerOptions options;
  options.certificates = {live.entry()};
  TlsListenerFixture proxy(options);

  TlsClientConn open(proxy.port(), trusting(pki));
  REQUIRE_MESSAGE(open.connected(), open.last_error_text());
  CHECK(open.server_cert()->sha256 == pki.server.sha256);
  REQUIRE(tls_get(open, "/before"));
  auto expiry = expiry_of(proxy.bulwark, live.cert());
  REQUIRE(expiry);
  CHECK(days_from_now(*expiry) > 364);

  const IssuedCert rotated = issue_server(pki.ca, "rotated", 100);
  const auto start = Clock::now();
  live.install(rotated);
  REQUIRE_MESSAGE(wait_for_log_lines(proxy.bulwark, {kRotatedLog, "\"trigger\":\"file\""}),
                  proxy.bulwark.logs_text());
  const auto took = std::chrono::duration_cast<Millis>(Clock::now() - start);
  CHECK(took < Millis{3000});

  // New connections get the new certificate, and it verifies.
  TlsClientConn fresh(proxy.port(), trusting(pki));
  REQUIRE_MESSAGE(fresh.connected(), fresh.last_error_text());
  CHECK(fresh.server_cert()->sha256 == rotated.sha256);
  CHECK(fresh.server_cert()->subject == "CN=rotated");
  REQUIRE(tls_get(fresh, "/after"));
  // The open connection goes on.
  auto response = tls_get(open, "/still-open");
  REQUIRE_MESSAGE(response, open.last_error_text());
  CHECK(response->status == 200);

  expiry = expiry_of(proxy.bulwark, live.cert());
  REQUIRE(expiry);
  CHECK(days_from_now(*expiry) > 99);
  CHECK(days_from_now(*expiry) < 101);
  CHECK(reload_errors(proxy.bulwark) == 0);
  CHECK(count_lines(proxy.bulwark.logs(), {kRotationFailedLog}) == 0);
}

TEST_CASE("tls rotation: a Kubernetes Secret volume's ..data symlink swap is picked up") {
  TempDir dir;
  TestPki pki(dir.path());
  // The layout kubelet makes: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/, and an update
  // writes a new ..<timestamp>/, points a new symlink at it, renames that over ..data and removes
  // the old directory.
  const std::string volume = dir.file("secret");
  std::filesystem::create_directory(volume);
  auto write_version = [&](const std::string& version, const IssuedCert& c) {
    const std::string d = volume + "/" + version;
    std::filesystem::create_directory(d);
    write_file(d + "/tls.crt", c.cert_pem);
    write_file(d + "/tls.key", c.key_pem);
  };
  write_version("..2024_01_01_00_00_00.1", pki.server);
  std::filesystem::create_directory_symlink("..2024_01_01_00_00_00.1", volume + "/..data");
  std::filesystem::create_symlink("..data/tls.crt", volume + "/tls.crt");
  std::filesystem::create_symlink("..data/tls.key", volume + "/tls.key");
  std::string current = "..2024_01_01_00_00_00.1";
  auto swap_to = [&](const std::string& version, const IssuedCert& c) {
    write_version(version, c);
    std::filesystem::create_directory_symlink(version, volume + "/..data_tmp");
    std::filesystem::rename(volume + "/..data_tmp", volume + "/..data");
    std::filesystem::remove_all(volume + "/" + current);
    current = version;
  };

  TlsListenerOptions options;
  options.certificates = {cert_entry(volume + "/tls.crt", volume + "/tls.key")};
  TlsListenerFixture proxy(options);
  TlsClientConn open(proxy.port(), trusting(pki));
  REQUIRE(tls_get(open, "/before"));
  CHECK(served(proxy.port()) == pki.server.sha256);

  const IssuedCert second = issue_server(pki.ca, "second");
  swap_to("..2024_02_01_00_00_00.2", second);
  REQUIRE_MESSAGE(wait_for_log_lines(proxy.bulwark, {kRotatedLog}, 1), proxy.bulwark.logs_text());
  CHECK(served(proxy.port()) == second.sha256);
  CHECK(must_get_status(proxy.port(), trusting(pki)) == 200);

  // And again: the watch goes on after the directory it first read from is gone.
  const IssuedCert third = issue_server(pki.ca, "third");
  swap_to("..2024_03_01_00_00_00.3", third);
  REQUIRE_MESSAGE(wait_for_log_lines(proxy.bulwark, {kRotatedLog}, 2), proxy.bulwark.logs_text());
  CHECK(served(proxy.port()) == third.sha256);

  auto response = tls_get(open, "/still-open");
  REQUIRE_MESSAGE(response, open.last_error_text());
  CHECK(response->status == 200);
  CHECK(reload_errors(proxy.bulwark) == 0);
}

TEST_CASE("tls rotation: a swapped directory symlink is picked up at once, every time") {
  // Not Kubernetes' layout, but a common one: the configured directory is itself a symlink
  // (live -> v1), switched to a new directory by renaming a new symlink over it. The swap shows
  // in the symlink's parent directory, not in the directory it pointed to.
  TempDir dir;
  TestPki pki(dir.path());
  const std::string live = dir.file("live");
  auto switch_to = [&](const std::string& version, const IssuedCert& c) {
    std::filesystem::create_directory(dir.file(version));
    write_file(dir.file(version) + "/tls.crt", c.cert_pem);
    write_file(dir.file(version) + "/tls.key", c.key_pem);
    std::filesystem::create_directory_symlink(version, dir.file("live.tmp"));
    std::filesystem::rename(dir.file("live.tmp"), live);
  };
  switch_to("v1", pki.server);
  TlsListenerOptions options;
  options.certificates = {cert_entry(live + "/tls.crt", live + "/tls.key")};
  TlsListenerFixture proxy(options);
  CHECK(served(proxy.port()) == pki.server.sha256);

  // Well within the 10 s poll: the file events saw each switch.
  const IssuedCert second = issue_server(pki.ca, "second");
  switch_to("v2", second);
  REQUIRE_MESSAGE(wait_for_log_lines(proxy.bulwark, {kRotatedLog, "\"trigger\":\"file\""}, 1,
                                     Millis{5000}),
                  proxy.bulwark.logs_text());
  CHECK(served(proxy.port()) == second.sha256);
  // v2 is watched now, not v1: a change made in it is seen too.
  const IssuedCert third = issue_server(pki.ca, "third");
  write_file(dir.file("v2") + "/tls.key", third.key_pem);
  write_file(dir.file("v2") + "/tls.crt", third.cert_pem);
  REQUIRE_MESSAGE(wait_for_log_lines(proxy.bulwark, {kRotatedLog, "\"trigger\":\"file\""}, 2,
                                     Millis{5000}),
                  proxy.bulwark.logs_text());
  CHECK(served(proxy.port()) == third.sha256);
  CHECK(reload_errors(proxy.bulwark) == 0);
}

TEST_CASE("tls rotation: a change no file event shows is found by the poll within 10 s") {
  // The certificate is a hard link to a file kept elsewhere, rewritten there: inotify reports a
  // change to the directory it was made through, not to the watched one.
  TempDir dir;
  TestPki pki(dir.path());
  LiveFiles live(dir);
  const std::string store = dir.file("store");
  std::filesystem::create_directory(store);
  write_file(store + "/tls.crt", pki.server.cert_pem);
  write_file(store + "/tls.key", pki.server.key_pem);
  std::filesystem::create_hard_link(store + "/tls.crt", live.cert());
  std::filesystem::create_hard_link(store + "/tls.key", live.key());
  TlsListenerOptions options;
  options.certificates = {live.entry()};
  TlsListenerFixture proxy(options);
  CHECK(served(proxy.port()) == pki.server.sha256);

  const IssuedCert rotated = issue_server(pki.ca, "rotated");
  const auto start = Clock::now();
  write_file(store + "/tls.key", rotated.key_pem);  // in place: the links stay
  write_file(store + "/tls.crt", rotated.cert_pem);
  REQUIRE_MESSAGE(wait_for_log_lines(proxy.bulwark, {kRotatedLog, "\"trigger\":\"poll\""}, 1,
                                     Millis{15000}),
                  proxy.bulwark.logs_text());
  CHECK(Clock::now() - start < Millis{11000});
  CHECK(count_lines(proxy.bulwark.logs(), {kRotatedLog, "\"trigger\":\"file\""}) == 0);
  CHECK(served(proxy.port()) == rotated.sha256);
}

TEST_CASE("tls rotation: a certificate installed before it is valid is taken once it is") {
  TempDir dir;
  TestPki pki(dir.path());
  LiveFiles live(dir);
  live.install(pki.server);
  TlsListenerOptions options;
  options.certificates = {live.entry()};
  TlsListenerFixture proxy(options);

  CertSpec spec;
  spec.common_name = "early";
  spec.dns_sans = {"localhost"};
  spec.not_before_days = 0;
  spec.not_before_seconds = 3;
  const IssuedCert early = pki.ca.issue("early", spec);
  live.install(early);
  // Refused for now, and the old certificate stays.
  REQUIRE_MESSAGE(wait_for_log_lines(proxy.bulwark, {kRotationFailedLog, "is not valid yet"}),
                  proxy.bulwark.logs_text());
  CHECK(served(proxy.port()) == pki.server.sha256);
  // Taken when it becomes valid, with no further change to the files (before the poll, which
  // would not read unchanged files again anyway).
  REQUIRE_MESSAGE(wait_for_log_lines(proxy.bulwark, {kRotatedLog, "\"trigger\":\"valid_from\""},
                                     1, Millis{8000}),
                  proxy.bulwark.logs_text());
  CHECK(served(proxy.port()) == early.sha256);
  CHECK(reload_errors(proxy.bulwark) == 1);
}

TEST_CASE("tls rotation: unusable new files keep the old certificate, logged with the path") {
  TempDir dir;
  TestPki pki(dir.path());
  LiveFiles live(dir);
  live.install(pki.server);
  TlsListenerOptions options;
  options.certificates = {live.entry()};
  TlsListenerFixture proxy(options);
  const IssuedCert rotated = issue_server(pki.ca, "rotated");

  struct Case {
    const char* what;
    std::function<void()> change;
    std::string path;   // the file the error names
    std::string error;  // what it says
  };
  const std::vector<Case> cases{
      {"a new certificate without its key", [&] { write_file(live.cert(), rotated.cert_pem); },
       live.key(), "does not match certificate " + live.cert()},
      {"a certificate file that is not PEM",
       [&] { write_file(live.cert(), "-----BEGIN CERTIFICATE-----\ngarbage\n"); }, live.cert(),
       "no PEM certificate in " + live.cert()},
      {"a certificate that is not valid yet", [&] { live.install(pki.not_yet_valid); }, live.cert(),
       "is not valid yet"},
      {"an expired certificate", [&] { live.install(pki.expired); }, live.cert(), "has expired"},
      {"a key file that is gone", [&] { std::filesystem::remove(live.key()); }, live.key(),
       "cannot read private key " + live.key()},
      // Paths that lead somewhere no file should be (from a hostile review: the main thread
      // blocked for good in the open of a FIFO, and /dev/zero killed the process).
      {"a key that is a FIFO",
       [&] {
         std::filesystem::remove(live.key());
         REQUIRE(::mkfifo(live.key().c_str(), 0600) == 0);
       },
       live.key(), live.key() + " is not a regular file"},
      {"a certificate that leads to /dev/zero",
       [&] {
         std::filesystem::remove(live.cert());
         std::filesystem::create_symlink("/dev/zero", live.cert());
       },
       live.cert(), live.cert() + " is not a regular file"},
      {"a certificate of 2 MiB",
       [&] {
         std::filesystem::remove(live.cert());
         write_file(live.cert(), rotated.cert_pem + std::string(2 << 20, '\n'));
       },
       live.cert(), live.cert() + " is larger than 1048576 bytes"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    CAPTURE(c.what);
    c.change();
    REQUIRE_MESSAGE(wait_for_log_lines(proxy.bulwark, {kRotationFailedLog}, i + 1),
                    proxy.bulwark.logs_text());
    const std::string line = last_log_line(proxy.bulwark, kRotationFailedLog);
    CHECK_MESSAGE(line.find(c.path) != std::string::npos, line);
    CHECK_MESSAGE(line.find(c.error) != std::string::npos, line);
    CHECK_MESSAGE(line.find("listener secure") != std::string::npos, line);
    CHECK(reload_errors(proxy.bulwark) == static_cast<double>(i + 1));
    // The old certificate is still served, and verifies.
    CHECK(served(proxy.port()) == pki.server.sha256);
    CHECK(must_get_status(proxy.port(), trusting(pki)) == 200);
  }
  CHECK(count_lines(proxy.bulwark.logs(), {kRotatedLog}) == 0);
  CHECK(days_from_now(expiry_of(proxy.bulwark, live.cert()).value_or(0)) > 364);

  // Good files again: taken at once, and the error count stays.
  std::filesystem::remove(live.key());  // the FIFO: writing it would wait for a reader
  std::filesystem::remove(live.cert());
  live.install(rotated);
  REQUIRE(wait_for_log_lines(proxy.bulwark, {kRotatedLog}));
  CHECK(served(proxy.port()) == rotated.sha256);
  CHECK(reload_errors(proxy.bulwark) == static_cast<double>(cases.size()));
}

// ---------------------------------------------------------------------------------------------
// Rotation by SIGHUP and POST /reload

TEST_CASE("tls rotation: SIGHUP and POST /reload re-read certificate files") {
  TempDir dir;
  TestPki pki(dir.path());
  LiveFiles live(dir);
  // Names of one length, so that files of one length are easy to make.
  const IssuedCert initial = issue_server(pki.ca, "initial_0");
  live.install(initial);
  TlsListenerOptions options;
  options.certificates = {live.entry()};
  TlsListenerFixture proxy(options);
  CHECK(served(proxy.port()) == initial.sha256);

  // The new files keep the old ones' inode, size and mtime: the file watch sees nothing to do,
  // so a new certificate served after the reload was read by the reload itself.
  const IssuedCert by_signal = issue_same_size(pki.ca, "by_signal", initial);
  rewrite_unnoticed(live.key(), by_signal.key_pem);
  rewrite_unnoticed(live.cert(), by_signal.cert_pem);
  REQUIRE(sighup_reload(proxy.bulwark) == true);
  CHECK(served(proxy.port()) == by_signal.sha256);

  const IssuedCert by_post = issue_same_size(pki.ca, "by_post_0", initial);
  rewrite_unnoticed(live.key(), by_post.key_pem);
  rewrite_unnoticed(live.cert(), by_post.cert_pem);
  auto reload = http_request(proxy.bulwark.admin_port(), "POST", "/reload");
  REQUIRE(reload);
  CHECK_MESSAGE(reload->status == 200, reload->body);
  CHECK(served(proxy.port()) == by_post.sha256);
  CHECK(must_get_status(proxy.port(), trusting(pki)) == 200);

  CHECK(count_lines(proxy.bulwark.logs(), {kRotatedLog}) == 0);  // the watch did nothing
  CHECK(reload_errors(proxy.bulwark) == 0);
}

TEST_CASE("tls rotation: a reload that adds a certificate serves it by SNI, counters go on") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(tls_listener_config(upstream.address(), options));
  const uint16_t port = bulwark.port("secure");
  TlsClientConn open(port, trusting(pki));
  REQUIRE(tls_get(open, "/before"));
  CHECK(served(port, "api.example.test") == pki.server.sha256);
  const double before = tls_handshakes(bulwark, "TLSv1.3", false);
  CHECK(before >= 1);

  options.certificates = {cert_entry(pki.server), cert_entry(pki.second_server)};
  write_config(bulwark, tls_listener_config(upstream.address(), options));
  REQUIRE(sighup_reload(bulwark) == true);
  CHECK(served(port, "api.example.test") == pki.second_server.sha256);
  CHECK(served(port, "localhost") == pki.server.sha256);
  CHECK(must_get_status(port, trusting(pki, "api.example.test")) == 200);
  CHECK(bulwark.port("secure") == port);  // the same socket
  auto response = tls_get(open, "/still-open");
  REQUIRE_MESSAGE(response, open.last_error_text());
  CHECK(response->status == 200);
  // The counter of the listener goes on from where it was (the request above finished its
  // handshake; the connections of served() may still be finishing theirs).
  CHECK(tls_handshakes(bulwark, "TLSv1.3", false) >= before + 1);
  CHECK(expiry_of(bulwark, pki.second_server.cert_file));
  CHECK(expiry_of(bulwark, pki.server.cert_file));
}

TEST_CASE("tls rotation: a reload naming a certificate that cannot be used keeps the old config") {
  TempDir dir;
  TestPki pki(dir.path());
  LiveFiles live(dir);
  live.install(pki.server);
  TlsListenerOptions options;
  options.certificates = {live.entry()};
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(tls_listener_config(upstream.address(), options));
  const uint16_t port = bulwark.port("secure");

  // A config naming a file that is not there: refused, and said why.
  TlsListenerOptions missing = options;
  const std::string gone = dir.file("gone.crt");
  missing.certificates = {cert_entry(gone, live.key())};
  write_config(bulwark, tls_listener_config(upstream.address(), missing));
  auto reload = http_request(bulwark.admin_port(), "POST", "/reload");
  REQUIRE(reload);
  CHECK(reload->status == 400);
  CHECK_MESSAGE(reload->body.find("cannot read certificate " + gone) != std::string::npos,
                reload->body);
  // The log says it too (read by the harness a little after the answer came).
  CHECK_MESSAGE(wait_for_log_lines(bulwark, {kReloadFailedLog, gone}), bulwark.logs_text());
  CHECK(scrape_metric(bulwark, "bulwark_config_reloads_total", {{"result", "failure"}}) == 1);
  // Counted against the listener as a file that could not replace the one in force.
  CHECK(reload_errors(bulwark) == 1);
  CHECK(served(port) == pki.server.sha256);
  CHECK(must_get_status(port, trusting(pki)) == 200);

  // An expired certificate: refused too.
  TlsListenerOptions expired = options;
  expired.certificates = {cert_entry(pki.expired)};
  write_config(bulwark, tls_listener_config(upstream.address(), expired));
  REQUIRE(sighup_reload(bulwark) == false);
  CHECK(last_log_line(bulwark, kReloadFailedLog).find(pki.expired.cert_file + " has expired") !=
        std::string::npos);
  CHECK(reload_errors(bulwark) == 2);
  CHECK(served(port) == pki.server.sha256);

  // A config that only changes a route, while the certificate file in force has turned bad (the
  // watch kept the old one): the reload re-reads it and refuses.
  write_file(live.cert(), "not a certificate\n");
  REQUIRE(wait_for_log_lines(bulwark, {kRotationFailedLog}));
  TlsListenerOptions changed = options;
  changed.listener = "idle_timeout: 30s";
  write_config(bulwark, tls_listener_config(upstream.address(), changed));
  REQUIRE(sighup_reload(bulwark) == false);
  CHECK(served(port) == pki.server.sha256);
  CHECK(must_get_status(port, trusting(pki)) == 200);
  CHECK(scrape_metric(bulwark, "bulwark_config_reloads_total", {{"result", "failure"}}) == 3);
  CHECK(scrape_metric(bulwark, "bulwark_config_reloads_total", {{"result", "success"}}) == 0);
  CHECK(reload_errors(bulwark) == 4);  // the watch's refusal, then the reload's
}

// ---------------------------------------------------------------------------------------------
// Sessions across rotations and reloads

TEST_CASE("tls rotation: sessions made before a certificate rotation resume after it") {
  TempDir dir;
  TestPki pki(dir.path());
  LiveFiles live(dir);
  live.install(pki.server);
  TlsListenerOptions options;
  options.certificates = {live.entry()};
  TlsListenerFixture proxy(options);

  auto tls13 = trusting(pki);
  TlsClientConn first13(proxy.port(), tls13);
  REQUIRE(first13.connected());
  tls13.session = first13.get_session(kDefaultTimeout);
  REQUIRE(tls13.session);
  auto tls12 = trusting(pki);
  tls12.max_version = TlsVersion::kTls1_2;
  TlsClientConn first12(proxy.port(), tls12);
  REQUIRE(first12.connected());
  tls12.session = first12.get_session();
  REQUIRE(tls12.session);

  const IssuedCert rotated = issue_server(pki.ca, "rotated");
  live.install(rotated);
  REQUIRE(wait_for_log_lines(proxy.bulwark, {kRotatedLog}));
  CHECK(served(proxy.port()) == rotated.sha256);

  for (const TlsClientOptions* client : {&tls13, &tls12}) {
    TlsClientConn resumed(proxy.port(), *client);
    REQUIRE_MESSAGE(resumed.connected(), resumed.last_error_text());
    CHECK(resumed.resumed());
    auto response = tls_get(resumed, "/resumed");
    REQUIRE_MESSAGE(response, resumed.last_error_text());
    CHECK(response->status == 200);
  }
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.3", true) == 1);
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.2", true) == 1);
}

TEST_CASE("tls rotation: a reload that narrows allowed_client_sans refuses resumed sessions") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + pki.ca.cert_file() +
                "\n"
                "allowed_client_sans: [\"spiffe://cluster.local/ns/shop/*\"]";
  TestUpstream upstream;
  BulwarkProcess bulwark;
  bulwark.start(tls_listener_config(upstream.address(), options));
  const uint16_t port = bulwark.port("secure");

  std::vector<TlsClientOptions> clients;
  for (auto version : {TlsVersion::kTls1_3, TlsVersion::kTls1_2}) {
    auto client = with_cert(trusting(pki), pki.client_web);
    client.max_version = version;
    TlsClientConn conn(port, client);
    REQUIRE(tls_get(conn, "/allowed"));
    client.session = conn.get_session(kDefaultTimeout);
    REQUIRE(client.session);
    clients.push_back(client);
  }

  TlsListenerOptions narrowed = options;
  narrowed.tls = "client_ca: " + pki.ca.cert_file() +
                 "\n"
                 "allowed_client_sans: [\"spiffe://cluster.local/ns/ops/*\"]";
  write_config(bulwark, tls_listener_config(upstream.address(), narrowed));
  REQUIRE(sighup_reload(bulwark) == true);

  for (const TlsClientOptions& client : clients) {
    CAPTURE(static_cast<int>(client.max_version));
    TlsClientConn conn(port, client);
    CHECK(!tls_get(conn, "/no-longer"));
    CHECK(conn.partial().status == 0);
  }
  CHECK_MESSAGE(wait_tls_errors(bulwark, "san_not_allowed", 2) == 2, tls_error_summary(bulwark));
  CHECK(upstream.requests() == 2);
}

// ---------------------------------------------------------------------------------------------
// Checking the files: --check, start

TEST_CASE("tls rotation: bulwark --check loads the certificates and warns of one expiring soon") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server), cert_entry(pki.second_server),
                          cert_entry(pki.chained_server)};
  options.tls = "client_ca: " + pki.ca.cert_file();
  CheckResult ok = run_check(tls_listener_config("127.0.0.1:1", options));
  CHECK_MESSAGE(ok.exit_code == 0, ok.out << ok.err);
  CHECK(ok.out == ok.config_path + ": ok\n");

  const IssuedCert soon = issue_server(pki.ca, "soon", 10);
  options.certificates = {cert_entry(pki.server), cert_entry(soon)};
  CheckResult warned = run_check(tls_listener_config("127.0.0.1:1", options));
  CHECK_MESSAGE(warned.exit_code == 0, warned.out << warned.err);
  CHECK_MESSAGE(
      std::regex_search(warned.out, std::regex("warning: listener secure: certificate " +
                                               soon.cert_file + " expires in (9|10) days\n")),
      warned.out);
  CHECK(warned.out.find(pki.server.cert_file) == std::string::npos);  // a year: no warning
  CHECK(warned.out.find(warned.config_path + ": ok\n") != std::string::npos);

  // A client CA is judged by its last certificate: when it expires the file verifies nothing.
  CertSpec ca_spec;
  ca_spec.common_name = "short-lived CA";
  ca_spec.is_ca = true;
  ca_spec.not_after_days = 5;
  const IssuedCert short_ca = pki.ca.issue("short-ca", ca_spec);
  options.certificates = {cert_entry(pki.server)};
  options.tls = "client_ca: " + short_ca.cert_file;
  CheckResult ca_warned = run_check(tls_listener_config("127.0.0.1:1", options));
  CHECK_MESSAGE(ca_warned.exit_code == 0, ca_warned.out << ca_warned.err);
  CHECK_MESSAGE(std::regex_search(ca_warned.out,
                                  std::regex("warning: listener secure: the last certificate of CA "
                                             "file " +
                                             short_ca.cert_file + " expires in (4|5) days\n")),
                ca_warned.out);
}

TEST_CASE("tls rotation: bulwark --check reports unusable files with file:line:col and the path") {
  TempDir dir;
  TestPki pki(dir.path());
  const std::string missing = dir.file("missing.crt");
  write_file(dir.file("garbage-ca.crt"), "not a CA\n");
  struct Case {
    const char* what;
    std::string entry;    // the certificates entry
    std::string tls;      // further tls keys
    std::string at;       // text on the line the error points to
    std::string message;  // what the error says
  };
  const std::string garbage_ca = dir.file("garbage-ca.crt");
  CertSpec expired_spec;
  expired_spec.common_name = "expired CA";
  expired_spec.is_ca = true;
  expired_spec.not_before_days = -30;
  expired_spec.not_after_days = -1;
  const IssuedCert expired_ca = pki.ca.issue("expired-ca", expired_spec);
  const std::string fifo = dir.file("fifo-ca.crt");  // would block an open until a writer came
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  for (const Case& c : {
           Case{"a missing certificate file", cert_entry(missing, pki.server.key_file), "", missing,
                "cannot read certificate " + missing},
           Case{"a missing key file", cert_entry(pki.server.cert_file, missing), "", missing,
                "cannot read private key " + missing},
           Case{"a key that does not match",
                cert_entry(pki.server.cert_file, pki.second_server.key_file), "",
                pki.second_server.key_file,
                "private key " + pki.second_server.key_file + " does not match certificate " +
                    pki.server.cert_file},
           Case{"an expired certificate", cert_entry(pki.expired), "", pki.expired.cert_file,
                "certificate " + pki.expired.cert_file + " has expired"},
           Case{"a certificate not valid yet", cert_entry(pki.not_yet_valid), "",
                pki.not_yet_valid.cert_file,
                "certificate " + pki.not_yet_valid.cert_file + " is not valid yet"},
           Case{"a missing client CA", cert_entry(pki.server), "client_ca: " + missing,
                "client_ca: " + missing, "cannot load CA file " + missing},
           Case{"a client CA that is not PEM", cert_entry(pki.server), "client_ca: " + garbage_ca,
                "client_ca: " + garbage_ca, "cannot load CA file " + garbage_ca},
           Case{"a client CA that is a FIFO", cert_entry(pki.server), "client_ca: " + fifo,
                "client_ca: " + fifo, "cannot load CA file " + fifo + ": " + fifo +
                " is not a regular file"},
           Case{"a client CA whose every certificate has expired", cert_entry(pki.server),
                "client_ca: " + expired_ca.cert_file, "client_ca: " + expired_ca.cert_file,
                "every certificate of CA file " + expired_ca.cert_file + " has expired"},
       }) {
    CAPTURE(c.what);
    TlsListenerOptions options;
    options.certificates = {c.entry};
    options.tls = c.tls;
    const std::string yaml = tls_listener_config("127.0.0.1:1", options);
    CheckResult result = run_check(yaml);
    CHECK(result.exit_code == 1);
    const std::string where = result.config_path + ":" + std::to_string(line_of(yaml, c.at)) + ":";
    CHECK_MESSAGE(std::regex_search(result.out, std::regex(where + "[0-9]+: .*" + c.message)),
                  result.out << result.err);
    CHECK(result.out.find(": ok") == std::string::npos);
  }

  // Two listeners with a bad file each: both errors, in one run.
  TlsListenerOptions first;
  first.certificates = {cert_entry(pki.expired)};
  std::string yaml = tls_listener_config("127.0.0.1:1", first);
  const std::string second_listener =
      "  - name: second\n"
      "    address: 127.0.0.1:0\n"
      "    tls:\n"
      "      certificates: [" +
      cert_entry(missing, pki.server.key_file) +
      "]\n"
      "    routes: [{name: api, match: {prefix: /}, cluster: app}]\n";
  yaml.insert(yaml.find("clusters:\n"), second_listener);
  CheckResult both = run_check(yaml);
  CHECK(both.exit_code == 1);
  CHECK_MESSAGE(both.out.find(pki.expired.cert_file + " has expired") != std::string::npos,
                both.out);
  CHECK_MESSAGE(both.out.find("cannot read certificate " + missing) != std::string::npos, both.out);
}

TEST_CASE("tls rotation: bulwark refuses to start with a certificate it cannot use") {
  TempDir dir;
  TestPki pki(dir.path());
  TlsListenerOptions options;
  options.certificates = {cert_entry(pki.server), cert_entry(pki.expired)};
  BulwarkProcess bulwark;
  CHECK_THROWS_AS(bulwark.start(tls_listener_config("127.0.0.1:1", options)), std::runtime_error);
  CHECK(bulwark.wait_exit() == 1);
  bulwark.process().wait_streams_closed();
  const std::string line = last_log_line(bulwark, "\"msg\":\"cannot load TLS files\"");
  CHECK_MESSAGE(line.find(pki.expired.cert_file + " has expired") != std::string::npos,
                bulwark.logs_text());
  CHECK_MESSAGE(line.find(bulwark.config_path() + ":") != std::string::npos, line);
  CHECK(last_log_line(bulwark, "\"msg\":\"listening\"").empty());  // nothing was bound
}

// ---------------------------------------------------------------------------------------------
// Bugs these tests found once (each failed before its fix; the commit adding them says how).

TEST_CASE("tls rotation: a replaced client CA stops sessions made under the old one") {
  TempDir dir;
  TestPki pki(dir.path());
  LiveFiles live(dir);
  live.install(pki.server);
  const std::string client_ca = live.path + "/ca.crt";
  write_file(client_ca, pki.ca.cert_pem());
  TlsListenerOptions options;
  options.certificates = {live.entry()};
  options.tls = "client_ca: " + client_ca;
  TlsListenerFixture proxy(options);

  // Clients of the old CA resume later with what they got now.
  std::vector<TlsClientOptions> clients;
  for (auto version : {TlsVersion::kTls1_3, TlsVersion::kTls1_2}) {
    auto client = with_cert(trusting(pki), pki.client_web);
    client.max_version = version;
    TlsClientConn conn(proxy.port(), client);
    REQUIRE(tls_get(conn, "/trusted"));
    client.session = conn.get_session(kDefaultTimeout);
    REQUIRE(client.session);
    clients.push_back(client);
  }

  // The operator replaces the client CA (the old one was compromised, say).
  write_file(client_ca, pki.other_ca.cert_pem());
  REQUIRE(wait_for_log_lines(proxy.bulwark, {kRotatedLog}));
  // A full handshake with an old-CA certificate is refused now...
  CHECK(must_get_status(proxy.port(), with_cert(trusting(pki), pki.client_web)) == -1);
  CHECK(must_get_status(proxy.port(), with_cert(trusting(pki), pki.other_ca_client)) == 200);
  // ...and so must be a session that an old-CA certificate opened before the change.
  for (const TlsClientOptions& client : clients) {
    CAPTURE(static_cast<int>(client.max_version));
    TlsClientConn conn(proxy.port(), client);
    CHECK_FALSE(conn.resumed());
    CHECK_FALSE(tls_get(conn, "/old-ca-session"));
  }
  CHECK(tls_handshakes(proxy.bulwark, "TLSv1.3", true) +
            tls_handshakes(proxy.bulwark, "TLSv1.2", true) ==
        0);
  CHECK(proxy.upstream.requests() == 3);
}
