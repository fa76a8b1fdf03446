#pragma once
// YAML -> Config. Every mistake becomes a ConfigError naming file, line and column, the key and
// what was expected; the loader never throws to its caller and never ignores an unknown key.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace bulwark::config {

struct ConfigError {
  std::string file;
  int line = 0;    // 1-based; 0 when the error is not tied to a place (file unreadable)
  int column = 0;  // 1-based
  std::string message;
  // "FILE:LINE:COL: message" (or "FILE: message" when line is 0).
  std::string to_string() const;
};

struct LoadResult {
  std::shared_ptr<const Config> config;  // null when errors is not empty
  std::vector<ConfigError> errors;
  bool ok() const { return errors.empty(); }
};

// Reads and validates a file. Blocking: call at start-up or off the worker loops.
LoadResult load_config_file(const std::string& path);

// Validates YAML text; `file` is only used in error messages and Config::source_file.
LoadResult load_config_string(std::string_view yaml, const std::string& file);

}  // namespace bulwark::config
