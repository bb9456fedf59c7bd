# Sourced by .ci/test: the real-link tests and drill scenarios (tests/network, drill net-*) put a
# server in a network namespace behind a veth pair; they need root, ip and ss (iproute2), and
# iptables. Where they cannot run, they say "skipped" with the reason; CI must run them.
if ! command -v iptables >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1 \
        || ! command -v ss >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Debian's iproute2 and iptables for the real-link tests"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends iproute2 iptables >/dev/null; }; then
            if [ "${CI:-}" = true ]; then
                echo "error: CI could not install iproute2 and iptables" >&2
                exit 1
            fi
            echo "note: iproute2/iptables could not be installed: the real-link tests and" \
                 "drill scenarios will be skipped" >&2
        fi
    elif [ "${CI:-}" = true ]; then
        echo "error: CI needs iproute2 and iptables, and cannot apt-get install them" >&2
        exit 1
    else
        echo "note: iproute2/iptables are not installed and this user cannot apt-get install" \
             "them: the real-link tests and drill scenarios will be skipped" >&2
    fi
fi
