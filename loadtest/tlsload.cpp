// tlsload: new TLS connections per second against one HTTPS server, for the handshakes scenario
// of loadtest/run. Every request comes on a connection of its own, so what is measured is what a
// server pays per TLS connection: a full handshake, or with --resume a resumed one.
//
//   tlsload --target HOST:PORT --threads T --duration D [--warmup D] [--resume] [--sni NAME]
//           [--path /] [--host HOST] [--timeout D] [--ca FILE] [--cert FILE --key FILE]
//           [--max-version 1.2|1.3]
//
// Durations: 10s, 500ms, 2m, or plain seconds (1.5).
//
// Each of the T threads loops (a closed loop, one connection at a time): connect, TLS handshake,
// "GET PATH HTTP/1.1" with "Connection: close", read the response to the server's close, close.
// With --resume a thread offers, on each connection, the last session the server gave it: with
// TLS 1.3 the tickets (NewSessionTicket) arrive after the handshake and are read with the response,
// before the close; with TLS 1.2 the session comes with the handshake. The first connection of a
// thread, and any after one whose server sent no new session, is full or offers the old one.
// Without --resume nothing is offered: every handshake is a full one.
//
// No certificate is verified unless --ca is given (the client's cost is not what is measured;
// the server's signature in the TLS 1.3 handshake is checked either way). --ca FILE verifies the
// chain and the name (--sni, else HOST). --cert/--key present a client certificate (mTLS).
// Each thread has an SSL_CTX of its own, so the client's threads do not contend on OpenSSL's
// locks.
//
// Connections finished in the first --warmup are not counted; those finished in the next D are.
// Outcomes: ok (a 2xx response, then the server's close); failures by kind: connect (refused or
// failed; the thread then waits 50 ms), handshake (the TLS handshake failed), timeout (no progress
// for --timeout, default 5s, at any step), io (a read or write failed, or the response ended
// early), status (a complete non-2xx response).
//
// Output: a summary for people on stderr, and for the runner these lines on stdout:
//   threads= duration_s= connections= conn_per_s= ok= resumed= full= failed= error_connect=
//   error_handshake= error_timeout= error_io= error_status= p50_us= p99_us= max_us=
//   client_cpu_us_per_conn= tls_version= cipher=
// connections counts every connection finished in the measured period, ok or not; conn_per_s is
// ok / D; resumed and full split the ok ones by SSL_session_reused(); p50/p99/max are of a whole
// ok connection, connect to close; client_cpu_us_per_conn is this process's CPU time (every
// thread) over the measured period per ok connection; tls_version and cipher are those of the
// last ok connection of the first thread that had one.
// Exit status: 0 with a result (also when every connection failed), 1 on an internal failure (a
// target that does not resolve, a file that does not load), 2 on a bad argument.

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "loadtest/histogram.h"

