// Transparent mode for real: this test moves its own process into a new network namespace (a
// pod), writes the rules with `bulwark iptables`, and sends traffic that never names bulwark:
// the app's call to a dependency (outbound) and a caller from another namespace (inbound) both
// pass through it, and each reaches the address it was meant for. ctest runs each test case in
// a process of its own, so the namespace ends with the test. Without the privileges (root,
// unshare, iptables) the test is skipped with a message saying which one is missing.

#include <doctest/doctest.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tests/integration/netns.h"
#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

// The pod's bulwark: inbound capture to 15006, outbound to 15001, both reading the original
// destination, each to a cluster of type original_destination.
std::string transparent_config() {
  return "workers: 2\n"
         "drain_delay: 0s\n"
         "admin: {address: 127.0.0.1:0}\n"
         "listeners:\n"
         "  - name: inbound\n"
         "    address: 0.0.0.0:15006\n"
         "    original_destination: true\n"
         "    routes: [{name: app, cluster: app}]\n"
         "  - name: outbound\n"
         "    address: 127.0.0.1:15001\n"
         "    direction: outbound\n"
         "    original_destination: true\n"
         "    routes:\n"
         "      - name: dependencies\n"
         "        cluster: dependencies\n"
         "        retry: {attempts: 2}\n"
         "clusters:\n"
         "  - {name: app, type: original_destination}\n"
         "  - {name: dependencies, type: original_destination}\n";
}

}  // namespace

TEST_CASE("transparent mode: bulwark iptables captures the app's calls and its callers") {
  const std::string missing =
      enter_pod_namespace({"ip", "iptables-restore", "iptables-save", "setpriv", "curl"});
  if (!missing.empty()) {
    MESSAGE("skipped: transparent mode needs root, a network namespace and iptables: " << missing);
    return;
  }
  std::string out;
  // The pod's own address, and a dependency "elsewhere": addresses of this namespace (on lo;
  // there may be no dummy interfaces here).
  std::string failed = run_tools({{"ip", "addr", "add", "10.77.0.2/32", "dev", "lo"},
                                  {"ip", "addr", "add", "10.77.9.9/32", "dev", "lo"}});
  REQUIRE_MESSAGE(failed.empty(), failed);
  TestUpstream dependency({}, "dependency", "10.77.9.9");
  TestUpstream app({}, "app", "10.77.0.2");

  // The rules, as the init container writes them; bulwark runs as root here, so root's own
  // connections pass (--proxy-uid 0) and the app runs as uid 1000.
  const std::vector<std::string> rules = {BULWARK_BINARY,
                                          "iptables",
                                          "--inbound-ports",
                                          std::to_string(app.port()),
                                          "--outbound",
                                          "*",
                                          "--proxy-uid",
                                          "0"};
  REQUIRE_MESSAGE(run_tool(rules, &out) == 0, out);
  REQUIRE_MESSAGE(run_tool(rules, &out) == 0, out);  // twice: the same rules, no second jump
  REQUIRE(run_tool({"iptables-save", "-t", "nat"}, &out) == 0);
  INFO(out);
  size_t jumps = 0;
  for (size_t at = out.find("-j BULWARK_OUTPUT"); at != std::string::npos;
       at = out.find("-j BULWARK_OUTPUT", at + 1)) {
    ++jumps;
  }
  CHECK(jumps == 1);

  BulwarkProcess bulwark;
  bulwark.start(transparent_config());

  // Outbound: the app (uid 1000) calls its dependency by its address; bulwark is in between.
  const std::string url = "http://" + dependency.address() + "/orders/7";
  REQUIRE_MESSAGE(run_tool({"setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "curl", "-sS",
                       "-D", "-", url},
                      &out) == 0,
                  out);
  CHECK(out.find("x-upstream: dependency") != std::string::npos);
  CHECK(out.find("GET /orders/7") != std::string::npos);
  // bulwark's own request id shows it went through the proxy.
  CHECK(out.find("X-Request-Id: ") != std::string::npos);
  auto at_dependency = dependency.received();
  REQUIRE(at_dependency.size() == 1);
  CHECK(at_dependency[0].has("x-forwarded-for"));

  // Inbound: a caller in another namespace (another pod) reaches the app's port; PREROUTING
  // sends it to bulwark's inbound listener, which forwards it to where it was headed.
  NamedNamespace client("bulwark-test-client-" + std::to_string(::getpid()));
  REQUIRE_MESSAGE(client.error().empty(), client.error());
  failed = run_tools(
      {{"ip", "link", "add", "veth-pod", "type", "veth", "peer", "name", "veth-client"},
       {"ip", "link", "set", "veth-client", "netns", client.name()},
       {"ip", "addr", "add", "10.77.1.1/24", "dev", "veth-pod"},
       {"ip", "link", "set", "veth-pod", "up"},
       client.exec({"ip", "addr", "add", "10.77.1.2/24", "dev", "veth-client"}),
       client.exec({"ip", "link", "set", "veth-client", "up"}),
       client.exec({"ip", "route", "add", "10.77.0.0/24", "via", "10.77.1.1"})});
  REQUIRE_MESSAGE(failed.empty(), failed);
  REQUIRE_MESSAGE(run_tool(client.exec({"curl", "-sS", "-D", "-", "--max-time", "5",
                                        "http://" + app.address() + "/hello"}),
                           &out) == 0,
                  out);
  CHECK(out.find("x-upstream: app") != std::string::npos);
  CHECK(out.find("X-Request-Id: ") != std::string::npos);
  auto at_app = app.received();
  REQUIRE(at_app.size() == 1);
  CHECK(at_app[0].get("x-forwarded-for") == "10.77.1.2");

  // Connected straight to the redirect port (no redirect): no original destination, no loop.
  auto direct = http_get(15001, "/not-redirected");
  REQUIRE(direct);
  CHECK(direct->status == 503);
  CHECK(direct->get("x-bulwark-reason") == "no_original_destination");
}
