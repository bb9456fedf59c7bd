# Sourced by .ci/test: Node.js 20+ and the Vercel AI SDK (tests/aisdk, pinned by its lockfile)
# for the tests that run the SDK's own clients against the backend (tests/integration/
# test_aisdk.py, tests/browser/test_use_chat.py). CI must run them; elsewhere they are skipped
# when this machine has no Node.js and this user cannot install it.
node_ok() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
        && node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 20 ? 1 : 0)'
}
if ! node_ok && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian's nodejs and npm for the AI SDK tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends nodejs npm >/dev/null
fi
if node_ok; then
    (cd tests/aisdk && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
elif [ "${CI:-}" = true ]; then
    echo "error: CI needs Node.js >= 20 and npm for the AI SDK tests" >&2
    exit 1
else
    echo "note: Node.js >= 20 is not installed: the AI SDK tests will be skipped" >&2
fi
unset -f node_ok
