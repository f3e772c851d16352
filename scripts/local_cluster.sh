#!/usr/bin/env bash
# Bring up a one-node SLURM cluster and a PostgreSQL server on this machine (Debian/Ubuntu, as root),
# to run sweeps on SLURM and keep Optuna studies in PostgreSQL (hydra.sweeper.storage=postgresql://...),
# and install Chromium, the browser report.html's tests drive (Playwright, executable_path).
#
#   scripts/local_cluster.sh                 # install (first time), configure, start, verify
#   scripts/local_cluster.sh --no-postgres   # only SLURM      (--no-slurm: only PostgreSQL)
#   scripts/local_cluster.sh --stop          # stop the daemons (slurmctld, slurmd, munged, postgres)
#
# Running it again is safe: what is installed is not reinstalled, what runs is left running.
# Noisy output goes to $LOG; on an error the tail of the relevant log is printed.
set -euo pipefail

LOG=${LOG:-/tmp/hpjax-local-cluster.log}
DO_SLURM=1
DO_POSTGRES=1
STOP=0
PG_USER=hpjax
PG_PASSWORD=hpjax
PG_DB=hpjax
PARTITION=debug
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_LOGDIR=/var/log/slurm
SLURM_SPOOL=/var/spool/slurm

usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }

for arg in "$@"; do
  case "$arg" in
    --no-slurm) DO_SLURM=0 ;;
    --no-postgres) DO_POSTGRES=0 ;;
    --stop) STOP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "local_cluster.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
  esac
done

# --- helpers -----------------------------------------------------------------------------------------

# die MESSAGE [LOGFILE...]: print the message and the tail of each log, then exit 1.
die() {
  local msg=$1; shift
  echo "local_cluster.sh: ERROR: $msg" >&2
  local f
  for f in "$@"; do
    if [[ -s $f ]]; then
      echo "--- last lines of $f ---" >&2
      if [[ $f == "$LOG" ]]; then  # only this run's part of the log
        tail -n +"$LOG_START" "$f" | tail -n 25 >&2
      else
        tail -n 25 "$f" >&2
      fi
    fi
  done
  exit 1
}

# note TEXT: a timestamped line in $LOG.
note() { echo "+ [$(date +%T.%3N)] $*" >>"$LOG"; }

# quiet CMD...: run a command with its output appended to $LOG; on failure show the log's tail
# (and the tail of the file QUIET_LOG names, if set: QUIET_LOG=file quiet cmd).
quiet() {
  note "$*"
  "$@" >>"$LOG" 2>&1 || die "'$*' failed (exit $?)" "$LOG" ${QUIET_LOG:+"$QUIET_LOG"}
}

# wait_for SECONDS CMD...: poll until the command succeeds; return 1 on timeout.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

running() { pgrep -x "$1" >/dev/null 2>&1; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be missing (fresh containers) or stale; update once per run.
  if [[ -z ${APT_UPDATED:-} ]]; then
    quiet apt-get update -qq
    APT_UPDATED=1
  fi
  quiet apt-get install -y -qq --no-install-recommends "$@"
}

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts system daemons)"
: >>"$LOG"
LOG_START=$(($(wc -l <"$LOG") + 1))
echo "=== local_cluster.sh $* ($(date -Is))" >>"$LOG"

# --- SLURM ---------------------------------------------------------------------------------------

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if ! getent passwd munge >/dev/null; then die "the munge package did not create the 'munge' user"; fi
  local key=/etc/munge/munge.key
  if [[ ! -s $key ]]; then
    if command -v mungekey >/dev/null; then
      quiet mungekey --create --keyfile="$key"
    else
      quiet dd if=/dev/urandom of="$key" bs=1 count=1024
    fi
  fi
  chown munge:munge "$key"
  chmod 0400 "$key"
  # Without systemd nobody creates munged's runtime directory.
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  if ! running munged; then
    note "munged (as munge)"
    runuser -u munge -- munged >>"$LOG" 2>&1 \
      || die "munged did not start" "$LOG" /var/log/munge/munged.log
  fi
  wait_for 10 munge_ok || die "munge does not work (munge -n | unmunge)" /var/log/munge/munged.log
}

