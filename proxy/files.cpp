#include "proxy/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace bulwark {

bool read_regular_file(const std::string& path, size_t max_bytes, std::string* out,
                       std::string* error) {
  out->clear();
  // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer (it is then
  // refused as not regular); for a regular file the flag changes nothing.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    *error = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  struct stat st {};
  bool ok = false;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    *error = path + " is not a regular file";
  } else if (static_cast<size_t>(st.st_size) > max_bytes) {
    *error = path + " is larger than " + std::to_string(max_bytes) + " bytes";
  } else {
    // One byte more than allowed: a file that grew since fstat is seen to be too large.
    out->resize(max_bytes + 1);
    size_t got = 0;
    ok = true;
    while (got < out->size()) {
      const ssize_t n = ::read(fd, out->data() + got, out->size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        *error = "cannot read " + path + ": " + std::strerror(errno);
        ok = false;
        break;
      }
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    out->resize(got);
    if (ok && got > max_bytes) {
      *error = path + " is larger than " + std::to_string(max_bytes) + " bytes";
      ok = false;
    }
  }
  ::close(fd);
  if (!ok) out->clear();
  return ok;
}

}  // namespace bulwark
