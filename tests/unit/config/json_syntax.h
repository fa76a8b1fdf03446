#pragma once
// Helpers for the tests of bulwark's JSON output (config/json.h, config/json_writer.h).

#include <cctype>
#include <string_view>

namespace bulwark::config::testing {

// A strict RFC 8259 syntax check, enough to tell that what a JSON writer wrote is well formed: one
// value, no trailing bytes, only the escapes JSON defines, no raw control characters in strings.
class JsonSyntax {
 public:
  static bool valid(std::string_view text) {
    JsonSyntax p(text);
    return p.value() && p.at_end();
  }

 private:
  explicit JsonSyntax(std::string_view text) : s_(text) {}

  bool at_end() const { return i_ == s_.size(); }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  bool value() {
    if (i_ >= s_.size()) return false;
    switch (s_[i_]) {
      case '{':
        return object();
      case '[':
        return array();
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }
  bool object() {
    eat('{');
    if (eat('}')) return true;
    do {
      if (!string() || !eat(':') || !value()) return false;
    } while (eat(','));
    return eat('}');
  }
  bool array() {
    eat('[');
    if (eat(']')) return true;
    do {
      if (!value()) return false;
    } while (eat(','));
    return eat(']');
  }
  bool string() {
    if (!eat('"')) return false;
    while (i_ < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[i_++]);
      if (c == '"') return true;
      if (c < 0x20) return false;
      if (c != '\\') continue;
      if (i_ >= s_.size()) return false;
      const char e = s_[i_++];
      if (e == 'u') {
        for (int k = 0; k < 4; ++k) {
          if (i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_++]))) return false;
        }
      } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
        return false;
      }
    }
    return false;
  }
  bool number() {
    eat('-');
    if (!eat('0')) {
      if (i_ >= s_.size() || s_[i_] < '1' || s_[i_] > '9') return false;
      digits();
    }
    if (eat('.') && !digits()) return false;
    if (eat('e') || eat('E')) {
      if (!eat('+')) eat('-');
      if (!digits()) return false;
    }
    return true;
  }
  // Eats a run of digits; false when there is none.
  bool digits() {
    const size_t start = i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    return i_ > start;
  }

  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace bulwark::config::testing
