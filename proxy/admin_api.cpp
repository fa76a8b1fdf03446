#include "proxy/admin_api.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>

#include "config/json.h"
#include "config/json_writer.h"
#include "proxy/files.h"
#include "proxy/log.h"

namespace bulwark {

namespace {

constexpr const char* kText = "text/plain; charset=utf-8";

// The paths that read state take GET (and HEAD with it), those that change it POST (so a link,
// a prefetch or a crawler never reloads or drains the process).
bool reads_state(const std::string& path) {
  return path == "/healthz" || path == "/ready" || path == "/metrics" || path == "/config" ||
         path == "/clusters";
}
bool changes_state(const std::string& path) {
  return path == "/healthcheck/fail" || path == "/healthcheck/ok" || path == "/drain" ||
         path == "/reload" || path == "/shutdown";
}

bool probe_path(const std::string& path) {
  return path == "/healthz" || path == "/ready" || path == "/metrics";
}

constexpr const char* kRefusalNames[] = {"browser", "not_loopback", "bad_token"};

// The credentials of "Bearer <token>" (the scheme in any case, RFC 9110 section 11.1); empty
// for any other value.
std::string_view bearer_token(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size()) return {};
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (static_cast<char>(std::tolower(static_cast<unsigned char>(authorization[i]))) !=
        kScheme[i]) {
      return {};
    }
  }
  std::string_view token = authorization.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  return token;
}

// Compares in time that depends only on the lengths, so a client cannot find the token a byte
// at a time by timing the refusals.
bool same_token(std::string_view presented, const std::string& token) {
  return presented.size() == token.size() &&
         CRYPTO_memcmp(presented.data(), token.data(), token.size()) == 0;
}

// "2023-11-14T22:13:20.123Z": UTC, to the millisecond.
std::string iso_time(int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm utc{};
  gmtime_r(&secs, &utc);
  char out[40];
  size_t n = strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &utc);
  snprintf(out + n, sizeof out - n, ".%03dZ", static_cast<int>(unix_ms % 1000));
  return out;
}

// "health": the endpoint's active checks.
void write_checks(config::JsonWriter& w, const EndpointHealthView& e) {
  w.key("health");
  w.begin_object();
  w.member("state", e.state);
  if (e.has_result) {
    w.member("last_result", to_string(e.last_result));
    w.member("last_detail", e.last_detail);
    w.member("last_check", iso_time(e.last_check_unix_ms));
  } else {
    for (const char* key : {"last_result", "last_detail", "last_check"}) {
      w.key(key);
      w.null();
    }
  }
  w.member("consecutive_failures", uint64_t{e.consecutive_failures});
  w.member("consecutive_successes", uint64_t{e.consecutive_successes});
  w.end_object();
}

// "outlier": the endpoint's passive outlier detection.
void write_outlier(config::JsonWriter& w, const EndpointHealthView& e) {
  w.key("outlier");
  w.begin_object();
  w.member("ejected", e.ejected);
  w.key("ejected_until");
  if (e.ejected) {
    w.string(iso_time(e.ejected_until_unix_ms));
  } else {
    w.null();
  }
  w.member("times_ejected", uint64_t{e.times_ejected});
  w.member("consecutive_5xx", uint64_t{e.consecutive_5xx});
  w.member("consecutive_gateway_failures", uint64_t{e.consecutive_gateway_failures});
  w.member("consecutive_local_origin_failures", uint64_t{e.consecutive_local_origin_failures});
  w.member("ejections_total", e.ejections_total);
  w.end_object();
}

void write_endpoint(config::JsonWriter& w, const ClusterHealthView& health,
                    const EndpointHealthView& e, const ClusterStatus::Pools& pools) {
  w.begin_object();
  w.member("name", e.name);
  w.member("address", e.address);
  w.member("priority", uint64_t{e.priority});
  w.member("weight", uint64_t{e.weight});
  w.member("routable", e.routable);
  if (health.checks) write_checks(w, e);
  if (health.outlier) write_outlier(w, e);
  if (health.slow_start) w.member("slow_start_weight_percent", e.slow_start_weight_percent);
  w.member("active_requests", pools.active_requests);
  w.member("connections", pools.connections);
  w.member("idle_connections", pools.idle);
  w.end_object();
}

