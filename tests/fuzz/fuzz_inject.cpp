// Fuzz target: `bulwark inject` on any text. The first byte chooses the mode (bit 0: --classic,
// bit 1: --transparent --outbound-ports 80);
// the rest is the YAML stream. inject() must never crash or throw, and when it succeeds its
// promises must hold: injecting the output again gives the same bytes, and uninjecting the output
// gives what uninjecting the input gives (the input without any earlier injection).

#include <cstdint>
#include <string>
#include <string_view>

#include "kube/inject.h"
#include "tests/fuzz/fuzz_check.h"

using namespace bulwark;
using fuzz::escaped;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  kube::InjectOptions options;
  options.classic = (data[0] & 1) != 0;
  if ((data[0] & 2) != 0) options.transparent.emplace().outbound_ports = {80};
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  kube::InjectResult once = kube::inject(input, options);
  FUZZ_CHECK(once.ok() || once.output.empty(), "an output despite errors: " + escaped(input));
  if (!once.ok()) return 0;

  kube::InjectResult twice = kube::inject(once.output, options);
  FUZZ_CHECK(twice.ok(), "injecting the output failed: " +
                             (twice.errors.empty() ? std::string() : twice.errors[0]) +
                             "\ninput: " + escaped(input) + "\noutput: " + escaped(once.output));
  FUZZ_CHECK(twice.output == once.output,
             "a second injection changed the output\ninput: " + escaped(input) +
                 "\nonce: " + escaped(once.output) + "\ntwice: " + escaped(twice.output));

  kube::InjectOptions uninject;
  uninject.uninject = true;
  kube::InjectResult back = kube::inject(once.output, uninject);
  FUZZ_CHECK(back.ok(), "uninjecting the output failed: " + escaped(once.output));
  kube::InjectResult plain = kube::inject(input, uninject);
  FUZZ_CHECK(plain.ok(),
             "uninjecting the input failed where injecting it did not: " + escaped(input));
  FUZZ_CHECK(back.output == plain.output,
             "uninject(inject(x)) != uninject(x)\ninput: " + escaped(input) +
                 "\nback: " + escaped(back.output) + "\nplain: " + escaped(plain.output));
  return 0;
}
