#pragma once
// Reading a file the config names (a certificate, a key, a CA bundle, the admin token) on a loop
// thread, where the path may lead anywhere: a FIFO would block the open until a writer came, and
// /dev/zero or a huge file would be read until memory ran out. Only a regular file of a bounded
// size is read.

#include <cstddef>
#include <string>

namespace bulwark {

// The contents of `path` into `out`: true, or false with `error` saying why ("PATH is not a
// regular file", "PATH is larger than N bytes", "cannot read PATH: strerror").
bool read_regular_file(const std::string& path, size_t max_bytes, std::string* out,
                       std::string* error);

}  // namespace bulwark
