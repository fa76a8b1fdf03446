#include "config/config.h"

#include <doctest/doctest.h>

#include <string>

namespace bulwark::config {
namespace {

TEST_CASE("SocketAddress::text brackets IPv6 hosts only") {
  CHECK(SocketAddress{"127.0.0.1", 80, true}.text() == "127.0.0.1:80");
  CHECK(SocketAddress{"0.0.0.0", 0, true}.text() == "0.0.0.0:0");
  CHECK(SocketAddress{"::1", 80, true}.text() == "[::1]:80");
  CHECK(SocketAddress{"2001:db8::1", 65535, true}.text() == "[2001:db8::1]:65535");
  CHECK(SocketAddress{"app.internal", 9001, false}.text() == "app.internal:9001");
}

TEST_CASE("Config::find_cluster finds a cluster by exact name") {
  Config config;
  config.clusters.resize(2);
  config.clusters[0].name = "app";
  config.clusters[1].name = "batch";
  CHECK(config.find_cluster("app") == &config.clusters[0]);
  CHECK(config.find_cluster("batch") == &config.clusters[1]);
  CHECK(config.find_cluster("App") == nullptr);
  CHECK(config.find_cluster("") == nullptr);
  CHECK(Config{}.find_cluster("app") == nullptr);
}

TEST_CASE("to_string(LbPolicy) gives the YAML spelling") {
  CHECK(std::string(to_string(LbPolicy::kRoundRobin)) == "round_robin");
  CHECK(std::string(to_string(LbPolicy::kLeastRequest)) == "least_request");
  CHECK(std::string(to_string(LbPolicy::kRandom)) == "random");
}

}  // namespace
}  // namespace bulwark::config
