#include "config/json_writer.h"

#include <cmath>

#include "config/json.h"
#include "config/units.h"

namespace bulwark::config {

std::string JsonWriter::take() {
  std::string out = std::move(out_);
  out_.clear();
  first_ = true;
  after_key_ = false;
  return out;
}

void JsonWriter::key(std::string_view name) {
  separate();
  append_json_string(out_, name);
  out_ += ':';
  after_key_ = true;
}

void JsonWriter::string(std::string_view s) {
  separate();
  append_json_string(out_, s);
}

void JsonWriter::number(int64_t n) {
  separate();
  out_ += std::to_string(n);
}

void JsonWriter::number(uint64_t n) {
  separate();
  out_ += std::to_string(n);
}

void JsonWriter::number(double d) {
  separate();
  out_ += std::isfinite(d) ? format_decimal(d) : "null";
}

void JsonWriter::boolean(bool b) {
  separate();
  out_ += b ? "true" : "false";
}

void JsonWriter::null() {
  separate();
  out_ += "null";
}

void JsonWriter::member(std::string_view name, std::string_view value) {
  key(name);
  string(value);
}

void JsonWriter::member(std::string_view name, const char* value) {
  key(name);
  string(value);
}

void JsonWriter::member(std::string_view name, int64_t value) {
  key(name);
  number(value);
}

void JsonWriter::member(std::string_view name, uint64_t value) {
  key(name);
  number(value);
}

void JsonWriter::member(std::string_view name, double value) {
  key(name);
  number(value);
}

void JsonWriter::member(std::string_view name, bool value) {
  key(name);
  boolean(value);
}

void JsonWriter::open(char c) {
  separate();
  out_ += c;
  first_ = true;
}

void JsonWriter::close(char c) {
  out_ += c;
  first_ = false;
}

void JsonWriter::separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_) out_ += ',';
  first_ = false;
}

}  // namespace bulwark::config
