# What the test clusters (slurm.sh: one node; hosts.sh: two hosts) share: sourced, not run.

# Checks that the daemons are installed, then munged up (its key made once), shared by every
# host of a test cluster through its socket on the file system.
munge_up() {
  for bin in munged slurmctld slurmd sbatch scontrol; do
    command -v "$bin" >/dev/null || { echo "missing $bin (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 3; }
  done
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || runuser -u munge -- munged
}

# The slurm.conf lines every test cluster has (state and controller files under DIR).
slurm_conf_shared() {
  local dir=$1
  cat <<CONF
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire + 1 s before it may start again (default 120 s, least 5).
AuthInfo=cred_expire=5
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
# The scheduler and backfill loops run every 2 s (defaults 60 s and 30 s): a requeued job
# starts as soon as it is eligible, not at the next backfill pass.
SchedulerParameters=defer_batch,sched_interval=2,bf_interval=2
MinJobAge=600
CONF
}
