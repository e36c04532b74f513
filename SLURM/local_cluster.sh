#!/usr/bin/env bash
# A one-node SLURM cluster on this workstation, for trying a sweep before the real cluster (and for CI).
#
#   sudo bash SLURM/local_cluster.sh start     # munged + slurmctld + slurmd, started by hand (no systemd)
#   source "${MEDBENCH_SLURM_BASE:-/tmp/medbench-slurm}/slurm.env"   # SLURM_CONF, and sacct on PATH
#   sudo bash SLURM/local_cluster.sh status
#   sudo bash SLURM/local_cluster.sh stop      # stops exactly the daemons it started (recorded PIDs)
#
# Root is needed: slurmd launches jobs as the submitting user. On Debian/Ubuntu the first start installs
# slurmctld, slurmd, slurm-client and munge (MEDBENCH_SLURM_NO_INSTALL=1 fails instead). Everything lives under
# MEDBENCH_SLURM_BASE, with a private munge key and socket, so a system SLURM or munge is never touched.
# Knobs: MEDBENCH_SLURM_BASE (/tmp/medbench-slurm), MEDBENCH_SLURM_MAX_ARRAY_SIZE (1001, SLURM's default),
#        MEDBENCH_SLURM_MEM_MB (min(20000, 90% of RAM)), MEDBENCH_SLURM_TIMEOUT (60 s to come up).
# The cluster has no accounting database; submitit asks `sacct` for job states, so slurm.env puts a small
# sacct on PATH that answers from squeue (finished jobs stay in squeue for MinJobAge = 1 hour).
set -euo pipefail
BASE=${MEDBENCH_SLURM_BASE:-/tmp/medbench-slurm}
CONF=$BASE/etc/slurm.conf RUN=$BASE/run LOG=$BASE/log MUNGE=$BASE/munge
TIMEOUT=${MEDBENCH_SLURM_TIMEOUT:-60}
say() { echo "[local_cluster $(date +%T)] $*" >&2; }
die() { say "error: $*"; exit 1; }

# recorded PID -> alive and still the binary we started (never signal a reused PID)
ours() { local f=$RUN/$1.pid p; [ -s "$f" ] || return 1; p=$(cat "$f")
         [ -d "/proc/$p" ] && [ "$(readlink -f "/proc/$p/exe" 2>/dev/null)" = "$(cat "$RUN/$1.exe" 2>/dev/null)" ] && echo "$p"; }

wait_until() { local what=$1 end=$(( $(date +%s) + TIMEOUT )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt $end ] || die "timed out waiting for $what (logs: $LOG)"; sleep 0.2; done; }

launch() {  # launch NAME DAEMON CMD... : CMD in its own session (it ends by exec'ing DAEMON), PID and binary recorded
  local name=$1 bin; bin=$(readlink -f "$(command -v "$2")"); shift 2
  if p=$(ours "$name"); then say "$name already running (pid $p)"; return; fi
  setsid "$@" >>"$LOG/$name.out" 2>&1 </dev/null &
  echo $! > "$RUN/$name.pid"; echo "$bin" > "$RUN/$name.exe"; sleep 0.3
  ours "$name" >/dev/null || { tail -20 "$LOG/$name.out" >&2; die "$name did not stay up"; }
  say "started $name (pid $(cat "$RUN/$name.pid"))"
}

start() {
  [ "$(id -u)" = 0 ] || die "run as root (sudo): slurmd must be root to start jobs as their user"
  local missing=() b
  for b in slurmctld slurmd sbatch munged; do command -v "$b" >/dev/null || missing+=("$b"); done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "${MEDBENCH_SLURM_NO_INSTALL:-0}" = 1 ] && die "missing ${missing[*]}; install slurmctld slurmd slurm-client munge"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install SLURM and munge with your package manager"
    say "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  fi
  mkdir -p "$BASE"/{etc,state,spool,bin} "$RUN" "$LOG"
  local ram mem; ram=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
  mem=${MEDBENCH_SLURM_MEM_MB:-$(( ram * 9 / 10 < 20000 ? ram * 9 / 10 : 20000 ))}
  cat > "$CONF" <<CONF
