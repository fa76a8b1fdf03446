// bulwark: a sidecar resilience proxy for HTTP/1.1.

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "config/loader.h"
#include "kube/inject.h"
#include "proxy/log.h"
#include "proxy/server.h"
#include "proxy/tls_contexts.h"

namespace {

constexpr const char* kUsage =
    "usage: bulwark --config FILE [--check] [--log-level debug|info|warn|error]\n"
    "       bulwark inject [-f FILE] [...]   add bulwark to Kubernetes manifests (inject --help)\n"
    "       bulwark --version | --help\n"
    "\n"
    "  -c, --config FILE   the YAML configuration (see config/examples/)\n"
    "      --check         validate the configuration, print FILE:LINE:COL: message for each\n"
    "                      error, and exit 1 if there is any (0 if it is valid)\n"
    "      --log-level L   debug, info (default), warn or error; logs are JSON lines on stderr\n"
    "      --version       print the version\n"
    "  -h, --help          this text\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "inject")
    return bulwark::kube::inject_main(argc - 1, argv + 1);
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
    // Every certificate, key and CA file is loaded and checked as the proxy would.
    std::vector<std::string> errors, warnings;
    bool tls_ok = bulwark::check_tls(*loaded.config, &errors, &warnings);
    for (const auto& w : warnings) std::printf("warning: %s\n", w.c_str());
    for (const auto& e : errors) std::printf("%s\n", e.c_str());
    if (!tls_ok) return 1;
    std::printf("%s: ok\n", config_path.c_str());
    return 0;
  }
  auto config = std::make_shared<bulwark::config::Config>(*loaded.config);
  if (config->workers == 0) config->workers = std::max(1u, std::thread::hardware_concurrency());
  bulwark::Server server(config);
  return server.run();
}
