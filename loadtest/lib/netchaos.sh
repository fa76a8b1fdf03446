# The network-chaos scenarios of loadtest/run: faults where networks fail, not in the process.
# Sourced by loadtest/run after its replicas and targets are set up; uses its start_target,
# start_replica, ctl, reset_replicas, rec and record_loadgen.
#
# The three replicas move into network namespaces of their own (bwlt<pid>r1..3), each behind a
# veth link from the host (10.213.I.1 on the host, 10.213.I.2 in the namespace), so the proxies
# reach them over a real link whose packets the runner can delay, drop or cut:
#   netlatency  replica 2's packets out are held 200 ms (netdelay on an NFQUEUE: this kernel has
#               no tc netem, see loadtest/README.md), so every round trip to it takes 200 ms more
#   netloss     30% of replica 2's packets out are dropped (iptables -m statistic)
#   partition   every packet to and from replica 2 is dropped: connects time out, no RST
#   blackhole   replica 2 accepts connections and reads requests but never answers
#   coldstart   every replica takes 5 ms per request; replica 2 is killed, and started again
#               with its first 5 s of answers 10x slower (a cold cache)
#   overload    every replica serves 4 requests at a time, 10 ms each (1,200 requests/s for the
#               three), and the client offers twice that
#   hedging     the brown-out (replica 1 answers 20% with 503, replica 2 holds 10% for 1 s) with
#               bulwark's hedged requests on
# Each fault starts NET_BEFORE s into a measured run of NET_BEFORE + NET_FAULT s at CHAOS_RATE
# requests/s. The proxies' configs are the chaos ones (peers/*-chaos.*) with, per scenario, the
# closest equivalent each proxy has to what bulwark adds: see NET_CONFIG below and the report.
#
# Needs root, ip(8), iptables and netdelay; without them these scenarios are skipped with a
# message saying which is missing.

NET_SCENARIOS=netlatency,netloss,partition,blackhole,coldstart,overload,hedging
NET_PREFIX="bwlt$$"
NET_READY=0
NET_WHY=""           # why the scenarios cannot run here, when they cannot
NETDELAY="$BUILD/loadtest/netdelay"
NETDELAY_PID=""
LATE_MS=250          # the chaos configs' per-try timeout: failures after it count as late
OV_CAPACITY=4        # overload: requests each replica serves at once
OV_SERVICE_MS=10     # overload: and how long each takes
OV_RATE=$((3 * OV_CAPACITY * 1000 / OV_SERVICE_MS))   # what the three replicas can serve
if [ "$QUICK" = 1 ]; then
  NET_BEFORE=1; NET_FAULT=4; COLD_STEADY=3; COLD_DOWN=4; COLD_MEASURE=6; OV_UNLOADED=2; OV_DURATION=4
else
  NET_BEFORE=2; NET_FAULT=8; COLD_STEADY=5; COLD_DOWN=4; COLD_MEASURE=8; OV_UNLOADED=4; OV_DURATION=8
fi

# What each proxy is given per scenario, beyond the chaos config (start_target NAME=VALUE pairs).
net_config() { # net_config SCENARIO TARGET -> lines NAME=VALUE
  case "$1-$2" in
    netlatency-bulwark|netloss-bulwark)
      echo "RETRY_EXTRA=hedge: {delay: 50ms}"; echo "CLUSTER_EXTRA=lb: least_request" ;;
    netlatency-haproxy|netloss-haproxy) echo "BALANCE=leastconn" ;;
    netlatency-nginx|netloss-nginx) echo "NGINX_BALANCE=least_conn;" ;;
    coldstart-bulwark) echo "CLUSTER_EXTRA=slow_start: {window: 20s, aggression: 0.3, min_weight_percent: 1}" ;;
    coldstart-haproxy) echo "SERVER_EXTRA=slowstart 20s" ;;
    overload-bulwark)
      echo "CLUSTER_EXTRA=adaptive_concurrency: {min_limit: 3, max_limit: 300, sample_window: 100ms, min_rtt_interval: 5s, min_rtt_samples: 20, buffer: 50%}" ;;
    hedging-bulwark) echo "RETRY_EXTRA=hedge: {delay: 50ms}" ;;
  esac
}
net_start_target() { # net_start_target SCENARIO TARGET
  local vars=() line
  while IFS= read -r line; do [ -z "$line" ] || vars+=("$line"); done < <(net_config "$1" "$2")
  start_target "$2" chaos "${vars[@]+"${vars[@]}"}"
}

