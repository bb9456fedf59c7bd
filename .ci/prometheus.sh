# Sourced by .ci/test: the metrics tests need Debian's prometheus (the server and promtool).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Debian's prometheus (server + promtool) for the metrics tests"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    elif [ "${CI:-}" = true ]; then
        echo "error: CI needs prometheus and promtool, and cannot apt-get install them" >&2
        exit 1
    else
        echo "note: prometheus/promtool are not installed and this user cannot apt-get install" \
             "them: the real-Prometheus and promtool tests will be skipped" >&2
    fi
fi
