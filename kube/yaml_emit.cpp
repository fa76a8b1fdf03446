#include "kube/yaml_emit.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace bulwark::kube {

namespace {

// The tag yaml-cpp gives a scalar that was quoted or a block (| or >) in its source.
constexpr std::string_view kNonPlainTag = "!";
constexpr std::string_view kCoreSchemaPrefix = "tag:yaml.org,2002:";

// The scalar tags of YAML's core and 1.1 schemas, written !!str and so on.
constexpr std::array<std::string_view, 7> kScalarTags{"str",  "int",       "float", "bool",
                                                      "null", "timestamp", "binary"};

// Words that YAML 1.1 (which Kubernetes' parser follows) reads as booleans or null.
constexpr std::array<std::string_view, 11> kSpecialWords{"true", "false", "yes",  "no", "on", "off",
                                                         "y",    "n",     "null", "~",  ""};

bool needs_quotes(std::string_view value) {
  if (value.find('\n') != std::string_view::npos) return true;
  std::string lower(value);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (std::find(kSpecialWords.begin(), kSpecialWords.end(), lower) != kSpecialWords.end())
    return true;
  // Anything that could be a number (9902, -1, .5, 1e3, 0x1f, .inf) or starts like one (100m
  // would be read as a string, but quoting it costs nothing and needs no finer rule).
  auto digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  if (digit(value.front())) return true;
  bool sign_or_dot = value.front() == '-' || value.front() == '+' || value.front() == '.';
  if (!sign_or_dot || value.size() < 2) return false;
  return digit(value[1]) || value[1] == '.' || lower == ".inf" || lower == ".nan";
}

// A | block reads back exactly when the text ends with one newline (| keeps one), does not start
// with a space or a newline (the first line sets the indentation) and has no control character
// but tabs and newlines (a carriage return would be read as a line break).
bool fits_literal_block(const std::string& value) {
  if (value.size() < 2 || value.back() != '\n' || value[value.size() - 2] == '\n') return false;
  if (value.front() == ' ' || value.front() == '\n') return false;
  // A block has no escapes: every other character must be printable.
  return std::none_of(value.begin(), value.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return (byte < 0x20 && c != '\n' && c != '\t') || byte == 0x7f;
  });
}

// No control character: single quotes have no escapes, so one would be written raw.
bool printable(const std::string& value) {
  return std::none_of(value.begin(), value.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
  });
}

// Whether yaml-cpp, asked to write `value` plain, would quote it (a leading space, ": ", a
// character that cannot start a plain scalar, a flow indicator inside [ ] or { }).
bool yaml_cpp_would_quote(const std::string& value, bool in_flow) {
  YAML::Emitter probe;
  if (in_flow) probe << YAML::Flow << YAML::BeginSeq;
  probe << value;
  if (in_flow) probe << YAML::EndSeq;
  std::string_view text(probe.c_str(), probe.size());
  if (in_flow) text.remove_prefix(1);  // the '['
  return !text.empty() && (text.front() == '"' || text.front() == '\'');
}

void emit_scalar(YAML::Emitter& out, const YAML::Node& node, bool in_flow) {
  const std::string& tag = node.Tag();
  const std::string& value = node.Scalar();
  // YAML's own scalar tags (!!str 123) say how Kubernetes reads the value, so they stay; any
  // other tag means nothing to Kubernetes and is dropped.
  if (tag.rfind(kCoreSchemaPrefix, 0) == 0) {
    std::string_view suffix = std::string_view(tag).substr(kCoreSchemaPrefix.size());
    if (std::find(kScalarTags.begin(), kScalarTags.end(), suffix) != kScalarTags.end())
      out << YAML::SecondaryTag(std::string(suffix));
  }
  // Quoted when it was (or had to be) quoted in the input, so that reading the output back
  // chooses the same style again: the second run writes the same bytes as the first.
  bool quoted = tag == kNonPlainTag || !printable(value) || yaml_cpp_would_quote(value, in_flow);
  if (!quoted) {
    out << value;
  } else if (!in_flow && fits_literal_block(value)) {
    // Without its last newline: yaml-cpp ends the block with the line break that | keeps.
    out << YAML::Literal << value.substr(0, value.size() - 1);
  } else if (value.find('"') != std::string::npos && printable(value)) {
    // JSON in an annotation reads better without a backslash before each quote (single quotes
    // have no escapes, so only for printable text).
    out << YAML::SingleQuoted << value;
  } else {
    // Control characters are escaped here; in a plain scalar yaml-cpp would write them raw.
    out << YAML::DoubleQuoted << value;
  }
}

void emit_node(YAML::Emitter& out, const YAML::Node& node, bool in_flow) {
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      out << YAML::Null;
      return;
    case YAML::NodeType::Scalar:
      emit_scalar(out, node, in_flow);
      return;
    case YAML::NodeType::Sequence: {
      bool flow = in_flow || node.Style() == YAML::EmitterStyle::Flow;
      if (flow) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (const YAML::Node& item : node) emit_node(out, item, flow);
      out << YAML::EndSeq;
      return;
    }
    case YAML::NodeType::Map: {
      bool flow = in_flow || node.Style() == YAML::EmitterStyle::Flow;
      if (flow) out << YAML::Flow;
      out << YAML::BeginMap;
      for (const auto& entry : node) {
        out << YAML::Key;
        emit_node(out, entry.first, flow);
        out << YAML::Value;
        emit_node(out, entry.second, flow);
      }
      out << YAML::EndMap;
      return;
    }
  }
}

}  // namespace

YAML::Node string_node(std::string_view value) {
  YAML::Node node{std::string(value)};
  if (needs_quotes(value)) node.SetTag(std::string(kNonPlainTag));
  return node;
}

std::string emit_stream(const std::vector<YAML::Node>& documents) {
  std::string text;
  for (size_t i = 0; i < documents.size(); ++i) {
    if (i > 0) text += "---\n";
    YAML::Emitter out;
    emit_node(out, documents[i], false);
    text.append(out.c_str(), out.size());  // a NUL in a scalar must not end the text
    text += '\n';
  }
  return text;
}

}  // namespace bulwark::kube
