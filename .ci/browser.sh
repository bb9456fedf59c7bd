# Sourced by .ci/test: Debian's chromium for the chat page's tests (tests/browser), which
# Playwright (a pip package of the test extra) drives by its executable path.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Debian's chromium for the browser tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends chromium >/dev/null
    fi
    if ! command -v chromium >/dev/null 2>&1; then
        if [ "${CI:-}" = true ]; then
            echo "error: CI needs chromium for the browser tests, and cannot install it" >&2
            exit 1
        fi
        echo "note: chromium is not installed: the browser tests will be skipped" >&2
    fi
fi