namespace {

using bulwark::loadtest::Histogram;
using Clock = std::chrono::steady_clock;

constexpr double kMaxSeconds = 1e6;
constexpr uint64_t kMaxThreads = 256;

// ---------------------------------------------------------------------------------------------
// Command line

struct Options {
  bool help = false;
  std::string target;  // as given, HOST:PORT
  std::string host;    // without brackets
  std::string port;
  uint64_t threads = 0;
  double duration_s = 0;
  double warmup_s = 0;
  bool resume = false;
  std::string sni;          // empty: HOST, unless it is an IP address (then none)
  std::string path = "/";
  std::string host_header;  // empty: HOST:PORT
  double timeout_s = 5;
  std::string ca, cert, key;
  int max_version = 0;  // 0: OpenSSL's highest
};

struct UsageError {
  std::string message;
};

void usage(FILE* out) {
  std::fputs(
      "usage: tlsload --target HOST:PORT --threads T --duration D [--warmup D] [--resume]\n"
      "               [--sni NAME] [--path /] [--host HOST] [--timeout D] [--ca FILE]\n"
      "               [--cert FILE --key FILE] [--max-version 1.2|1.3]\n"
      "Durations: 10s, 500ms, 2m or plain seconds (1.5). Defaults: --warmup 0, --path /,\n"
      "--timeout 5s, SNI: HOST unless it is an IP address, no certificate verification.\n"
      "T threads each open one TLS connection per request (Connection: close) for D and print\n"
      "key=value results on stdout; --resume offers each thread's last session.\n",
      out);
}

std::optional<double> parse_decimal(std::string_view text) {
  if (text.empty() || !(std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '.')) {
    return std::nullopt;
  }
  double value = 0;
  auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
  if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

// "10s", "500ms", "2m" or plain seconds, in seconds.
std::optional<double> parse_duration_s(std::string_view text) {
  double scale = 1;
  if (text.ends_with("ms")) {
    text.remove_suffix(2);
    scale = 1e-3;
  } else if (text.ends_with("s")) {
    text.remove_suffix(1);
  } else if (text.ends_with("m")) {
    text.remove_suffix(1);
    scale = 60;
  }
  auto number = parse_decimal(text);
  if (!number || *number * scale > kMaxSeconds) return std::nullopt;
  return *number * scale;
}

std::optional<uint64_t> parse_count(std::string_view text, uint64_t min, uint64_t max) {
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value < min ||
      value > max) {
    return std::nullopt;
  }
  return value;
}

bool is_visible_ascii(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> seen;
  auto given = [&](std::string_view name) {
    return std::find(seen.begin(), seen.end(), name) != seen.end();
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      o.help = true;
      return o;
    }
    std::string_view name = arg;
    std::optional<std::string_view> inline_value;
    if (size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    std::string name_text(name);
    auto value = [&]() -> std::string_view {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) throw UsageError{name_text + " needs a value"};
      return argv[++i];
    };
    auto bad = [&](std::string_view v, std::string_view expected) {
      return UsageError{name_text + ": expected " + std::string(expected) + ", got '" +
                        std::string(v) + "'"};
    };
    auto duration = [&](bool allow_zero) {
      std::string_view v = value();
      auto s = parse_duration_s(v);
      if (!s || (!allow_zero && *s <= 0)) {
        throw bad(v, allow_zero ? "a duration like 10s, 500ms, 2m or 1.5"
                                : "a duration > 0 like 10s, 500ms, 2m or 1.5");
      }
      return *s;
    };
    auto file = [&]() {
      std::string_view v = value();
      if (v.empty()) throw bad(v, "a file name");
      return std::string(v);
    };
    if (given(name)) throw UsageError{name_text + " given twice"};
    seen.push_back(name_text);

    if (name == "--target") {
      std::string_view v = value();
      size_t colon = v.rfind(':');
      std::string_view host = colon == std::string_view::npos ? "" : v.substr(0, colon);
      std::string_view port = colon == std::string_view::npos ? "" : v.substr(colon + 1);
      if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
      } else if (host.find(':') != std::string_view::npos) {
        host = {};
      }
      if (host.empty() || !parse_count(port, 1, 65535)) {
        throw bad(v, "HOST:PORT (or [IPv6]:PORT) with a port in 1..65535");
      }
      o.target = v;
      o.host = host;
      o.port = port;
    } else if (name == "--threads") {
      std::string_view v = value();
      auto n = parse_count(v, 1, kMaxThreads);
      if (!n) throw bad(v, "a whole number in 1..256");
      o.threads = *n;
    } else if (name == "--duration") {
      o.duration_s = duration(false);
    } else if (name == "--warmup") {
      o.warmup_s = duration(true);
    } else if (name == "--timeout") {
      o.timeout_s = duration(false);
    } else if (name == "--resume") {
      if (inline_value) throw UsageError{"--resume takes no value"};
      o.resume = true;
    } else if (name == "--sni") {
      std::string_view v = value();
      if (!is_visible_ascii(v)) throw bad(v, "a server name");
      o.sni = v;
    } else if (name == "--path") {
      std::string_view v = value();
      if (!v.starts_with('/') || !is_visible_ascii(v)) {
        throw bad(v, "a path starting with / and without spaces or control characters");
      }
      o.path = v;
    } else if (name == "--host") {
      std::string_view v = value();
      if (!is_visible_ascii(v)) throw bad(v, "a Host header value without spaces");
      o.host_header = v;
    } else if (name == "--ca") {
      o.ca = file();
    } else if (name == "--cert") {
      o.cert = file();
    } else if (name == "--key") {
      o.key = file();
    } else if (name == "--max-version") {
      std::string_view v = value();
      if (v == "1.2") {
        o.max_version = TLS1_2_VERSION;
      } else if (v == "1.3") {
        o.max_version = TLS1_3_VERSION;
      } else {
        throw bad(v, "1.2 or 1.3");
      }
    } else {
      throw UsageError{"unknown argument '" + std::string(arg) + "'"};
    }
  }
  for (const char* name : {"--target", "--threads", "--duration"}) {
    if (!given(name)) throw UsageError{std::string(name) + " is required"};
  }
  if (given("--cert") != given("--key")) throw UsageError{"--cert and --key go together"};
  return o;
}

