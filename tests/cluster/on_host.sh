#!/usr/bin/env bash
# Run a command on one of the test cluster's hosts (tests/cluster/hosts.sh): in its network
# namespace, with its own host name (a UTS namespace) and the cluster's hosts file bound over
# /etc/hosts in a mount namespace of its own (the machine's /etc/hosts is never touched).
#   tests/cluster/on_host.sh HOST HOSTS_FILE CMD [ARGS...]
set -euo pipefail
host=${1:?host} hosts=${2:?hosts file}
shift 2
# The host's namespace is named after the cluster's id, in cluster.env beside the hosts file.
# shellcheck disable=SC1091
source "$(dirname "$hosts")/cluster.env"
# nsenter, not `ip netns exec`: that mounts a sysfs of its own over /sys, hiding the cgroup
# hierarchy that slurmd needs.
exec nsenter --net="/run/netns/crx$CLUSTER_ID-$host" unshare --uts --mount --propagation private \
  sh -c 'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"' "$host" "$hosts" "$@"