write_slurm_conf() {
  local host cpus mem_total headroom real_mem def_mem tmp
  host=$(hostname -s)
  cpus=$(nproc)
  mem_total=$(free -m | awk '/^Mem:/ {print $2}')
  # Leave 10% of the memory (at least 512 MB, at most 4 GB) to the system.
  headroom=$((mem_total / 10))
  ((headroom >= 512)) || headroom=512
  ((headroom <= 4096)) || headroom=4096
  real_mem=$((mem_total - headroom))
  ((real_mem >= 256)) || real_mem=256
  # A job that asks for no memory gets an even share per CPU, not the whole node (Slurm's default),
  # so that several one-CPU trials run side by side.
  def_mem=$((real_mem / cpus))
  SLURM_CPUS=$cpus
  SLURM_HOST=$host

  # KillWait: a cancelled job gets SIGKILL 1 s after SIGTERM (SLURM's default, 30 s, would keep a
  # cancelled test job training for as long).
  mkdir -p /etc/slurm
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# Written by hpjax scripts/local_cluster.sh: a one-node cluster on $host.
ClusterName=hpjax
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=$SLURM_SPOOL/ctld
SlurmdSpoolDir=$SLURM_SPOOL/d
SlurmctldLogFile=$SLURM_LOGDIR/slurmctld.log
SlurmdLogFile=$SLURM_LOGDIR/slurmd.log
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
KillWait=1
MinJobAge=30
Waittime=0
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
# Trust the node line below: a container may show slurmd other counts than nproc/free.
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  if [[ -f $SLURM_CONF ]] && cmp -s "$tmp" "$SLURM_CONF"; then
    rm -f "$tmp"
    SLURM_CONF_CHANGED=0
  else
    [[ ! -f $SLURM_CONF ]] || cp "$SLURM_CONF" "$SLURM_CONF.bak"
    install -m 0644 "$tmp" "$SLURM_CONF"
    rm -f "$tmp"
    SLURM_CONF_CHANGED=1
  fi
}

stop_slurm() {
  if running slurmctld; then scontrol shutdown >>"$LOG" 2>&1 || true; fi
  local d pidfile
  for d in slurmctld slurmd; do
    pidfile=/run/$d.pid
    if ! wait_for 15 bash -c "! pgrep -x $d" && [[ -s $pidfile ]]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      wait_for 10 bash -c "! pgrep -x $d" || echo "local_cluster.sh: warning: $d still running" >&2
    fi
  done
}

stop_munge() {
  local pidfile=/run/munge/munged.pid
  if running munged && [[ -s $pidfile ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    wait_for 10 bash -c '! pgrep -x munged' || echo "local_cluster.sh: warning: munged still running" >&2
  fi
}

node_state() { sinfo -h -n "$SLURM_HOST" -o %T 2>/dev/null | head -n 1; }

setup_slurm() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null; then
    echo "installing slurm-wlm and munge (apt)..."
    apt_install slurm-wlm munge
  fi
  start_munge
  write_slurm_conf
  install -d -m 0755 "$SLURM_LOGDIR" "$SLURM_SPOOL" "$SLURM_SPOOL/ctld" "$SLURM_SPOOL/d"

  if ((SLURM_CONF_CHANGED)) && { running slurmctld || running slurmd; }; then
    echo "slurm.conf changed: restarting slurmctld and slurmd"
    stop_slurm
  fi
  if ! running slurmctld; then
    QUIET_LOG=$SLURM_LOGDIR/slurmctld.log quiet slurmctld
  fi
  wait_for 30 bash -c 'scontrol ping | grep -q UP' \
    || die "slurmctld does not answer (scontrol ping)" "$SLURM_LOGDIR/slurmctld.log"
  if ! running slurmd; then
    QUIET_LOG=$SLURM_LOGDIR/slurmd.log quiet slurmd
  fi

  # Wait for the node to come up; resume it if it is down or drained (e.g. from an earlier run).
  local state deadline=$((SECONDS + 60))
  while :; do
    state=$(node_state)
    case "$state" in
      idle | mixed | allocated | completing) break ;;
      down | drained | draining | drain | fail | failing)
        note "scontrol update nodename=$SLURM_HOST state=resume (was $state)"
        scontrol update nodename="$SLURM_HOST" state=resume >>"$LOG" 2>&1 || true ;;
    esac
    if ((SECONDS >= deadline)); then
      scontrol show node "$SLURM_HOST" >>"$LOG" 2>&1 || true
      die "node $SLURM_HOST is '${state:-unknown}', not idle, after 60 s" \
        "$SLURM_LOGDIR/slurmctld.log" "$SLURM_LOGDIR/slurmd.log"
    fi
    sleep 1
  done

  note "srun -N1 -n1 true"
  timeout 60 srun -N1 -n1 -p "$PARTITION" true >>"$LOG" 2>&1 \
    || die "a test job (srun -N1 -n1 true) failed" "$LOG" "$SLURM_LOGDIR/slurmctld.log" "$SLURM_LOGDIR/slurmd.log"
}

