#include "kube/iptables.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

extern char** environ;

namespace bulwark::kube {
namespace {

constexpr const char* kUsage =
    "usage: bulwark iptables --inbound-ports PORTS|'*' --outbound PORTS|'*' [options]\n"
    "\n"
    "Writes the nat rules that send a pod's TCP to bulwark (transparent mode). Run it once, as\n"
    "root with NET_ADMIN, in an init container of the pod, before the app and bulwark start.\n"
    "\n"
    "  --inbound-ports PORTS|*        TCP ports of the pod whose inbound traffic goes to bulwark\n"
    "                                 ('*': all; '' or none: no inbound capture)\n"
    "  --exclude-inbound-ports PORTS  never captured inbound (e.g. the probes port 9902)\n"
    "  --inbound-redirect-port PORT   bulwark's inbound listener (default 15006)\n"
    "  --outbound PORTS|*             destination ports of the pod's own connections that go to\n"
    "                                 bulwark ('*': all; '' or none: no outbound capture);\n"
    "                                 --outbound-ports is the same flag\n"
    "  --exclude-outbound-ports PORTS never captured outbound\n"
    "  --outbound-redirect-port PORT  bulwark's outbound listener (default 15001)\n"
    "  --proxy-uid UID                bulwark's uid: its own connections pass (default 65532)\n"
    "  --ipv6                         write the IPv6 rules too (ip6tables-restore)\n"
    "  --legacy                       use iptables-legacy-restore (the host's iptables is not "
    "nft)\n"
    "  --dry-run                      print the rules instead of applying them\n"
    "\n"
    "Connections to loopback are never captured. PORTS is a comma-separated list.\n";

void add_ports(std::string& out, const char* chain, const std::vector<uint16_t>& ports,
               const char* target) {
  for (uint16_t port : ports) {
    out += "-A ";
    out += chain;
    out += " -p tcp --dport " + std::to_string(port) + " -j " + target + "\n";
  }
}

}  // namespace

bool parse_port_list(std::string_view text, std::vector<uint16_t>* ports, bool* all,
                     std::string* why) {
  if (text == "*") {
    if (all == nullptr) {
      *why = "'*' is not allowed here";
      return false;
    }
    *all = true;
    return true;
  }
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    text.remove_prefix(comma == std::string_view::npos ? text.size() : comma + 1);
    unsigned long port = 0;
    bool digits = !item.empty() && item.size() <= 5;
    for (char c : item) {
      digits = digits && c >= '0' && c <= '9';
      if (digits) port = port * 10 + static_cast<unsigned long>(c - '0');
    }
    if (!digits || port == 0 || port > 65535) {
      *why = "'" + std::string(item) + "' is not a port (1..65535)";
      return false;
    }
    ports->push_back(static_cast<uint16_t>(port));
  }
  return true;
}

