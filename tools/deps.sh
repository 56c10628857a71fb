#!/bin/sh
# Installs the Debian packages that building and testing autoneg need, and says which.
# OpenBLAS is taken in its OpenMP build so that it shares one thread pool with our kernels.
set -e
need=""
# libmicrohttpd (autoneg serve), OpenMPI (MPI=1 data parallel); curl and jq for the server's shell test
# (tests/test_serve_curl.sh), wrk for its load test
for p in build-essential clang libopenblas-openmp-dev libcjson-dev zlib1g-dev libmicrohttpd-dev \
         openmpi-bin libopenmpi-dev curl jq wrk iproute2; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -z "$need" ]; then
    echo "deps: everything is installed"
    exit 0
fi
echo "deps: installing$need"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need
