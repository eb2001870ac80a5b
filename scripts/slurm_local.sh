#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for trying the submitit launcher and for the test suite.
#
#   scripts/slurm_local.sh start    # install (Debian packages, root), configure, start; idempotent
#   scripts/slurm_local.sh stop     # stop the daemons by their pid files
#   scripts/slurm_local.sh status
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

write_config() {
  mkdir -p "$CONF_DIR" "$STATE"/{ctld,d} "$PIDS" /var/log/slurm
  # the node's real topology (CPUs, sockets, memory), as slurmd sees it
  local node
  node=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]*//' -e 's/ UpTime.*//')
  local conf=$CONF_DIR/slurm.conf.new
  cat > "$conf" <<CONF
ClusterName=rllocal
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
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
NodeName=localhost NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
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
  local deadline=$((SECONDS + 60)) state=""
  while [ $SECONDS -lt $deadline ]; do
    state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
    case "$state" in
      idle|mixed|allocated) log "node localhost is $state"; return 0 ;;
      down*|drain*) scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  log "node did not come up (state: ${state:-none}); see /var/log/slurm/"; return 1
}

start() {
  install_packages
  local changed
  changed=$(write_config)
  start_munge
  if [ -n "$changed" ] && { alive slurmctld || alive slurmd; }; then
    log "configuration changed: restarting the daemons"; stop
  fi
  alive slurmctld || slurmctld -c -i
  alive slurmd || slurmd -N localhost
  wait_idle
}

stop() {
  for d in slurmd slurmctld; do
    if alive "$d"; then
      local pid; pid=$(cat "$PIDS/$d.pid")
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDS/$d.pid"
  done
  if [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f /run/munge/munged.pid
  fi
}

status() {
  for d in slurmctld slurmd; do
    if alive "$d"; then echo "$d: running (pid $(cat "$PIDS/$d.pid"))"; else echo "$d: stopped"; fi
  done
  sinfo 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
