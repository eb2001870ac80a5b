#!/usr/bin/env bash
# A SLURM cluster on this machine, for trying the submitit launcher and for the test suite.
#
#   scripts/slurm_local.sh start             # one node, "localhost"; install (Debian packages, root),
#                                            # configure, start; idempotent
#   scripts/slurm_local.sh start --nodes 2   # two nodes, n1 and n2, each a slurmd of its own
#   scripts/slurm_local.sh stop              # stop the daemons by their pid files
#   scripts/slurm_local.sh status
#
# Several nodes: node i is named n<i>, at the loopback address 127.0.0.<i+1> (a line in /etc/hosts, so the
# name resolves for every process) with its own slurmd port (17000+i), spool dir, pid and log file. Every
# node declares this machine's CPUs: the nodes share the cores, as a cluster's nodes would not, which the
# tests of several nodes (correctness, not speed) do not mind.
#
# Needs root (apt-get, munge's user, slurmd). Runs without systemd: munged, slurmctld and slurmd are
# started directly. Without accounting `sacct` cannot work, and submitit would wait forever for a job that
# died without a result, so a small `sacct` stand-in built on `squeue`/`scontrol` goes first on PATH
# (scripts/slurm/sacct); launch.py's tests put it there.
set -euo pipefail

STATE=${SLURM_LOCAL_STATE:-/var/lib/rl-launcher-slurm}
CONF_DIR=/etc/slurm
PIDS=$STATE/pids
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { echo "[slurm_local] $*" >&2; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
      && command -v sbatch >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || { log "needs root to install slurmctld slurmd slurm-client munge"; exit 1; }
  log "installing slurmctld slurmd slurm-client munge (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

NODES=1

# The node names, one a line: "localhost" for the one-node cluster, n1 … nN for several.
node_names() { if [ "$NODES" = 1 ]; then echo localhost; else seq -f 'n%g' 1 "$NODES"; fi; }

node_lines() {
  # the machine's real topology (CPUs, sockets, memory), as slurmd sees it
  local topo
  topo=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]*//' -e 's/ UpTime.*//')
  if [ "$NODES" = 1 ]; then
    echo "NodeName=localhost NodeAddr=127.0.0.1 $topo State=UNKNOWN"
    return
  fi
  local i
  for i in $(seq 1 "$NODES"); do
    echo "NodeName=n$i NodeAddr=127.0.0.$((i + 1)) Port=$((17000 + i)) $topo State=UNKNOWN"
  done
}

add_hosts() {
  [ "$NODES" = 1 ] && return
  local i
  for i in $(seq 1 "$NODES"); do
    grep -qE "^127\.0\.0\.$((i + 1))[[:space:]]+n$i\b" /etc/hosts || echo "127.0.0.$((i + 1)) n$i" >> /etc/hosts
  done
}

write_config() {
  mkdir -p "$CONF_DIR" "$STATE"/ctld "$PIDS" /var/log/slurm
  local name
  for name in $(node_names); do mkdir -p "$STATE/d/$name"; done  # slurmd does not create its spool dir
  local nodes
  nodes=$(node_names | paste -sd, -)
  local conf=$CONF_DIR/slurm.conf.new
  cat > "$conf" <<CONF
ClusterName=rllocal
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d/%n
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerParameters=sched_interval=2,bf_interval=1
MinJobAge=600
KillWait=10
# a node whose slurmd died is marked not responding within seconds, not SLURM's default 5 minutes
SlurmdTimeout=10
$(node_lines)
PartitionName=debug Nodes=$nodes Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  if ! cmp -s "$conf" "$CONF_DIR/slurm.conf" 2>/dev/null; then
    mv "$conf" "$CONF_DIR/slurm.conf"
    echo changed
  else
    rm -f "$conf"
  fi
}

alive() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

start_munge() {
  if [ -f /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then return; fi
  [ -s /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || \
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
}

wait_idle() {
  local deadline=$((SECONDS + 60)) want states
  want=$(node_names | wc -l)
  while [ $SECONDS -lt $deadline ]; do
    states=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u || true)
    if [ "$(echo "$states" | grep -cE ' (idle|mixed|allocated|completing)$')" = "$want" ]; then
      log "nodes up: $(echo "$states" | paste -sd, -)"; return 0
    fi
    echo "$states" | awk '$2 ~ /^(down|drain)/ {print $1}' | while read -r n; do
      scontrol update NodeName="$n" State=RESUME 2>/dev/null || true
    done
    sleep 0.5
  done
  log "nodes did not come up (${states:-no answer}); see /var/log/slurm/"; return 1
}

# the running slurmd daemons' pid files (any node names: also those of a cluster of another shape)
slurmd_pids() { ls "$PIDS"/slurmd*.pid 2>/dev/null || true; }

start() {
  install_packages
  add_hosts
  local changed name
  changed=$(write_config)
  start_munge
  if [ -n "$changed" ] && { alive slurmctld || [ -n "$(slurmd_pids)" ]; }; then
    log "configuration changed: restarting the daemons"; stop_daemons
  fi
  alive slurmctld || slurmctld -c -i
  for name in $(node_names); do alive "slurmd-$name" || slurmd -N "$name"; done
  wait_idle
}

stop_pid_file() {
  local file=$1 pid
  pid=$(cat "$file" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop_daemons() {
  local f
  for f in $(slurmd_pids); do stop_pid_file "$f"; done
  stop_pid_file "$PIDS/slurmctld.pid"
}

stop() {
  stop_daemons
  if [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f /run/munge/munged.pid
  fi
}

status() {
  local f
  if alive slurmctld; then echo "slurmctld: running (pid $(cat "$PIDS/slurmctld.pid"))"; else echo "slurmctld: stopped"; fi
  for f in $(slurmd_pids); do echo "$(basename "$f" .pid): pid $(cat "$f")"; done
  sinfo -N 2>/dev/null || true
}

command=${1:-}
shift || true
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    *) echo "unknown option: $1 (usage: $0 start [--nodes N]|stop|status)" >&2; exit 2 ;;
  esac
done
case "$NODES" in ''|*[!0-9]*|0) echo "--nodes: a positive number, not '$NODES'" >&2; exit 2 ;; esac

case "$command" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [--nodes N]|stop|status" >&2; exit 2 ;;
esac
