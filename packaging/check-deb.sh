#!/usr/bin/env bash
# Builds the sotto-relay and sotto Debian packages with cargo-deb, unpacks
# them and checks what is inside: the files, the conffile, the binaries
# (--version, --help, a real start on 127.0.0.1:0 and a health check), and
# the systemd unit with `systemd-analyze verify` where it is installed.
#
# By default it builds release binaries, which takes minutes. Extra
# cargo-deb flags go in CARGO_DEB_ARGS: .ci/run packages the debug binaries
# the tests already built with "--profile dev --no-build --fast" (about
# 15 s), and builds release ones only with SOTTO_CI_PACKAGES=1.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
    # A debug build of the tool: it installs in a third of the time of a
    # release one (23 s against 61 s here) and packs .ci/run's debug
    # binaries with --fast in about the same time (5.8 s against 5.2 s).
    echo "== installing cargo-deb (cargo install cargo-deb --locked --debug)"
    cargo install cargo-deb --locked --debug --quiet
fi

# shellcheck disable=SC2086
echo "== cargo deb -p sotto-relay ${CARGO_DEB_ARGS:-}"
relay_deb=$(cargo deb -p sotto-relay ${CARGO_DEB_ARGS:-} | tail -n 1)
# shellcheck disable=SC2086
echo "== cargo deb -p sotto-cli ${CARGO_DEB_ARGS:-}"
cli_deb=$(cargo deb -p sotto-cli ${CARGO_DEB_ARGS:-} | tail -n 1)

work=$(mktemp -d)
relay_pid=
cleanup() {
    if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== $relay_deb"
dpkg-deb --info "$relay_deb"
dpkg-deb -x "$relay_deb" "$work/root"
dpkg-deb -e "$relay_deb" "$work/control"
for file in usr/bin/sotto-relay etc/sotto-relay/relay.toml \
    usr/lib/sysctl.d/60-sotto-relay.conf usr/share/doc/sotto-relay/OPERATIONS.md; do
    [ -e "$work/root/$file" ] || fail "$file is not in the package"
done
unit=$(find "$work/root" -name sotto-relay.service | head -n 1)
[ -n "$unit" ] || fail "the systemd unit is not in the package"
grep -qx /etc/sotto-relay/relay.toml "$work/control/conffiles" || fail "relay.toml is not a conffile"
grep -q "systemctl" "$work/control/postinst" || fail "postinst does not enable the unit"

bin="$work/root/usr/bin/sotto-relay"
"$bin" --version
"$bin" --help >/dev/null

echo "== a real start of the packaged binary with the packaged config"
"$bin" run --listen 127.0.0.1:0 --data "$work/data" \
    --config "$work/root/etc/sotto-relay/relay.toml" >"$work/stdout" 2>"$work/stderr" &
relay_pid=$!
addr=
for _ in $(seq 1 200); do
    addr=$(sed -n 's/^listen: //p' "$work/stdout")
    [ -n "$addr" ] && break
    kill -0 "$relay_pid" 2>/dev/null || { cat "$work/stderr"; fail "the relay exited"; }
    sleep 0.05
done
[ -n "$addr" ] || fail "the relay did not print its address"
"$bin" health --addr "$addr" --data "$work/data"
kill -TERM "$relay_pid"
wait "$relay_pid" || fail "the relay did not stop cleanly"
relay_pid=

if command -v systemd-analyze >/dev/null 2>&1; then
    echo "== systemd-analyze verify"
    # The packaged unit, with ExecStart pointing at the unpacked binary
    # (verify checks that it exists); everything else as shipped.
    mkdir -p "$work/unit"
    sed "s#/usr/bin/sotto-relay#$bin#" "$unit" >"$work/unit/sotto-relay.service"
    systemd-analyze verify "$work/unit/sotto-relay.service" \
        || fail "systemd-analyze verify found problems in the unit"
else
    echo "SKIPPED systemd-analyze verify: systemd-analyze is not installed"
fi

echo "== $cli_deb"
dpkg-deb --info "$cli_deb" >/dev/null
dpkg-deb -x "$cli_deb" "$work/cli"
"$work/cli/usr/bin/sotto" --version
"$work/cli/usr/bin/sotto" --help >/dev/null

echo "packages OK: $relay_deb $cli_deb"
