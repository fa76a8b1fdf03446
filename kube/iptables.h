#pragma once
// `bulwark iptables`: the rules that capture a pod's TCP traffic for bulwark (transparent mode),
// written by an init container with NET_ADMIN before the app and bulwark start.
//
// Inbound: TCP to the listed ports (or all but the excluded ones) is redirected to bulwark's
// inbound listener. Outbound: TCP the pod opens (to the listed ports, or all but the excluded
// ones) is redirected to bulwark's outbound listener, except bulwark's own (its uid) and what
// goes to loopback (the app calling bulwark's explicit listeners, the kubelet's probes of
// neighbours). Both listeners set original_destination: true, so each connection still knows
// where its client meant to go (SO_ORIGINAL_DST), and a cluster of type original_destination
// takes it there, with the route's policies.
//
// The rules live in chains of their own (BULWARK_*), declared in iptables-restore input, so
// writing them again replaces them; the jumps from PREROUTING and OUTPUT are added only when
// missing. Nothing here changes the filter table.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bulwark::kube {

struct IptablesOptions {
  // Inbound: ports whose TCP is captured; `inbound_all` captures every port but the excluded.
  std::vector<uint16_t> inbound_ports;
  bool inbound_all = false;
  std::vector<uint16_t> exclude_inbound_ports;  // e.g. the probes listener
  uint16_t inbound_redirect_port = 15006;
  // Outbound: likewise, for connections the pod opens.
  std::vector<uint16_t> outbound_ports;
  bool outbound_all = false;
  std::vector<uint16_t> exclude_outbound_ports;
  uint16_t outbound_redirect_port = 15001;
  uint32_t proxy_uid = 65532;  // bulwark's own connections are never captured
};

// "8080,8443" -> ports; "*" -> *all = true ('*' refused when `all` is null); "" -> none. False,
// with *why, on anything else.
bool parse_port_list(std::string_view text, std::vector<uint16_t>* ports, bool* all,
                     std::string* why);

// Contradictions in what was asked (a port listed twice, captured and excluded, a redirect
// port among the captured ones): empty when none.
std::string check_iptables_options(const IptablesOptions& options);

// The `bulwark iptables` arguments (after "iptables") that write these rules: what
// `bulwark inject --transparent` puts in its init container.
std::vector<std::string> iptables_args(const IptablesOptions& options);

// The nat table rules as iptables-restore (or ip6tables-restore, `ipv6`) input, to be applied
// with --noflush. `with_jumps`: add the jumps from PREROUTING and OUTPUT into the BULWARK
// chains (leave them out when they are there already, so applying twice adds nothing).
std::string iptables_rules(const IptablesOptions& options, bool ipv6, bool with_jumps = true);

// Whether `saved` (iptables-save -t nat output) already jumps from PREROUTING and OUTPUT to the
// BULWARK chains.
bool has_bulwark_jumps(const std::string& saved);

// argv[0] is "iptables". Returns the exit code: 0 applied (or printed, --dry-run), 1 when a
// command failed, 2 on a usage error.
int iptables_main(int argc, char** argv);

}  // namespace bulwark::kube