namespace {

bool parse_port(std::string_view text, uint16_t* port, std::string* why) {
  std::vector<uint16_t> one;
  if (!parse_port_list(text, &one, nullptr, why)) return false;
  if (one.size() != 1) {
    *why = "expected one port, got '" + std::string(text) + "'";
    return false;
  }
  *port = one.front();
  return true;
}

// Runs `argv` (found on PATH) with `input` on its stdin; its stdout into *output when given.
// Returns its exit status, or -1 (with *why) when it could not be run. A plain fork and exec
// rather than popen: the container image has no shell.
int run(const std::vector<std::string>& argv, const std::string& input, std::string* output,
        std::string* why) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
    *why = std::strerror(errno);
    return -1;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // Without PATH, posix_spawnp would look in /bin and /usr/bin only: iptables is in sbin.
  if (std::getenv("PATH") == nullptr)
    ::setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 0);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    *why = "cannot run " + argv[0] + ": " + std::strerror(rc);
    return -1;
  }
  // The inputs are a few KiB, below a pipe's buffer: write all, then read all.
  size_t written = 0;
  while (written < input.size()) {
    ssize_t n = ::write(in[1], input.data() + written, input.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  ::close(in[1]);
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output != nullptr) output->append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

std::string check_iptables_options(const IptablesOptions& o) {
  const auto has = [](const std::vector<uint16_t>& ports, uint16_t port) {
    return std::find(ports.begin(), ports.end(), port) != ports.end();
  };
  for (const auto* list :
       {&o.inbound_ports, &o.outbound_ports, &o.exclude_inbound_ports, &o.exclude_outbound_ports}) {
    for (size_t i = 0; i < list->size(); ++i) {
      if (std::find(list->begin(), list->begin() + static_cast<std::ptrdiff_t>(i), (*list)[i]) !=
          list->begin() + static_cast<std::ptrdiff_t>(i)) {
        return "port " + std::to_string((*list)[i]) + " is listed twice";
      }
    }
  }
  for (uint16_t port : o.inbound_ports) {
    if (has(o.exclude_inbound_ports, port)) {
      return "port " + std::to_string(port) + " is both captured and excluded inbound";
    }
  }
  for (uint16_t port : o.outbound_ports) {
    if (has(o.exclude_outbound_ports, port)) {
      return "port " + std::to_string(port) + " is both captured and excluded outbound";
    }
  }
  if (o.inbound_redirect_port == o.outbound_redirect_port) {
    return "the inbound and outbound redirect ports are the same (" +
           std::to_string(o.inbound_redirect_port) + ")";
  }
  if (has(o.inbound_ports, o.inbound_redirect_port) ||
      has(o.outbound_ports, o.outbound_redirect_port)) {
    return "a redirect port is among the ports it captures: connections would loop";
  }
  return {};
}

std::vector<std::string> iptables_args(const IptablesOptions& o) {
  const auto list = [](const std::vector<uint16_t>& ports, bool all) {
    if (all) return std::string("*");
    std::string out;
    for (uint16_t port : ports) out += (out.empty() ? "" : ",") + std::to_string(port);
    return out;
  };
  std::vector<std::string> args{"iptables", "--inbound-ports", list(o.inbound_ports, o.inbound_all)};
  if (!o.exclude_inbound_ports.empty())
    args.insert(args.end(), {"--exclude-inbound-ports", list(o.exclude_inbound_ports, false)});
  args.insert(args.end(), {"--inbound-redirect-port", std::to_string(o.inbound_redirect_port),
                           "--outbound", list(o.outbound_ports, o.outbound_all)});
  if (!o.exclude_outbound_ports.empty())
    args.insert(args.end(), {"--exclude-outbound-ports", list(o.exclude_outbound_ports, false)});
  args.insert(args.end(), {"--outbound-redirect-port", std::to_string(o.outbound_redirect_port),
                           "--proxy-uid", std::to_string(o.proxy_uid)});
  return args;
}

std::string iptables_rules(const IptablesOptions& o, bool ipv6, bool with_jumps) {
  std::string out =
      "*nat\n"
      ":BULWARK_INBOUND - [0:0]\n"
      ":BULWARK_IN_REDIRECT - [0:0]\n"
      ":BULWARK_OUTPUT - [0:0]\n"
      ":BULWARK_OUT_REDIRECT - [0:0]\n";
  out += "-A BULWARK_IN_REDIRECT -p tcp -j REDIRECT --to-ports " +
         std::to_string(o.inbound_redirect_port) + "\n";
  out += "-A BULWARK_OUT_REDIRECT -p tcp -j REDIRECT --to-ports " +
         std::to_string(o.outbound_redirect_port) + "\n";
  if (with_jumps) {
    out += "-A PREROUTING -p tcp -j BULWARK_INBOUND\n";
    out += "-A OUTPUT -p tcp -j BULWARK_OUTPUT\n";
  }
  // Inbound: what arrives from outside the pod (PREROUTING never sees the pod's own packets).
  if (o.inbound_all) {
    add_ports(out, "BULWARK_INBOUND", o.exclude_inbound_ports, "RETURN");
    out += "-A BULWARK_INBOUND -p tcp -j BULWARK_IN_REDIRECT\n";
  } else {
    add_ports(out, "BULWARK_INBOUND", o.inbound_ports, "BULWARK_IN_REDIRECT");
  }
  // Outbound: bulwark's own connections pass (they are the ones it makes for the app), and so
  // does loopback.
  out += "-A BULWARK_OUTPUT -m owner --uid-owner " + std::to_string(o.proxy_uid) + " -j RETURN\n";
  out += ipv6 ? "-A BULWARK_OUTPUT -d ::1/128 -j RETURN\n"
              : "-A BULWARK_OUTPUT -d 127.0.0.0/8 -j RETURN\n";
  if (o.outbound_all) {
    add_ports(out, "BULWARK_OUTPUT", o.exclude_outbound_ports, "RETURN");
    out += "-A BULWARK_OUTPUT -p tcp -j BULWARK_OUT_REDIRECT\n";
  } else {
    add_ports(out, "BULWARK_OUTPUT", o.outbound_ports, "BULWARK_OUT_REDIRECT");
  }
  out += "COMMIT\n";
  return out;
}

bool has_bulwark_jumps(const std::string& saved) {
  return saved.find("-A PREROUTING -p tcp -j BULWARK_INBOUND") != std::string::npos &&
         saved.find("-A OUTPUT -p tcp -j BULWARK_OUTPUT") != std::string::npos;
}

int iptables_main(int argc, char** argv) {
  IptablesOptions o;
  bool ipv6 = false, legacy = false, dry_run = false;
  bool inbound_given = false, outbound_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    std::string why;
    bool ok = true;
    if (a == "--inbound-ports" && has_value) {
      inbound_given = true;
      ok = parse_port_list(argv[++i], &o.inbound_ports, &o.inbound_all, &why);
    } else if (a == "--exclude-inbound-ports" && has_value) {
      ok = parse_port_list(argv[++i], &o.exclude_inbound_ports, nullptr, &why);
    } else if (a == "--inbound-redirect-port" && has_value) {
      ok = parse_port(argv[++i], &o.inbound_redirect_port, &why);
    } else if ((a == "--outbound" || a == "--outbound-ports") && has_value) {
      outbound_given = true;
      ok = parse_port_list(argv[++i], &o.outbound_ports, &o.outbound_all, &why);
    } else if (a == "--exclude-outbound-ports" && has_value) {
      ok = parse_port_list(argv[++i], &o.exclude_outbound_ports, nullptr, &why);
    } else if (a == "--outbound-redirect-port" && has_value) {
      ok = parse_port(argv[++i], &o.outbound_redirect_port, &why);
    } else if (a == "--proxy-uid" && has_value) {
      char* end = nullptr;
      const unsigned long uid = std::strtoul(argv[++i], &end, 10);
      ok = *argv[i] != '\0' && *end == '\0' && uid <= 0xFFFFFFFEul;
      if (!ok) why = "'" + std::string(argv[i]) + "' is not a uid";
      o.proxy_uid = static_cast<uint32_t>(uid);
    } else if (a == "--ipv6") {
      ipv6 = true;
    } else if (a == "--legacy") {
      legacy = true;
    } else if (a == "--dry-run") {
      dry_run = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "bulwark iptables: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
    if (!ok) {
      std::fprintf(stderr, "bulwark iptables: %s: %s\n", a.c_str(), why.c_str());
      return 2;
    }
  }
  if (std::string why = check_iptables_options(o); !why.empty()) {
    std::fprintf(stderr, "bulwark iptables: %s\n", why.c_str());
    return 2;
  }
  if (!inbound_given || !outbound_given) {
    std::fprintf(stderr,
                 "bulwark iptables: --inbound-ports and --outbound are required ('' for none)\n%s",
                 kUsage);
    return 2;
  }
  for (bool v6 : {false, true}) {
    if (v6 && !ipv6) break;
    const char* family = v6 ? "ip6tables" : "iptables";
    if (dry_run) {
      std::printf("# %s-restore --noflush\n%s", family, iptables_rules(o, v6).c_str());
      continue;
    }
    const std::string prefix = std::string(family) + (legacy ? "-legacy" : "");
    std::string saved, why;
    const int save = run({prefix + "-save", "-t", "nat"}, "", &saved, &why);
    if (save != 0) {
      std::fprintf(stderr, "bulwark iptables: %s-save failed: %s\n", prefix.c_str(),
                   save < 0 ? why.c_str() : ("exit " + std::to_string(save)).c_str());
      return 1;
    }
    const std::string rules = iptables_rules(o, v6, !has_bulwark_jumps(saved));
    const int restore = run({prefix + "-restore", "--noflush"}, rules, nullptr, &why);
    if (restore != 0) {
      std::fprintf(stderr, "bulwark iptables: %s-restore failed: %s\n%s", prefix.c_str(),
                   restore < 0 ? why.c_str() : ("exit " + std::to_string(restore)).c_str(),
                   rules.c_str());
      return 1;
    }
    std::printf("bulwark iptables: %s rules written\n", family);
  }
  return 0;
}

}  // namespace bulwark::kube
