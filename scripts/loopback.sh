#!/usr/bin/env bash
# Run a command whose ROS 2 participants must not reach any network: in a fresh network namespace that
# has only loopback, with the loopback Fast DDS profile. Needs root (or CAP_SYS_ADMIN) for `unshare -n`.
#   bash scripts/loopback.sh .venv/bin/python test/ros/e2e_node.py
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export FASTDDS_DEFAULT_PROFILES_FILE="$ROOT/config/dds/fastdds_loopback.xml"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( $$ % 200 + 20 ))}
exec unshare --net -- bash -c 'ip link set lo up && exec "$@"' loopback "$@"
