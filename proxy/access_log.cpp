#include "proxy/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>

#include "config/json.h"
#include "proxy/log.h"

namespace bulwark {

namespace {

void append_time(std::string& out, int64_t unix_us) {
  const time_t secs = static_cast<time_t>(unix_us / 1'000'000);
  tm utc{};
  gmtime_r(&secs, &utc);
  char buf[40];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  n += static_cast<size_t>(
      snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(unix_us / 1000 % 1000)));
  out.append(buf, n);
}

void append_uint(std::string& out, uint64_t n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, static_cast<size_t>(end - buf));
}

void append_ms(std::string& out, uint64_t us) {
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%llu.%03llu", static_cast<unsigned long long>(us / 1000),
                   static_cast<unsigned long long>(us % 1000));
  out.append(buf, static_cast<size_t>(n));
}

// The inside of a JSON string: quotes, backslashes and control characters escaped.
void append_escaped(std::string& out, std::string_view s) {
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
}

void append_string_or_null(std::string& out, std::string_view s) {
  if (s.empty()) {
    out += "null";
  } else {
    config::append_json_string(out, s);
  }
}

// Each try: the failed ones, then the last.
template <typename F>
void for_each_try(const AccessRecord& r, F&& fn) {
  std::string_view rest = r.failed_tries;
  while (!rest.empty()) {
    const size_t comma = rest.find(", ");
    fn(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 2);
  }
  if (!r.last_try.empty()) fn(r.last_try);
}

// The fields after each format's head, in one place: what each one says; the formats differ
// only in syntax and order.
enum class Field : uint8_t {
  kDuration,
  kUpstreamTime,
  kBytesIn,
  kBytesOut,
  kListener,
  kRoute,
  kCluster,
  kUpstream,
  kTries,
  kAttempts,
  kReason,
  kFlags,
  kRequestId,
};
constexpr Field kJsonFields[] = {
    Field::kDuration, Field::kUpstreamTime, Field::kBytesIn,  Field::kBytesOut, Field::kCluster,
    Field::kUpstream, Field::kTries,        Field::kAttempts, Field::kReason,   Field::kFlags};
constexpr Field kTextFields[] = {
    Field::kFlags,    Field::kReason,   Field::kDuration, Field::kUpstreamTime, Field::kBytesIn,
    Field::kBytesOut, Field::kListener, Field::kRoute,    Field::kCluster,      Field::kUpstream,
    Field::kAttempts, Field::kTries,    Field::kRequestId};

// JSON: ,"key":value with null for none. Text: " key=value" with - for none, and quotes around
// values a client may fill with spaces.
void append_field(const AccessRecord& r, Field f, bool json, std::string& out) {
  auto key = [&](std::string_view k) {
    out += json ? ",\"" : " ";
    out += k;
    out += json ? "\":" : "=";
  };
  auto text = [&](std::string_view k, std::string_view v, bool quoted = false) {
    key(k);
    if (json) return append_string_or_null(out, v);
    if (!quoted) {
      out += v.empty() ? std::string_view("-") : v;
      return;
    }
    out += '"';
    append_escaped(out, v);
    out += '"';
  };
  switch (f) {
    case Field::kDuration:
      key("duration_ms");
      return append_ms(out, r.duration_us);
    case Field::kUpstreamTime:
      key("upstream_ms");
      if (r.upstream_us < 0) {
        out += json ? "null" : "-";
      } else {
        append_ms(out, static_cast<uint64_t>(r.upstream_us));
      }
      return;
    case Field::kBytesIn:
      key("bytes_in");
      return append_uint(out, r.bytes_in);
    case Field::kBytesOut:
      key("bytes_out");
      return append_uint(out, r.bytes_out);
    case Field::kListener:
      return text("listener", r.listener);
    case Field::kRoute:
      return text("route", r.route);
    case Field::kCluster:
      return text("cluster", r.cluster);
    case Field::kUpstream:
      return text("upstream", r.upstream);
    case Field::kAttempts:
      key("attempts");
      return append_uint(out, r.attempts);
    case Field::kReason:
      return text("reason", r.reason);
    case Field::kFlags:
      // Never empty: "-" when there is no flag, in both formats.
      key("flags");
      if (json) return config::append_json_string(out, r.flags.empty() ? "-" : r.flags);
      out += r.flags.empty() ? std::string_view("-") : r.flags;
      return;
    case Field::kRequestId:
      return text("request_id", r.request_id, true);
    case Field::kTries: {
      key("tries");
      out += json ? '[' : '"';
      bool first = true;
      for_each_try(r, [&](std::string_view t) {
        if (!first) out += json ? "," : ", ";
        first = false;
        if (json) {
          config::append_json_string(out, t);
        } else {
          append_escaped(out, t);
        }
      });
      out += json ? ']' : '"';
      return;
    }
  }
}

void format_json(const AccessRecord& r, std::string& out) {
  out += "{\"time\":\"";
  append_time(out, r.start_unix_us);
  out += "\",\"request_id\":";
  append_string_or_null(out, r.request_id);
  out += ",\"listener\":";
  append_string_or_null(out, r.listener);
  out += ",\"route\":";
  append_string_or_null(out, r.route);
  const size_t space = r.request.find(' ');
  out += ",\"method\":";
  append_string_or_null(out, r.request.substr(0, space));
  out += ",\"path\":";
  append_string_or_null(
      out, space == std::string_view::npos ? std::string_view() : r.request.substr(space + 1));
  out += r.http10 ? ",\"protocol\":\"HTTP/1.0\"" : ",\"protocol\":\"HTTP/1.1\"";
  out += ",\"status\":";
  append_uint(out, static_cast<uint64_t>(r.status));
  for (Field f : kJsonFields) append_field(r, f, true, out);
  if (!r.tls_version.empty()) {
    out += ",\"tls\":{\"version\":";
    config::append_json_string(out, r.tls_version);
    out += ",\"cipher\":";
    config::append_json_string(out, r.tls_cipher);
    out += ",\"sni\":";
    append_string_or_null(out, r.tls_sni);
    out += r.tls_resumed ? ",\"resumed\":true,\"peer\":" : ",\"resumed\":false,\"peer\":";
    append_string_or_null(out, r.tls_peer);
    out += '}';
  }
  out += "}\n";
}