# written by SLURM/local_cluster.sh: one node, this machine
ClusterName=medbench-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE/munge.socket.2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$RUN/slurmctld.daemon.pid
SlurmdPidFile=$RUN/slurmd.daemon.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MaxArraySize=${MEDBENCH_SLURM_MAX_ARRAY_SIZE:-1001}
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmdTimeout=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  cat > "$BASE/bin/sacct" <<'SACCT'
#!/usr/bin/env bash
# sacct for a cluster without slurmdbd: answers submitit's "sacct -o JobID,State,NodeList --parsable2 -j ID" from squeue
ids=()
while [ $# -gt 0 ]; do case "$1" in -j|--jobs) ids+=("$2"); shift 2 ;; -j*) ids+=("${1#-j}"); shift ;;
  --jobs=*) ids+=("${1#--jobs=}"); shift ;; *) shift ;; esac; done
echo "JobID|State|NodeList"
[ ${#ids[@]} -gt 0 ] && squeue -h -r -t all -j "$(IFS=,; echo "${ids[*]}")" -o '%i|%T|%N' 2>/dev/null
exit 0
SACCT
  chmod 755 "$BASE/bin/sacct"
  printf 'export SLURM_CONF=%s\nexport PATH=%s/bin:$PATH\n' "$CONF" "$BASE" > "$BASE/slurm.env"
  export SLURM_CONF=$CONF PATH=$BASE/bin:$PATH
  # munge: a private key and socket under $BASE
  install -d -o munge -g munge -m 0755 "$MUNGE"
  if [ ! -s "$MUNGE/munge.key" ]; then
    dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$MUNGE/munge.key"; chmod 0400 "$MUNGE/munge.key"
  fi
  ours munged >/dev/null || rm -f "$MUNGE/munge.socket.2" "$MUNGE/munge.socket.2.lock"
  launch munged munged setpriv --reuid=munge --regid=munge --init-groups "$(command -v munged)" -F \
    --socket="$MUNGE/munge.socket.2" --key-file="$MUNGE/munge.key" --pid-file="$MUNGE/munged.pid" \
    --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed"
  wait_until munged bash -c "munge -n -S '$MUNGE/munge.socket.2' | unmunge -S '$MUNGE/munge.socket.2'"
  ours slurmctld >/dev/null || rm -rf "$BASE/state"/*   # a fresh job table for each bring-up
  launch slurmctld slurmctld slurmctld -D -f "$CONF"
  wait_until "slurmctld" bash -c "scontrol ping | grep -q UP"
  launch slurmd slurmd slurmd -D -N localhost -f "$CONF"
  local end=$(( $(date +%s) + TIMEOUT )) state
  while :; do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
    case "$state" in idle|mixed|allocated) break ;; *drain*|down*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;; esac
    [ "$(date +%s)" -lt $end ] || die "node is '$state', not idle (logs: $LOG)"
    sleep 0.2
  done
  say "cluster up: partition debug, node localhost ($state). Next: source $BASE/slurm.env"
}

stop() {
  if ours slurmctld >/dev/null; then
    export SLURM_CONF=$CONF
    if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
      say "cancelling the jobs still queued or running"; scancel --partition=debug 2>/dev/null || true
      for _ in $(seq 50); do [ -z "$(squeue -h -t pending,running,completing -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  local name p
  for name in slurmd slurmctld munged; do
    if p=$(ours "$name"); then
      kill -TERM "$p"
      for _ in $(seq 100); do ours "$name" >/dev/null || break; sleep 0.1; done
      if ours "$name" >/dev/null; then kill -KILL "$p"; say "$name (pid $p) needed SIGKILL"; fi
      say "stopped $name (pid $p)"
    fi
    rm -f "$RUN/$name.pid" "$RUN/$name.exe"
  done
}

status() {
  local name p up=0
  for name in munged slurmctld slurmd; do
    if p=$(ours "$name"); then echo "$name: running (pid $p)"; else echo "$name: stopped"; up=1; fi
  done
  [ $up = 0 ] && SLURM_CONF=$CONF sinfo
  return $up
}

case "${1:-}" in
  start) start ;; stop) stop ;; status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