// ---------------------------------------------------------------------------------------------
// One thread's connections

enum Failure { kConnect, kHandshake, kTimeout, kIo, kStatus, kFailureKinds };
constexpr const char* kFailureNames[kFailureKinds] = {"connect", "handshake", "timeout", "io",
                                                      "status"};

struct ThreadResult {
  uint64_t ok = 0;
  uint64_t resumed = 0;
  uint64_t failures[kFailureKinds] = {};
  Histogram latency_us;
  std::string version, cipher;  // of the last ok connection
  std::string first_error;      // the first failure's detail, for the summary
};

struct Shared {
  const Options* options;
  sockaddr_storage address{};
  socklen_t address_len = 0;
  std::string request;
  Clock::time_point measure_from, measure_to;
  std::atomic<bool> stop{false};
};

// The last session the server gave this thread (TLS 1.3: the newest ticket), kept through the
// SSL_CTX's new-session callback; the thread's SSL_CTX carries a pointer to its slot.
int g_slot_index = -1;

int on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* slot =
      static_cast<SSL_SESSION**>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_slot_index));
  if (slot == nullptr) return 0;  // not kept: OpenSSL frees it
  if (*slot != nullptr) SSL_SESSION_free(*slot);
  *slot = session;
  return 1;  // ours now
}

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no OpenSSL error";
  char text[256];
  ERR_error_string_n(e, text, sizeof text);
  return text;
}

// Builds a thread's SSL_CTX; nullptr with `error` set.
SSL_CTX* make_context(const Options& o, SSL_SESSION** slot, std::string& error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    error = "SSL_CTX_new: " + openssl_error();
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (o.max_version != 0) SSL_CTX_set_max_proto_version(ctx, o.max_version);
  // A server that closes without close_notify ends the response as well as one that sends it.
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
  static const unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof kAlpn);
  if (o.resume) {
    SSL_CTX_set_session_cache_mode(ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_set_ex_data(ctx, g_slot_index, slot);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  }
  if (!o.ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, o.ca.c_str(), nullptr) != 1) {
      error = "--ca " + o.ca + ": " + openssl_error();
      SSL_CTX_free(ctx);
      return nullptr;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!o.cert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, o.cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, o.key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      error = "--cert " + o.cert + " / --key " + o.key + ": " + openssl_error();
      SSL_CTX_free(ctx);
      return nullptr;
    }
  }
  return ctx;
}

bool is_ip_literal(const std::string& host) {
  in6_addr buf;
  return inet_pton(AF_INET, host.c_str(), &buf) == 1 || inet_pton(AF_INET6, host.c_str(), &buf) == 1;
}

// The status code of a response head ("HTTP/1.1 200 OK..."), 0 when it is not one.
int status_of(std::string_view head) {
  if (!head.starts_with("HTTP/1.") || head.size() < 12 || head[8] != ' ') return 0;
  int code = 0;
  auto [end, error] = std::from_chars(head.data() + 9, head.data() + 12, code);
  return error == std::errc() && end == head.data() + 12 ? code : 0;
}

