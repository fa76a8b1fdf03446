#pragma once
// Where a value sits in a YAML document, as error messages name it: "clusters[0].tls.ca",
// "spec.template.metadata.annotations[\"prometheus.io/port\"]". Shared by the config loader and
// `bulwark inject`.

#include <cstddef>
#include <string>
#include <string_view>

namespace bulwark::config {

// `parent`'s child `key`. A key holding a dot or a slash (annotation and label keys) is written
// as ["key"], so the path still reads as one.
inline std::string child_path(const std::string& parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  if (key.find_first_of("./") != std::string_view::npos)
    return parent + "[\"" + std::string(key) + "\"]";
  return parent + "." + std::string(key);
}

// `parent`'s item `index`.
inline std::string item_path(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

}  // namespace bulwark::config
