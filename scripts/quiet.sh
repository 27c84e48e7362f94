#!/usr/bin/env bash
# Run a setup command quietly: its output goes to a log file; on failure print the log's tail.
# usage: scripts/quiet.sh LOG "what it does" CMD [ARGS...]
#   success: prints nothing (or "$2 ... done" when QUIET_SAY=1), appends the output to LOG
#   failure: prints "error: $2 failed (exit N); last 40 lines of LOG:" and the tail, exits N
set -uo pipefail
if [ $# -lt 3 ]; then echo "usage: $0 LOG 'what it does' CMD [ARGS...]" >&2; exit 2; fi
log=$1; what=$2; shift 2
mkdir -p "$(dirname "$log")"
{ echo "=== $(date -u +%FT%TZ) $what: $*"; } >>"$log"
"$@" >>"$log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  {
    echo "error: $what failed (exit $rc); last 40 lines of $log:"
    tail -n 40 "$log" | sed 's/^/  | /'
    echo "full log: $log"
  } >&2
  exit $rc
fi
exit 0
