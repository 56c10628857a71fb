#!/bin/sh
# Two hosts for real on one machine (tests/test_train_mpi.c): two network namespaces joined by a veth
# pair, 10.199.0.1 and 10.199.0.2, and `autoneg train` on 2 ranks, one in each, OpenMPI over TCP
# between them. mpirun runs in the first namespace and starts the second rank's daemon through an rsh
# agent (written next to the run) that enters the second namespace instead of using ssh.
#   sh tests/mpi_two_hosts.sh AUTONEG RECIPE OUT_DIR
# Exit 77: no privilege for network namespaces (the test then skips). The namespaces are removed on
# every exit.
set -u
autoneg=$1 recipe=$2 out=$3
a=an$$a b=an$$b
cleanup() { ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null; }
trap cleanup EXIT INT TERM
if ! command -v ip > /dev/null; then
    echo "no ip command (Debian: iproute2)"
    exit 77
fi
if ! ip netns add "$a" 2>/dev/null; then
    echo "no privilege to create network namespaces (ip netns add needs root / CAP_SYS_ADMIN)"
    exit 77
fi
set -e
ip netns add "$b"
ip link add "${a}v" type veth peer name "${b}v"
ip link set "${a}v" netns "$a"
ip link set "${b}v" netns "$b"
ip -n "$a" addr add 10.199.0.1/24 dev "${a}v"
ip -n "$b" addr add 10.199.0.2/24 dev "${b}v"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set "${a}v" up
ip -n "$b" link set "${b}v" up
agent=$out.agent.sh
cat > "$agent" <<AGENT
#!/bin/sh
# OpenMPI's rsh agent: "agent [options] HOST COMMAND..." runs COMMAND in HOST's namespace
while [ \$# -gt 0 ]; do case "\$1" in -*) shift ;; *) break ;; esac; done
host=\$1; shift
case "\$host" in 10.199.0.1) ns=$a ;; 10.199.0.2) ns=$b ;; *) echo "agent: unknown host \$host" >&2; exit 1 ;; esac
exec ip netns exec \$ns sh -c "\$*"
AGENT
chmod +x "$agent"
set +e
OMP_NUM_THREADS=1 timeout 300 ip netns exec "$a" mpirun --allow-run-as-root --oversubscribe -np 2 \
    --host 10.199.0.1:1,10.199.0.2:1 --mca plm_rsh_agent "$agent" --mca btl tcp,self \
    --mca btl_tcp_if_include 10.199.0.0/24 --mca oob_tcp_if_include 10.199.0.0/24 -x OMP_NUM_THREADS=1 \
    sh -c 'echo "rank $OMPI_COMM_WORLD_RANK on $(ip -br -4 addr show | grep -o "10\.199\.0\.[12]")" >&2; exec "$@"' \
    rank "$autoneg" train "$recipe" --out "$out"
