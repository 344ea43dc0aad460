"""Benchmark results: one JSON file per benchmark, and the README table built from them."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def temp_dagster_home() -> str:
    """A fresh DAGSTER_HOME for a benchmark run (set in this process's environment)."""
    import os
    import tempfile

    home = tempfile.mkdtemp(prefix="predcheck-bench-")
    os.environ["DAGSTER_HOME"] = home
    Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def machine() -> dict[str, Any]:
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    return {"python": platform.python_version(), "cpu": cpu, "cores": len(__import__("os").sched_getaffinity(0))}


def save(name: str, command: str, rows: list[dict[str, Any]], details: dict[str, Any] | None = None) -> Path:
    """Write ``results/{name}.json``; each row: metric, ours, baseline, unit, ratio, target, met."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "command": command, "measured_at": time.strftime("%Y-%m-%d %H:%M"),
                                "machine": machine(), "rows": rows, "details": details or {}}, indent=1))
    render_readme()
    return path


def render_readme() -> None:
    """Rewrite the README's benchmark table from every results/*.json."""
    lines = ["| benchmark | metric | predcheck | alternative | ratio | target | met |",
             "|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        for row in result["rows"]:
            lines.append(f"| `{result['command']}` | {row['metric']} | {row['ours']} {row['unit']} | "
                         f"{row['baseline']} {row['unit']} | {row['ratio']} | {row['target']} | "
                         f"{'yes' if row['met'] else '**no**'} |")
    text = README.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        README.write_text(f"{head}{START}\n" + "\n".join(lines) + f"\n{END}{tail}")
