#!/usr/bin/env bash
# Open MPI's plm_rsh_agent for the test cluster: what ssh would do, entering the other host's
# namespaces instead (tests/cluster/on_host.sh). Open MPI calls it as `AGENT [options] HOST CMD`.
set -euo pipefail
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
host=${1:?host}
shift
exec "$(dirname "$0")/on_host.sh" "$host" "${CROSSRES_HOSTS_FILE:?the cluster hosts file}" \
  sh -c "$*"