# --- PostgreSQL ----------------------------------------------------------------------------------

# The newest PostgreSQL version with a cluster directory under /etc/postgresql.
pg_version() {
  find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1
}

pg_port() { pg_conftool "$1" main show port 2>/dev/null | awk -F"= *" '{print $2}' | tr -d "'"; }

# as_postgres SQL: run one statement as the postgres superuser, print the bare result.
as_postgres() {
  (cd / && runuser -u postgres -- psql -p "$PG_PORT" -X -q -tA -v ON_ERROR_STOP=1 -c "$1")
}

# The role (with its password, reset on every run) and the database owned by it, if missing.
# (set -e does not act in a function called before ||, hence the explicit returns.)
pg_role_and_db() {
  local sql_pw=${PG_PASSWORD//\'/\'\'} found
  found=$(as_postgres "select 1 from pg_roles where rolname = '$PG_USER'") || return 1
  if [[ $found == 1 ]]; then
    as_postgres "alter role \"$PG_USER\" login createdb password '$sql_pw'" || return 1
  else
    as_postgres "create role \"$PG_USER\" login createdb password '$sql_pw'" || return 1
  fi
  found=$(as_postgres "select 1 from pg_database where datname = '$PG_DB'") || return 1
  if [[ $found != 1 ]]; then
    as_postgres "create database \"$PG_DB\" owner \"$PG_USER\"" || return 1
  fi
}

setup_postgres() {
  if ! command -v pg_ctlcluster >/dev/null || [[ -z $(pg_version) ]]; then
    echo "installing postgresql (apt)..."
    apt_install postgresql
  fi
  local ver log
  ver=$(pg_version)
  [[ -n $ver ]] || die "no PostgreSQL version under /etc/postgresql after installing postgresql" "$LOG"
  if [[ ! -d /etc/postgresql/$ver/main ]]; then
    quiet pg_createcluster "$ver" main
  fi
  PG_PORT=$(pg_port "$ver")
  PG_PORT=${PG_PORT:-5432}
  log=/var/log/postgresql/postgresql-$ver-main.log
  if ! pg_ctlcluster "$ver" main status >/dev/null 2>&1; then
    quiet pg_ctlcluster "$ver" main start
  fi
  wait_for 30 pg_isready -q -h localhost -p "$PG_PORT" \
    || die "PostgreSQL $ver does not accept connections on localhost:$PG_PORT" "$log"

  pg_role_and_db >>"$LOG" 2>&1 || die "could not create role/database $PG_USER/$PG_DB" "$LOG" "$log"

  PGPASSWORD=$PG_PASSWORD psql -X -q -h localhost -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -tA \
    -c 'select 1' >>"$LOG" 2>&1 \
    || die "cannot connect as $PG_USER to database $PG_DB on localhost:$PG_PORT" "$LOG" "$log"
}

stop_postgres() {
  local ver
  ver=$(pg_version)
  [[ -n $ver ]] && command -v pg_ctlcluster >/dev/null || return 0
  if pg_ctlcluster "$ver" main status >/dev/null 2>&1; then
    quiet pg_ctlcluster "$ver" main stop
  fi
}

# --- Chromium (report.html's browser tests) -------------------------------------------------------

setup_chromium() {
  if ! command -v chromium >/dev/null; then
    echo "installing chromium (apt)..."
    apt_install chromium
  fi
}

# --- main --------------------------------------------------------------------------------------------

if ((STOP)); then
  if ((DO_SLURM)); then
    stop_slurm
    stop_munge
    echo "slurm: stopped"
  fi
  if ((DO_POSTGRES)); then
    stop_postgres
    echo "postgres: stopped"
  fi
  exit 0
fi

if ((DO_SLURM)); then setup_slurm; fi
if ((DO_POSTGRES)); then setup_postgres; fi
setup_chromium

note "ready"
if ((DO_SLURM)); then echo "slurm: ready (partition $PARTITION, $SLURM_CPUS cpus)"; fi
if ((DO_POSTGRES)); then echo "postgres: postgresql://$PG_USER:***@localhost:$PG_PORT/$PG_DB"; fi
echo "chromium: $(command -v chromium)"
