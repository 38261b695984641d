# shellcheck shell=bash disable=SC2034,SC2154 # variables are used by the scripts that source this; distro_here, case_dir come from them
# The test's own network for the IPv6, VLAN and bond boots (sourced by
# run.sh after lib.sh): a network namespace holding the "hoster's router"
# and the admin, wired to the guest's NICs by net-hub.py. QEMU and the
# client run inside the namespace; nothing touches the host's network.
#
#   the router:  tap pctap, fe80::1 (the link-local gateway of the hoster
#                layout) and 10.55.0.1/24; 2001:db8:5c::/64 is on that link
#   the admin:   2001:db8:ffff::1/128 on lo, off the guest's link, so the
#                guest's replies must go through its gateway fe80::1
#
#   net_up VLAN NICS     namespace, tap, hub (VLAN 0: untagged; NICS: 1 or
#                        2 guest NICs); sets VM_NETNS, VM_NET_ARGS, VM_MONITOR
#   net_down             stops the hub (its counts in $case_dir/hub.stats),
#                        deletes the namespace
#   net_set_link N on|off  the guest's NIC N (0, 1) link, through QEMU's monitor

NET_NS='' NET_HUB_PID=''
NET_GUEST6=2001:db8:5c::15
NET_ADMIN6=2001:db8:ffff::1
NET_GUEST4=10.55.0.15
NET_ROUTER4=10.55.0.1

net_up() {
    local vlan=$1 nics=$2 hub_port nic_ports=() i args=()
    NET_NS=portcullis-test-$$
    ip netns add "$NET_NS"
    ip -n "$NET_NS" link set lo up
    ip -n "$NET_NS" address add "$NET_ADMIN6/128" dev lo
    ip -n "$NET_NS" tuntap add dev pctap mode tap
    ip -n "$NET_NS" link set pctap up
    ip -n "$NET_NS" address add fe80::1/64 dev pctap nodad
    ip -n "$NET_NS" address add "$NET_ROUTER4/24" dev pctap
    ip -n "$NET_NS" -6 route add 2001:db8:5c::/64 dev pctap src "$NET_ADMIN6"
    hub_port=$((40000 + RANDOM % 20000))
    args=(--tap pctap --listen "$hub_port" --vlan "$vlan" --stats "$case_dir/hub.stats")
    VM_NET_ARGS=
    for ((i = 0; i < nics; i++)); do
        nic_ports+=($((hub_port + 1 + i)))
        args+=(--nic "${nic_ports[$i]}")
        VM_NET_ARGS+=" -netdev socket,id=n$i,udp=127.0.0.1:$hub_port,localaddr=127.0.0.1:${nic_ports[$i]}"
        VM_NET_ARGS+=" -device virtio-net-pci,netdev=n$i,mac=52:54:00:5c:00:1$i"
    done
    rm -f "$case_dir/hub.stats"
    ip netns exec "$NET_NS" python3 "$distro_here/net-hub.py" "${args[@]}" 2>"$case_dir/hub.log" &
    NET_HUB_PID=$!
    VM_NETNS=$NET_NS
    VM_MONITOR=monitor
    dlog "network namespace $NET_NS: router fe80::1 and $NET_ROUTER4 on pctap, admin $NET_ADMIN6, hub pid $NET_HUB_PID (VLAN ${vlan/#0/none}, $nics NIC(s))"
}

net_down() {
    local i=0
    if [ -n "$NET_HUB_PID" ] && kill -0 "$NET_HUB_PID" 2>/dev/null; then
        kill -TERM "$NET_HUB_PID" 2>/dev/null
        while [ ! -s "$case_dir/hub.stats" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        wait "$NET_HUB_PID" 2>/dev/null || true
    fi
    NET_HUB_PID=''
    [ -z "$NET_NS" ] || ip netns delete "$NET_NS" 2>/dev/null || true
    NET_NS='' VM_NETNS='' VM_NET_ARGS='' VM_MONITOR=''
}

# hub_count KEY: a count of the hub (after net_down).
hub_count() {
    grep -o "$1=[0-9]*" "$case_dir/hub.stats" | cut -d= -f2
}

net_set_link() { # NIC on|off
    python3 - "${VM_LOG%.log}.mon" "set_link n$1 $2" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
time.sleep(0.3)
s.sendall(sys.argv[2].encode() + b"\n")
time.sleep(0.5)
s.close()
PY
}
