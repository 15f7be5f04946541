#!/usr/bin/env bash
# Recovery statistics of the stack under load: `flotilla demo` with a long schedule that crashes
# each of TARGETS (default: pf, ip, the driver, the TCP replica without the stream, the one
# carrying it, and a name server) ROUNDS times (default 50), one crash every SPACING seconds,
# while iperf3 streams on Flotilla to the kernel. Prints p50 / p99 / max of detection, recovery
# and throughput-dip time per kind, for the carrying replica the time to its first byte moved
# again (1 ms samples), and how many faults the stream did not survive; the full report is in
# OUT/report.json.
#
# Usage: perf/stack_recovery.sh [--rounds N] [--spacing SECONDS] [--targets A,B,...] [--out DIR]   (root)
#   e.g. --targets tcp-carrier --spacing 2.6: the carrying replica alone, 50 times
set -euo pipefail

rounds=50
spacing=0.6
targets=pf,ip,driver,tcp-idle,tcp-carrier,name0
out=perf-out/stack-recovery
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --spacing) spacing=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "stack_recovery: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "stack_recovery: --rounds must be a positive whole number" >&2; exit 2; }
[[ "$spacing" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "stack_recovery: --spacing must be seconds" >&2; exit 2; }
[[ "$targets" =~ ^[a-z0-9-]+(,[a-z0-9-]+)*$ ]] || { echo "stack_recovery: --targets must be names separated by commas" >&2; exit 2; }
kinds=$(awk -F, '{ print NF }' <<<"$targets")
# Each target crashes every (targets x spacing) seconds: the default policy marks a component failed
# at its 5th crash within 10 s, so keep that above 2.5 s (at most 4 in any 10 s).
awk -v s="$spacing" -v k="$kinds" 'BEGIN { exit !(s * k > 2.5) }' ||
  { echo "stack_recovery: --spacing x the number of targets must exceed 2.5 s" >&2; exit 2; }

flotilla=${FLOTILLA:-"$(dirname "$0")/../build/apps/flotilla"}
schedule=$(awk -v rounds="$rounds" -v spacing="$spacing" -v targets="$targets" 'BEGIN {
  n = split(targets, kinds, ",")
  t = 3; out = ""
  for (r = 0; r < rounds; r++) for (k = 1; k <= n; k++) { out = out sprintf("%s%.2f:%s", out == "" ? "" : ",", t, kinds[k]); t += spacing }
  printf "%s %.0f\n", out, t + 3
}')
faults=${schedule% *}
duration=${schedule##* }
echo "stack recovery: $((rounds * kinds)) crashes of $targets over ${duration} s of iperf3 on Flotilla (one every ${spacing} s)"
"$flotilla" demo --duration "$duration" --faults "$faults" --out "$out"
