# Sourced by .ci/test: Node.js 20+ and the Vercel AI SDK (tests/aisdk, pinned by its lockfile)
# for the test that runs the SDK's own client against the backend (tests/integration/test_aisdk.py).
node_ok() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
        && node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)'
}
if ! node_ok; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Debian's nodejs and npm for the AI SDK test"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends nodejs npm >/dev/null
    fi
    if ! node_ok; then
        echo "error: the AI SDK test needs Node.js >= 20 and npm" >&2
        exit 1
    fi
fi
(cd tests/aisdk && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