net_check() { # sets NET_READY, or NET_WHY
  if [ "$(id -u)" != 0 ]; then NET_WHY="not root (network namespaces and iptables need it)"; return; fi
  local tool
  for tool in ip iptables; do
    command -v "$tool" > /dev/null 2>&1 || { NET_WHY="'$tool' not found (apt-get install -y iproute2 iptables)"; return; }
  done
  [ -x "$NETDELAY" ] || { NET_WHY="$NETDELAY is not built"; return; }
  if ! ip netns add "${NET_PREFIX}probe" 2> "$TMP/netns.err"; then
    NET_WHY="cannot make a network namespace: $(head -n 1 "$TMP/netns.err")"; return
  fi
  if ! ip netns exec "${NET_PREFIX}probe" iptables -A OUTPUT -m statistic --mode random --probability 0.5 -j DROP 2> "$TMP/netns.err"; then
    NET_WHY="iptables in a namespace failed: $(head -n 1 "$TMP/netns.err")"
  fi
  ip netns del "${NET_PREFIX}probe" 2>/dev/null || true
  [ -n "$NET_WHY" ] || NET_READY=1
}

net_setup() {
  local i h n
  for i in 1 2 3; do
    h="${NET_PREFIX}h$i"; n="${NET_PREFIX}n$i"
    ip netns add "${NET_PREFIX}r$i"
    ip link add "$h" type veth peer name "$n"
    ip link set "$n" netns "${NET_PREFIX}r$i"
    ip addr add "10.213.$i.1/24" dev "$h"
    ip link set "$h" up
    ip -n "${NET_PREFIX}r$i" addr add "10.213.$i.2/24" dev "$n"
    ip -n "${NET_PREFIX}r$i" link set "$n" up
    ip -n "${NET_PREFIX}r$i" link set lo up
  done
}

net_teardown() {
  local i
  [ -z "$NETDELAY_PID" ] || kill "$NETDELAY_PID" 2>/dev/null || true
  for i in 1 2 3; do
    ip netns del "${NET_PREFIX}r$i" 2>/dev/null || true   # takes its end of the veth, and so both
  done
}

# replicas_at net|loopback: moves the replicas (restarting them) when they are not there yet.
replicas_at() {
  local i want_ns want_host
  for i in 1 2 3; do
    if [ "$1" = net ]; then want_ns="${NET_PREFIX}r$i"; want_host="10.213.$i.2"; else want_ns=""; want_host=127.0.0.1; fi
    [ "${RNS[$i]}" != "$want_ns" ] || continue
    if kill -0 "${RPID[$i]:-0}" 2>/dev/null; then kill -TERM "${RPID[$i]}"; wait "${RPID[$i]}" 2>/dev/null || true; fi
    RNS[$i]=$want_ns; RHOST[$i]=$want_host
    start_replica "$i"
  done
}

in_replica_ns() { local i=$1; shift; ip netns exec "${NET_PREFIX}r$i" "$@"; }

net_clear() { # no fault anywhere: rules flushed, netdelay stopped
  local i
  for i in 1 2 3; do in_replica_ns "$i" iptables -F; done
  if [ -n "$NETDELAY_PID" ]; then kill -TERM "$NETDELAY_PID" 2>/dev/null || true; wait "$NETDELAY_PID" 2>/dev/null || true; NETDELAY_PID=""; fi
}

# The faults, on replica 2: fault_X on.
fault_netlatency() {
  # Not through in_replica_ns: a function in the background is a subshell, and $! would be its
  # PID, not netdelay's (ip netns exec execs it).
  ip netns exec "${NET_PREFIX}r2" "$NETDELAY" --queue 7 --delay-ms 200 > "$TMP/netdelay.out" 2>&1 &
  NETDELAY_PID=$!
  PIDS+=("$NETDELAY_PID")
  wait_line "$TMP/netdelay.out" '^netdelay queue' "$NETDELAY_PID" 5 || die "netdelay did not start: $(cat "$TMP/netdelay.out")"
  in_replica_ns 2 iptables -A OUTPUT -j NFQUEUE --queue-num 7
}
fault_netloss() { in_replica_ns 2 iptables -A OUTPUT -m statistic --mode random --probability 0.3 -j DROP; }
fault_partition() { in_replica_ns 2 iptables -A INPUT -j DROP; in_replica_ns 2 iptables -A OUTPUT -j DROP; }
fault_blackhole() { ctl 2 "/set?delay=1&delay_ms=3600000"; }
fault_hedging() { :; }   # the brown-out is set before the run

