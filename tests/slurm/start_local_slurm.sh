#!/usr/bin/env bash
# A one-node SLURM on this machine, for testing the cluster profile (workflow/profiles/slurm) for real.
#   sudo bash tests/slurm/start_local_slurm.sh
# Installs Debian's slurm-wlm and munge if they are missing, writes a slurm.conf for this host (CPUs and
# memory read from the machine, finished jobs kept visible to squeue for an hour so that Snakemake can
# read their state without accounting), and starts munged, slurmctld and slurmd. Running it again while
# SLURM answers does nothing. Exit status 0 means a job can be submitted now.
#
# Environment: SLURM_CONF (where to write the config, default /etc/slurm/slurm.conf; an existing file
# not written by this script is never replaced), LOCAL_SLURM_STATE (spool and log directory,
# default /var/lib/local-slurm).
set -euo pipefail

CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
STATE=${LOCAL_SLURM_STATE:-/var/lib/local-slurm}
MARK="# written by tests/slurm/start_local_slurm.sh"
export SLURM_CONF=$CONF

say() { echo "start_local_slurm: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages and starts daemons as root)"

node_ready() {  # the controller answers and the node accepts jobs
    timeout 5 scontrol ping >/dev/null 2>&1 || return 1
    local st
    st=$(timeout 5 sinfo -h -N -o '%T' 2>/dev/null | head -n1)
    [[ "$st" =~ ^(idle|mixed|allocated|completing) ]]
}

stop_hint() {
    say "stop it with: kill \$(cat $STATE/slurmd.pid) \$(cat $STATE/slurmctld.pid) \$(cat $STATE/munged.pid)"
}

if command -v scontrol >/dev/null && [ -f "$CONF" ] && node_ready; then
    say "already running ($CONF)"; stop_hint; exit 0
fi

# 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
    command -v apt-get >/dev/null || die "slurm-wlm/munge missing and no apt-get to install them"
    say "installing slurm-wlm and munge from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; } \
        || die "apt-get install slurm-wlm munge failed"
fi

# 2. munge: a key, its directories, the daemon (as the munge user, as the package intends)
mkdir -p "$STATE" /run/munge /var/log/munge /var/lib/munge /etc/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
MUNGE_USER=$(id -u munge >/dev/null 2>&1 && echo munge || echo root)
chown -R "$MUNGE_USER": /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [ "$MUNGE_USER" = munge ]; then
        runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    else
        /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
    fi
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged did not start"
fi
cp /run/munge/munged.pid "$STATE/munged.pid" 2>/dev/null || true

# 3. slurm.conf for this host
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
MEM_MB=$((MEM_MB * 9 / 10))  # leave a tenth to the system and the daemons
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; set SLURM_CONF to another path"
fi
mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/d"
cat >"$CONF" <<EOF
$MARK ($(date -u +%FT%TZ)); rerunning the script rewrites it
ClusterName=localcluster
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# one node, no cgroups (containers often lack them): plain process tracking, no CPU binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# jobs get CPUs and memory as consumable resources, so --cpus-per-task and --mem are honoured
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# no accounting database: finished jobs stay in squeue for an hour (Snakemake's squeue status
# query needs them), and every finished job is appended to a text file
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
MinJobAge=3600
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
say "wrote $CONF: node $HOST, $CPUS CPUs, $MEM_MB MB"

# 4. daemons (stale ones from an earlier configuration are replaced)
for d in slurmd slurmctld; do
    if [ -f "$STATE/$d.pid" ] && kill -0 "$(cat "$STATE/$d.pid")" 2>/dev/null; then
        kill "$(cat "$STATE/$d.pid")"; sleep 1
    fi
done
/usr/sbin/slurmctld -f "$CONF"
/usr/sbin/slurmd -f "$CONF"
for _ in $(seq 60); do node_ready && break; sleep 0.5; done
if ! node_ready; then
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 1
fi
node_ready || { tail -n 20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2; die "the node did not come up"; }
say "SLURM is up: partition 'local', node $HOST ($(sinfo -h -N -o '%T'))"
stop_hint
