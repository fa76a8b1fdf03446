#pragma once
// The manifest fixtures of tests/data/kubernetes, for the unit and the integration tests of
// `bulwark inject`.

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

namespace bulwark::test {

inline const std::string kKubeDataDir = std::string(BULWARK_SOURCE_DIR) + "/tests/data/kubernetes";

// Every manifest fixture (the *.yaml files of tests/data/kubernetes itself, not of its
// subdirectories), sorted.
inline std::vector<std::string> manifests() {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(kKubeDataDir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".yaml")
      files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 8);
  return files;
}

}  // namespace bulwark::test
