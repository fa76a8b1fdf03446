#pragma once
// How a fuzz target states a property: FUZZ_CHECK(condition, detail) prints the condition and
// the detail (bytes escaped as a C string literal, ready to paste into a test) and aborts, which
// libFuzzer reports as a crash and saves the input for.

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace bulwark::fuzz {

// Bytes as a C string literal writes them, so a report can be pasted into a test.
inline std::string escaped(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  bool after_hex_escape = false;
  for (unsigned char c : s) {
    bool hex_digit = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (after_hex_escape && hex_digit) out += "\"\"";  // "\x41" "1", not "\x411"
    after_hex_escape = false;
    switch (c) {
      case '\r':
        out += "\\r";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      default:
        if (c >= 0x20 && c < 0x7f) {
          out += static_cast<char>(c);
        } else {
          out += "\\x";
          out += kHex[c >> 4];
          out += kHex[c & 15];
          after_hex_escape = true;
        }
    }
  }
  return out;
}

[[noreturn]] inline void fail(const char* property, const std::string& detail) {
  std::fprintf(stderr, "\n*** fuzz property failed: %s\n%s\n", property, detail.c_str());
  std::fflush(stderr);
  std::abort();
}

// Aborts with the condition and `detail` (an expression evaluated only on failure).
#define FUZZ_CHECK(cond, detail)                         \
  do {                                                   \
    if (!(cond)) ::bulwark::fuzz::fail(#cond, (detail)); \
  } while (0)

}  // namespace bulwark::fuzz
