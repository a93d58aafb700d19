"""A small real acceptance command with `rig run`'s contract, for the daemon's tests.

Exit 0 and results.json {"passed": true} unless the candidate's first bytes say
FAIL (exit 1) or INFRA (exit 3). --hold waits for a file to appear (so a test
can kill the daemon mid-run); --runlog records "start PID" / "end PID" lines;
environ.json in the report directory is the environment it was given. Its event
log says it is in phase `flash` while it holds.
"""

import argparse
import json
import os
import time
from pathlib import Path

from rig.events import Event
from rig.orchestration.eventlog import EventLog

p = argparse.ArgumentParser()
p.add_argument("--candidate", required=True)
p.add_argument("--report-dir", required=True)
p.add_argument("--runlog", required=True)
p.add_argument("--hold")
p.add_argument("--label")  # ignored: lets a test put any word on the command line
args = p.parse_args()

with open(args.runlog, "a") as f:
    f.write(f"start {os.getpid()}\n")
Path(args.report_dir).mkdir(parents=True, exist_ok=True)  # what the daemon let through
(Path(args.report_dir) / "environ.json").write_text(json.dumps(dict(os.environ)))
head = Path(args.candidate).read_bytes()[:64]
print(f"testing {args.candidate} ({len(head)} bytes head)", flush=True)
live = Path(args.report_dir) / "scenarios" / "candidate-smoke"
live.mkdir(parents=True, exist_ok=True)
events = EventLog(Path(args.report_dir))  # events.jsonl and scenario.log, as `rig run` writes
events.attempt("candidate-smoke", "pi3-a", live)
events(Event("phase-start", "flash", "pi3-a", "candidate-smoke", "flash"))
events(Event("log", "writing the card", "pi3-a", "candidate-smoke", "flash"))
events.close()
if args.hold:
    deadline = time.monotonic() + 60
    while not Path(args.hold).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
code = 1 if head.startswith(b"FAIL") else 3 if head.startswith(b"INFRA") else 0
outcome = {0: "passed", 1: "failed", 3: "error"}[code]
out = Path(args.report_dir)
out.mkdir(parents=True, exist_ok=True)
scenarios = [
    {"id": "octopi-1.0.0-update", "outcome": "passed"},
    {"id": "candidate-smoke", "outcome": outcome},
]
(out / "results.json").write_text(json.dumps({"passed": code == 0, "scenarios": scenarios}))
(out / "report.html").write_text(
    f"<!doctype html><title>report</title><h1>acceptance: {outcome}</h1>"
)
with open(args.runlog, "a") as f:
    f.write(f"end {os.getpid()}\n")
raise SystemExit(code)
