#pragma once
// Fault injection for chaos testing of the application: delay and/or abort a share of a
// route's requests before they are forwarded. Stateless; the proxy supplies the randomness.

#include <cstdint>
#include <string_view>

#include "config/config.h"
#include "filters/clock.h"

namespace bulwark::filters {

// What to do to one request. Both may be set: the delay comes first, then the abort.
struct FaultDecision {
  Micros delay = 0;      // 0: no delay
  int abort_status = 0;  // 0: no abort; otherwise reply this status with reason fault_abort
};

// The request headers that inject faults when header_control is on.
inline constexpr std::string_view kFaultDelayHeader = "x-bulwark-fault-delay-ms";
inline constexpr std::string_view kFaultAbortHeader = "x-bulwark-fault-abort";
inline constexpr int64_t kMaxHeaderDelayMs = 3'600'000;

class FaultInjector {
 public:
  explicit FaultInjector(const config::FaultConfig& config) : config_(config) {}
  const config::FaultConfig& config() const { return config_; }

  // `random_delay` and `random_abort` are independent, uniform over all uint64 values: a fault
  // with percent p applies when random < p% of the range (p = 100 always, p = 0 never).
  // `delay_header` / `abort_header` are the values of the two request headers (empty when
  // absent; surrounding whitespace already stripped). They are used only with header_control,
  // and they take precedence over the percentages: a delay header of decimal milliseconds
  // (0..kMaxHeaderDelayMs) delays the request by exactly that much (0: not at all), an abort
  // header with a three-digit status 200..599 aborts it. Values that do not parse are ignored
  // (and the configured faults apply as if the header were absent).
  FaultDecision decide(uint64_t random_delay, uint64_t random_abort, std::string_view delay_header,
                       std::string_view abort_header) const;

  // Whether a value is a valid header value of each kind (the proxy logs the invalid ones):
  // decimal digits only, no sign or spaces. The output is written only when the value is valid.
  static bool parse_delay_ms(std::string_view v, int64_t* ms);
  static bool parse_abort_status(std::string_view v, int* status);

 private:
  const config::FaultConfig& config_;
};

}  // namespace bulwark::filters
