#!/usr/bin/env python3
"""Run the Autobahn TestSuite fuzzing client against a WebSocket server and
compare every case's verdicts with a checked-in expectation file.

    python3 tests/autobahn/run.py --url ws://127.0.0.1:PORT/echo \
        --out target/autobahn/report --expected tests/autobahn/expected.json [--update]

The suite itself is installed by .ci/install-autobahn (target/autobahn/wstest).

Pass rules (exit 0 only if all hold):
  * no case has FAILED as its behavior or behaviorClose (whatever expected says);
  * every case's behavior and behaviorClose equal expected.json's (an entry may
    also be a list of accepted verdicts, for cases whose outcome is racy);
  * the report and expected.json hold exactly the same case ids.
--update rewrites expected.json from the run (refused if any case FAILED).

Standard library only.
"""

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

AGENT = "fastim"
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "12.*", "13.*"]
FIELDS = ("behavior", "behaviorClose")
VERDICT_ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_WSTEST = os.path.join(REPO_ROOT, "target", "autobahn", "wstest")


def case_key(case_id):
    """Sort '9.10.2' after '9.2.1': compare dotted parts as numbers."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.]", case_id))


def log(msg=""):
    print(msg, flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="server URL, e.g. ws://127.0.0.1:9001/echo")
    ap.add_argument("--out", required=True, help="report directory (index.json, per-case files, wstest.log)")
    ap.add_argument("--expected", required=True, help="expected verdicts (JSON map case-id -> verdicts)")
    ap.add_argument("--update", action="store_true", help="rewrite --expected from this run (refused if any FAILED)")
    ap.add_argument("--wstest", default=os.environ.get("AUTOBAHN_WSTEST", DEFAULT_WSTEST),
                    help="wstest wrapper (default: target/autobahn/wstest, or $AUTOBAHN_WSTEST)")
    # Cases 12 and 13 (permessage-deflate) take about 7 minutes of the run.
    ap.add_argument("--timeout", type=float, default=1500.0, help="hard limit for the wstest run, seconds")
    args = ap.parse_args(argv)
    if not re.match(r"^ws://127\.0\.0\.1:\d+(/|$)", args.url):
        ap.error("--url must be ws://127.0.0.1:PORT/... (this harness only targets the loopback address)")
    return args


def run_wstest(args, out_dir):
    """Write spec.json, run wstest with a hard timeout; return (ok, message)."""
    spec = {
        "outdir": out_dir,
        "servers": [{"agent": AGENT, "url": args.url}],
        "cases": CASES,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = os.path.join(out_dir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=2)
        f.write("\n")

    # A stale index.json must never be mistaken for this run's result.
    index_path = os.path.join(out_dir, "index.json")
    if os.path.exists(index_path):
        os.remove(index_path)

    if not os.access(args.wstest, os.X_OK):
        return False, "wstest not found at %s: run .ci/install-autobahn" % args.wstest

    log_path = os.path.join(out_dir, "wstest.log")
    cmd = [args.wstest, "-m", "fuzzingclient", "-s", spec_path]
    log("autobahn: running %s (timeout %d s, log %s)" % (" ".join(cmd), args.timeout, log_path))
    with open(log_path, "wb") as logf:
        # Own session, so a timeout can kill wstest and anything it started.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                cwd=out_dir, start_new_session=True)
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return False, "wstest did not finish within %d s (log: %s)" % (args.timeout, log_path)
    if rc != 0:
        return False, "wstest exited with status %d (log: %s)" % (rc, log_path)
    if not os.path.exists(index_path):
        return False, "wstest wrote no %s (log: %s)" % (index_path, log_path)
    return True, ""


def tail(path, n=40):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(collections.deque(f, maxlen=n))
    except OSError:
        return ""


def load_results(out_dir):
    with open(os.path.join(out_dir, "index.json")) as f:
        index = json.load(f)
    if AGENT not in index:
        raise ValueError("index.json has no agent %r (agents: %s)" % (AGENT, ", ".join(sorted(index))))
    return index[AGENT]


def summarize(results):
    counts = {}
    for field in FIELDS:
        c = collections.Counter(r.get(field, "?") for r in results.values())
        order = [v for v in VERDICT_ORDER if v in c] + sorted(v for v in c if v not in VERDICT_ORDER)
        counts[field] = ", ".join("%s=%d" % (v, c[v]) for v in order)
    dur = {cid: r.get("duration", 0) or 0 for cid, r in results.items()}  # milliseconds
    total_9 = sum(d for cid, d in dur.items() if cid.startswith("9."))
    slowest = sorted(dur.items(), key=lambda kv: (-kv[1], case_key(kv[0])))[:5]
    log("autobahn: %d cases; behavior: %s; behaviorClose: %s; 9.* total %.2f s; slowest: %s" % (
        len(results), counts["behavior"], counts["behaviorClose"], total_9 / 1000.0,
        ", ".join("%s %d ms" % (cid, d) for cid, d in slowest)))


def print_table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    log("  " + fmt % tuple(header))
    log("  " + fmt % tuple("-" * w for w in widths))
    for r in rows:
        log("  " + fmt % tuple(r))


def allowed(entry, field):
    """expected.json holds a verdict string, or a list of accepted verdicts for
    cases whose outcome depends on timing (e.g. ["NON-STRICT", "OK"])."""
    v = entry.get(field)
    return set(v) if isinstance(v, list) else {v}


def verdict(entry):
    if entry is None:
        return "(missing)"
    show = lambda v: "|".join(v) if isinstance(v, list) else str(v)
    return "%s / %s" % (show(entry.get("behavior", "?")), show(entry.get("behaviorClose", "?")))


def compare(results, expected, out_dir):
    """Return the list of problems (empty means pass), printing tables."""
    problems = []

    failed = [cid for cid, r in results.items() if any(r.get(f) == "FAILED" for f in FIELDS)]
    if failed:
        rows = []
        for cid in sorted(failed, key=case_key):
            r = results[cid]
            rows.append((cid, r.get("behavior"), r.get("behaviorClose"), r.get("remoteCloseCode"),
                         os.path.join(out_dir, r.get("reportfile", "?"))))
        log("autobahn: %d case(s) FAILED:" % len(failed))
        print_table(rows, ("case", "behavior", "behaviorClose", "closeCode", "report"))
        problems.append("%d case(s) FAILED" % len(failed))

    if expected is None:
        return problems

    diffs = []
    for cid in sorted(set(results) | set(expected), key=case_key):
        got, want = results.get(cid), expected.get(cid)
        if got is None or want is None or any(got.get(f) not in allowed(want, f) for f in FIELDS):
            diffs.append((cid, verdict(want), verdict(got)))
    if diffs:
        log("autobahn: %d case(s) differ from expected (behavior / behaviorClose):" % len(diffs))
        print_table(diffs, ("case", "expected", "got"))
        problems.append("%d case(s) differ from expected" % len(diffs))
    return problems


def load_expected(path):
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError("%s: expected a JSON object" % path)
    return data


def write_expected(path, results, old):
    """Write the run's verdicts; an old list of accepted verdicts that still
    contains the new verdict is kept, so hand-made relaxations survive."""
    old = old or {}
    data = {}
    for cid in results:
        data[cid] = {}
        for f in FIELDS:
            new, prev = results[cid].get(f), old.get(cid, {}).get(f)
            data[cid][f] = prev if isinstance(prev, list) and new in prev else new
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        # sort_keys would order "10.1.1" before "9.1.1"; keep the numeric order.
        f.write("{\n")
        items = sorted(data.items(), key=lambda kv: case_key(kv[0]))
        for i, (cid, v) in enumerate(items):
            f.write("  %s: %s%s\n" % (json.dumps(cid), json.dumps(v, sort_keys=True),
                                      "," if i + 1 < len(items) else ""))
        f.write("}\n")
    os.replace(tmp, path)


def failed_or_incomplete(problems):
    return any(p.endswith("FAILED") or p == "incomplete run" for p in problems)


def main(argv=None):
    args = parse_args(argv)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    expected_path = os.path.abspath(args.expected)

    started = time.monotonic()
    ok, msg = run_wstest(args, out_dir)
    if not ok:
        log("autobahn: ERROR: " + msg)
        t = tail(os.path.join(out_dir, "wstest.log"))
        if t:
            log("autobahn: last lines of wstest.log:\n" + t)
        return 1
    log("autobahn: wstest finished in %.1f s" % (time.monotonic() - started))

    # wstest gives up on the remaining cases (and still exits 0 with a partial
    # report) when a connection to the server fails.
    planned = None
    with open(os.path.join(out_dir, "wstest.log"), "r", errors="replace") as f:
        for line in f:
            m = re.match(r"Ok, will run (\d+) test cases", line)
            if m:
                planned = int(m.group(1))
            if line.startswith("Connection to ") and " failed" in line:
                log("autobahn: wstest: " + line.rstrip())

    try:
        results = load_results(out_dir)
    except (OSError, ValueError) as e:
        log("autobahn: ERROR: cannot read report: %s" % e)
        return 1

    summarize(results)
    incomplete = planned is None or len(results) != planned
    if incomplete:
        log("autobahn: ERROR: wstest planned %s cases but reported %d" % (planned, len(results)))

    expected = None
    if args.update:
        if os.path.exists(expected_path):
            try:
                expected = load_expected(expected_path)
            except (OSError, ValueError) as e:
                log("autobahn: (ignoring unreadable old %s: %s)" % (expected_path, e))
    else:
        try:
            expected = load_expected(expected_path)
        except FileNotFoundError:
            log("autobahn: ERROR: %s does not exist; create it with --update" % expected_path)
            compare(results, None, out_dir)
            return 1
        except (OSError, ValueError) as e:
            log("autobahn: ERROR: cannot read %s: %s" % (expected_path, e))
            return 1

    problems = compare(results, expected, out_dir)
    if incomplete:
        problems.append("incomplete run")

    if args.update:
        if failed_or_incomplete(problems):
            log("autobahn: refusing to --update %s: %s" % (expected_path, "; ".join(problems)))
            return 1
        write_expected(expected_path, results, expected)
        log("autobahn: wrote %d cases to %s" % (len(results), expected_path))
        return 0

    if problems:
        log("autobahn: FAIL: " + "; ".join(problems) + " (reports in %s)" % out_dir)
        return 1
    log("autobahn: PASS: all %d cases match %s" % (len(results), expected_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
