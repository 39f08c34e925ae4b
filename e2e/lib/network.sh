# The pod network on this machine: a bridge holding the gateway address, the
# Service range routed onto it (kube-proxy translates it there), and rules of our
# own that keep all of it on the bridge. Sourced by e2e/cluster.
#
# What `up` changes on the host, and `down` undoes (verify_clean checks it):
# - the bridge $POD_BRIDGE, with its own netfilter switch on and forwarding on for
#   packets arriving on it alone (both are attributes of the bridge: they go with
#   it; the machine-wide net.ipv4.ip_forward is never touched);
# - a route for $SERVICE_CIDR onto the bridge, from the gateway address;
# - nftables table `inet $NFT_TABLE` (ours) and kube-proxy's `ip`/`ip6 kube-proxy`.

# Sysctls that this cluster (or kube-proxy) could change machine-wide; down compares
# them with their values from before up.
HOST_SYSCTLS=(
  net/ipv4/ip_forward net/ipv4/conf/all/forwarding net/ipv4/conf/all/route_localnet
  net/bridge/bridge-nf-call-iptables net/netfilter/nf_conntrack_max
  net/netfilter/nf_conntrack_tcp_timeout_established net/netfilter/nf_conntrack_tcp_timeout_close_wait
  net/netfilter/nf_conntrack_tcp_be_liberal
)

host_sysctls() {
  local s
  for s in "${HOST_SYSCTLS[@]}"; do printf '%s=%s\n' "$s" "$(cat "/proc/sys/$s" 2>/dev/null || echo absent)"; done
}

# Our rules. The Service range never leaves the bridge: what kube-proxy translated
# carries a pod address by the time these chains see it (they run after its NAT and
# filter chains), so anything still addressed to a Service IP here was not served
# and is refused at once. Forwarding is confined to the bridge: in on it, out on
# it. Pod-network addresses never go out any other interface.
#
# A pod's packet to a Service IP kube-proxy did not translate (no endpoints) is refused
# before routing, with a TCP reset where it is TCP: routed, it would first make the
# kernel send the pod an ICMP redirect (in and out on the bridge), and the redirect
# uses up the pod's ICMP allowance, so kube-proxy's "port unreachable" would be held
# back and the connection hang until SYN retries.
nft_rules() {
  cat <<NFT
table inet $NFT_TABLE {
  chain prerouting {
    type filter hook prerouting priority dstnat + 10; policy accept;
    iifname "$POD_BRIDGE" ip daddr $SERVICE_CIDR meta l4proto tcp reject with tcp reset
    iifname "$POD_BRIDGE" ip daddr $SERVICE_CIDR reject
  }
  chain forward {
    type filter hook forward priority filter + 10; policy accept;
    iifname "$POD_BRIDGE" oifname != "$POD_BRIDGE" drop
    oifname "$POD_BRIDGE" iifname != "$POD_BRIDGE" drop
    ip daddr $SERVICE_CIDR reject
  }
  chain output {
    type filter hook output priority filter + 10; policy accept;
    ip daddr $SERVICE_CIDR reject
    oifname != { "$POD_BRIDGE", "lo" } ip daddr { $POD_NETWORK, $SERVICE_CIDR } drop
    oifname "$POD_BRIDGE" icmp type redirect drop
  }
  chain postrouting {
    type filter hook postrouting priority filter + 10; policy accept;
    oifname != { "$POD_BRIDGE", "lo" } ip saddr $POD_NETWORK drop
  }
  # A pod reaching itself through a Service: kube-proxy masquerades that (onto the gateway
  # address) only for endpoints of its own node; the pod runner keeps every real pod's
  # "addr . addr" here so that pods of the other nodes get the same.
  set hairpin {
    type ipv4_addr . ipv4_addr
  }
  chain hairpin-masquerade {
    type nat hook postrouting priority srcnat + 10; policy accept;
    oifname "$POD_BRIDGE" ct status dnat ip saddr . ip daddr @hairpin masquerade
  }
}
NFT
}

