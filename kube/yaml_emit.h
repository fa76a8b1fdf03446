#pragma once
// Writes YAML nodes back out so that they read back as the same values.
//
// yaml-cpp's own `Emitter << Node` drops the quotes of a quoted scalar, so the annotation
// `prometheus.io/scrape: "true"` would come back as the boolean true, and "9902" as a number,
// both of which Kubernetes rejects where it expects strings. Here a scalar that was quoted in the
// input (yaml-cpp tags it "!") stays quoted, and a string this program makes with string_node()
// is quoted when it would otherwise read as something else. Flow style ({a: 1}) and key order
// are kept; comments and anchors are not (an alias is written out in full), and of the tags only
// YAML's own scalar ones (!!str, !!int, ...) are.

#include <yaml-cpp/yaml.h>

#include <string>
#include <string_view>
#include <vector>

namespace bulwark::kube {

// A scalar that reads back as this string: quoted when its plain form would read as a boolean,
// a null or a number (true, no, ~, 9902, 100m), or when it spans lines (written as a | block).
YAML::Node string_node(std::string_view value);

// The documents as one stream: each ends with a newline, and "---" stands between two of them.
std::string emit_stream(const std::vector<YAML::Node>& documents);

}  // namespace bulwark::kube
