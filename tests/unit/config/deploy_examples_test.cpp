// The configs shipped in deploy/ must load, and do what their comments say: a user copies them
// as they are.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "config/loader.h"

TEST_CASE("deploy/kubernetes: the bulwark configs load, admin on loopback and probes public") {
  for (const char* file : {"/base/bulwark.yaml", "/overlays/transparent/bulwark.yaml"}) {
    CAPTURE(file);
    auto loaded = bulwark::config::load_config_file(std::string(BULWARK_SOURCE_DIR) + "/deploy/kubernetes" + file);
    for (const auto& e : loaded.errors) INFO(e.to_string());
    REQUIRE(loaded.ok());
    const auto& c = *loaded.config;
    CHECK(c.admin.address.text() == "127.0.0.1:9901");
    REQUIRE(c.probes.has_value());
    CHECK(c.probes->address.text() == "0.0.0.0:9902");
    CHECK(c.readiness.require_healthy == std::vector<std::string>{"app"});
    bool outbound = false;
    for (const auto& l : c.listeners) {
      if (l.direction == bulwark::config::ListenerDirection::kOutbound) {
        outbound = true;
        CHECK(l.address.host == "127.0.0.1");  // the app's calls out never leave the pod
      }
    }
    CHECK(outbound);
  }
}
