#pragma once
// `bulwark wait-ready`: waits until a running bulwark's GET /ready answers 200 (for postStart
// hooks, init scripts and tests). A small blocking client of its own: it runs instead of the
// proxy, never inside it.

namespace bulwark {

// argv[0] is "wait-ready". Returns the exit code: 0 ready, 1 not ready in time, 2 usage.
int wait_ready_main(int argc, char** argv);

}  // namespace bulwark