# net_run SCENARIO TARGET ROUND: one measured run with replica 2's fault from NET_BEFORE s on.
net_run() {
  local s=$1 t=$2 r=$3 out="$TMP/lg.out" lg t_fault late
  local tl="$OUT/timelines/$s-$t-$r.tsv"
  replicas_at net
  net_clear
  reset_replicas
  if [ "$s" = hedging ]; then ctl 1 "/set?fail=0.2"; ctl 2 "/set?delay=0.1&delay_ms=1000"; fi
  net_start_target "$s" "$t"
  # shellcheck disable=SC2046
  "$LOADGEN" $(client_targets chaos) --rate "$CHAOS_RATE" --connections "$CHAOS_CONNECTIONS" --warmup 1s \
    --duration "$((NET_BEFORE + NET_FAULT))s" --timeout 5s --timeline "$tl" > "$out" 2> "$TMP/lg.err" &
  lg=$!
  sleep $((1 + NET_BEFORE))
  "fault_$s"
  t_fault=$(now_ms)
  wait "$lg" || die "loadgen failed in the $s scenario against $t: $(tail -n 5 "$TMP/lg.err")"
  net_clear
  rec "$s" "$r" "$t" faulty_requests "$(replica_stat 2 requests)"
  printf '%s\t%s\n' "$s" "$t_fault" > "${tl%.tsv}.events"
  record_loadgen "$s" "$r" "$t" "$out"
  # Failures completed more than a per-try timeout after the fault began (100 ms bins).
  late=$(awk -v from=$((t_fault + LATE_MS)) '!/^#/ && $1 >= from { n += $3 } END { print n + 0 }' "$tl")
  rec "$s" "$r" "$t" late_failed "$late"
  log "  $s $t: success $(kv "$out" ok)/$(kv "$out" completed), replica 2 got $(median_of "$s" "$t" faulty_requests) (median so far), late failures $late, p99 $(kv "$out" p99_us) µs, p99.9 $(kv "$out" p999_us) µs"
  stop_target
}
scenario_netlatency() { net_run netlatency "$@"; }
scenario_netloss() { net_run netloss "$@"; }
scenario_partition() { net_run partition "$@"; }
scenario_blackhole() { net_run blackhole "$@"; }
scenario_hedging() { net_run hedging "$@"; }

# coldstart TARGET ROUND: p99 in steady state, then from the moment replica 2 comes back cold.
scenario_coldstart() {
  local t=$1 r=$2 i out="$TMP/lg.out" t_restart first
  replicas_at net
  net_clear
  reset_replicas
  for i in 1 2 3; do ctl "$i" "/set?service_ms=5"; done
  net_start_target coldstart "$t"
  # shellcheck disable=SC2046
  "$LOADGEN" $(client_targets chaos) --rate "$CHAOS_RATE" --connections "$CHAOS_CONNECTIONS" --warmup 1s \
    --duration "${COLD_STEADY}s" --timeout 5s > "$out" 2> "$TMP/lg.err" || die "loadgen failed (coldstart, steady) against $t"
  rec coldstart "$r" "$t" steady_p99_us "$(kv "$out" p99_us)"
  kill -KILL "${RPID[2]}"; wait "${RPID[2]}" 2>/dev/null || true
  sleep "$COLD_DOWN"   # every proxy with checks has marked it down by now (3 failed checks, 1 s apart)
  t_restart=$(now_ms)
  start_replica 2 --service-ms 5 --cold-ms 5000 --cold-factor 10
  # shellcheck disable=SC2046
  "$LOADGEN" $(client_targets chaos) --rate "$CHAOS_RATE" --connections "$CHAOS_CONNECTIONS" \
    --duration "${COLD_MEASURE}s" --timeout 5s > "$out" 2> "$TMP/lg.err" || die "loadgen failed (coldstart, warm-up) against $t"
  record_loadgen coldstart "$r" "$t" "$out"
  rec coldstart "$r" "$t" cold_requests "$(replica_stat 2 requests)"
  first=$(replica_stat 2 first_request_unix_ms)
  rec coldstart "$r" "$t" back_ms "$([ "${first:-0}" != 0 ] && echo $((first - t_restart)) || echo never)"
  log "  coldstart $t: steady p99 $(median_of coldstart "$t" steady_p99_us) µs (this round's in raw.tsv), warm-up p99 $(kv "$out" p99_us) µs, replica 2 got $(replica_stat 2 requests) requests"
  stop_target
}

