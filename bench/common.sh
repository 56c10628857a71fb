# The start that bench/train.sh, bench/generate.sh and bench/matmul_share.sh share (sourced, bash):
# run from the repository root, with the python of $1 (default python3), $2 repeats (default 3),
# OMP_NUM_THREADS threads (default every core) on both sides, no hub, and a current build/autoneg.
cd "$(dirname "$0")/.."
PY=${1:-python3}
REPEATS=${2:-3}
THREADS=${OMP_NUM_THREADS:-$(nproc)}
export OMP_NUM_THREADS=$THREADS HF_HUB_OFFLINE=1
make -s build/autoneg
