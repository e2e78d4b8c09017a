#!/usr/bin/env python3
"""Message latency between two members' profile owners, and an idle owner's cost.

What `sotto chat` does when Enter is pressed: a `send` request to the
profile's owner over its control socket; what the other member's chat shows
is the owner's `message` notification. This script runs that path with two
`sotto daemon` owners (alice, bob) and a separate `sotto-relay` process on
loopback, all release builds:

  1. N messages, one at a time, alice -> bob: from writing alice's `send`
     request to reading bob's `message` notification (p50, p99, max, ms);
  2. then the idle owner: alice's daemon left alone for IDLE seconds, CPU
     seconds used (utime + stime from /proc) and resident memory (VmRSS).

Usage (from the repository root, after `cargo build --release -p sotto-cli
-p sotto-relay`):

    python3 tests/bench/owner-latency.py [--messages 200] [--idle 30]

Prints one JSON object. Loopback only; it starts and stops everything it uses.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release")


def sotto(home, *args, stdin=None):
    out = subprocess.run(
        [os.path.join(BIN, "sotto"), "--home", home, *args],
        input=stdin, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SOTTO_LOG": "error"},
    )
    if out.returncode != 0:
        sys.exit(f"sotto {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out.stdout


class Rpc:
    """One control-socket connection: JSON-RPC 2.0, one object per line."""

    def __init__(self, home):
        path = os.path.join(home, "control.sock")
        deadline = time.time() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit(f"no owner at {path}")
                time.sleep(0.05)
        self.file = self.sock.makefile("rw", buffering=1)
        self.next_id = 0

    def request(self, method, params):
        self.next_id += 1
        self.file.write(json.dumps({"jsonrpc": "2.0", "id": self.next_id,
                                    "method": method, "params": params}) + "\n")
        self.file.flush()
        return self.next_id

    def read(self):
        line = self.file.readline()
        if not line:
            sys.exit("the owner closed the control socket")
        return json.loads(line)

    def call(self, method, params):
        want = self.request(method, params)
        while True:
            reply = self.read()
            if reply.get("id") == want:
                if "error" in reply:
                    sys.exit(f"{method}: {reply['error']}")
                return reply["result"]

    def wait_message(self, text, timeout=30):
        self.sock.settimeout(timeout)
        while True:
            note = self.read()
            if note.get("method") == "message" and note["params"].get("text") == text:
                return


def proc_cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def proc_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(sorted_values, p):
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="sotto-owner-bench-")
    relay = subprocess.Popen(
        [os.path.join(BIN, "sotto-relay"), "--listen", "127.0.0.1:0",
         "--data", os.path.join(work, "relay")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "SOTTO_LOG": "warn"},
    )
    daemons = []
    try:
        info = {}
        for line in relay.stdout:
            key, _, value = line.strip().partition(": ")
            info[key] = value
            if "bootstrap code" in info and "fingerprint" in info and "listen" in info:
                break
        alice, bob = os.path.join(work, "alice"), os.path.join(work, "bob")
        sotto(alice, "team", "create", info["bootstrap code"], "--handle", "alice",
              "--name", "bench", "--relay", info["listen"], "--fingerprint", info["fingerprint"])
        code = sotto(alice, "invite", "bob").strip()
        sotto(bob, "join", code)
        for home in (alice, bob):
            daemons.append(subprocess.Popen(
                [os.path.join(BIN, "sotto"), "--home", home, "daemon"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "SOTTO_LOG": "error"},
            ))
        send, receive = Rpc(alice), Rpc(bob)
        receive.call("subscribe", {})
        # First contact (directory look-up, Olm session) is not what is timed.
        send.call("send", {"to": "bob", "text": "warm-up"})
        receive.wait_message("warm-up")

        latencies = []
        for i in range(args.messages):
            text = f"bench {i}"
            start = time.perf_counter()
            send.request("send", {"to": "bob", "text": text})
            receive.wait_message(text)
            latencies.append((time.perf_counter() - start) * 1000)
            # The send's own reply, before the next message.
            while send.read().get("id") != send.next_id:
                pass
        latencies.sort()

        time.sleep(3)  # let the receipts of the last messages settle
        pid = daemons[0].pid
        cpu_before = proc_cpu_secs(pid)
        time.sleep(args.idle)
        cpu_after = proc_cpu_secs(pid)
        print(json.dumps({
            "messages": args.messages,
            "latency_ms": {
                "p50": round(percentile(latencies, 50), 2),
                "p99": round(percentile(latencies, 99), 2),
                "max": round(latencies[-1], 2),
            },
            "idle_owner": {
                "seconds": args.idle,
                "cpu_seconds": round(cpu_after - cpu_before, 3),
                "cpu_share": round((cpu_after - cpu_before) / args.idle, 5),
                "rss_mib": round(proc_rss_mib(pid), 1),
            },
        }))
    finally:
        for process in daemons:
            process.send_signal(signal.SIGTERM)
        for process in daemons:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=15)
        except subprocess.TimeoutExpired:
            relay.kill()


if __name__ == "__main__":
    main()