# overload TARGET ROUND: p99 at half the replicas' capacity, then the admitted requests' p99 and
# the share served at twice it.
scenario_overload() {
  local t=$1 r=$2 i out="$TMP/lg.out"
  replicas_at net
  net_clear
  reset_replicas
  for i in 1 2 3; do ctl "$i" "/set?service_ms=$OV_SERVICE_MS&capacity=$OV_CAPACITY"; done
  net_start_target overload "$t"
  # shellcheck disable=SC2046
  "$LOADGEN" $(client_targets chaos) --rate $((OV_RATE / 2)) --connections "$CHAOS_CONNECTIONS" --warmup 1s \
    --duration "${OV_UNLOADED}s" --timeout 5s > "$out" 2> "$TMP/lg.err" || die "loadgen failed (overload, unloaded) against $t"
  rec overload "$r" "$t" unloaded_p99_us "$(kv "$out" ok_p99_us)"
  # shellcheck disable=SC2046
  "$LOADGEN" $(client_targets chaos) --rate $((OV_RATE * 2)) --connections "$CHAOS_CONNECTIONS" \
    --duration "${OV_DURATION}s" --timeout 1s > "$out" 2> "$TMP/lg.err" || die "loadgen failed (overload) against $t"
  record_loadgen overload "$r" "$t" "$out"
  rec overload "$r" "$t" ok_p99_us "$(kv "$out" ok_p99_us)"
  rec overload "$r" "$t" ok_p999_us "$(kv "$out" ok_p999_us)"
  rec overload "$r" "$t" served_per_s "$(awk -v ok="$(kv "$out" ok)" -v d="$OV_DURATION" 'BEGIN { printf "%.0f", ok / d }')"
  log "  overload $t: served $(kv "$out" ok)/$(kv "$out" sent), admitted p99 $(kv "$out" ok_p99_us) µs"
  stop_target
}