net_up() {
  if ! ip link show "$POD_BRIDGE" >/dev/null 2>&1; then
    as_root ip link add "$POD_BRIDGE" type bridge
  fi
  # A pod reaching a Service backed by a pod on the same bridge gets its reply bridged
  # straight from that pod; only if bridged IPv4 passes netfilter does conntrack
  # translate the reply back to the Service address (br_netfilter, this bridge only).
  as_root ip link set "$POD_BRIDGE" type bridge nf_call_iptables 1
  if ! ip -4 addr show dev "$POD_BRIDGE" | grep -q " $POD_GATEWAY/"; then
    as_root ip addr add "$POD_GATEWAY/${POD_NETWORK#*/}" dev "$POD_BRIDGE"
  fi
  as_root ip link set "$POD_BRIDGE" up
  # Pod -> Service -> pod is routed through the host: forwarding for packets that arrive
  # on the bridge (the forward chain sends them nowhere but back onto it).
  echo 1 | as_root tee "/proc/sys/net/ipv4/conf/$POD_BRIDGE/forwarding" >/dev/null
  # Left by an older version of this script.
  if ip route show type blackhole | grep -q "^blackhole $SERVICE_CIDR"; then
    as_root ip route del blackhole "$SERVICE_CIDR"
  fi
  as_root ip route replace "$SERVICE_CIDR" dev "$POD_BRIDGE" src "$POD_GATEWAY"
  if as_root nft list table inet "$NFT_TABLE" >/dev/null 2>&1; then
    as_root nft delete table inet "$NFT_TABLE"
  fi
  nft_rules | as_root nft -f -
}

net_down() {
  local t l
  # Pod veths the runner did not get to (it deletes them with their namespaces).
  for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^gv' || true); do
    as_root ip link del "$l" 2>/dev/null || true
  done
  for t in "inet $NFT_TABLE" "ip kube-proxy" "ip6 kube-proxy"; do
    # shellcheck disable=SC2086
    if as_root nft list table $t >/dev/null 2>&1; then as_root nft delete table $t; fi
  done
  if ip route show "$SERVICE_CIDR" | grep -q .; then as_root ip route del "$SERVICE_CIDR"; fi
  if ip route show type blackhole | grep -q "^blackhole $SERVICE_CIDR"; then
    as_root ip route del blackhole "$SERVICE_CIDR"
  fi
  if ip link show "$POD_BRIDGE" >/dev/null 2>&1; then as_root ip link del "$POD_BRIDGE"; fi
  return 0
}

# verify_clean [BASELINE]: lists everything of the cluster still on this machine (links,
# namespaces, routes, nftables tables, processes, and sysctls that differ from BASELINE,
# the output of host_sysctls before up); fails if anything is.
verify_clean() {
  local baseline="${1:-}" left=() l p exe
  ip link show "$POD_BRIDGE" >/dev/null 2>&1 && left+=("link $POD_BRIDGE")
  for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^gv' || true); do left+=("link $l"); done
  for l in $(ip netns list | awk '{print $1}' | grep '^gbo-' || true); do left+=("netns $l"); done
  ip route show "$SERVICE_CIDR" | grep -q . && left+=("route $SERVICE_CIDR")
  ip route show type blackhole | grep -q "$SERVICE_CIDR" && left+=("blackhole route $SERVICE_CIDR")
  ip route show "$POD_NETWORK" | grep -q . && left+=("route $POD_NETWORK")
  for l in "inet $NFT_TABLE" "ip kube-proxy" "ip6 kube-proxy"; do
    # shellcheck disable=SC2086
    as_root nft list table $l >/dev/null 2>&1 && left+=("nftables table $l")
  done
  # Control-plane programs, and container processes (their root is in the runner's state).
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case "$exe" in
      "$GBO_CACHE"/bin/*|"$POD_BIN_DIR"/*|"$PODRUNNER_BIN") left+=("process ${p#/proc/} $exe"); continue ;;
    esac
    case "$(readlink "$p/root" 2>/dev/null)" in
      "$PODRUNNER_STATE"/*) left+=("container process ${p#/proc/} $exe") ;;
    esac
  done
  if [ -n "$baseline" ]; then
    while IFS= read -r l; do
      grep -qxF "$l" <<< "$baseline" || left+=("sysctl ${l%%=*} is ${l#*=}, was $(grep "^${l%%=*}=" <<< "$baseline" | cut -d= -f2-)")
    done < <(host_sysctls)
  fi
  if [ ${#left[@]} -gt 0 ]; then
    err "left on this machine by the cluster:"
    printf '  %s\n' "${left[@]}" >&2
    return 1
  fi
  log "clean: no link, namespace, route, nftables table, process or sysctl change of the cluster remains"
}
