# Sourced by .ci/test: the real-link tests and drill scenarios (tests/network, drill net-*) put a
# server in a network namespace behind a veth pair; they need root, ip (iproute2), iptables and
# ss (iproute2).
if ! command -v iptables >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1 \
        || ! command -v ss >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Debian's iproute2 and iptables for the real-link tests"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            iproute2 iptables >/dev/null
    elif [ "${CI:-}" = true ]; then
        echo "error: CI needs iproute2 and iptables, and cannot apt-get install them" >&2
        exit 1
    else
        echo "note: iproute2/iptables are not installed and this user cannot apt-get install" \
             "them: the real-link tests and drill scenarios will be skipped" >&2
    fi
fi
if [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ] && ! ip netns add pss-ci-probe 2>/dev/null; then
    echo "note: this CI machine cannot make network namespaces (a container without" \
         "CAP_NET_ADMIN?): the real-link tests and drill scenarios will say skipped" >&2
fi
ip netns del pss-ci-probe 2>/dev/null || true
