#include "proxy/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "config/json.h"

namespace bulwark::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
const char* const kLevelNames[] = {"debug", "info", "warn", "error"};
}  // namespace

void set_level(Level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool enabled(Level level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

bool parse_level(std::string_view text, Level* out) {
  for (int i = 0; i < 4; ++i) {
    if (text == kLevelNames[i]) {
      *out = static_cast<Level>(i);
      return true;
    }
  }
  return false;
}

LogLine::LogLine(Level level, std::string_view msg) : on_(enabled(level)) {
  if (!on_) return;
  line_.reserve(256);
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char ts[64];
  snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  line_ += "{\"ts\":\"";
  line_ += ts;
  line_ += "\",\"level\":\"";
  line_ += kLevelNames[static_cast<int>(level)];
  line_ += "\",\"msg\":";
  config::append_json_string(line_, msg);
}

LogLine::~LogLine() {
  if (!on_) return;
  line_ += "}\n";
  const char* p = line_.data();
  size_t left = line_.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

void LogLine::key(std::string_view k) {
  line_ += ',';
  config::append_json_string(line_, k);
  line_ += ':';
}

LogLine& LogLine::str(std::string_view k, std::string_view value) {
  if (!on_) return *this;
  key(k);
  config::append_json_string(line_, value);
  return *this;
}

LogLine& LogLine::num(std::string_view k, int64_t value) {
  if (!on_) return *this;
  key(k);
  line_ += std::to_string(value);
  return *this;
}

LogLine& LogLine::dbl(std::string_view k, double value) {
  if (!on_) return *this;
  key(k);
  char buf[32];
  snprintf(buf, sizeof buf, "%.6g", value);
  line_ += buf;
  return *this;
}

LogLine& LogLine::boolean(std::string_view k, bool value) {
  if (!on_) return *this;
  key(k);
  line_ += value ? "true" : "false";
  return *this;
}

}  // namespace bulwark::log
