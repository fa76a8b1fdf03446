# Shell functions for loadtest/run: processes, ports, templates, /proc readings, statistics.
# Sourced, not run. Expects HERE (the loadtest/ directory) and TMP (a private temp dir) to be set
# and PIDS to be an array; cleanup() stops every PID in it.

log() { echo "run: $*" >&2; }
die() { echo "run: error: $*" >&2; exit 1; }

need() { # need COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found; install it with: apt-get install -y $2 (or scripts/install-deps.sh --bench)"
}

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- processes

# /proc/[0-9]*/stat: a process that exits between the glob and cat's read makes cat fail, which
# under pipefail would fail the pipeline (and, in an assignment, end the run without a word);
# what was read is still right, so that failure is ignored.
all_stat() { cat /proc/[0-9]*/stat 2>/dev/null || true; }

descendants() { # PIDs of all descendants of PID
  all_stat | awk -v root="$1" '
    { p = $1; r = $0; sub(/^.*\) /, "", r); split(r, f, " "); pp[p] = f[2] }
    END { w[root] = 1; c = 1
          while (c) { c = 0; for (p in pp) if (!(p in w) && (pp[p] in w)) { w[p] = 1; c = 1 } }
          for (p in w) if (p != root) print p }'
}

proc_ticks() { # utime+stime ticks of PID and its descendants, -1 if gone
  all_stat | awk -v root="$1" -f "$HERE/lib/proc_ticks.awk"
}

tree_rss_kib() { # VmRSS of PID and its descendants together, in KiB
  local p sum=0 v
  for p in "$1" $(descendants "$1"); do
    v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

tree_fds() { # open descriptors of PID and its descendants together
  local p sum=0 n
  for p in "$1" $(descendants "$1"); do
    n=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
    sum=$((sum + n))
  done
  echo "$sum"
}

stop_proc() { # stop one process we started (and anything it forked): TERM, then KILL after 5 s
  local pid=$1 kids i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kids=$(descendants "$pid" || true)
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do stop_proc "$pid"; done
  # The network namespaces of the network-chaos scenarios, when they were made.
  if declare -F net_teardown > /dev/null; then net_teardown; fi
  rm -rf "$TMP"
  exit "$rc"
}

# ---------------------------------------------------------------- ports and templates

# Free ports: random ones below the kernel's ephemeral range (so the clients' and proxies'
# outgoing connections never take them), checked against every TCP socket in /proc/net/tcp{,6}
# and against each other.
USED_PORTS=" "
pick_port() {
  local p hex i
  for i in $(seq 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    hex=$(printf '%04X' "$p")
    if ! awk -v h=":$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }' \
         /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
      USED_PORTS="$USED_PORTS$p "
      echo "$p"
      return 0
    fi
  done
  die "could not find a free TCP port"
}

# fill TEMPLATE OUT [NAME=VALUE ...]: replaces each @NAME@ with its value
fill() {
  local tpl=$1 out=$2 kv args=()
  shift 2
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" > "$out"
  local left
  left=$(grep -v '^[[:space:]]*#' "$out" | grep -o '@[A-Z_0-9]*@' | head -1 || true)
  [ -z "$left" ] || die "template $tpl: unfilled placeholder $left"
}

# wait_http NAME PORT PID LOG [CURL_OPTION...]: 0 once GET / on the port answers 2xx (the proxy
# is up and its upstream reachable), 1 if the process died or 10 s passed (with the log's tail on
# stderr). With curl options (--cacert, --cert, ...) it asks https://localhost:PORT/ (localhost
# resolved to 127.0.0.1), so the certificate is verified as the clients will see it.
wait_http() {
  local name=$1 port=$2 pid=$3 logf=$4 i code url="http://127.0.0.1:$2/"
  shift 4
  [ $# -eq 0 ] || { url="https://localhost:$port/"; set -- "$@" --resolve "localhost:$port:127.0.0.1"; }
  for i in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during startup; last lines of its log:"; tail -n 20 "$logf" >&2 || true
      return 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" || true)
    case "$code" in 2??) return 0 ;; esac
    sleep 0.1
  done
  log "$name did not answer 2xx on 127.0.0.1:$port within 10 s; last lines of its log:"
  tail -n 20 "$logf" >&2 || true
  return 1
}

# wait_line FILE PATTERN PID SECONDS: 0 once FILE has a line matching PATTERN (grep -E)
wait_line() {
  local i
  for i in $(seq $(($4 * 20))); do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { grep -qE "$2" "$1" 2>/dev/null; return; }
    sleep 0.05
  done
  return 1
}

# ---------------------------------------------------------------- certificates

# make_certs DIR: the TLS scenarios' certificates, made with the openssl command (valid 7 days),
# private keys readable by us only:
#   ca.crt/.key           a test CA (ECDSA P-256)
#   server-ec.crt/.key    ECDSA P-256, for localhost and 127.0.0.1, signed by the CA
#   server-rsa.crt/.key   RSA 2048, the same names, signed by the CA
#   client.crt/.key       ECDSA P-256 client certificate with the URI SAN $CLIENT_SAN
#   *.pem                 certificate and key in one file (haproxy's crt)
CLIENT_SAN=spiffe://bench.local/ns/loadtest/sa/client
make_certs() {
  local d=$1
  ( set -e; umask 077; mkdir -p "$d"; cd "$d"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 7 -subj "/CN=bulwark loadtest CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
    leaf() { # leaf NAME ec|rsa SAN EXTENDED_KEY_USAGE
      case $2 in
        ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" ;;
        rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key" ;;
      esac
      openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr"
      printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature%s\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
        "$([ "$2" = rsa ] && echo ,keyEncipherment)" "$4" "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 -sha256 \
        -extfile "$1.ext" -out "$1.crt"
      cat "$1.crt" "$1.key" > "$1.pem"
    }
    leaf server-ec ec "DNS:localhost,IP:127.0.0.1" serverAuth
    leaf server-rsa rsa "DNS:localhost,IP:127.0.0.1" serverAuth
    leaf client ec "URI:$CLIENT_SAN" clientAuth
    openssl verify -CAfile ca.crt server-ec.crt server-rsa.crt client.crt
  ) > "$d.log" 2>&1 || die "could not make the test certificates with openssl: $(tail -n 5 "$d.log")"
}

kv() { # kv FILE KEY: the value of KEY=VALUE in FILE, or NA
  awk -F= -v k="$2" '$1 == k { v = substr($0, length(k) + 2) } END { print (v == "" ? "NA" : v) }' "$1" 2>/dev/null
}

# ---------------------------------------------------------------- the machine

cpu_busy_ticks() { # "BUSY TOTAL": the whole machine's CPU ticks so far (/proc/stat), every process
  awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}
busy_pct() { # busy_pct "BUSY0 TOTAL0" "BUSY1 TOTAL1": % of all CPUs busy in between
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]
    if (d > 0) printf "%.0f", 100 * (y[1] - x[1]) / d; else print "NA" }'
}

machine_line() {
  local cpu
  cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  [ -n "$cpu" ] || cpu=$(awk -F': *' '/^(Hardware|Processor|cpu model)/ { print $2; exit }' /proc/cpuinfo)
  echo "${cpu:-unknown CPU}, $(nproc) cores, $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
}
