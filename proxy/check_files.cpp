#include "proxy/check_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "config/loader.h"
#include "proxy/access_log.h"
#include "proxy/admin_api.h"

namespace bulwark {

namespace {

std::string located(const config::Config& config, const config::SourceLocation& at,
                    std::string message) {
  config::ConfigError e;
  e.file = at.file.empty() ? config.source_file : at.file;
  e.line = at.line;
  e.column = at.column;
  e.message = std::move(message);
  return e.to_string();
}

// 0 when `path` can be opened for appending as AccessLog::open does, else the errno. A missing
// file is created and removed again: the proxy would create it, the check leaves no trace.
int can_append(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) ::unlink(path.c_str());
    if (fd < 0 && errno == EEXIST) return can_append(path);  // made meanwhile, by the proxy
  }
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

}  // namespace

bool check_files(const config::Config& config, std::vector<std::string>* errors) {
  const size_t before = errors->size();
  if (const auto& log = config.access_log; log && inherited_log_fd(log->path) < 0) {
    if (int error = can_append(log->path)) {
      errors->push_back(located(
          config, log->location,
          "access_log.path: cannot open " + log->path + " for appending: " + std::strerror(error)));
    }
  }
  // The admin token, read as each state-changing admin request from beyond loopback reads it.
  if (const std::string& token_file = config.admin.token_file; !token_file.empty()) {
    std::string why;
    if (read_admin_token(token_file, &why).empty()) {
      errors->push_back(located(config, config.admin.token_location, "admin.token_file: " + why));
    }
  }
  // Further files the config names are checked here, each as the code that uses it opens it.
  return errors->size() == before;
}

}  // namespace bulwark
