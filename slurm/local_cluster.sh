#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, from Debian's packages, for tests and demos.
#
#   slurm/local_cluster.sh install   # apt-get the packages (root; ~10 s)
#   slurm/local_cluster.sh start     # start munge, slurmctld, slurmd; wait until idle
#   slurm/local_cluster.sh env       # print the exports that point slurm commands at it
#   slurm/local_cluster.sh stop      # stop what start started, remove its state folder
#
# State lives in $HADAMARD_LIT_SLURM_DIR (default /tmp/hadamard_lit_slurm): config, logs,
# spool. `stop` removes what `start` put there (HADAMARD_LIT_SLURM_KEEP=1 keeps the logs)
# and stops munged too if `start` started it (a munged that was running already is left
# alone). There is no
# slurmdbd, hence no real `sacct`: submitit needs it to notice a job that died without
# writing its result, so `bin/sacct` here answers from `squeue --states=all` instead.
set -euo pipefail

DIR="${HADAMARD_LIT_SLURM_DIR:-/tmp/hadamard_lit_slurm}"
CONF="$DIR/slurm.conf"
# `env -u`: nproc reports OMP_NUM_THREADS when that is set (the test suite sets it to 1),
# and a node declared with 1 CPU leaves multi-process jobs pending for ever.
CPUS="${HADAMARD_LIT_SLURM_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}"
MEM_MB="${HADAMARD_LIT_SLURM_MEM_MB:-16000}"

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
  mkdir -p "$DIR"/{state,spool,log,run,bin}
  cat >"$CONF" <<CONF
ClusterName=hadamardlit
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobRequeue=1
NodeName=localhost CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  # The sacct stand-in submitit reads job states from (header JobID|State|NodeList).
  cat >"$DIR/bin/sacct" <<'SACCT'
#!/usr/bin/env bash
echo "JobID|State|NodeList"
squeue --noheader --states=all -o "%i|%T|%N" 2>/dev/null || true
SACCT
  chmod +x "$DIR/bin/sacct"
}

is_up() {
  [ "$(SLURM_CONF="$CONF" sinfo -h -o %T 2>/dev/null | head -n1)" = "idle" ] ||
    [ "$(SLURM_CONF="$CONF" sinfo -h -o %T 2>/dev/null | head -n1)" = "mixed" ] ||
    [ "$(SLURM_CONF="$CONF" sinfo -h -o %T 2>/dev/null | head -n1)" = "allocated" ]
}

start() {
  install_packages
  write_config
  if is_up; then
    echo "SLURM already running ($CONF)" >&2
    return 0
  fi
  install -d -o munge -g munge /run/munge
  # --force: a machine that was stopped uncleanly leaves munge's socket behind.
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- munged --force
    touch "$DIR/run/munged.ours"  # so that stop stops it, and only then
  fi
  rm -f "$DIR"/run/slurm*.pid
  # -c: a fresh cluster each start, never jobs recovered from an earlier one's state.
  slurmctld -c -f "$CONF"
  slurmd -f "$CONF"
  for _ in $(seq 1 60); do
    if is_up; then
      echo "SLURM up: export SLURM_CONF=$CONF PATH=$DIR/bin:\$PATH" >&2
      return 0
    fi
    sleep 0.5
  done
  echo "SLURM did not come up; logs in $DIR/log" >&2
  tail -n 20 "$DIR/log/"*.log >&2 || true
  return 1
}

stop() {
  # Cancel what is left and let it end first: slurmd killed under a running step waits on
  # that step's slurmstepd for ever, and the next start then finds a half-dead node.
  if is_up; then
    SLURM_CONF="$CONF" scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 1 60); do
      [ -z "$(SLURM_CONF="$CONF" squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  local pids=""
  for pidfile in "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid"; do
    if [ -f "$pidfile" ]; then
      pids="$pids $(cat "$pidfile")"
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
  for _ in $(seq 1 20); do
    alive=0
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  # Whatever is still there after 10 s (a stuck daemon or step) is killed outright.
  for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
  # Stuck steps of this cluster only (the host may run another): a slurmstepd of ours has
  # files under $DIR open (the node's log, spool) or runs in it.
  for pid in $(pgrep -x slurmstepd 2>/dev/null); do
    if { ls -l "/proc/$pid/fd"; readlink "/proc/$pid/cwd"; } 2>/dev/null | grep -qF -- "$DIR"; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  if [ -f "$DIR/run/munged.ours" ]; then
    local munged
    munged="$(cat /run/munge/munged.pid 2>/dev/null || pgrep -x munged || true)"
    for pid in $munged; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 20); do
      pgrep -x munged >/dev/null || break
      sleep 0.25
    done
    rm -f "$DIR/run/munged.ours"
  fi
  if [ "${HADAMARD_LIT_SLURM_KEEP:-0}" != 1 ]; then
    # Only what start wrote: a folder the user named may hold other things.
    rm -rf "$DIR"/{state,spool,log,run,bin} "$CONF"
    rmdir "$DIR" 2>/dev/null || true
  fi
}

case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF PATH=$DIR/bin:\$PATH" ;;
  *)
    echo "usage: $0 {install|start|stop|env}" >&2
    exit 2
    ;;
esac
