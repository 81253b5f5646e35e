"""Searches every log line the test suite wrote for every secret value the tests used.

Usage: scan_logs.py FOLDER [--require]. The folder holds `<binary>-<pid>.log` files (TRACE logs of each
test binary, see tests/src/logs.rs) and `secrets-<pid>.txt` files (one JSON string per line).
Exits 1, naming the file and line but never the secret, if any secret is found.
"""
import json
import pathlib
import sys
import time


def needles(secret: str) -> set[str]:
    """The secret itself and the parts of it that are secret on their own."""
    found = {secret.strip()}
    if "/hook-" in secret:  # webhook URLs: the path is the credential
        found.add(secret.split("/hook-", 1)[1].split('"', 1)[0])
    try:
        value = json.loads(secret)
    except ValueError:
        value = None
    if isinstance(value, dict):  # channel settings: long string fields, not addresses
        for field in value.values():
            if isinstance(field, str) and len(field) > 12 and "@" not in field:
                found |= needles(field)
    for line in secret.splitlines():  # PEM keys: each long base64 line
        if len(line) >= 40:
            found.add(line.strip())
    return {n for n in found if len(n) >= 8}


def main(folder: pathlib.Path, require: bool) -> int:
    secrets = set()
    for listing in folder.glob("secrets-*.txt"):
        secrets |= {json.loads(line) for line in listing.read_text().splitlines() if line}
    search = set().union(*(needles(s) for s in secrets)) if secrets else set()
    started = time.monotonic()
    logs = sorted(folder.glob("*.log"))
    size = sum(log.stat().st_size for log in logs)
    lines = 0
    leaks = []
    for log in logs:
        with log.open(errors="replace") as f:
            for number, line in enumerate(f, 1):
                lines += 1
                for needle in search:
                    if needle in line:
                        leaks.append(f"{log.name}:{number}: a secret ({len(needle)} characters, starts {needle[:4]!r}...)")
    print(
        f"scan_logs: {lines} log lines from {len(logs)} test binaries searched for "
        f"{len(secrets)} secrets ({len(search)} strings): {len(leaks)} found "
        f"({size / 1e6:.0f} MB in {time.monotonic() - started:.0f} s)"
    )
    for leak in leaks[:20]:
        print(f"  {leak}")
    if require and (not logs or not secrets):
        print("scan_logs: nothing was captured; is SPENDGUARD_TEST_LOGS reaching the tests?")
        return 1
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1]), "--require" in sys.argv[2:]))
