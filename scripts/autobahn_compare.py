"""Compare an Autobahn report with the committed expectations (or update them).

usage: autobahn_compare.py ROLE REPORT_JSON EXPECTED_JSON CASES EXCLUDE UPDATE

Expectations map each case id to [behavior, behaviorClose]. The run fails on any FAILED case,
on any case whose verdict differs from the expectation, and on expected cases that did not run.
"""
import fnmatch
import json
import os
import re
import sys

role, report, expected_path, cases, exclude, update = sys.argv[1:7]


def key(case):
    return [int(x) if x.isdigit() else x for x in re.split(r"[.]", case)]


def selected(case):
    inc = any(fnmatch.fnmatchcase(case, p.strip()) for p in cases.split(",") if p.strip())
    exc = any(fnmatch.fnmatchcase(case, p.strip()) for p in exclude.split(",") if p.strip())
    return inc and not exc


if not os.path.exists(report):
    print(f"autobahn {role}: no report at {report}")
    sys.exit(1)
data = json.load(open(report))
if len(data) != 1:
    print(f"autobahn {role}: expected one agent in the report, found {sorted(data)}")
    sys.exit(1)
results = next(iter(data.values()))
got = {c: [r.get("behavior", "FAILED"), r.get("behaviorClose", "FAILED")] for c, r in results.items()}

counts = {}
for behavior, _ in got.values():
    counts[behavior] = counts.get(behavior, 0) + 1
summary = ", ".join(f"{counts.get(b, 0)} {b}" for b in
                    ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"])
print(f"autobahn {role}: {len(got)} cases: {summary}")

if update == "1":
    expected = json.load(open(expected_path)) if os.path.exists(expected_path) else {}
    expected.update(got)
    os.makedirs(os.path.dirname(expected_path), exist_ok=True)
    with open(expected_path, "w") as f:
        rows = [f"  {json.dumps(c)}: {json.dumps(expected[c])}" for c in sorted(expected, key=key)]
        f.write("{\n" + ",\n".join(rows) + "\n}\n")
    print(f"autobahn {role}: expectations written to {expected_path}")

expected = json.load(open(expected_path)) if os.path.exists(expected_path) else {}
problems = []
for case in sorted(set(got) | {c for c in expected if selected(c)}, key=key):
    g, e = got.get(case), expected.get(case)
    if g is None:
        problems.append(f"  {case}: expected {e}, but the case did not run")
    elif g[0] == "FAILED":
        problems.append(f"  {case}: FAILED (close: {g[1]})")
    elif e is None:
        problems.append(f"  {case}: {g} has no expectation (run with --update)")
    elif g != e:
        problems.append(f"  {case}: got {g}, expected {e}")
if problems:
    print(f"autobahn {role}: {len(problems)} difference(s):")
    print("\n".join(problems))
    sys.exit(1)
print(f"autobahn {role}: matches {expected_path}")
