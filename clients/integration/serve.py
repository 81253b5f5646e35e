"""Starts the real `spendguard serve` for the clients' integration tests, and stops it.

    python serve.py STORE_DIR  -> {"url": ..., "usage_secret": ..., "status_token": ..., "pid": ...}
    on stdout, then serves until stdin closes (used by the TypeScript tests; pytest imports it).

The binary: $SPENDGUARD_BIN, else <repo>/target/debug/spendguard (what `cargo test --workspace`
builds in scripts/test).
"""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUDGETS = Path(__file__).resolve().parent / "budgets.toml"


def binary():
    return Path(os.environ.get("SPENDGUARD_BIN") or REPO / "target" / "debug" / "spendguard")


def missing_reason():
    """Why the integration tests cannot run here (None when they can)."""
    path = binary()
    if not path.exists():
        return f"no spendguard binary at {path} (build it: cargo build -p spendguard, or set SPENDGUARD_BIN)"
    probe = subprocess.run([str(path), "serve", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{path} has no `serve` subcommand (issue 26): {probe.stderr.strip()[:200]}"
    return None


def _find(value, key):
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for inner in value.values():
            found = _find(inner, key)
            if found is not None:
                return found
    return None


class Serve:
    def __init__(self, store_dir):
        store_dir = Path(store_dir)
        store_dir.mkdir(parents=True, exist_ok=True)
        self.store = store_dir / "state.db"
        self.log = []
        self.process = subprocess.Popen(
            [str(binary()), "serve", "--budgets", str(BUDGETS), "--store", str(self.store), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        address = metrics_address = None
        for line in self.process.stderr:
            self.log.append(line)
            try:
                started = json.loads(line)
            except ValueError:
                continue
            address, metrics_address = _find(started, "listening"), _find(started, "metrics_listening")
            if address:
                break
        if not address:
            self.process.kill()
            raise RuntimeError("spendguard serve did not report where it listens:\n" + "".join(self.log))
        threading.Thread(target=self._keep_reading, daemon=True).start()
        self.url = f"http://{address}"
        # /health and /metrics are served apart from the webhook's routes
        self.metrics_url = f"http://{metrics_address}"
        secrets = store_dir / "secrets"
        self.usage_secret = (secrets / "usage-webhook").read_text().strip()
        self.status_token = (secrets / "status-token").read_text().strip()

    def _keep_reading(self):
        for line in self.process.stderr:
            self.log.append(line)

    def cli(self, *args):
        """Runs `spendguard ARGS --store STORE` and returns its JSON document."""
        done = subprocess.run([str(binary()), *args, "--store", str(self.store)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"spendguard {' '.join(args)} failed: {done.stderr}")
        return json.loads(done.stdout)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def main():
    reason = missing_reason()
    if reason:
        print(json.dumps({"missing": reason}), flush=True)
        return
    serve = Serve(sys.argv[1])
    print(json.dumps({"url": serve.url, "metrics_url": serve.metrics_url, "usage_secret": serve.usage_secret, "status_token": serve.status_token, "store": str(serve.store)}), flush=True)
    try:
        sys.stdin.read()
    finally:
        serve.stop()


if __name__ == "__main__":
    main()
