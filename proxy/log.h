#pragma once
// Structured logs: one JSON object a line on stderr.
//
//   log::info("listening").str("listener", name).str("address", addr);
//
// The line is written when the temporary LogLine ends (at the end of the statement), with one
// write(2), so lines from different threads never interleave. Logging is for events (start,
// errors, state changes), never once per request; access logs come through their own path.
// The level is process-wide: the one global in bulwark, set once from the command line.

#include <cstdint>
#include <string>
#include <string_view>

namespace bulwark::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_level(Level level);
bool enabled(Level level);
// "debug" | "info" | "warn" | "error"; false if unknown.
bool parse_level(std::string_view text, Level* out);

class LogLine {
 public:
  LogLine(Level level, std::string_view msg);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;

  LogLine& str(std::string_view key, std::string_view value);
  LogLine& num(std::string_view key, int64_t value);
  LogLine& dbl(std::string_view key, double value);
  LogLine& boolean(std::string_view key, bool value);

 private:
  void key(std::string_view k);
  bool on_;
  std::string line_;
};

inline LogLine debug(std::string_view msg) { return LogLine(Level::kDebug, msg); }
inline LogLine info(std::string_view msg) { return LogLine(Level::kInfo, msg); }
inline LogLine warn(std::string_view msg) { return LogLine(Level::kWarn, msg); }
inline LogLine error(std::string_view msg) { return LogLine(Level::kError, msg); }

}  // namespace bulwark::log
