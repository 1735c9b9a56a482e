#!/bin/sh
# Two "nodes" on one Linux machine, for tests/dist/multinode_check.sh: network
# namespaces grpo-n1 and grpo-n2 joined by a veth pair (10.77.0.1, 10.77.0.2),
# each with its own host name (node1, node2, in a UTS namespace) and an sshd
# listening on its address; /etc/hosts names them; root's ssh key is
# authorised. Processes share the file system and the PID space, like nodes on
# a shared file system; MPI between the nodes goes over TCP (Open MPI places
# ranks by host name: shared memory within a node only). Root only; changes
# this machine (packages, /etc/hosts, /root/.ssh): for a developer's VM, not CI.
#
#   sh tests/dist/fake_nodes.sh up
#   ip netns exec grpo-n1 ssh node1 "cd $PWD && GRPO_TEST_HOSTS=node1:2,node2:2 \
#       GRPO_TEST_MPIRUN_ARGS='--mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24' \
#       meson test -C build dist_multinode --print-errorlogs"
#   sh tests/dist/fake_nodes.sh down
set -eu
case "${1:-}" in
up)
    command -v sshd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/dev/null
    ip netns add grpo-n1
    ip netns add grpo-n2
    ip link add grpo-v1 type veth peer name grpo-v2
    ip link set grpo-v1 netns grpo-n1
    ip link set grpo-v2 netns grpo-n2
    ip -n grpo-n1 addr add 10.77.0.1/24 dev grpo-v1
    ip -n grpo-n2 addr add 10.77.0.2/24 dev grpo-v2
    for i in 1 2; do
        ip -n grpo-n$i link set lo up
        ip -n grpo-n$i link set grpo-v$i up
    done
    grep -q ' node1$' /etc/hosts || printf '10.77.0.1 node1\n10.77.0.2 node2\n' >>/etc/hosts
    mkdir -p /root/.ssh /run/sshd
    chmod 700 /root/.ssh
    [ -f /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
    grep -qF "$(cat /root/.ssh/id_ed25519.pub)" /root/.ssh/authorized_keys 2>/dev/null ||
        cat /root/.ssh/id_ed25519.pub >>/root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
    grep -q '^Host node1 node2' /root/.ssh/config 2>/dev/null ||
        printf 'Host node1 node2\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n' >>/root/.ssh/config
    ssh-keygen -A >/dev/null
    for i in 1 2; do
        ip netns exec grpo-n$i unshare --uts sh -c "hostname node$i; exec /usr/sbin/sshd -o UsePAM=no \
            -o PermitRootLogin=prohibit-password -o ListenAddress=10.77.0.$i -o PidFile=/run/sshd-grpo-n$i.pid"
    done
    ip netns exec grpo-n1 ssh node2 hostname
    ;;
down)
    for i in 1 2; do
        [ -f /run/sshd-grpo-n$i.pid ] && kill "$(cat /run/sshd-grpo-n$i.pid)" 2>/dev/null || true
        ip netns del grpo-n$i 2>/dev/null || true
    done
    sed -i '/^10\.77\.0\.[12] node[12]$/d' /etc/hosts
    ;;
*)
    echo "usage: sh tests/dist/fake_nodes.sh up|down" >&2
    exit 2
    ;;
esac
