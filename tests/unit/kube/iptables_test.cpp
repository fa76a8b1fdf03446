#include "kube/iptables.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace bulwark::kube {
namespace {

TEST_CASE("iptables: the listed ports are captured, bulwark's own uid and loopback never are") {
  IptablesOptions o;
  o.inbound_ports = {8080, 8443};
  o.outbound_ports = {80};
  o.proxy_uid = 65532;
  CHECK(iptables_rules(o, false) ==
        "*nat\n"
        ":BULWARK_INBOUND - [0:0]\n"
        ":BULWARK_IN_REDIRECT - [0:0]\n"
        ":BULWARK_OUTPUT - [0:0]\n"
        ":BULWARK_OUT_REDIRECT - [0:0]\n"
        "-A BULWARK_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n"
        "-A BULWARK_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"
        "-A PREROUTING -p tcp -j BULWARK_INBOUND\n"
        "-A OUTPUT -p tcp -j BULWARK_OUTPUT\n"
        "-A BULWARK_INBOUND -p tcp --dport 8080 -j BULWARK_IN_REDIRECT\n"
        "-A BULWARK_INBOUND -p tcp --dport 8443 -j BULWARK_IN_REDIRECT\n"
        "-A BULWARK_OUTPUT -m owner --uid-owner 65532 -j RETURN\n"
        "-A BULWARK_OUTPUT -d 127.0.0.0/8 -j RETURN\n"
        "-A BULWARK_OUTPUT -p tcp --dport 80 -j BULWARK_OUT_REDIRECT\n"
        "COMMIT\n");
}

TEST_CASE("iptables: '*' captures every port but the excluded ones, which return first") {
  IptablesOptions o;
  o.inbound_all = true;
  o.exclude_inbound_ports = {9902};
  o.outbound_all = true;
  o.exclude_outbound_ports = {443, 5432};
  o.inbound_redirect_port = 16006;
  o.outbound_redirect_port = 16001;
  const std::string v4 = iptables_rules(o, false);
  const auto before = [&](const std::string& a, const std::string& b) {
    return v4.find(a) != std::string::npos && v4.find(a) < v4.find(b);
  };
  CHECK(before("-A BULWARK_INBOUND -p tcp --dport 9902 -j RETURN",
               "-A BULWARK_INBOUND -p tcp -j BULWARK_IN_REDIRECT"));
  CHECK(before("-A BULWARK_OUTPUT -p tcp --dport 443 -j RETURN",
               "-A BULWARK_OUTPUT -p tcp -j BULWARK_OUT_REDIRECT"));
  CHECK(before("-A BULWARK_OUTPUT -m owner --uid-owner 65532 -j RETURN",
               "-A BULWARK_OUTPUT -p tcp -j BULWARK_OUT_REDIRECT"));
  CHECK(v4.find("--to-ports 16006") != std::string::npos);
  CHECK(v4.find("--to-ports 16001") != std::string::npos);
  // IPv6: the loopback address is ::1.
  const std::string v6 = iptables_rules(o, true);
  CHECK(v6.find("-A BULWARK_OUTPUT -d ::1/128 -j RETURN") != std::string::npos);
  CHECK(v6.find("127.0.0.0/8") == std::string::npos);
}

TEST_CASE("iptables: the jumps into the chains are written only where iptables-save has none") {
  IptablesOptions o;
  o.inbound_ports = {8080};
  const std::string fresh = iptables_rules(o, false, true);
  const std::string again = iptables_rules(o, false, false);
  CHECK(fresh.find("-A PREROUTING") != std::string::npos);
  CHECK(again.find("-A PREROUTING") == std::string::npos);
  CHECK(again.find("-A OUTPUT") == std::string::npos);
  CHECK(again.find(":BULWARK_INBOUND - [0:0]") != std::string::npos);  // still replaced
  // As iptables-save (nft) prints them.
  const std::string saved =
      "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:BULWARK_INBOUND - [0:0]\n"
      "-A PREROUTING -p tcp -j BULWARK_INBOUND\n-A OUTPUT -p tcp -j BULWARK_OUTPUT\nCOMMIT\n";
  CHECK(has_bulwark_jumps(saved));
  CHECK_FALSE(has_bulwark_jumps("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"));
}

// iptables_main on these arguments (after "iptables"), as the command line gives them.
int run_main(std::vector<std::string> args) {
  args.insert(args.begin(), "iptables");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return iptables_main(static_cast<int>(argv.size()), argv.data());
}

TEST_CASE("iptables: contradictions are usage errors, before anything is written") {
  CHECK(run_main({"--inbound-ports", "8080", "--outbound", "80", "--dry-run"}) == 0);
  CHECK(run_main({"--inbound-ports", "80", "--exclude-inbound-ports", "80", "--outbound", "",
                  "--dry-run"}) == 2);
  CHECK(run_main({"--inbound-ports", "", "--outbound", "80", "--exclude-outbound-ports", "80",
                  "--dry-run"}) == 2);
  CHECK(run_main({"--inbound-ports", "80,80", "--outbound", "", "--dry-run"}) == 2);
  CHECK(run_main({"--inbound-ports", "15006", "--outbound", "", "--dry-run"}) == 2);
  CHECK(run_main({"--inbound-ports", "8080", "--outbound", "", "--inbound-redirect-port", "15001",
                  "--dry-run"}) == 2);
  CHECK(run_main({"--inbound-ports", "*,80", "--outbound", "", "--dry-run"}) == 2);
  CHECK(run_main({"--inbound-ports", "8080", "--dry-run"}) == 2);  // --outbound is required
}

}  // namespace
}  // namespace bulwark::kube
