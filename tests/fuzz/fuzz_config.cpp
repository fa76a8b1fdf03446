// Fuzz target: the config loader. Any text goes through load_config_string, the entry point for
// YAML that is already in memory (load_config_file reads the file, then calls it), so the target
// does no I/O. The loader must never crash or throw: it returns a config or errors, never both,
// each error naming the file. A config that loads is also written out as the admin /config JSON,
// which must be valid JSON (and valid UTF-8) whatever bytes the YAML held.

#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/json.h"
#include "config/loader.h"
#include "tests/fuzz/fuzz_check.h"

using namespace bulwark;
using fuzz::escaped;

namespace {

// A strict JSON (RFC 8259) recognizer for what to_json writes.
class JsonChecker {
 public:
  explicit JsonChecker(std::string_view s) : s_(s) {}
  bool valid() {
    ws();
    if (!value(0)) return false;
    ws();
    return pos_ == s_.size();
  }

 private:
  bool value(int depth) {
    if (depth > 64 || pos_ >= s_.size()) return false;
    char c = s_[pos_];
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') return string();
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    return literal("true") || literal("false") || literal("null");
  }
  bool object(int depth) {
    ++pos_;
    ws();
    if (eat('}')) return true;
    do {
      ws();
      if (!string()) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      if (!value(depth + 1)) return false;
      ws();
    } while (eat(','));
    return eat('}');
  }
  bool array(int depth) {
    ++pos_;
    ws();
    if (eat(']')) return true;
    do {
      ws();
      if (!value(depth + 1)) return false;
      ws();
    } while (eat(','));
    return eat(']');
  }
  bool string() {
    if (!eat('"')) return false;
    while (pos_ < s_.size()) {
      auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++pos_ >= s_.size()) return false;
        char e = s_[pos_++];
        if (e == 'u') {
          for (int i = 0; i < 4; ++i) {
            if (pos_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[pos_++])))
              return false;
          }
        } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
          return false;
        }
        continue;
      }
      if (c < 0x80) {
        ++pos_;
        continue;
      }
      // UTF-8: the lead byte says how many continuation bytes follow; no overlong forms, no
      // surrogates, nothing above U+10FFFF.
      int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : -1;
      if (more < 0 || c < 0xc2 || c > 0xf4) return false;
      if (pos_ + static_cast<size_t>(more) >= s_.size()) return false;
      auto c1 = static_cast<unsigned char>(s_[pos_ + 1]);
      if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) ||
          (c == 0xf4 && c1 > 0x8f))
        return false;
      for (int i = 1; i <= more; ++i) {
        if ((static_cast<unsigned char>(s_[pos_ + static_cast<size_t>(i)]) & 0xc0) != 0x80)
          return false;
      }
      pos_ += static_cast<size_t>(more) + 1;
    }
    return false;
  }
  bool number() {
    size_t start = pos_;
    eat('-');
    if (eat('0')) {
    } else if (!digits()) {
      return false;
    }
    if (eat('.') && !digits()) return false;
    if (eat('e') || eat('E')) {
      if (!eat('+')) eat('-');
      if (!digits()) return false;
    }
    return pos_ > start;
  }
  bool digits() {
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    return pos_ > start;
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r'))
      ++pos_;
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view yaml(reinterpret_cast<const char*>(data), size);
  config::LoadResult r = config::load_config_string(yaml, "fuzz.yaml");
  FUZZ_CHECK(r.ok() == (r.config != nullptr), escaped(yaml));
  for (const config::ConfigError& e : r.errors) {
    FUZZ_CHECK(e.file == "fuzz.yaml" && e.line >= 0 && e.column >= 0 && !e.message.empty(),
               e.to_string() + "\n" + escaped(yaml));
  }
  if (r.config != nullptr) {
    std::string json = config::to_json(*r.config);
    FUZZ_CHECK(JsonChecker(json).valid(),
               "invalid JSON: " + escaped(json) + "\nfrom: " + escaped(yaml));
  }
  return 0;
}
