#include "filters/fault.h"

namespace bulwark::filters {

namespace {

// Whether a fault with `percent` applies for `random`, uniform over all uint64 values.
bool hits(double percent, uint64_t random) {
  if (!(percent > 0)) return false;  // 0, negative or NaN: never
  if (percent >= 100) return true;
  const double threshold = percent / 100 * 0x1p64;
  if (threshold >= 0x1p64) return true;  // rounding just under 100%
  return random < static_cast<uint64_t>(threshold);
}

// Decimal digits only, no sign, no spaces; false when empty or above `max`.
bool parse_decimal(std::string_view v, int64_t max, int64_t* out) {
  if (v.empty()) return false;
  int64_t n = 0;
  for (char ch : v) {
    if (ch < '0' || ch > '9') return false;
    n = n * 10 + (ch - '0');
    if (n > max) return false;
  }
  *out = n;
  return true;
}

}  // namespace

FaultDecision FaultInjector::decide(uint64_t random_delay, uint64_t random_abort,
                                    std::string_view delay_header,
                                    std::string_view abort_header) const {
  FaultDecision d;
  int64_t ms = 0;
  if (config_.header_control && parse_delay_ms(delay_header, &ms)) {
    d.delay = ms * 1000;
  } else if (config_.delay && hits(config_.delay->percent, random_delay)) {
    d.delay = to_micros(config_.delay->duration);
  }
  int status = 0;
  if (config_.header_control && parse_abort_status(abort_header, &status)) {
    d.abort_status = status;
  } else if (config_.abort && hits(config_.abort->percent, random_abort)) {
    d.abort_status = config_.abort->status;
  }
  return d;
}

bool FaultInjector::parse_delay_ms(std::string_view v, int64_t* ms) {
  return parse_decimal(v, kMaxHeaderDelayMs, ms);
}

bool FaultInjector::parse_abort_status(std::string_view v, int* status) {
  int64_t n = 0;
  if (v.size() != 3 || !parse_decimal(v, 599, &n) || n < 200) return false;
  *status = static_cast<int>(n);
  return true;
}

}  // namespace bulwark::filters
