# Sourced by .ci/test: the conversation store's tests run a real PostgreSQL server (Debian's
# initdb and pg_ctl, started by the tests themselves on 127.0.0.1 as the postgres user).
pg_bin_found() {
    { command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; } && return 0
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && return 0
    done
    return 1
}
if ! pg_bin_found; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Debian's postgresql (initdb + pg_ctl) for the conversation store tests"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            postgresql >/dev/null
    elif [ "${CI:-}" = true ]; then
        echo "error: CI needs PostgreSQL's initdb and pg_ctl, and cannot apt-get install them" >&2
        exit 1
    else
        echo "note: PostgreSQL (initdb/pg_ctl) is not installed and this user cannot apt-get" \
             "install it: the conversation store's PostgreSQL tests will be skipped" >&2
    fi
fi
if [ "${CI:-}" = true ] && ! pg_bin_found; then
    echo "error: postgresql is installed but initdb/pg_ctl are still not to be found" >&2
    exit 1
fi
unset -f pg_bin_found
