#!/usr/bin/env bash
# Runs every unit test binary and the end-to-end suite; ends with the one
# line CI reads: "N passed, N failed".
set -uo pipefail
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
passed=0; failed=0
log=$(mktemp -d)

for t in $(find "$BUILD/tests/unit" -type f -perm -u+x -name 'test_*' 2>/dev/null | sort); do
  name=${t#"$BUILD"/tests/unit/}
  out="$log/$(echo "$name" | tr / _).out"
  "$t" >"$out" 2>&1; rc=$?
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -1)
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | tail -1)
  p=${p:-0}; f=${f:-0}
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed or sanitizer abort
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$f" -ne 0 ]; then echo "FAIL unit $name"; cat "$out"; else echo "ok   unit $name ($p)"; fi
done

if [ -d tests/e2e ] && ls tests/e2e/test_*.py >/dev/null 2>&1; then
  junit="$log/e2e.xml"
  VERGE_BIN="$PWD/$BUILD/verge" /usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml="$junit" tests/e2e \
    ${PYTEST_ARGS:-} 2>&1 | tail -40
  if [ -f "$junit" ]; then
    read -r ep ef < <(/usr/bin/python3 - "$junit" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == "testsuite" else list(r)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - sk, f)
PY
)
    passed=$((passed + ep)); failed=$((failed + ef))
  else
    echo "FAIL e2e: pytest produced no report"; failed=$((failed + 1))
  fi
fi
rm -rf "$log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