void write_cluster(config::JsonWriter& w, const ClusterStatus& cluster) {
  const config::ClusterConfig& cc = *cluster.config;
  w.begin_object();
  w.member("name", cc.name);
  w.member("lb", config::to_string(cc.lb));
  w.member("connections", cluster.connections);
  w.member("max_connections", uint64_t{cc.pool.max_connections});
  w.member("pending", cluster.pending);
  w.member("routable_endpoints", cluster.health.routable);
  w.member("panic", cluster.health.panic);
  if (cluster.circuit) {
    w.key("circuit");
    w.begin_object();
    w.member("state", cluster.circuit->state);
    w.member("open_duration_ms", cluster.circuit->open_duration_ms);
    w.end_object();
  }
  if (cluster.adaptive) {
    w.key("adaptive_concurrency");
    w.begin_object();
    w.member("limit", uint64_t{cluster.adaptive->limit});
    w.member("in_flight", uint64_t{cluster.adaptive->in_flight});
    w.member("min_rtt_us", cluster.adaptive->min_rtt_us);
    w.member("measuring", cluster.adaptive->measuring);
    w.member("rejected", cluster.adaptive->rejected);
    w.end_object();
  }
  w.key("endpoints");
  w.begin_array();
  for (size_t i = 0; i < cluster.health.endpoints.size(); ++i) {
    const ClusterStatus::Pools none;
    write_endpoint(w, cluster.health, cluster.health.endpoints[i],
                   i < cluster.pools.size() ? cluster.pools[i] : none);
  }
  w.end_array();
  w.end_object();
}

}  // namespace

std::string read_admin_token(const std::string& path, std::string* error) {
  // On the main loop: never block, never read without bound (read_regular_file).
  std::string token;
  if (!read_regular_file(path, kMaxAdminTokenFile, &token, error)) return {};
  const char* space = " \t\r\n";
  token.erase(0, std::min(token.size(), token.find_first_not_of(space)));
  token.erase(token.find_last_not_of(space) + 1);
  if (token.empty()) *error = path + " holds no token";
  return token;
}

std::string clusters_json(const std::vector<ClusterStatus>& clusters) {
  config::JsonWriter w;
  w.begin_object();
  w.key("clusters");
  w.begin_array();
  for (const ClusterStatus& cluster : clusters) write_cluster(w, cluster);
  w.end_array();
  w.end_object();
  return w.take() + "\n";
}

void AdminApi::handle(const AdminRequest& req, std::function<void(AdminResponse)> respond) {
  const bool get = req.method == "GET" || req.method == "HEAD";
  const bool reads = reads_state(req.path);
  if ((reads && !get) || (changes_state(req.path) && req.method != "POST")) {
    respond(
        {405, kText, std::string("method not allowed: use ") + (reads ? "GET" : "POST") + "\n"});
    return;
  }
  if (changes_state(req.path)) {
    std::string refused = refuse_change(req);
    if (!refused.empty()) {
      respond({403, kText, refused + "\n"});
      return;
    }
  }
  if (answer_probe(req, respond)) return;
  if (req.path == "/config") {
    respond({200, "application/json", config::to_json(target_.current_config()) + "\n"});
  } else if (req.path == "/clusters") {
    target_.cluster_status([respond = std::move(respond)](std::vector<ClusterStatus> clusters) {
      respond({200, "application/json", clusters_json(clusters)});
    });
  } else if (req.path == "/healthcheck/fail" || req.path == "/healthcheck/ok") {
    const bool fail = req.path == "/healthcheck/fail";
    set_failed_on_purpose(fail);
    respond({200, kText,
             fail ? "/ready now fails on purpose\n" : "/ready follows the proxy's state again\n"});
  } else if (req.path == "/reload") {
    reload(std::move(respond));
  } else if (req.path == "/drain") {
    const bool started = !target_.draining();
    target_.drain();
    respond(
        {200, kText,
         started ? "draining; the process keeps running until SIGTERM\n" : "already draining\n"});
  } else if (req.path == "/shutdown") {
    const bool first = target_.shutdown();
    respond({200, kText,
             first ? "shutting down: every listener drains now; the process exits once drained\n"
                   : "already shutting down\n"});
  } else {
    respond({404, kText,
             "not found; try GET /healthz /ready /metrics /config /clusters, "
             "POST /reload /healthcheck/fail /healthcheck/ok /drain /shutdown\n"});
  }
}

