// A pod, simulated end to end. Network namespaces stand for pods: this test process is the app's
// pod, a client pod calls the app, and the app calls a service of three replica pods, each behind
// a veth link of its own. bulwark is the app's sidecar, running as its own uid (65532), with the
// pod's traffic captured by the very rules `bulwark iptables` writes: the client's calls reach
// the app through bulwark's inbound listener, and the app's calls to the service's virtual
// address reach the replicas through its outbound listener, which retries, times out and ejects.
//
// Then the replicas fail the ways pods and networks do, one after the other: one is killed, one
// frozen (SIGSTOP), one partitioned (every packet to it dropped: connects time out, no RST), and
// one gets 200 ms of latency and 20% packet loss. Throughout, the client pod keeps calling; the
// test asserts that its requests succeed, and that none fails once bulwark has had a moment to
// route around the fault.
//
// Latency and loss come from `tc netem` on the replica's link when the kernel has it. Where it
// does not (no sch_netem module, as on the machines this was written on), the replica itself
// waits 200 ms before each answer (its control port) and iptables drops 20% of the packets that
// reach it (-m statistic): the same fault seen from the app's pod, said in the test's output.
//
// Only addresses inside namespaces the test made are used. Without root, unshare or the tools,
// the test is skipped with a message saying what is missing.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/netns.h"
#include "tests/integration/proxy_fixture.h"

using namespace bulwark::test;

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kReplicas = 3;
constexpr uid_t kProxyUid = 65532;
constexpr const char* kAppAddress = "10.88.0.2";
constexpr const char* kServiceAddress = "10.96.0.10";  // the Service's virtual IP: no one has it
// How long bulwark may take to route around a fault: the requests in flight when it struck, and
// those sent before the first failed tries eject the replica, may still fail (none did in our
// runs: retries carry them). After this, none may.
constexpr Millis kGrace{1000};
constexpr Millis kFaultDuration{2500};

std::string replica_address(int i) { return "10.88." + std::to_string(i + 1) + ".2"; }

sockaddr_in ipv4(const std::string& host, uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  ::inet_pton(AF_INET, host.c_str(), &address.sin_addr);
  return address;
}

// The app's sidecar: callers arrive redirected on 15006, the app's calls to port 80 on 15001.
// The service is the cluster of the three replicas, as a Kubernetes Service's endpoints. The
// inbound route never retries (by default it would re-send a GET that the app answered 504),
// so what the client sees is what the outbound policies achieved.
std::string sidecar_config() {
  std::string endpoints;
  for (int i = 0; i < kReplicas; ++i) endpoints += (i ? ", " : "") + replica_address(i) + ":80";
  return "workers: 2\n"
         "drain_delay: 0s\n"
         "admin: {address: 127.0.0.1:0}\n"
         "listeners:\n"
         "  - name: inbound\n"
         "    address: 0.0.0.0:15006\n"
         "    original_destination: true\n"
         "    routes: [{name: app, cluster: app, retry: {attempts: 1}}]\n"
         "  - name: outbound\n"
         "    address: 127.0.0.1:15001\n"
         "    direction: outbound\n"
         "    original_destination: true\n"
         "    routes:\n"
         "      - name: payments\n"
         "        cluster: payments\n"
         "        timeout: 3s\n"
         "        retry:\n"
         "          attempts: 3\n"
         "          per_try_timeout: 400ms\n"
         "          retry_on: [connect-failure, reset, gateway-error, per-try-timeout]\n"
         "clusters:\n"
         "  - {name: app, type: original_destination}\n"
         "  - name: payments\n"
         "    endpoints: [" +
         endpoints +
         "]\n"
         "    connect_timeout: 250ms\n"
         "    health_check: {path: /health, interval: 250ms, timeout: 200ms, healthy_threshold: 1,\n"
         "                   unhealthy_threshold: 2}\n"
         "    outlier_detection: {consecutive_gateway_failure: 2,\n"
         "                        consecutive_local_origin_failure: 2, base_ejection_time: 1s,\n"
         "                        max_ejection_time: 2s}\n";
}

// The app: for each request, one call to the service's virtual address (port 80, captured) on a
// kept-alive connection, and its answer passed on with the replica's name. It never retries:
// what the client sees is what bulwark achieved.
void app_handler(UpstreamConn& caller) {
  ClientConn service;
  while (auto request = caller.read_request(Millis{10000})) {
    std::optional<Response> answer;
    if (!service.connected()) service.connect(ipv4(kServiceAddress, 80), nullptr, Millis{2000});
    if (service.connected() &&
        service.send(make_request("GET", request->target, {{"Host", "payments"}}))) {
      answer = service.read_response(false, Millis{5000});
    }
    if (!answer) {
      service.close();
      caller.write_response(502, "app: no answer from payments\n");
      continue;
    }
    if (answer->has("connection") && iequals(answer->get("connection"), "close")) service.close();
    caller.write_response(answer->status, answer->body, {{"x-replica", answer->get("x-replica")}});
  }
}

