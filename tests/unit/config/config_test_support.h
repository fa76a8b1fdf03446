#pragma once
// Helpers shared by the config unit tests.

#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "config/loader.h"

namespace bulwark::config::testing {

// The file name every in-memory config is loaded as.
inline constexpr const char* kTestFile = "test.yaml";

// Loads YAML written as a raw string literal. One leading newline is dropped, so the line after
// `R"(` is line 1 and line numbers in the tests match what a reader counts.
inline LoadResult load(std::string_view yaml) {
  if (!yaml.empty() && yaml.front() == '\n') yaml.remove_prefix(1);
  return load_config_string(yaml, kTestFile);
}

// Every error of `result`, one per line, for failure messages.
inline std::string describe(const LoadResult& result) {
  std::string out;
  for (const ConfigError& e : result.errors) out += e.to_string() + "\n";
  return out.empty() ? "(no errors)" : out;
}

inline bool has_error(const LoadResult& result, int line, int column, std::string_view needle) {
  for (const ConfigError& e : result.errors) {
    if (e.file == kTestFile && e.line == line && e.column == column &&
        e.message.find(needle) != std::string::npos) {
      return true;
    }
  }
  return false;
}

}  // namespace bulwark::config::testing

// Checks that `result` failed with exactly one error, at LINE:COL, whose message contains NEEDLE;
// a second error would mean one mistake is reported twice.
#define CHECK_ONLY_ERROR(result, line, column, needle)                                       \
  do {                                                                                       \
    const auto& check_result_ = (result);                                                    \
    INFO(::bulwark::config::testing::describe(check_result_));                               \
    CHECK(check_result_.config == nullptr);                                                  \
    CHECK(check_result_.errors.size() == 1);                                                 \
    CHECK(::bulwark::config::testing::has_error(check_result_, (line), (column), (needle))); \
  } while (false)

// Checks that `result` has, among others, an error at LINE:COL whose message contains NEEDLE.
#define CHECK_HAS_ERROR(result, line, column, needle)                                        \
  do {                                                                                       \
    const auto& check_result_ = (result);                                                    \
    INFO(::bulwark::config::testing::describe(check_result_));                               \
    CHECK(check_result_.config == nullptr);                                                  \
    CHECK(::bulwark::config::testing::has_error(check_result_, (line), (column), (needle))); \
  } while (false)

#define CHECK_LOADS(result)                                    \
  do {                                                         \
    const auto& check_result_ = (result);                      \
    INFO(::bulwark::config::testing::describe(check_result_)); \
    REQUIRE(check_result_.ok());                               \
    REQUIRE(check_result_.config != nullptr);                  \
  } while (false)
