#!/usr/bin/env bash
# A real single-node Slurm 22.05 cluster (Debian's slurmctld, slurmd, munge; no systemd) for the
# tests of 'envmod stage' (tests/slurm), from ../shared/notes/slurm.md's recipe.
#   bash ci/slurm.sh          install what is missing, start what is not running (idempotent);
#                             the last line printed is SLURM_CONF=... for the tests' environment
#   bash ci/slurm.sh stop     stop the daemons this script started, by their PID files
# State (config, spool, logs, PID files) lives under $ENVMOD_SLURM_DIR (default /tmp/envmod-slurm).
# Exit 3: Slurm cannot run here (no apt-get, not root): the slurm tier skips.
set -euo pipefail
D=${ENVMOD_SLURM_DIR:-/tmp/envmod-slurm}
export SLURM_CONF=$D/etc/slurm.conf

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pid() {
    local file=$1 pid i
    pid_alive "$file" || return 0
    pid=$(cat "$file")
    kill -TERM "$pid"
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    echo "ci/slurm.sh: pid $pid ($file) did not stop" >&2
    return 1
}

if [ "${1:-}" = stop ]; then
    stop_pid "$D/run/slurmd.pid"
    stop_pid "$D/run/slurmctld.pid"
    # munged only if this script started it (it wrote the marker)
    if [ -e "$D/run/munged.ours" ]; then stop_pid /run/munge/munged.pid; rm -f "$D/run/munged.ours"; fi
    exit 0
fi

PKGS=(slurmctld slurmd slurm-client munge fuse3 squashfs-tools squashfuse)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbcast >/dev/null \
        || ! command -v munged >/dev/null || ! command -v mksquashfs >/dev/null || ! command -v squashfuse >/dev/null \
        || ! command -v fusermount3 >/dev/null; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "ci/slurm.sh: Slurm is not installed and this is not root with apt-get: the slurm tier skips" >&2
        exit 3
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PKGS[@]}" >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
    echo "ci/slurm.sh: starting slurmctld/slurmd needs root: the slurm tier skips" >&2
    exit 3
fi

H=$(hostname -s)
mkdir -p "$D"/{etc,state,spool,log,run}
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- munged
    touch "$D/run/munged.ours"
fi
cat > "$D/etc/slurm.conf.new" <<CONF
ClusterName=ci
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MailProg=/bin/true
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=$H NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
mv "$D/etc/slurm.conf.new" "$SLURM_CONF"
pid_alive "$D/run/slurmctld.pid" || slurmctld -f "$SLURM_CONF"
pid_alive "$D/run/slurmd.pid" || slurmd -f "$SLURM_CONF"
for i in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "ci/slurm.sh: the node did not become idle; see $D/log/" >&2
exit 1
