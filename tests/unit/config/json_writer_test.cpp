#include "config/json_writer.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "json_syntax.h"

namespace bulwark::config {
namespace {

using testing::JsonSyntax;

TEST_CASE("JsonWriter writes scalars as JSON") {
  JsonWriter w;
  w.begin_array();
  w.string("text");
  w.number(int64_t{-42});
  w.number(std::numeric_limits<int64_t>::min());
  w.number(std::numeric_limits<uint64_t>::max());
  w.number(0.25);
  w.number(100.0);
  w.boolean(true);
  w.boolean(false);
  w.null();
  w.end_array();
  const std::string out = w.take();
  CHECK(out ==
        R"(["text",-42,-9223372036854775808,18446744073709551615,0.25,100,true,false,null])");
  CHECK(JsonSyntax::valid(out));
}

TEST_CASE("JsonWriter writes NaN and the infinities as null") {
  JsonWriter w;
  w.begin_array();
  w.number(std::nan(""));
  w.number(std::numeric_limits<double>::infinity());
  w.number(-std::numeric_limits<double>::infinity());
  w.end_array();
  CHECK(w.take() == "[null,null,null]");
}

TEST_CASE("JsonWriter puts commas between siblings and none after a key or an opening") {
  JsonWriter w;
  w.begin_object();
  w.key("empty_object");
  w.begin_object();
  w.end_object();
  w.key("empty_array");
  w.begin_array();
  w.end_array();
  w.key("nested");
  w.begin_array();
  w.begin_array();
  w.number(uint64_t{1});
  w.end_array();
  w.begin_object();
  w.member("a", uint64_t{1});
  w.member("b", "two");
  w.end_object();
  w.begin_array();
  w.end_array();
  w.number(uint64_t{3});
  w.end_array();
  w.member("last", true);
  w.end_object();
  const std::string out = w.take();
  CHECK(out == R"({"empty_object":{},"empty_array":[],"nested":[[1],{"a":1,"b":"two"},[],3],)"
               R"("last":true})");
  CHECK(JsonSyntax::valid(out));
}

TEST_CASE("JsonWriter's member() writes the key and a value of the argument's type") {
  JsonWriter w;
  w.begin_object();
  w.member("view", std::string_view("v"));
  w.member("string", std::string("s"));
  w.member("literal", "l");  // text, not true
  w.member("signed", int64_t{-1});
  w.member("unsigned", uint64_t{1});
  w.member("fraction", 0.5);
  w.member("flag", false);
  w.end_object();
  CHECK(w.take() ==
        R"({"view":"v","string":"s","literal":"l","signed":-1,"unsigned":1,"fraction":0.5,)"
        R"("flag":false})");
}

TEST_CASE("JsonWriter escapes keys and strings through append_json_string") {
  JsonWriter w;
  w.begin_object();
  w.member("quote\"key", "back\\slash");
  w.member("control", std::string_view("\0\x01\n\x1f\x7f", 5));
  w.member("utf8", "caf\xc3\xa9");
  w.member("invalid\xff", "a\xc3(\x80z");
  w.end_object();
  const std::string out = w.take();
  CHECK(out == R"({"quote\"key":"back\\slash","control":"\u0000\u0001\u000a\u001f\u007f",)"
               "\"utf8\":\"caf\xc3\xa9\","
               R"("invalid\ufffd":"a\ufffd(\ufffdz"})");
  CHECK(JsonSyntax::valid(out));
}

TEST_CASE("JsonWriter's take() empties the writer for the next text") {
  JsonWriter w;
  w.begin_array();
  w.number(uint64_t{1});
  w.end_array();
  CHECK(w.take() == "[1]");
  w.begin_array();
  w.number(uint64_t{2});
  w.end_array();
  CHECK(w.take() == "[2]");
  w.string("top level");
  CHECK(w.take() == R"("top level")");
}

}  // namespace
}  // namespace bulwark::config
