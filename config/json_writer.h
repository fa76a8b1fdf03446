#pragma once
// A streaming JSON writer for the documents bulwark builds (GET /config, the admin API's
// answers). It places the commas itself, and its strings go through append_json_string
// (json.h), which the log writers use too, so escaping lives in one place.

#include <cstdint>
#include <string>
#include <string_view>

namespace bulwark::config {

// Writes one compact JSON text into a string, value by value. The writer puts the commas between
// siblings itself; the caller keeps the shape well formed (begin and end calls balanced, and
// inside an object a key() before each value). It does not check that shape.
class JsonWriter {
 public:
  // The text written so far, moved out; the writer is then empty, ready for another text.
  std::string take();

  void begin_object() { open('{'); }
  void end_object() { close('}'); }
  void begin_array() { open('['); }
  void end_array() { close(']'); }

  // Starts a member of the current object; the next call writes its value.
  void key(std::string_view name);

  // A string, escaped by append_json_string (config/json.h): control bytes become \u00XX and
  // bytes that are not valid UTF-8 become \ufffd, so the text stays valid whatever the bytes.
  void string(std::string_view s);
  // An integer of another type must be cast to int64_t or uint64_t (the call is ambiguous
  // otherwise), which says which sign it has.
  void number(int64_t n);
  void number(uint64_t n);
  // The shortest decimal that reads back exactly, without an exponent ("0.2", "100"); NaN and
  // the infinities, which JSON cannot say, are written as null.
  void number(double d);
  void boolean(bool b);
  void null();

  // key(name), then the value as above.
  void member(std::string_view name, std::string_view value);
  void member(std::string_view name, const char* value);  // text, not the bool overload
  void member(std::string_view name, int64_t value);
  void member(std::string_view name, uint64_t value);
  void member(std::string_view name, double value);
  void member(std::string_view name, bool value);

 private:
  void open(char c);
  void close(char c);
  // Writes the comma between siblings; a value right after its key needs none.
  void separate();

  std::string out_;
  bool first_ = true;
  bool after_key_ = false;
};

}  // namespace bulwark::config
