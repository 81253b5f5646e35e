"""scan_logs.py finds a secret, or a secret part of a channel setting, in any log line."""
import json
import pathlib
import tempfile
import unittest

import scan_logs

HOOK = "http://127.0.0.1:9/ops-slack/hook-T0KEN-3f9a2c41b7de"
CHANNEL = json.dumps({"routing_key": "R0UT1NGK3Y0000000000000000000000", "url": "http://127.0.0.1:9/v2/enqueue"})
PEM = "-----BEGIN PRIVATE KEY-----\n" + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" + "\n-----END PRIVATE KEY-----\n"


class ScanLogs(unittest.TestCase):
    def scan(self, log_lines, require=True):
        with tempfile.TemporaryDirectory() as d:
            folder = pathlib.Path(d)
            (folder / "secrets-1.txt").write_text("".join(json.dumps(s) + "\n" for s in [HOOK, CHANNEL, PEM]))
            (folder / "faults-1.log").write_text("".join(line + "\n" for line in log_lines))
            return scan_logs.main(folder, require)

    def test_clean_logs_pass(self):
        self.assertEqual(self.scan(["INFO delivered to ops-slack", "DEBUG PutItem 200"]), 0)

    def test_each_kind_of_leak_is_found(self):
        for leaked in [
            f"WARN posting to {HOOK} failed",
            "DEBUG path /ops-slack/hook-T0KEN-3f9a2c41b7de",
            "TRACE body routing_key=R0UT1NGK3Y0000000000000000000000",
            "TRACE MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
        ]:
            with self.subTest(leaked=leaked):
                self.assertEqual(self.scan(["INFO fine", leaked]), 1)

    def test_nothing_captured_fails_only_when_required(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(scan_logs.main(pathlib.Path(d), True), 1)
            self.assertEqual(scan_logs.main(pathlib.Path(d), False), 0)


if __name__ == "__main__":
    unittest.main()
