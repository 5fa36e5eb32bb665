#!/usr/bin/env python3
"""Total instructions (Ir) in a callgrind dump and the calls to one function: prints
"TOTAL CALLS TOTAL/CALLS" (bench/trace_ir.sh: instructions per request)."""
import re, sys

names = {}
total = None
calls = 0
cur_cfn = None
for line in open(sys.argv[1]):
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
    m = re.match(r'cfn=\((\d+)\)(?: (.*))?', line)
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2).strip()
        cur_cfn = names.get(m.group(1))
        continue
    m = re.match(r'fn=\((\d+)\)(?: (.*))?', line)
    if m and m.group(2):
        names[m.group(1)] = m.group(2).strip()
    if line.startswith("calls=") and cur_cfn == sys.argv[2]:
        calls += int(line.split("=")[1].split()[0])
        cur_cfn = None
    elif line.startswith("calls="):
        cur_cfn = None
print(total, calls, "%.1f" % (total / max(calls, 1)))
