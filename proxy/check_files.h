#pragma once
// `bulwark --check`: the files the config names, opened as the proxy would open them, so that a
// path the proxy cannot use fails the check (ExecStartPre=, ExecReload=) instead of the start.
// Certificates and keys are check_tls's (tls_contexts.h).

#include <string>
#include <vector>

#include "config/config.h"

namespace bulwark {

// Appends one "FILE:LINE:COL: message" per file that cannot be used; false if there is any.
// Creates nothing: a file made only to show that it can be is removed again.
bool check_files(const config::Config& config, std::vector<std::string>* errors);

}  // namespace bulwark