// One replica pod: a namespace, its link to the app's pod, and the loadtest replica inside.
struct ReplicaPod {
  std::unique_ptr<NamedNamespace> ns;
  std::unique_ptr<Subprocess> process;
  std::string link;  // the app pod's end of the veth pair

  std::string start(int i) {
    process = std::make_unique<Subprocess>();
    process->start(ns->exec({REPLICA_BINARY, "--address", replica_address(i), "--port", "80",
                             "--control-port", "81", "--name", "r" + std::to_string(i + 1),
                             "--health-path", "/health"}));
    if (!process->wait_for_line(Subprocess::Stream::kStdout, "listening on", Millis{10000}))
      return "replica " + std::to_string(i + 1) + " did not start: " +
             process->text(Subprocess::Stream::kStderr);
    return {};
  }
};

// A replica's control port (81: not captured), from the app's pod.
std::optional<Response> control(int i, const std::string& method, const std::string& target) {
  ClientConn conn;
  if (!conn.connect(ipv4(replica_address(i), 81), nullptr, Millis{2000})) return std::nullopt;
  if (!conn.send(make_request(method, target))) return std::nullopt;
  return conn.read_response(false, Millis{2000});
}

uint64_t served_by(int i) {
  auto stats = control(i, "GET", "/stats");
  if (!stats || stats->status != 200) return 0;
  size_t at = stats->body.find("\nrequests=");
  return at == std::string::npos ? 0 : std::stoull(stats->body.substr(at + 10));
}

// What the client pod saw of one request.
struct Outcome {
  Clock::time_point start;
  Clock::time_point end;
  int status = 0;  // 0: no response
  std::string replica;
};

// The client pod: `threads` callers, each on a kept-alive connection to the app's address,
// one request every 25 ms (about 160 a second in all), until stopped.
class ClientPod {
 public:
  ClientPod(std::string ns, uint16_t app_port, int threads) {
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, ns, app_port, t] { call(ns, app_port, t); });
    }
  }
  ~ClientPod() { stop(); }

  void stop() {
    stop_ = true;
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }
  std::vector<Outcome> outcomes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return outcomes_;
  }
  std::string error() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }

 private:
  void call(const std::string& ns, uint16_t app_port, int t) {
    if (std::string why = enter_named_namespace(ns); !why.empty()) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = why;
      return;
    }
    ClientConn conn;
    for (int n = 0; !stop_; ++n) {
      Outcome outcome;
      outcome.start = Clock::now();
      if (!conn.connected()) conn.connect(ipv4(kAppAddress, app_port), nullptr, Millis{5000});
      std::optional<Response> response;
      if (conn.connected() && conn.send(make_request("GET", "/pay/" + std::to_string(t) + "/" +
                                                                std::to_string(n)))) {
        response = conn.read_response(false, Millis{5000});
      }
      outcome.end = Clock::now();
      if (response) {
        outcome.status = response->status;
        outcome.replica = response->get("x-replica");
      } else {
        conn.close();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        outcomes_.push_back(outcome);
      }
      std::this_thread::sleep_until(outcome.start + Millis{25});  // the pace, not a wait
    }
  }

  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  mutable std::mutex mutex_;
  std::vector<Outcome> outcomes_;
  std::string error_;
};

// A fault as the test applied it.
struct Fault {
  std::string name;
  Clock::time_point start;
  Clock::time_point end;
};

std::string describe(const Outcome& o, Clock::time_point t0) {
  auto ms = [t0](Clock::time_point t) {
    return std::to_string(std::chrono::duration_cast<Millis>(t - t0).count());
  };
  return "sent at " + ms(o.start) + " ms, ended at " + ms(o.end) + " ms: " +
         (o.status == 0 ? std::string("no response") : "status " + std::to_string(o.status));
}

}  // namespace