// Content-Length of a response head, -1 when it has none.
int64_t content_length_of(std::string_view head) {
  size_t pos = 0;
  while ((pos = head.find("\r\n", pos)) != std::string_view::npos) {
    pos += 2;
    std::string_view line = head.substr(pos, head.find("\r\n", pos) - pos);
    constexpr std::string_view kName = "content-length:";
    if (line.size() > kName.size() &&
        std::equal(kName.begin(), kName.end(), line.begin(), [](char a, char b) {
          return a == std::tolower(static_cast<unsigned char>(b));
        })) {
      std::string_view v = line.substr(kName.size());
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      int64_t n = -1;
      std::from_chars(v.data(), v.data() + v.size(), n);
      return n;
    }
  }
  return -1;
}

// Why an SSL call returned `rc`: a timeout (the socket's SO_RCVTIMEO/SO_SNDTIMEO) or not.
bool timed_out(SSL* ssl, int rc) {
  int e = SSL_get_error(ssl, rc);
  return (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
         (errno == EAGAIN || errno == EWOULDBLOCK);
}

// One connection: connect, handshake, request, response to the close. Returns kFailureKinds when
// ok, else the failure; sets `reused`.
Failure one_connection(const Shared& shared, SSL_CTX* ctx, SSL_SESSION* offer, bool& reused,
                       std::string& version, std::string& cipher, std::string& detail) {
  const Options& o = *shared.options;
  reused = false;
  int fd = socket(shared.address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    detail = std::string("socket: ") + std::strerror(errno);
    return kConnect;
  }
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(o.timeout_s);
  tv.tv_usec = static_cast<suseconds_t>((o.timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // also bounds connect()
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&shared.address), shared.address_len) != 0) {
    Failure f = (errno == EINPROGRESS || errno == EAGAIN) ? kTimeout : kConnect;
    detail = std::string("connect: ") + std::strerror(errno);
    close(fd);
    return f;
  }
  SSL* ssl = SSL_new(ctx);
  Failure result = kFailureKinds;
  auto fail = [&](Failure f, std::string what) {
    result = f;
    detail = std::move(what);
  };
  if (ssl == nullptr) {
    close(fd);
    detail = "SSL_new: " + openssl_error();
    return kHandshake;
  }
  SSL_set_fd(ssl, fd);
  std::string sni = !o.sni.empty() ? o.sni : (is_ip_literal(o.host) ? "" : o.host);
  if (!sni.empty()) {
    SSL_set_tlsext_host_name(ssl, sni.c_str());
    if (!o.ca.empty()) SSL_set1_host(ssl, sni.c_str());
  }
  if (offer != nullptr) SSL_set_session(ssl, offer);

  int rc = SSL_connect(ssl);
  if (rc != 1) {
    if (timed_out(ssl, rc)) {
      fail(kTimeout, "handshake timed out");
    } else {
      long verify = SSL_get_verify_result(ssl);
      fail(kHandshake, "handshake: " + openssl_error() +
                           (verify != X509_V_OK
                                ? std::string(" (") + X509_verify_cert_error_string(verify) + ")"
                                : std::string()));
    }
  } else {
    reused = SSL_session_reused(ssl) == 1;
    rc = SSL_write(ssl, shared.request.data(), static_cast<int>(shared.request.size()));
    if (rc <= 0) {
      if (timed_out(ssl, rc)) {
        fail(kTimeout, "write timed out");
      } else {
        fail(kIo, "write: " + openssl_error());
      }
    } else {
      // Read to the server's close (Connection: close): the tickets of TLS 1.3 come first.
      std::string response;
      char buffer[16 * 1024];
      for (;;) {
        rc = SSL_read(ssl, buffer, sizeof buffer);
        if (rc > 0) {
          response.append(buffer, static_cast<size_t>(rc));
          continue;
        }
        int e = SSL_get_error(ssl, rc);
        if (e == SSL_ERROR_ZERO_RETURN) break;
        if (timed_out(ssl, rc)) {
          fail(kTimeout, "read timed out after " + std::to_string(response.size()) + " bytes");
        } else if (e == SSL_ERROR_SYSCALL && errno == ECONNRESET) {
          // A reset after the whole response (a server closing with unread bytes) still counts.
          break;
        } else {
          fail(kIo, "read: " + openssl_error());
        }
        break;
      }
      if (result == kFailureKinds) {
        size_t end = response.find("\r\n\r\n");
        int status = end == std::string::npos ? 0 : status_of(response);
        int64_t length = end == std::string::npos ? -1 : content_length_of(response.substr(0, end));
        if (status == 0) {
          fail(kIo, "no complete response head (" + std::to_string(response.size()) + " bytes)");
        } else if (length >= 0 && response.size() - end - 4 < static_cast<uint64_t>(length)) {
          fail(kIo, "response body ended early");
        } else if (status < 200 || status > 299) {
          fail(kStatus, "status " + std::to_string(status));
        } else {
          version = SSL_get_version(ssl);
          cipher = SSL_get_cipher_name(ssl);
        }
      }
    }
  }
  // No close_notify of ours: the server has closed. A connection that ended well is marked shut
  // down all the same, or SSL_free would take its session (the newest ticket) for a bad one and
  // make it unresumable.
  if (result == kFailureKinds) SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl);
  close(fd);
  return result;
}

