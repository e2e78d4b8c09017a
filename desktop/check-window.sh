#!/usr/bin/env bash
# Checks the real sotto-desktop binary as a person would see it:
#  1. `--screenshot` renders the main window of a real profile (a relay,
#     alice and bob, a message) to a PNG with the software renderer, and
#     the PNG is not blank;
#  2. under Xvfb the window opens and stays up (killed after a few
#     seconds), on the same profile.
# Needs the binaries `cargo test --workspace` built (target/debug/sotto,
# sotto-relay, sotto-desktop) and Debian's xvfb, xauth, mesa-vulkan-drivers,
# libgl1-mesa-dri, libegl1, libxkbcommon-x11-0 (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug
work=$(mktemp -d)
relay_pid=
cleanup() {
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bin/sotto-relay" --data "$work/relay" --listen 127.0.0.1:0 --public-addr 127.0.0.1:1 \
    >"$work/relay.log" 2>&1 &
relay_pid=$!
for _ in $(seq 1 100); do
    grep -q "^listen:" "$work/relay.log" 2>/dev/null && grep -q "^bootstrap code:" "$work/relay.log" && break
    sleep 0.1
done
addr=$(awk '/^listen:/ {print $2}' "$work/relay.log")
fingerprint=$(awk '/^fingerprint:/ {print $2}' "$work/relay.log")
code=$(awk '/^bootstrap code:/ {print $3}' "$work/relay.log")
[ -n "$addr" ] && [ -n "$code" ] || { echo "FAIL: the relay did not start" >&2; cat "$work/relay.log" >&2; exit 1; }

"$bin/sotto" --home "$work/alice" team create "$code" --handle alice --name acme \
    --relay "$addr" --fingerprint "$fingerprint" >/dev/null
invite=$("$bin/sotto" --home "$work/alice" invite bob 2>/dev/null)
"$bin/sotto" --home "$work/bob" join "$invite" >/dev/null
echo "hello from alice" | "$bin/sotto" --home "$work/alice" send bob >/dev/null
# A picture too: bob's window shows it as a file card with its thumbnail.
python3 - "$work/chart.png" <<'PY'
import struct, sys, zlib
width, height = 240, 150
rows = b"".join(
    b"\0" + b"".join(
        bytes((40 + x // 2, 90 + y, 200 - x // 3)) if (x // 30 + y // 30) % 2 else bytes((240, 240, 235))
        for x in range(width))
    for y in range(height))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
"$bin/sotto" --home "$work/alice" send bob --file "$work/chart.png" "the chart" >/dev/null 2>&1

echo "-- sotto-desktop --screenshot"
"$bin/sotto-desktop" --home "$work/bob" --screenshot "$work/shot.png" --open alice
[ -n "${SOTTO_SCREENSHOT_COPY:-}" ] && cp "$work/shot.png" "$SOTTO_SCREENSHOT_COPY"
python3 - "$work/shot.png" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
width, height = struct.unpack(">II", data[16:24])
# Decompress the image data and count distinct byte values: a blank
# (one-colour) image has almost none.
idat, pos = b"", 8
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    if kind == b"IDAT":
        idat += data[pos + 8:pos + 8 + length]
    pos += 12 + length
raw = zlib.decompress(idat)
distinct = len(set(raw))
print(f"screenshot {width}x{height}, {distinct} distinct byte values")
assert width >= 400 and height >= 300, "too small"
assert distinct > 16, "the screenshot is blank"
PY

echo "-- sotto-desktop under Xvfb"
set +e
timeout 20 xvfb-run -a -s "-screen 0 1280x800x24" \
    "$bin/sotto-desktop" --home "$work/bob" >"$work/window.log" 2>&1 &
window=$!
sleep 8
# While the window owns bob's profile, a `sotto` command goes through it.
"$bin/sotto" --home "$work/bob" whoami >"$work/whoami.txt" 2>&1
whoami=$?
kill -TERM "$window" 2>/dev/null
wait "$window"
set -e
if [ "$whoami" -ne 0 ] || ! grep -q bob "$work/whoami.txt"; then
    echo "FAIL: sotto whoami did not run through the open window" >&2
    cat "$work/whoami.txt" "$work/window.log" >&2
    exit 1
fi
if grep -qi "panicked\|cannot open the window" "$work/window.log"; then
    echo "FAIL: the window did not open" >&2
    cat "$work/window.log" >&2
    exit 1
fi
echo "ok: the window opened under Xvfb and owned the profile"
