"""The forecaster on real execution traces (../shared/data), next to the baselines a reviewer asks for.

Runs what ``predcheck trace-eval`` runs, on:
    - Google cluster-data 2011 job events, label ``fail``, trained on days < 17, scored on days
      17-21.58 (targets: AUPRC >= 0.60 and AUROC >= 0.95);
    - KTH SP2 (SWF), label ``overrun``, chronological 75/25 split (target: AUPRC >= 0.50);
    - FlowBench (both workflows), label ``overrun``, 75/25 (no target: reported).
Each row compares our better family with the best baseline on the held-out period (a ratio), and
the JSON keeps every model's AUROC/AUPRC/Brier/ECE, overall and on "first failure after a success".

    .venv/bin/python benchmarks/forecast_traces.py [--data ../shared/data] [--only google2011]
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    # (name, format, inputs under the data dir, label, split, targets)
    ("google2011", "google2011", ["google2011/job_events"], "fail", "17d", {"auprc": 0.60, "auroc": 0.95}),
    ("kth_sp2", "swf", ["swf/KTH-SP2-1996-2.1-cln.swf.gz"], "overrun", "0.75", {"auprc": 0.50}),
    ("flowbench", "flowbench", ["flowbench"], "overrun", "0.75", {}),
]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, os.path.dirname(__file__))
    from _results import RESULTS, save

    from predcheck_dagster.trace_eval import Split, evaluate, table, write_outputs
    from predcheck_dagster.traces import read_trace

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--only", action="append")
    args = parser.parse_args()
    rows, details = [], {}
    for name, fmt, inputs, label, split, targets in CASES:
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        frame, report = read_trace(fmt, [os.path.join(args.data, p) for p in inputs], progress=False)
        result = evaluate(frame, label, Split.parse(split), log=print, progress=False)
        result["timings"]["read_s"] = time.perf_counter() - t0 - result["timings"]["total_s"]
        print(f"== {name} ({label}, split {split})\n{table(result)}")
        write_outputs(result, str(RESULTS / "traces" / f"{name}_{label}.json"),
                      {"format": fmt, "inputs": inputs, "split_at": split, "read_report": report.summary()})
        overall = {k: v["overall"] for k, v in result["results"].items()}
        ours = max(("xgboost", "lstm"), key=lambda f: overall[f]["auprc"])
        baseline = max((k for k in overall if k not in ("xgboost", "lstm")), key=lambda k: overall[k]["auprc"])
        for metric in ("auprc", "auroc"):
            if metric == "auroc" and metric not in targets:
                continue
            value, base = overall[ours][metric], overall[baseline][metric]
            target = targets.get(metric)
            rows.append({"metric": f"{name} `{label}` {metric.upper()} on the held-out period: {ours} vs "
                                   f"{baseline.replace('_', ' ')} (xgboost {overall['xgboost'][metric]:.3f}, "
                                   f"lstm {overall['lstm'][metric]:.3f})",
                         "ours": round(value, 3), "baseline": round(base, 3), "unit": "",
                         "ratio": round(value / base, 2), "target": f">= {target}" if target else "reported",
                         "met": value >= target if target else True})
        details[name] = {"label": label, "split": split, "n_train": result["n_train"], "n_test": result["n_test"],
                         "results": result["results"], "timings": result["timings"]}
    save("forecast_traces", "benchmarks/forecast_traces.py", rows, details)
    if not args.only:
        render_doc(details)


def render_doc(details: dict) -> None:
    """The full tables (every model and baseline) into docs/forecaster.md between its markers."""
    doc = ROOT / "docs" / "forecaster.md"
    start, end = "<!-- traces:start -->", "<!-- traces:end -->"
    fmt = lambda v: "n/a" if v is None or v != v else f"{v:.3f}"  # noqa: E731
    lines = []
    for name, d in details.items():
        lines += [f"**{name}**, label `{d['label']}`, split `{d['split']}`: {d['n_train']:,} training and "
                  f"{d['n_test']:,} held-out attempts; features {d['timings']['features_s']:.0f} s, XGBoost "
                  f"{d['timings']['train_xgboost_s']:.0f} s, LSTM {d['timings']['train_lstm_s']:.0f} s.", "",
                  "| model | AUROC | AUPRC | Brier | ECE | first failure after a success: AUROC | AUPRC |",
                  "|---|---|---|---|---|---|---|"]
        for model, r in d["results"].items():
            o, f = r["overall"], r["first_failure_after_success"]
            lines.append(f"| {model} | {fmt(o['auroc'])} | {fmt(o['auprc'])} | {fmt(o['brier'])} | {fmt(o['ece'])} | "
                         f"{fmt(f['auroc'])} | {fmt(f['auprc'])} |")
        lines.append("")
    text = doc.read_text()
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{start}\n" + "\n".join(lines) + f"{end}{tail}")


if __name__ == "__main__":
    main()
