# Sum utime+stime (clock ticks) of process ROOT and all its descendants.
# Input: the concatenated contents of /proc/[0-9]*/stat (one line per process).
# Usage: cat /proc/[0-9]*/stat 2>/dev/null | awk -v root=PID -f proc_ticks.awk
# Prints the sum, or -1 if ROOT is not running.
#
# /proc/PID/stat: "pid (comm) state ppid ... utime(14) stime(15) ...". comm may
# contain spaces and ')' so everything up to the LAST ") " is cut first; after
# that, field 1 is state (field 3 of the full line), so ppid is f[2], utime
# f[12], stime f[13]. A process's utime/stime already include all its threads.
{
    pid = $1
    rest = $0
    sub(/^.*\) /, "", rest)
    split(rest, f, " ")
    ppid[pid] = f[2]
    ticks[pid] = f[12] + f[13]
}
END {
    if (!(root in ticks)) { print -1; exit }
    want[root] = 1
    changed = 1
    while (changed) {
        changed = 0
        for (p in ppid)
            if (!(p in want) && (ppid[p] in want)) { want[p] = 1; changed = 1 }
    }
    s = 0
    for (p in want) s += ticks[p]
    print s
}
