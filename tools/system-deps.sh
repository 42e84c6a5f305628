#!/usr/bin/env bash
# The Debian packages the test suite needs besides the venv, listed once (`make system-deps`; `make test`,
# `make test-fast` and .ci/run run it first). As root it installs what is missing; otherwise it prints the
# command to run and exits 1, before any test starts, so a missing broker is not a failure halfway through.
set -euo pipefail

# package: the commands of it that the tests run
PACKAGES=(
  # tests/runtime/broker.py starts a real broker (/usr/sbin/mosquitto); tests/runtime/test_mqtt.py writes its
  # password file with mosquitto_passwd (/usr/bin/mosquitto_passwd). Debian's mosquitto package ships both.
  "mosquitto: mosquitto mosquitto_passwd"
  # tests/runtime/test_hostile_inputs.py: the no-telemetry probe traces every connect() of edge-predict.
  "strace: strace"
  # tests/runtime/test_review_browser.py: Selenium drives the system's browser through its driver (no browser download).
  "chromium: chromium"
  "chromium-driver: chromedriver"
)

have() {  # on PATH, or in an sbin folder that a non-root PATH may leave out
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

missing=()
for entry in "${PACKAGES[@]}"; do
  package=${entry%%:*}
  for command in ${entry#*:}; do
    if ! have "$command"; then
      missing+=("$package")
      break
    fi
  done
done
[ ${#missing[@]} -eq 0 ] && exit 0

install=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "the tests need these Debian packages, missing here: ${missing[*]}; install them with" >&2
  echo "(after sudo apt-get update on a machine whose apt has no package lists yet):" >&2
  echo "  sudo ${install[*]}" >&2
  exit 1
fi
echo "installing the tests' Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update
"${install[@]}"
