#include "filters/fault.h"

#include <doctest/doctest.h>

#include <chrono>
#include <limits>

namespace bulwark::filters {
namespace {

using namespace std::chrono_literals;
using config::FaultConfig;

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
constexpr uint64_t kHalf = uint64_t{1} << 63;

FaultConfig faults(double delay_percent, double abort_percent, bool header_control = false) {
  FaultConfig c;
  c.delay = config::FaultDelayConfig{delay_percent, 1500ms};
  c.abort = config::FaultAbortConfig{abort_percent, 503};
  c.header_control = header_control;
  return c;
}

TEST_CASE("fault: nothing configured does nothing") {
  FaultConfig c;
  FaultInjector f(c);
  for (uint64_t r : {uint64_t{0}, kHalf, kMax}) {
    FaultDecision d = f.decide(r, r, "", "");
    CHECK(d.delay == 0);
    CHECK(d.abort_status == 0);
  }
}

TEST_CASE("fault: 100 percent always applies and 0 percent never") {
  auto always = faults(100, 100);
  auto never = faults(0, 0);
  FaultInjector a(always), n(never);
  for (uint64_t r : {uint64_t{0}, uint64_t{1}, kHalf, kMax - 1, kMax}) {
    CAPTURE(r);
    FaultDecision d = a.decide(r, r, "", "");
    CHECK(d.delay == 1'500'000);
    CHECK(d.abort_status == 503);
    d = n.decide(r, r, "", "");
    CHECK(d.delay == 0);
    CHECK(d.abort_status == 0);
  }
}

TEST_CASE("fault: 50 percent splits the random range in half") {
  auto c = faults(50, 50);
  FaultInjector f(c);
  CHECK(f.decide(0, kMax, "", "").delay == 1'500'000);
  CHECK(f.decide(kHalf - 1, kMax, "", "").delay == 1'500'000);
  CHECK(f.decide(kHalf, kMax, "", "").delay == 0);
  CHECK(f.decide(kMax, kMax, "", "").delay == 0);
  CHECK(f.decide(kMax, kHalf - 1, "", "").abort_status == 503);
  CHECK(f.decide(kMax, kHalf, "", "").abort_status == 0);
}

TEST_CASE("fault: other percentages and their edges") {
  auto c = faults(25, 99.999999);
  FaultInjector f(c);
  CHECK(f.decide((uint64_t{1} << 62) - 1, 0, "", "").delay == 1'500'000);
  CHECK(f.decide(uint64_t{1} << 62, 0, "", "").delay == 0);
  CHECK(f.decide(0, kMax - (kMax / 1000), "", "").abort_status == 503);
  CHECK(f.decide(0, kMax, "", "").abort_status == 0);  // just under 100% is not always
  c.delay->percent = 1e-300;  // a share of the range smaller than one value: never
  CHECK(f.decide(0, 0, "", "").delay == 0);
}

TEST_CASE("fault: delay and abort draw on independent randoms") {
  auto c = faults(50, 50);
  FaultInjector f(c);
  FaultDecision d = f.decide(0, kMax, "", "");
  CHECK(d.delay == 1'500'000);
  CHECK(d.abort_status == 0);
  d = f.decide(kMax, 0, "", "");
  CHECK(d.delay == 0);
  CHECK(d.abort_status == 503);
}

TEST_CASE("fault: only one kind configured") {
  FaultConfig c;
  c.abort = config::FaultAbortConfig{100, 500};
  FaultInjector f(c);
  FaultDecision d = f.decide(0, 0, "", "");
  CHECK(d.delay == 0);
  CHECK(d.abort_status == 500);
}

TEST_CASE("fault: headers are ignored without header_control") {
  auto c = faults(0, 0, false);
  FaultInjector f(c);
  FaultDecision d = f.decide(0, 0, "250", "500");
  CHECK(d.delay == 0);
  CHECK(d.abort_status == 0);
}

TEST_CASE("fault: headers take precedence with header_control") {
  auto c = faults(0, 0, true);
  FaultInjector f(c);
  FaultDecision d = f.decide(kMax, kMax, "250", "500");
  CHECK(d.delay == 250'000);
  CHECK(d.abort_status == 500);
  d = f.decide(kMax, kMax, "3600000", "");
  CHECK(d.delay == 3'600'000'000);
  CHECK(d.abort_status == 0);

  // Over configured faults that would always apply.
  auto always = faults(100, 100, true);
  FaultInjector a(always);
  d = a.decide(0, 0, "0", "200");
  CHECK(d.delay == 0);  // a valid 0 means "no delay"
  CHECK(d.abort_status == 200);
  d = a.decide(0, 0, "", "");
  CHECK(d.delay == 1'500'000);
  CHECK(d.abort_status == 503);
}

TEST_CASE("fault: invalid header values fall back to the configured faults") {
  auto c = faults(100, 100, true);
  FaultInjector f(c);
  for (const char* v : {"abc", "-1", "+5", "1.5", " 10", "10 ", "3600001",
                        "99999999999999999999999", "1e3", "0x10"}) {
    CAPTURE(v);
    FaultDecision d = f.decide(0, 0, v, v);
    CHECK(d.delay == 1'500'000);
    CHECK(d.abort_status == 503);
  }
  auto none = faults(0, 0, true);
  FaultInjector n(none);
  FaultDecision d = n.decide(0, 0, "x", "600");
  CHECK(d.delay == 0);
  CHECK(d.abort_status == 0);
}

TEST_CASE("fault: parse_delay_ms") {
  int64_t ms = -7;
  CHECK(FaultInjector::parse_delay_ms("0", &ms));
  CHECK(ms == 0);
  CHECK(FaultInjector::parse_delay_ms("1", &ms));
  CHECK(ms == 1);
  CHECK(FaultInjector::parse_delay_ms("007", &ms));
  CHECK(ms == 7);
  CHECK(FaultInjector::parse_delay_ms("3600000", &ms));
  CHECK(ms == kMaxHeaderDelayMs);
  ms = -7;
  for (const char* v :
       {"", "3600001", "-0", "+1", " 1", "1 ", "1.0", "1ms", "abc", "18446744073709551616"}) {
    CAPTURE(v);
    CHECK_FALSE(FaultInjector::parse_delay_ms(v, &ms));
    CHECK(ms == -7);  // untouched
  }
}

TEST_CASE("fault: parse_abort_status") {
  int status = -7;
  CHECK(FaultInjector::parse_abort_status("200", &status));
  CHECK(status == 200);
  CHECK(FaultInjector::parse_abort_status("503", &status));
  CHECK(status == 503);
  CHECK(FaultInjector::parse_abort_status("599", &status));
  CHECK(status == 599);
  status = -7;
  for (const char* v : {"", "199", "600", "100", "0", "50", "5000", "0503", "-503", "+503", " 503",
                        "503 ", "5o3", "abc"}) {
    CAPTURE(v);
    CHECK_FALSE(FaultInjector::parse_abort_status(v, &status));
    CHECK(status == -7);  // untouched
  }
}

}  // namespace
}  // namespace bulwark::filters
