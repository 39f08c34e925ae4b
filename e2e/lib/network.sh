# The pod network on this machine: a bridge holding the gateway address and a
# blackhole for Service IPs. Nothing is forwarded or routed off the machine.
# Sourced by e2e/cluster.

net_up() {
  if ! ip link show "$POD_BRIDGE" >/dev/null 2>&1; then
    as_root ip link add "$POD_BRIDGE" type bridge
  fi
  if ! ip -4 addr show dev "$POD_BRIDGE" | grep -q " $POD_GATEWAY/"; then
    as_root ip addr add "$POD_GATEWAY/${POD_NETWORK#*/}" dev "$POD_BRIDGE"
  fi
  as_root ip link set "$POD_BRIDGE" up
  if ! ip route show type blackhole | grep -q "^blackhole $SERVICE_CIDR"; then
    as_root ip route add blackhole "$SERVICE_CIDR"
  fi
  # The pod network must stay on this machine; we never turn forwarding on.
  if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 0 ]; then
    log "note: net.ipv4.ip_forward is on on this machine; the pod bridge has no NAT or route out, so pod traffic still stays local"
  fi
}

net_down() {
  ip route show type blackhole | grep -q "^blackhole $SERVICE_CIDR" && as_root ip route del blackhole "$SERVICE_CIDR"
  ip link show "$POD_BRIDGE" >/dev/null 2>&1 && as_root ip link del "$POD_BRIDGE"
  return 0
}