void run_thread(Shared& shared, ThreadResult& out) {
  const Options& o = *shared.options;
  SSL_SESSION* last = nullptr;
  std::string error;
  SSL_CTX* ctx = make_context(o, &last, error);
  if (ctx == nullptr) {
    out.first_error = error;
    ++out.failures[kHandshake];
    return;
  }
  while (!shared.stop.load(std::memory_order_relaxed)) {
    Clock::time_point start = Clock::now();
    if (start >= shared.measure_to) break;
    bool reused = false;
    std::string version, cipher, detail;
    SSL_SESSION* offer = o.resume ? last : nullptr;
    if (offer != nullptr) SSL_SESSION_up_ref(offer);  // the callback may replace `last` meanwhile
    Failure f = one_connection(shared, ctx, offer, reused, version, cipher, detail);
    if (offer != nullptr) SSL_SESSION_free(offer);
    Clock::time_point end = Clock::now();
    bool counted = end >= shared.measure_from && end <= shared.measure_to;
    if (f == kFailureKinds) {
      if (counted) {
        ++out.ok;
        if (reused) ++out.resumed;
        out.latency_us.record(static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(end - start).count()));
        out.version = version;
        out.cipher = cipher;
      }
    } else {
      if (counted) ++out.failures[f];
      if (out.first_error.empty()) out.first_error = detail;
      if (f == kConnect) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  if (last != nullptr) SSL_SESSION_free(last);
  SSL_CTX_free(ctx);
}

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

std::atomic<Shared*> g_shared{nullptr};
void on_signal(int) {
  if (Shared* s = g_shared.load()) s->stop.store(true);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "tlsload: %s\n", e.message.c_str());
    std::fprintf(stderr, "run 'tlsload --help' for usage\n");
    return 2;
  }
  if (options.help) {
    usage(stdout);
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  g_slot_index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);

  Shared shared;
  shared.options = &options;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int status = getaddrinfo(options.host.c_str(), options.port.c_str(), &hints, &found);
      status != 0 || found == nullptr) {
    std::fprintf(stderr, "tlsload: --target %s: cannot resolve: %s\n", options.target.c_str(),
                 status != 0 ? gai_strerror(status) : "no address");
    return 1;
  }
  std::memcpy(&shared.address, found->ai_addr,
              std::min<size_t>(found->ai_addrlen, sizeof shared.address));
  shared.address_len = found->ai_addrlen;
  freeaddrinfo(found);
  shared.request = "GET " + options.path + " HTTP/1.1\r\nHost: " +
                   (options.host_header.empty() ? options.target : options.host_header) +
                   "\r\nUser-Agent: bulwark-tlsload\r\nConnection: close\r\n\r\n";
  {  // the files load before any thread starts: a bad one is a usage problem, not a failure
    std::string error;
    SSL_SESSION* none = nullptr;
    SSL_CTX* probe = make_context(options, &none, error);
    if (probe == nullptr) {
      std::fprintf(stderr, "tlsload: %s\n", error.c_str());
      return 1;
    }
    SSL_CTX_free(probe);
  }

  Clock::time_point t0 = Clock::now();
  auto seconds = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  shared.measure_from = t0 + seconds(options.warmup_s);
  shared.measure_to = shared.measure_from + seconds(options.duration_s);
  g_shared.store(&shared);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  std::vector<ThreadResult> results(options.threads);
  std::vector<std::thread> threads;
  for (uint64_t i = 0; i < options.threads; ++i) {
    threads.emplace_back(run_thread, std::ref(shared), std::ref(results[i]));
  }
  std::this_thread::sleep_until(shared.measure_from);
  double cpu0 = cpu_seconds();
  for (std::thread& t : threads) t.join();
  double cpu1 = cpu_seconds();
  Clock::time_point stopped = std::min(Clock::now(), shared.measure_to);
  double measured =
      std::max(0.0, std::chrono::duration<double>(stopped - shared.measure_from).count());

  ThreadResult total;
  for (ThreadResult& r : results) {
    total.ok += r.ok;
    total.resumed += r.resumed;
    for (int k = 0; k < kFailureKinds; ++k) total.failures[k] += r.failures[k];
    total.latency_us.merge(r.latency_us);
    if (total.version.empty()) {
      total.version = r.version;
      total.cipher = r.cipher;
    }
    if (total.first_error.empty()) total.first_error = r.first_error;
  }
  uint64_t failed = 0;
  for (uint64_t n : total.failures) failed += n;

  std::printf("threads=%" PRIu64 "\n", options.threads);
  std::printf("duration_s=%.3f\n", measured);
  std::printf("connections=%" PRIu64 "\n", total.ok + failed);
  std::printf("conn_per_s=%.1f\n", measured > 0 ? static_cast<double>(total.ok) / measured : 0.0);
  std::printf("ok=%" PRIu64 "\n", total.ok);
  std::printf("resumed=%" PRIu64 "\n", total.resumed);
  std::printf("full=%" PRIu64 "\n", total.ok - total.resumed);
  std::printf("failed=%" PRIu64 "\n", failed);
  for (int k = 0; k < kFailureKinds; ++k) {
    std::printf("error_%s=%" PRIu64 "\n", kFailureNames[k], total.failures[k]);
  }
  std::printf("p50_us=%" PRIu64 "\n", total.latency_us.percentile(50));
  std::printf("p99_us=%" PRIu64 "\n", total.latency_us.percentile(99));
  std::printf("max_us=%" PRIu64 "\n", total.latency_us.max());
  if (total.ok > 0) {
    std::printf("client_cpu_us_per_conn=%.1f\n",
                (cpu1 - cpu0) * 1e6 / static_cast<double>(total.ok));
  } else {
    std::printf("client_cpu_us_per_conn=NA\n");
  }
  std::printf("tls_version=%s\n", total.version.empty() ? "NA" : total.version.c_str());
  std::printf("cipher=%s\n", total.cipher.empty() ? "NA" : total.cipher.c_str());

  std::fprintf(stderr,
               "tlsload: %.1f connections/s for %.3f s over %" PRIu64
               " threads: %" PRIu64 " ok (%" PRIu64 " resumed), %" PRIu64 " failed\n",
               measured > 0 ? static_cast<double>(total.ok) / measured : 0.0, measured,
               options.threads, total.ok, total.resumed, failed);
  if (failed > 0 || (total.ok == 0 && !total.first_error.empty())) {
    std::fprintf(stderr, "  failures");
    for (int k = 0; k < kFailureKinds; ++k) {
      if (total.failures[k] > 0) {
        std::fprintf(stderr, " %s: %" PRIu64, kFailureNames[k], total.failures[k]);
      }
    }
    std::fprintf(stderr, "; first: %s\n", total.first_error.c_str());
  }
  std::fprintf(stderr, "  connection (connect to close) p50 %.3f ms, p99 %.3f ms, max %.3f ms; %s %s\n",
               static_cast<double>(total.latency_us.percentile(50)) / 1000,
               static_cast<double>(total.latency_us.percentile(99)) / 1000,
               static_cast<double>(total.latency_us.max()) / 1000, total.version.c_str(),
               total.cipher.c_str());
  return 0;
}