// The time, the request line and the status, then key=value pairs, as an nginx or Envoy line.
void format_text(const AccessRecord& r, std::string& out) {
  append_time(out, r.start_unix_us);
  out += " \"";
  append_escaped(out, r.request.empty() ? std::string_view("-") : r.request);
  out += r.http10 ? " HTTP/1.0\" " : " HTTP/1.1\" ";
  append_uint(out, static_cast<uint64_t>(r.status));
  for (Field f : kTextFields) append_field(r, f, false, out);
  if (!r.tls_version.empty()) {
    auto pair = [&out](std::string_view k, std::string_view v) {
      out += ' ';
      out += k;
      out += "=\"";
      append_escaped(out, v.empty() ? std::string_view("-") : v);
      out += '"';
    };
    pair("tls", r.tls_version);
    pair("tls_cipher", r.tls_cipher);
    pair("tls_sni", r.tls_sni);
    pair("tls_resumed", r.tls_resumed ? "true" : "false");
    pair("tls_peer", r.tls_peer);
  }
  out += '\n';
}

int open_log(const std::string& path) {
  // A duplicate, so that closing ours never closes the process's stdout.
  const int inherited = inherited_log_fd(path);
  if (inherited >= 0) return ::fcntl(inherited, F_DUPFD_CLOEXEC, 3);
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

}  // namespace

int inherited_log_fd(const std::string& path) {
  if (path == "-" || path == "/dev/stdout") return 1;
  if (path == "/dev/stderr") return 2;
  return -1;
}

void format_access_line(const AccessRecord& r, config::AccessLogFormat format, std::string& out) {
  if (format == config::AccessLogFormat::kText) {
    format_text(r, out);
  } else {
    format_json(r, out);
  }
}

std::unique_ptr<AccessLog> AccessLog::open(const config::AccessLogConfig& config,
                                           std::string* error) {
  int fd = open_log(config.path);
  if (fd < 0) {
    *error = std::strerror(errno);
    return nullptr;
  }
  return std::unique_ptr<AccessLog>(new AccessLog(config, fd));
}

AccessLog::AccessLog(const config::AccessLogConfig& config, int fd) : config_(config), fd_(fd) {
  writer_ = std::thread([this] { run(); });
}

AccessLog::~AccessLog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  writer_.join();
  if (fd_ >= 0) ::close(fd_);
}

void AccessLog::submit(std::string lines) {
  if (lines.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queued_bytes_ + lines.size() <= kMaxQueuedBytes) {
      queued_bytes_ += lines.size();
      queue_.push_back(std::move(lines));
      lines.clear();
    }
  }
  if (lines.empty()) {
    wake_.notify_one();
  } else {
    // The writer is too far behind: drop rather than make a worker wait.
    dropped_lines_.fetch_add(static_cast<uint64_t>(std::count(lines.begin(), lines.end(), '\n')),
                             std::memory_order_relaxed);
  }
}

void AccessLog::reopen() {
  // Rotation moves files; stdout stays what it is.
  if (inherited_log_fd(config_.path) >= 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!reopen_) reopen_at_ = queue_.size();
    reopen_ = true;
  }
  wake_.notify_one();
}

void AccessLog::run() {
  std::vector<std::string> batch;
  for (;;) {
    bool reopen = false, stop = false;
    size_t reopen_at = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stop_ || reopen_ || !queue_.empty(); });
      batch.swap(queue_);
      queued_bytes_ = 0;
      reopen = reopen_;
      reopen_at = reopen_at_;
      reopen_ = false;
      stop = stop_;
    }
    if (reopen) {
      // Lines handed over before the signal still go to the old file.
      for (size_t i = 0; i < reopen_at && i < batch.size(); ++i) write_all(batch[i]);
      batch.erase(batch.begin(),
                  batch.begin() + static_cast<ptrdiff_t>(std::min(reopen_at, batch.size())));
      int fd = open_log(config_.path);
      if (fd < 0) {
        log::error("cannot reopen the access log; still writing to the old file")
            .str("path", config_.path)
            .str("error", std::strerror(errno));
      } else {
        ::close(fd_);
        fd_ = fd;
        log::info("access log reopened").str("path", config_.path);
      }
    }
    for (const std::string& lines : batch) write_all(lines);
    batch.clear();
    if (stop) return;
  }
}

void AccessLog::write_all(const std::string& lines) {
  size_t done = 0;
  while (done < lines.size()) {
    ssize_t n = ::write(fd_, lines.data() + done, lines.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      dropped_lines_.fetch_add(
          static_cast<uint64_t>(
              std::count(lines.begin() + static_cast<ptrdiff_t>(done), lines.end(), '\n')),
          std::memory_order_relaxed);
      static std::atomic<bool> warned{false};
      if (!warned.exchange(true)) {
        log::error("cannot write the access log; dropping lines")
            .str("path", config_.path)
            .str("error", std::strerror(n < 0 ? errno : EIO));
      }
      return;
    }
  }
}

}  // namespace bulwark
