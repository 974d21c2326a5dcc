#!/usr/bin/env bash
# The README's test command (and CI's): sets up .venv if needed, then runs the whole suite, end-to-end runs of
# verl's real trainer on the CPU path included. Extra arguments go to pytest (e.g. `-m "not e2e"`: the fast tier).
#
# The whole suite runs as two pytest processes side by side: the end-to-end runs (`-m "e2e or serial"`: each starts
# Ray, vLLM and several processes and needs most of the memory and cores for minutes, so they go one after another)
# and everything else (`-m "not e2e and not serial"`), which fits in the gaps. Its output is printed after the
# end-to-end part's; the command fails if either fails or runs no test. Any -m, -k, file or test id of yours runs
# one plain pytest instead, as does --basetemp (VERL_RESRL_TEST_SPLIT=0 forces that too).
#
# `--fast` (first argument) runs the fast tier instead: every test that starts no trainer run and is not marked slow
# (`-m "not e2e and not serial and not slow"`) as two halves side by side (`--shard 0/2` and `1/2`: whole test files,
# balanced by the measured times in tests/durations.json; tests/conftest.py), then the `serial` tests that start no
# trainer run, alone. It leaves out the end-to-end runs and the few `slow` tests (pytest.ini).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup_env.sh"
venv="${VERL_RESRL_VENV:-$root/.venv}"
cd "$root"
first="fast tier, shard 1 of 2 (--shard 0/2)"
second="fast tier, shard 2 of 2 (--shard 1/2)"
fast=""
if [ "${1:-}" = --fast ]; then
  shift
  fast=1
  bg_args=(-m "not e2e and not serial and not slow" --shard 0/2)
  fg_args=(-m "not e2e and not serial and not slow" --shard 1/2)
else
  first='the tests that start no trainer run (-m "not e2e and not serial"), run beside the end-to-end runs'
  second="end-to-end part"
  bg_args=(-m "not e2e and not serial")
  fg_args=(-m "e2e or serial")
fi
split="${VERL_RESRL_TEST_SPLIT:-1}"
for arg in "$@"; do
  # --basetemp: both processes would clear and share the one folder
  case "$arg" in -m|-m*|-k|-k*|--lf|--last-failed|--basetemp|--basetemp=*|tests*|*.py|*::*) split=0 ;; esac
done
if [ "$split" != 1 ]; then
  if [ -n "$fast" ]; then exec "$venv/bin/python" -m pytest -m "not e2e and not slow" "$@"; fi
  exec "$venv/bin/python" -m pytest "$@"
fi

log="$(mktemp "${TMPDIR:-/tmp}/resrl_unit_tests.XXXXXX")"
# its own session, so that an interrupt or a failure here takes its whole process group with it
setsid "$venv/bin/python" -m pytest "${bg_args[@]}" "$@" >"$log" 2>&1 &
unit_pid=$!
trap 'kill -- -"$unit_pid" 2>/dev/null || true; rm -f "$log"' EXIT
trap 'exit 130' INT TERM
set +e
"$venv/bin/python" -m pytest "${fg_args[@]}" "$@"
e2e_rc=$?
wait "$unit_pid"
unit_rc=$?
serial_rc=0
if [ -n "$fast" ]; then
  echo "===== fast tier: the serial tests that start no trainer run, alone (-m \"serial and not e2e\") ====="
  "$venv/bin/python" -m pytest -m "serial and not e2e" "$@"
  serial_rc=$?
fi
set -e
echo
echo "===== $first ====="
cat "$log"
echo "===== $second: exit $e2e_rc; $first: exit $unit_rc (0 = passed; 5 = no test ran, a failure here) ====="
if [ -n "$fast" ]; then echo "===== fast tier, serial tests: exit $serial_rc ====="; fi
if [ "$e2e_rc" -ne 0 ]; then exit "$e2e_rc"; fi
if [ "$unit_rc" -ne 0 ]; then exit "$unit_rc"; fi
exit "$serial_rc"
