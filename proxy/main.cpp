// bulwark: a sidecar resilience proxy for HTTP/1.1.

#include <cstdio>
#include <cstring>
#include <string>

#include "config/loader.h"
#include "kube/inject.h"
#include "kube/iptables.h"
#include "proxy/check_files.h"
#include "proxy/log.h"
#include "proxy/server.h"
#include "proxy/tls_contexts.h"
#include "proxy/wait_ready.h"

namespace {

constexpr const char* kUsage =
    "usage: bulwark --config FILE [--check] [--log-level debug|info|warn|error]\n"
    "       bulwark wait-ready [--admin ADDR] [--timeout DURATION]\n"
    "       bulwark inject [-f FILE] [...]   add bulwark to Kubernetes manifests (inject --help)\n"
    "       bulwark iptables [...]   write the rules of transparent mode (iptables --help)\n"
    "       bulwark --version | --help\n"
    "\n"
    "  -c, --config FILE   the YAML configuration (see config/examples/)\n"
    "      --check         validate the configuration and open the files it names, print\n"
    "                      FILE:LINE:COL: message for each error, and exit 1 if there is any\n"
    "                      (0 if it is valid)\n"
    "      --log-level L   debug, info (default), warn or error; logs are JSON lines on stderr\n"
    "      --version       print the version\n"
    "  -h, --help          this text\n";

}  // namespace

int main(int argc, char** argv) {
  // Subcommands: each runs instead of the proxy.
  if (argc > 1 && std::strcmp(argv[1], "wait-ready") == 0) {
    return bulwark::wait_ready_main(argc - 1, argv + 1);
  }
  if (argc > 1 && std::strcmp(argv[1], "inject") == 0) {
    return bulwark::kube::inject_main(argc - 1, argv + 1);
  }
  if (argc > 1 && std::strcmp(argv[1], "iptables") == 0) {
    return bulwark::kube::iptables_main(argc - 1, argv + 1);
  }
  std::string config_path;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "-c" || a == "--config") && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--check") {
      check = true;
    } else if (a == "--log-level" && i + 1 < argc) {
      bulwark::log::Level level;
      if (!bulwark::log::parse_level(argv[++i], &level)) {
        std::fprintf(stderr, "bulwark: unknown log level '%s' (debug, info, warn, error)\n",
                     argv[i]);
        return 2;
      }
      bulwark::log::set_level(level);
    } else if (a == "--version") {
      std::printf("bulwark %s\n", BULWARK_VERSION);
      return 0;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "bulwark: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "bulwark: --config FILE is required\n%s", kUsage);
    return 2;
  }

  bulwark::config::LoadResult loaded = bulwark::config::load_config_file(config_path);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors)
      std::fprintf(check ? stdout : stderr, "%s\n", e.to_string().c_str());
    if (!check)
      bulwark::log::error("invalid config")
          .str("config", config_path)
          .num("errors", static_cast<int64_t>(loaded.errors.size()));
    return 1;
  }
  if (check) {
    // Every certificate, key and CA file is loaded and checked as the proxy would, and every
    // other file the config names is opened as the proxy would.
    std::vector<std::string> errors, warnings;
    const bool tls_ok = bulwark::check_tls(*loaded.config, &errors, &warnings);
    const bool files_ok = bulwark::check_files(*loaded.config, &errors);
    for (const auto& w : warnings) std::printf("warning: %s\n", w.c_str());
    for (const auto& e : errors) std::printf("%s\n", e.c_str());
    if (!tls_ok || !files_ok) return 1;
    std::printf("%s: ok\n", config_path.c_str());
    return 0;
  }
  bulwark::Server server(loaded.config);
  return server.run();
}