TEST_CASE("a pod simulated end to end: the app's calls survive a kill, a freeze, a partition and a lossy link") {
  const std::string missing = enter_pod_namespace(
      {"ip", "iptables", "iptables-restore", "iptables-save", "setpriv"});
  if (!missing.empty()) {
    MESSAGE("skipped: the simulated pod needs root, network namespaces and iptables: " << missing);
    return;
  }
  const std::string tag = std::to_string(::getpid());

  // The app's pod: its address, and a route for the Service's range (a packet needs a route
  // before the OUTPUT chain redirects it; none ever leaves that way).
  std::string failed = run_tools({{"ip", "addr", "add", std::string(kAppAddress) + "/32", "dev", "lo"}});
  REQUIRE_MESSAGE(failed.empty(), failed);

  // The client pod and the three replica pods, each on a veth link of its own.
  NamedNamespace client_ns("bwc-" + tag);
  REQUIRE_MESSAGE(client_ns.error().empty(), client_ns.error());
  failed = run_tools(
      {{"ip", "link", "add", "veth-client", "type", "veth", "peer", "name", "eth0"},
       {"ip", "link", "set", "eth0", "netns", client_ns.name()},
       {"ip", "addr", "add", "10.88.9.1/24", "dev", "veth-client"},
       {"ip", "link", "set", "veth-client", "up"},
       {"ip", "route", "add", "10.96.0.0/16", "via", "10.88.9.2"},
       client_ns.exec({"ip", "addr", "add", "10.88.9.2/24", "dev", "eth0"}),
       client_ns.exec({"ip", "link", "set", "eth0", "up"}),
       client_ns.exec({"ip", "route", "add", "10.88.0.0/24", "via", "10.88.9.1"})});
  REQUIRE_MESSAGE(failed.empty(), failed);
  std::vector<ReplicaPod> replicas(kReplicas);
  for (int i = 0; i < kReplicas; ++i) {
    ReplicaPod& r = replicas[i];
    r.ns = std::make_unique<NamedNamespace>("bwr" + std::to_string(i + 1) + "-" + tag);
    REQUIRE_MESSAGE(r.ns->error().empty(), r.ns->error());
    r.link = "veth-r" + std::to_string(i + 1);
    const std::string net = "10.88." + std::to_string(i + 1);
    failed = run_tools({{"ip", "link", "add", r.link, "type", "veth", "peer", "name", "eth0"},
                        {"ip", "link", "set", "eth0", "netns", r.ns->name()},
                        {"ip", "addr", "add", net + ".1/24", "dev", r.link},
                        {"ip", "link", "set", r.link, "up"},
                        r.ns->exec({"ip", "addr", "add", net + ".2/24", "dev", "eth0"}),
                        r.ns->exec({"ip", "link", "set", "eth0", "up"}),
                        r.ns->exec({"ip", "route", "add", "default", "via", net + ".1"})});
    REQUIRE_MESSAGE(failed.empty(), failed);
    std::string why = r.start(i);
    REQUIRE_MESSAGE(why.empty(), why);
  }

  // The app, then the rules of its init container, then its sidecar as uid 65532.
  TestUpstream app(app_handler, "app", kAppAddress);
  std::string out;
  REQUIRE_MESSAGE(run_tool({BULWARK_BINARY, "iptables", "--inbound-ports", std::to_string(app.port()),
                            "--outbound", "80", "--proxy-uid", std::to_string(kProxyUid)},
                           &out) == 0,
                  out);
  BulwarkProcess bulwark;
  bulwark.run_as(kProxyUid, kProxyUid);
  bulwark.start(sidecar_config());
  {
    std::ifstream status("/proc/" + std::to_string(bulwark.pid()) + "/status");
    std::string line;
    while (std::getline(status, line) && line.rfind("Uid:", 0) != 0) {
    }
    CHECK(line.find("\t65532\t") != std::string::npos);
  }

  // The calls start; every replica serves before anything fails.
  const Clock::time_point t0 = Clock::now();
  ClientPod client(client_ns.name(), app.port(), 4);
  REQUIRE_MESSAGE(eventually(
                      [&] {
                        for (int i = 0; i < kReplicas; ++i) {
                          if (served_by(i) == 0) return false;
                        }
                        return true;
                      },
                      Millis{10000}, Millis{100}),
                  "not every replica served: " << client.error() << bulwark.logs_text());

  // Waits until replica i serves again after its fault was lifted (bulwark took it back).
  auto serving_again = [&](int i) {
    uint64_t before = served_by(i);
    return eventually([&] { return served_by(i) > before; }, Millis{10000}, Millis{100});
  };
  std::vector<Fault> faults;
  auto fault = [&](const std::string& name, const std::function<void()>& apply,
                   const std::function<void()>& lift, int replica) {
    Fault f{name, Clock::now(), {}};
    apply();
    std::this_thread::sleep_for(kFaultDuration);  // the fault lasts this long, under load
    lift();
    f.end = Clock::now();
    faults.push_back(f);
    CHECK_MESSAGE(serving_again(replica), name << ": replica " << replica + 1
                                               << " did not serve again once it was lifted");
  };

  // 1. Killed: its connections reset, new ones are refused.
  fault(
      "kill replica 1", [&] { replicas[0].process->signal(SIGKILL); },
      [&] {
        replicas[0].process->wait_exit(Millis{5000});
        std::string why = replicas[0].start(0);
        REQUIRE_MESSAGE(why.empty(), why);
      },
      0);
  // 2. Frozen: the kernel still accepts its connections; nothing answers.
  fault(
      "freeze replica 2", [&] { replicas[1].process->signal(SIGSTOP); },
      [&] { replicas[1].process->signal(SIGCONT); }, 1);
  // 3. Partitioned: every packet to it dropped, so connects time out and nothing is reset.
  const std::vector<std::string> drop_all = {"iptables", "-A", "INPUT", "-j", "DROP"};
  fault(
      "partition replica 3",
      [&] {
        failed = run_tools({replicas[2].ns->exec(drop_all)});
        REQUIRE_MESSAGE(failed.empty(), failed);
      },
      [&] {
        failed = run_tools({replicas[2].ns->exec({"iptables", "-D", "INPUT", "-j", "DROP"})});
        REQUIRE_MESSAGE(failed.empty(), failed);
      },
      2);
  // 4. A bad link: 200 ms more latency and 20% loss.
  const bool netem =
      run_tool(replicas[0].ns->exec({"tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay",
                                     "200ms", "loss", "20%"}),
               &out) == 0;
  if (netem) {
    run_tool(replicas[0].ns->exec({"tc", "qdisc", "del", "dev", "eth0", "root"}));
  } else {
    MESSAGE("tc netem is not available here (" << out
                                               << "): replica 1 waits 200 ms before each answer "
                                                  "and iptables drops 20% of its packets instead");
  }
  const std::vector<std::string> lossy = {"INPUT", "-m", "statistic", "--mode", "random",
                                          "--probability", "0.2", "-j", "DROP"};
  auto with = [](std::string verb, std::vector<std::string> rule) {
    rule.insert(rule.begin(), {"iptables", std::move(verb)});
    return rule;
  };
  fault(
      "200 ms and 20% loss on replica 1",
      [&] {
        if (netem) {
          failed = run_tools({replicas[0].ns->exec({"tc", "qdisc", "add", "dev", "eth0", "root",
                                                    "netem", "delay", "200ms", "loss", "20%"})});
        } else {
          auto set = control(0, "POST", "/set?delay=1&delay_ms=200");
          REQUIRE((set && set->status == 200));
          failed = run_tools({replicas[0].ns->exec(with("-A", lossy))});
        }
        REQUIRE_MESSAGE(failed.empty(), failed);
      },
      [&] {
        if (netem) {
          failed = run_tools({replicas[0].ns->exec({"tc", "qdisc", "del", "dev", "eth0", "root"})});
        } else {
          failed = run_tools({replicas[0].ns->exec(with("-D", lossy))});
          auto set = control(0, "POST", "/set?delay=0&delay_ms=0");
          CHECK((set && set->status == 200));
        }
        REQUIRE_MESSAGE(failed.empty(), failed);
      },
      0);

  // A last second with every replica back.
  std::this_thread::sleep_for(Millis{1000});
  client.stop();
  REQUIRE_MESSAGE(client.error().empty(), client.error());

  std::vector<Outcome> outcomes = client.outcomes();
  size_t ok = 0;
  std::vector<std::string> late_failures;
  for (const Outcome& o : outcomes) {
    if (o.status == 200) {
      ++ok;
      continue;
    }
    // A failure is excused only when it was sent within kGrace of a fault striking.
    bool excused = std::any_of(faults.begin(), faults.end(), [&o](const Fault& f) {
      return o.start >= f.start - Millis{100} && o.start <= f.start + kGrace;
    });
    if (!excused) late_failures.push_back(describe(o, t0));
  }
  std::string fault_times;
  for (const Fault& f : faults) {
    fault_times += f.name + " from " +
                   std::to_string(std::chrono::duration_cast<Millis>(f.start - t0).count()) +
                   " to " + std::to_string(std::chrono::duration_cast<Millis>(f.end - t0).count()) +
                   " ms; ";
  }
  INFO("faults: " << fault_times);
  const double success = outcomes.empty() ? 0 : static_cast<double>(ok) / outcomes.size();
  MESSAGE(outcomes.size() << " requests, " << ok << " succeeded (" << success * 100 << "%)");
  CHECK(outcomes.size() >= 400);
  CHECK(success >= 0.99);
  CHECK_MESSAGE(late_failures.empty(),
                late_failures.size() << " failed after bulwark could route around; the first: "
                                     << (late_failures.empty() ? "" : late_failures[0]));
  // Every replica served the client's calls again by the end.
  for (int i = 0; i < kReplicas; ++i) {
    CAPTURE(i);
    CHECK(std::any_of(outcomes.begin(), outcomes.end(), [&](const Outcome& o) {
      return o.replica == "r" + std::to_string(i + 1) && o.start > faults.back().end;
    }));
  }
}
