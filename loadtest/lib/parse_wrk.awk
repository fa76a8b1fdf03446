# Parse the output of `wrk --latency` into one tab-separated line:
#   requests  requests_per_sec  p50_us  p99_us  errors
# errors = socket errors (connect+read+write+timeout) + non-2xx/3xx responses.
# Missing values are printed as "NA".
function to_us(v,    n, u) {
    n = v; u = v
    sub(/[a-z]+$/, "", n)
    sub(/^[0-9.]+/, "", u)
    if (u == "us") return n + 0
    if (u == "ms") return n * 1000
    if (u == "s")  return n * 1000000
    if (u == "m")  return n * 60000000
    return "NA"
}
BEGIN { req = "NA"; rps = "NA"; p50 = "NA"; p99 = "NA"; err = 0 }
/ requests in / { req = $1 }
/^Requests\/sec:/ { rps = $2 }
/^[ \t]+50%[ \t]/ { p50 = to_us($2) }
/^[ \t]+99%[ \t]/ { p99 = to_us($2) }
/^[ \t]*Socket errors:/ {
    # Socket errors: connect 0, read 0, write 0, timeout 0
    for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) { v = $i; sub(/,/, "", v); err += v }
}
/^[ \t]*Non-2xx or 3xx responses:/ { err += $NF }
END { printf "%s\t%s\t%s\t%s\t%s\n", req, rps, p50, p99, err }