# ---------------------------------------------------------------- report
report_netchaos() {
  local t s
  cat <<EOF

## Chaos at the network level (3 replicas in network namespaces behind veth links)

EOF
  if [ "$NET_READY" != 1 ]; then
    echo "Not run on this machine: $NET_WHY."
    return
  fi
  cat <<EOF
Every replica runs in a network namespace of its own, reached over a veth link; the fault is on
replica 2's side of its link from ${NET_BEFORE} s into a $((NET_BEFORE + NET_FAULT)) s run at $CHAOS_RATE requests/s
($CHAOS_CONNECTIONS connections, open loop; a request not answered 2xx within 5 s fails). **Late
failures**: failed requests completed more than ${LATE_MS} ms (the chaos configs' per-try timeout)
after the fault began. The configs are \`peers/*-chaos.*\` (3 tries, per-try timeout 250 ms,
checks every second, passive ejection) with, per scenario:

| scenario | fault | bulwark adds | haproxy adds | nginx adds |
|---|---|---|---|---|
| netlatency | +200 ms on every packet replica 2 sends (netdelay: \`tc netem\` does not exist on this kernel) | \`hedge: {delay: 50ms}\`, \`lb: least_request\` | \`balance leastconn\` | \`least_conn\` |
| netloss | 30% of the packets replica 2 sends dropped | the same | the same | the same |
| partition | every packet to and from replica 2 dropped | – | – | – |
| blackhole | replica 2 reads requests and never answers | – | – | – |
| hedging | the brown-out: replica 1 answers 20% with 503, replica 2 holds 10% for 1 s | \`hedge: {delay: 50ms}\` | no hedging exists | no hedging exists |

| scenario | target | success rate (%) | failed | late failures | p50 (ms) | p99 (ms) | p99.9 (ms) |
|---|---|---:|---:|---:|---:|---:|---:|
EOF
  for s in netlatency netloss partition blackhole hedging; do
    want "$s" || continue
    for t in bulwark haproxy nginx; do
      echo "| $s | $t | $(cell "$s" "$t" success_pct 1 %.3f) | $(cell "$s" "$t" failed 1 %.0f) | $(cell "$s" "$t" late_failed 1 %.0f) | $(cell "$s" "$t" p50_us 1000 %.2f) | $(cell "$s" "$t" p99_us 1000 %.1f) | $(cell "$s" "$t" p999_us 1000 %.1f) |"
    done
  done
  if want coldstart; then
    cat <<EOF

**Cold start.** Every replica takes 5 ms per request. After ${COLD_STEADY} s of steady state, replica 2 is
killed, and ${COLD_DOWN} s later started again with its first 5 s of answers 10x slower (50 ms); the
client runs on for ${COLD_MEASURE} s from that restart. Round robin everywhere; bulwark: \`slow_start:
{window: 20s, aggression: 0.3, min_weight_percent: 1}\`; haproxy: \`slowstart 20s\`; nginx: nothing
(\`slow_start\` is nginx Plus only). Target: p99 during the warm-up ≤ 2× the steady state's.

| target | steady p99 (ms) | warm-up p99 (ms) | warm-up p99.9 (ms) | requests replica 2 got | back after (ms) | failed |
|---|---:|---:|---:|---:|---:|---:|
EOF
    for t in bulwark haproxy nginx; do
      echo "| $t | $(cell coldstart "$t" steady_p99_us 1000 %.2f) | $(cell coldstart "$t" p99_us 1000 %.2f) | $(cell coldstart "$t" p999_us 1000 %.2f) | $(cell coldstart "$t" cold_requests 1 %.0f) | $(cell coldstart "$t" back_ms 1 %.0f) | $(cell coldstart "$t" failed 1 %.0f) |"
    done
  fi
  if want overload; then
    cat <<EOF

**Overload.** Each replica serves $OV_CAPACITY requests at a time, $OV_SERVICE_MS ms each: $OV_RATE requests/s for the three. The
client offers half that for ${OV_UNLOADED} s (*unloaded*), then twice that ($((OV_RATE * 2)) requests/s) for ${OV_DURATION} s,
where a request not answered 2xx within 1 s counts as failed (its client gave up).
bulwark: \`adaptive_concurrency: {min_limit: 3, max_limit: 300, sample_window: 100ms,
min_rtt_interval: 5s, min_rtt_samples: 20, buffer: 50%}\`, which refuses what is over its limit
at once (503); haproxy and nginx have fixed limits only (haproxy \`maxconn 1024\` per server with
its queue, nginx none), so the work waits in queues. *Admitted p99*: over the requests answered
2xx; *served*: the requests answered 2xx (within 1 s) per second of the run. Target: admitted p99
≤ 3× the unloaded p99.

| target | unloaded p99 (ms) | admitted p99 (ms) | admitted p99.9 (ms) | served (requests/s) | success rate (%) | p99 of all (ms) |
|---|---:|---:|---:|---:|---:|---:|
EOF
    for t in bulwark haproxy nginx; do
      echo "| $t | $(cell overload "$t" unloaded_p99_us 1000 %.1f) | $(cell overload "$t" ok_p99_us 1000 %.1f) | $(cell overload "$t" ok_p999_us 1000 %.1f) | $(cell overload "$t" served_per_s 1 %.0f) | $(cell overload "$t" success_pct 1 %.1f) | $(cell overload "$t" p99_us 1000 %.1f) |"
    done
  fi
  echo
  echo "![p99 per network-chaos scenario](netchaos-p99.png)"
}

# One chart: p99 per scenario and target (log scale).
chart_netchaos() {
  [ "$NET_READY" = 1 ] || return 0
  local s t row=0 dat="$TMP/netchaos.dat"
  : > "$dat"
  for s in netlatency netloss partition blackhole hedging coldstart overload; do
    want "$s" || continue
    printf '%s' "$s" >> "$dat"
    for t in bulwark haproxy nginx; do
      printf '\t%s' "$(median_of "$s" "$t" "$([ "$s" = overload ] && echo ok_p99_us || echo p99_us)" | awk '{ if ($1 == "NA") print "NaN"; else printf "%.2f", $1 / 1000 }')" >> "$dat"
    done
    printf '\n' >> "$dat"
    row=$((row + 1))
  done
  [ "$row" -gt 0 ] || return 0
  gnuplot <<EOF
set terminal pngcairo size 900,500 font ",11"
set output "$OUT/netchaos-p99.png"
set title "p99 under network faults (overload: admitted requests' p99), median of ${ROUNDS} round(s)"
set ylabel "ms (log scale)"
set logscale y
set grid ytics
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key top left
set xtics nomirror
plot "$dat" using 2:xtic(1) title "bulwark" lc rgb "$(color bulwark)", '' using 3 title "haproxy" lc rgb "$(color haproxy)", '' using 4 title "nginx" lc rgb "$(color nginx)"
EOF
}
