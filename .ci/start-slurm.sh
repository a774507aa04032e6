#!/usr/bin/env bash
# Start a single-node Slurm (munged, slurmctld, slurmd on localhost, no cgroups) for the tests
# of the slurm executor. Needs root and Debian's slurm-wlm + munge (.ci/run installs them).
# Idempotent: does nothing when `sinfo` already answers.
set -euo pipefail
if timeout 10 srun -t 1 --immediate=5 true >/dev/null 2>&1; then
  echo "slurm: already running"; exit 0
fi
host=$(hostname)
cpus=$(nproc)
mkdir -p /etc/munge /var/log/munge /run/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /var/log/munge /run/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ckalab-ci
SlurmctldHost=${host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MaxArraySize=10001
NodeName=${host} CPUs=${cpus} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
rm -f /etc/slurm/cgroup.conf  # no cgroups: proctrack/linuxproc, task/none
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 30); do
  if timeout 10 srun -t 1 --immediate=5 hostname >/dev/null 2>&1; then echo "slurm: up on ${host} (${cpus} CPUs)"; exit 0; fi
  sleep 1
done
echo "slurm: did not come up; see /var/log/slurm/" >&2
exit 1
