"""Does analyst feedback cut false incidents on the following days, while attacks stay detected?

Day 1: every benign capture (the nfstream application captures, no attacks) is analysed into a
real DuckDB store and every incident (all false: the captures are benign) gets an `fp` verdict
with a suppression, exactly as `tapetum incidents verdict ID fp --suppress` does. Days 2..N: the
same benign captures are analysed again with `<store>.feedback.json` loaded (judged-normal
levels into the detectors, suppressions on alerts), and false incidents are counted. The days
are replays of the same captures (the same applications on the same hosts recurring), not new
benign behaviour. Then every lab attack capture (/work/labruns/*.labels.json) is evaluated with
and without the same feedback: attacks detected must not drop.

    python bench/bench_feedback.py [--days 3] [--labruns /work/labruns] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from tapetum.alerts.correlate import Correlator
from tapetum.alerts.feedback import Feedback, feedback_path, list_incidents, record_verdict
from tapetum.config import Config
from tapetum.evaluation.datasets import data_dir, load_dataset
from tapetum.evaluation.labels import capture_of, load_labels
from tapetum.evaluation.runner import CaptureRun, evaluate, run_capture
from tapetum.pipeline import Pipeline, run_id_for
from tapetum.registry import build_detectors
from tapetum.sinks.duckdb import DuckDBSink


def analyse_day(paths: list[str], store: Path | None, fb: Feedback | None) -> dict[str, Any]:
    """Each capture on its own (as `tapetum eval` does), optionally into the store."""
    incidents, suppressed, per = 0, 0, {}
    for p in paths:
        sinks = []
        if store is not None:
            sink = DuckDBSink(store, run_id_for([p], Config()))
            sink.begin_run(None, [p], "bench")
            sinks.append(sink)
        s = Pipeline(Config(), sinks, feedback=fb).run([p])
        for sink in sinks:
            sink.end_run({})
            sink.close()
        incidents += len(s.incidents)
        suppressed += sum(s.suppressed_alerts.values())
        if s.incidents:
            per[Path(p).name] = [i.title for i in s.incidents]
    return {"false_incidents": incidents, "suppressed_alerts": suppressed, "by_capture": per}


def with_feedback(run: CaptureRun, fb: Feedback, gap_s: float) -> CaptureRun:
    """What the pipeline does with a suppressor: drop matching alerts, correlate the rest."""
    kept, _ = fb.suppressor().split(run.alerts)
    corr = Correlator(gap_s)
    corr.add(kept)
    return dataclasses.replace(run, alerts=kept, incidents=corr.incidents())


def lab(labruns: Path, fb: Feedback | None) -> dict[str, Any]:
    runs = []
    cfg = Config()
    for lp in sorted(labruns.glob("*.labels.json")):
        labels = load_labels(lp)
        if not labels.attacks:
            continue
        dets = build_detectors(cfg)
        if fb is not None:
            fb.apply(dets)
        run = run_capture(capture_of(labels, lp), labels, cfg, detectors=dets)
        runs.append(with_feedback(run, fb, cfg.incidents.gap_s) if fb is not None else run)
    res = evaluate(runs)
    attacks = [a for c in res["captures"] for a in c["attacks"]]
    return {
        "attacks": len(attacks),
        "detected": sum(1 for a in attacks if a["detected"]),
        "missed": sorted(f"{a['id']}" for a in attacks if not a["detected"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--labruns", type=Path, default=Path("/work/labruns"))
    ap.add_argument("--work", type=Path, default=Path("bench/out/feedback"))
    ap.add_argument("--out", type=Path, default=Path("bench/out/feedback.json"))
    args = ap.parse_args()
    t0 = time.time()
    benign = [str(p) for p, lab_ in load_dataset("nfstream", data_dir()) if not lab_.attacks]
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "day1.duckdb"
    for f in (store, feedback_path(store)):
        f.unlink(missing_ok=True)
    no_fb = analyse_day(benign, store, None)
    days: list[dict[str, Any]] = [{"day": 1, **no_fb}]
    verdicts = 0
    for inc in list_incidents(store):
        record_verdict(store, inc["incident_id"], "fp", note="bench day 1", suppress=True)
        verdicts += 1
    fb = Feedback.load(feedback_path(store))
    for d in range(2, args.days + 1):
        days.append({"day": d, **analyse_day(benign, None, fb)})
    before = days[0]["false_incidents"]
    after = [d["false_incidents"] for d in days[1:]]
    reduction = 1.0 - (sum(after) / len(after)) / before if before and after else None
    # Ablation: judged-normal levels only (no suppressions), to see what the detectors learn.
    fb_levels = Feedback(msgspec.structs.replace(fb.data, suppressions=[]), fb.now_ns)
    levels_only = analyse_day(benign, None, fb_levels)["false_incidents"]
    out = {
        "benign_captures": len(benign),
        "days": days,
        "verdicts_day1": verdicts,
        "feedback_entries": {
            "suppressions": len(fb.data.suppressions),
            "accepted": len(fb.data.accepted),
        },
        "reduction": reduction,
        "levels_only_false_incidents": levels_only,
        "lab_without_feedback": lab(args.labruns, None),
        "lab_with_feedback": lab(args.labruns, fb),
        "elapsed_s": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "days"}, indent=1))
    for d in days:
        print(f"day {d['day']}: {d['false_incidents']} false incidents, "
              f"{d['suppressed_alerts']} alerts suppressed")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