void AdminApi::handle_probe(const AdminRequest& req, std::function<void(AdminResponse)> respond) {
  if (probe_path(req.path) && req.method != "GET" && req.method != "HEAD") {
    respond({405, kText, "method not allowed: use GET\n"});
    return;
  }
  if (!answer_probe(req, respond)) {
    respond({404, kText,
             "not found; the probes listener answers GET /healthz /ready /metrics (the rest is "
             "on the admin listener)\n"});
  }
}

bool AdminApi::answer_probe(const AdminRequest& req, std::function<void(AdminResponse)>& respond) {
  if (req.path == "/healthz") {
    const std::string stall = target_.worker_stall();
    respond(stall.empty() ? AdminResponse{200, kText, "ok\n"}
                          : AdminResponse{503, kText, stall + "\n"});
  } else if (req.path == "/ready") {
    const std::string why = not_ready_reason();
    respond(why.empty() ? AdminResponse{200, kText, "ready\n"}
                        : AdminResponse{503, kText, why + "\n"});
  } else if (req.path == "/metrics") {
    respond({200, "text/plain; version=0.0.4; charset=utf-8", target_.metrics_text()});
  } else {
    return false;
  }
  return true;
}

std::string AdminApi::refuse_change(const AdminRequest& req) {
  Refusal reason = kBrowser;
  std::string text;
  const std::string action = "POST " + req.path;
  const std::string& token_file = target_.current_config().admin.token_file;
  if (req.from_browser) {
    // curl, kubectl, systemd and scripts send neither header; a web page's request always does.
    text = "refused: a browser's request (Origin or Sec-Fetch-Site) may not " + req.path.substr(1);
  } else if (req.peer_loopback) {
    return {};
  } else if (token_file.empty()) {
    reason = kNotLoopback;
    text = "refused: only a client on loopback may " + action +
           " (admin.token_file would allow a bearer token from elsewhere)";
  } else if (std::string_view presented = bearer_token(req.authorization); presented.empty()) {
    reason = kNotLoopback;
    text = "refused: " + action + " from another host needs Authorization: Bearer <token>";
  } else {
    std::string error;
    const std::string token = read_admin_token(token_file, &error);
    if (!token.empty() && same_token(presented, token)) return {};
    reason = kBadToken;
    text = "refused: the bearer token is not the admin token";
    if (token.empty()) {
      log::error("cannot read the admin token: every token is refused")
          .str("token_file", token_file)
          .str("error", error);
    }
  }
  ++refused_[reason];
  log::warn("admin request refused")
      .str("path", req.path)
      .str("peer", req.peer)
      .str("reason", kRefusalNames[reason]);
  return text;
}

std::vector<std::pair<const char*, uint64_t>> AdminApi::refusals() const {
  std::vector<std::pair<const char*, uint64_t>> out;
  for (size_t r = 0; r < kRefusals; ++r) out.emplace_back(kRefusalNames[r], refused_[r]);
  return out;
}

std::string AdminApi::not_ready_reason() const {
  if (!target_.serving()) return "starting: the workers have not taken the config yet";
  if (target_.draining()) return "draining";
  if (failed_on_purpose_) {
    return "failed on purpose (POST /healthcheck/fail; POST /healthcheck/ok to undo)";
  }
  return target_.clusters_not_ready();
}

void AdminApi::set_failed_on_purpose(bool fail) {
  if (fail == failed_on_purpose_) return;
  failed_on_purpose_ = fail;
  if (fail) {
    log::warn(
        "readiness failed on purpose (POST /healthcheck/fail): /ready is 503 until "
        "POST /healthcheck/ok");
  } else {
    log::info("readiness restored (POST /healthcheck/ok)");
  }
}

void AdminApi::reload(std::function<void(AdminResponse)> respond) {
  auto message = std::make_shared<std::string>();
  auto answer = std::make_shared<std::function<void(AdminResponse)>>(std::move(respond));
  const bool ok = target_.reload("POST /reload", message.get(), [message, answer] {
    (*answer)({200, kText, *message + "\n"});
  });
  if (!ok) (*answer)({400, kText, *message + "\n"});
}

}  // namespace bulwark
