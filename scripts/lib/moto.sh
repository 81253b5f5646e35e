# Sourced by scripts/test and bench/run: the test venv (moto and the Python signers, first run
# only) and moto in server mode on a free loopback port, with the AWS SDK pointed at it.

# ensure_test_venv VENV: creates VENV with tests/requirements.txt unless it has them already
ensure_test_venv() {
  if ! "$1/bin/python" -c 'import moto.server, standardwebhooks, jwt, cryptography, yaml, hcl2' 2>/dev/null; then
    echo "installing moto into $1 (first run only)" >&2
    python3 -m venv "$1"
    "$1/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
  fi
}

# start_moto VENV: starts moto (its pid in moto_pid), waits until it answers, and exports
# AWS_ENDPOINT_URL and test credentials; stop it with stop_moto
start_moto() {
  local venv=$1 port
  port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  moto_log=$(mktemp -t moto.XXXXXX.log)
  "$venv/bin/python" tests/moto/server.py "$port" >"$moto_log" 2>&1 &
  moto_pid=$!
  if ! "$venv/bin/python" - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(150):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit(1)
PY
  then
    echo "moto did not start; its log:" >&2
    cat "$moto_log" >&2
    return 1
  fi
  echo "moto is up on 127.0.0.1:$port (pid $moto_pid)" >&2
  # Only the emulator: never a developer's real account.
  unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
}

stop_moto() {
  if [ -n "${moto_pid:-}" ]; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  rm -f "${moto_log:-}"
}

# ensure_clients_venv VENV: creates VENV with the Python client (editable) and the versions of
# its dependencies and the official SDKs its tests pin (clients/python/requirements-test.txt)
ensure_clients_venv() {
  if ! "$1/bin/python" -c 'import spendguard, openai, anthropic, pytest, mypy' 2>/dev/null \
    || [ clients/python/requirements-test.txt -nt "$1/bin/python" ]; then
    echo "installing the Python client's test dependencies into $1 (first run only)" >&2
    python3 -m venv "$1"
    "$1/bin/pip" install --quiet --disable-pip-version-check -r clients/python/requirements-test.txt -e clients/python
    touch "$1/bin/python"
  fi
}
