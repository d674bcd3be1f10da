"""Run every benchmark and collect its figures into a table, a plot and the README.

    .venv/bin/python bench/run_all.py [--only door,link] [--quick] [--out DIR] [--write-readme]
    .venv/bin/python bench/run_all.py --no-run --write-readme   # redo outputs from latest.json

Each benchmark runs as its own subprocess, one after the other (the figures are
latencies: two benchmarks at once would measure each other), and its last
stdout line is parsed as its JSON figures. Written to ``--out`` (default
``bench/results``):

- ``latest.json``: the machine (``uname -srm``, CPU model, cores, memory,
  Python, date, commit), every benchmark's figures, its arguments and run time,
  and the raw samples the plot is drawn from;
- ``figures.md``: one row per figure with its target and whether it is met;
- ``figures.png``: the door flow's latency distributions (card only, card +
  face) and the outbox drain over time.

``--write-readme`` puts the table and the machine line between
``<!-- figures:begin -->`` and ``<!-- figures:end -->`` in README.md, only after
a full run of every benchmark. ``--quick`` uses small sizes (a smoke test; its
figures mean little). Exit code 0 when every benchmark ran (targets missed are
marked in the table, not an error), 1 when one failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
BEGIN = "<!-- figures:begin -->"
END = "<!-- figures:end -->"
# Where the section goes in a README that has no markers yet.
README_ANCHOR = "## Configuration reference"


@dataclass(frozen=True)
class Bench:
    """One benchmark script and how to run it."""

    name: str
    quick_args: tuple[str, ...]
    timeout_s: float
    samples: bool = False  # accepts --samples-out FILE
    full_args: tuple[str, ...] = ()

    @property
    def script(self) -> Path:
        return REPO / "bench" / f"{self.name}.py"


BENCHES: tuple[Bench, ...] = (
    Bench("store", (), 300),
    Bench(
        "link",
        ("--backlog", "3000", "--latency-events", "50", "--seal-count", "200"),
        1200,
        samples=True,
    ),
    Bench("locks", ("--samples", "20", "--poll-seconds", "1"), 900),
    Bench("ble", ("--samples", "20"), 600),
    Bench("idcard", ("--n", "5", "--poll-ms", "100"), 300),
    Bench("face", ("--rounds", "1"), 1800),
    Bench("door", ("--rounds", "2"), 1800, samples=True),
    Bench("metrics", ("--grants", "300", "--scrapes", "20", "--observations", "1000"), 1200),
    Bench("eid", ("--rounds", "5", "--camera-rounds", "2"), 900),
)


@dataclass(frozen=True)
class Target:
    """A figure's target from the issues: ``value <op> limit``."""

    op: str  # "<=" or ">="
    limit: float
    text: str

    def met(self, value: float) -> bool:
        return value <= self.limit if self.op == "<=" else value >= self.limit


TARGETS: dict[tuple[str, str], Target] = {
    ("link", "drain_events_per_s"): Target(">=", 2000, "≥ 2,000"),
    ("link", "latency_p99_ms"): Target("<=", 200, "≤ 200"),
    ("locks", "unlock_latency_p99_ms"): Target("<=", 100, "≤ 100 (16 locks)"),
    ("face", "verify_ms_p95_480p"): Target("<=", 100, "≤ 100"),
    ("face", "speedup_vs_dlib"): Target(">=", 3, "≥ 3"),
    ("face", "rss_mb"): Target("<=", 150, "≤ 150"),
    ("face", "far_western"): Target("<=", 0.001, "≤ 0.001 (0.1 %)"),
    ("face", "far_east_asian"): Target("<=", 0.001, "≤ 0.001 (0.1 %)"),
    ("face", "frr_attempt_east_asian"): Target("<=", 0.05, "≤ 0.05"),
    ("face", "apcer"): Target("<=", 0, "0"),
    ("face", "bpcer"): Target("<=", 0.05, "≤ 0.05"),
    ("door", "decide_ms_p99_10k_grants"): Target("<=", 5, "≤ 5"),
    ("door", "card_to_unlock_ms_p95"): Target("<=", 300, "≤ 300"),
    ("door", "card_face_to_unlock_ms_p95"): Target("<=", 1000, "≤ 1,000"),
    ("eid", "code_to_unlock_ms_p95"): Target("<=", 1000, "≤ 1,000 (platform ≤ 300)"),
}
# Figures with a reference value but nothing to pass or fail.
NOTES: dict[tuple[str, str], str] = {
    ("idcard", "wire_ms_read_reply"): "≈ 110 (wire time)",
}


def note(text: str) -> None:
    print(f"[run_all] {text}", file=sys.stderr, flush=True)


# --- the machine -----------------------------------------------------------------------------


def _cpuinfo_model(text: str) -> str:
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return "unknown"


def _meminfo_gib(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        uname = subprocess.run(
            ["uname", "-srm"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        u = platform.uname()
        uname = f"{u.system} {u.release} {u.machine}"
    return {
        "uname": uname,
        "cpu": _cpuinfo_model(_read("/proc/cpuinfo")),
        "cores": os.cpu_count(),
        "memory_gib": _meminfo_gib(_read("/proc/meminfo")),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


# --- running ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One benchmark's run."""

    figures: dict[str, Any] | None
    error: str | None
    seconds: float
    args: list[str]
    samples: dict[str, Any] | None = None


def parse_last_json(stdout: str) -> dict[str, Any]:
    """The figures: the last non-empty stdout line, a JSON object."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("printed nothing on stdout")
    try:
        doc = json.loads(lines[-1])
    except ValueError:
        raise ValueError(f"last stdout line is not JSON: {lines[-1][:120]!r}") from None
    if not isinstance(doc, dict):
        raise ValueError("last stdout line is JSON but not an object")
    return doc


def run_bench(bench: Bench, quick: bool, workdir: Path) -> Outcome:
    """Run one benchmark to completion (or its timeout); never raises for its failures."""
    args = list(bench.quick_args if quick else bench.full_args)
    samples_file = workdir / f"{bench.name}-samples.json"
    if bench.samples:
        args += ["--samples-out", str(samples_file)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    started = time.monotonic()
    # A session of its own, so a timeout ends the benchmark and every process it started.
    proc = subprocess.Popen(
        [sys.executable, str(bench.script), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    err_tail: deque[str] = deque(maxlen=3)

    def copy_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip():
                err_tail.append(line.strip())
            sys.stderr.write(line)
            sys.stderr.flush()

    err_thread = threading.Thread(target=copy_stderr, daemon=True)
    err_thread.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        _kill_group(proc)

    timer = threading.Timer(bench.timeout_s, kill)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            print(f"[{bench.name}] {line.rstrip()}", file=sys.stderr, flush=True)
        code = proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        timer.cancel()
    err_thread.join(5)
    seconds = round(time.monotonic() - started, 1)
    if timed_out.is_set():
        return Outcome(None, f"timed out after {bench.timeout_s:.0f} s", seconds, args)
    last_err = f"; stderr: {err_tail[-1][:200]}" if err_tail else ""
    try:
        figures = parse_last_json("".join(lines))
    except ValueError as exc:
        return Outcome(None, f"exit code {code}: {exc}{last_err}", seconds, args)
    if code != 0:
        return Outcome(None, f"exit code {code}{last_err}", seconds, args)
    samples = None
    if bench.samples and samples_file.exists():
        samples = json.loads(samples_file.read_text(encoding="utf-8"))
    return Outcome(figures, None, seconds, args, samples)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_all(benches: Sequence[Bench], quick: bool) -> dict[str, Any]:
    """Run the benchmarks in order and return the document saved as latest.json."""
    doc: dict[str, Any] = {
        "machine": machine(),
        "run": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": _commit(),
            "quick": quick,
            "benchmarks": [b.name for b in benches],
        },
        "benchmarks": {},
        "samples": {},
    }
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lockgw-run-all-") as tmp:
        for bench in benches:
            note(f"{bench.name}: running bench/{bench.script.name}")
            out = run_bench(bench, quick, Path(tmp))
            state = "ok" if out.error is None else f"FAILED ({out.error})"
            note(f"{bench.name}: {state} in {out.seconds} s ({' '.join(out.args) or 'defaults'})")
            doc["benchmarks"][bench.name] = {
                "figures": out.figures,
                "error": out.error,
                "seconds": out.seconds,
                "args": out.args,
            }
            if out.samples is not None:
                doc["samples"][bench.name] = out.samples
    doc["run"]["seconds"] = round(time.monotonic() - began, 1)
    doc["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return doc


# --- the table -------------------------------------------------------------------------------


def format_value(value: object) -> str:
    """A figure for the table: thousands separated, otherwise as measured."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return str(value)


def figures_table(
    figures: Mapping[str, Mapping[str, object] | None],
    errors: Mapping[str, str] | None = None,
    targets: Mapping[tuple[str, str], Target] = TARGETS,
) -> str:
    """A markdown table: benchmark, figure, value, target, met (✓/✗, blank without target).

    ``figures`` maps a benchmark to its JSON figures (None when it failed, with the
    reason in ``errors``). A target whose figure is missing from a benchmark that ran
    is shown as missed, so a renamed figure cannot pass silently.
    """
    errors = errors or {}
    rows = ["| benchmark | figure | value | target | met |", "|---|---|---:|---|:---:|"]
    for bench, values in figures.items():
        if values is None:
            reason = errors.get(bench, "no figures").replace("|", "\\|")
            rows.append(f"| {bench} | (failed: {reason}) | — | | ✗ |")
            continue
        for name, value in values.items():
            target = targets.get((bench, name))
            if target is None:
                ref = NOTES.get((bench, name), "")
                rows.append(f"| {bench} | `{name}` | {format_value(value)} | {ref} | |")
                continue
            number = value if isinstance(value, int | float) else math.nan
            ok = not isinstance(value, bool) and math.isfinite(number) and target.met(number)
            mark = "✓" if ok else "✗"
            rows.append(f"| {bench} | `{name}` | {format_value(value)} | {target.text} | {mark} |")
        for (t_bench, t_name), target in targets.items():
            if t_bench == bench and t_name not in values:
                rows.append(f"| {bench} | `{t_name}` | missing | {target.text} | ✗ |")
    return "\n".join(rows)


def machine_line(doc: Mapping[str, Any]) -> str:
    """One sentence: when, at which commit, on what."""
    m, run = doc["machine"], doc["run"]
    mem = f", {m['memory_gib']} GiB RAM" if m.get("memory_gib") else ""
    load, end = m.get("load_avg_at_start") or [], m.get("load_avg_at_end") or []
    load_text = f"; load average {load[0]} at start" if load else ""
    load_text += f", {end[0]} at the end" if load and end else ""
    commit = f" at commit `{run['commit']}`" if run.get("commit") else ""
    kind = "quick smoke run (small sizes)" if run.get("quick") else "full run"
    return (
        f"{kind.capitalize()} of `bench/run_all.py` on {run['date']}{commit}: "
        f"{m['uname']}, {m['cpu']}, {m['cores']} cores{mem}, Python {m['python']}"
        f"{load_text}; {run.get('seconds', '?')} s in all."
    )


def section(doc: Mapping[str, Any]) -> str:
    """The table with its machine line (what figures.md and the README show)."""
    benches = doc["benchmarks"]
    table = figures_table(
        {name: b["figures"] for name, b in benches.items()},
        {name: b["error"] for name, b in benches.items() if b.get("error")},
    )
    units = (
        "Units are in the figure names (`_ms`, `_us`, `_s`, `_per_s`, `_mb`); FAR is a fraction. "
        "Targets are those of the issues; figures without one are context."
    )
    return f"{machine_line(doc)}\n\n{table}\n\n{units}\n"


def splice_readme(text: str, body: str) -> str:
    """``text`` with ``body`` between the figures markers; the rest kept byte for byte.

    Without markers, a "## Figures" section is added before the configuration
    reference (or at the end).
    """
    block = f"{BEGIN}\n\n{body.strip()}\n\n{END}"
    begins, ends = text.count(BEGIN), text.count(END)
    if begins == 0 and ends == 0:
        new = f"## Figures\n\n{block}\n\n"
        at = text.find(f"\n{README_ANCHOR}\n")
        if at >= 0:
            return text[: at + 1] + new + text[at + 1 :]
        return text.rstrip("\n") + "\n\n" + new.rstrip("\n") + "\n"
    if begins != 1 or ends != 1:
        raise ValueError(f"README must hold {BEGIN} and {END} once each")
    start, stop = text.index(BEGIN), text.index(END)
    if stop < start:
        raise ValueError(f"README has {END} before {BEGIN}")
    return text[:start] + block + text[stop + len(END) :]


# --- the plot --------------------------------------------------------------------------------


def plot(doc: Mapping[str, Any], path: Path) -> None:
    """Door flow latency distributions (left) and the outbox drain over time (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    door = doc.get("samples", {}).get("door")
    if door:
        for key, label, colour, limit in (
            ("card_only_ms", "card only (re-entry)", "tab:blue", 300),
            ("card_face_ms", "card + face (480p)", "tab:orange", 1000),
        ):
            values = sorted(float(v) for v in door.get(key, []))
            if not values:
                continue
            ys = [(i + 1) / len(values) for i in range(len(values))]
            left.step(values, ys, where="post", color=colour, label=f"{label}, n={len(values)}")
            left.plot(values, ys, "o", color=colour, markersize=3)
            left.axvline(limit, color=colour, linestyle="--", linewidth=1)
            left.annotate(
                f"p95 target {limit} ms",
                xy=(limit, 0.5),
                xytext=(-4, 0),
                textcoords="offset points",
                rotation=90,
                ha="right",
                va="center",
                color=colour,
                fontsize=8,
            )
        left.axhline(0.95, color="grey", linestyle=":", linewidth=1, label="p95")
        left.set_ylim(0, 1.02)
        left.set_xlim(left=0)
        left.legend(loc="lower right", fontsize=8)
    else:
        door_run = doc.get("benchmarks", {}).get("door")
        what = "failed" if door_run and door_run.get("error") else "not run"
        left.text(0.5, 0.5, f"door benchmark {what}", ha="center", va="center")
    left.set_title("Door flow: card presented to relay switched")
    left.set_xlabel("latency (ms)")
    left.set_ylabel("share of presentations ≤ latency")

    _plot_drain(right, doc)
    right.set_title("Outbox drain: a backlog until covered by sync.ack")
    right.set_xlabel("time since the link started (s)")
    right.set_ylabel("events left in the outbox")

    fig.suptitle(machine_line(doc), fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_drain(ax: Any, doc: Mapping[str, Any]) -> None:
    link = doc.get("benchmarks", {}).get("link")
    samples = doc.get("samples", {}).get("link")
    figures = (link or {}).get("figures")
    if samples and samples.get("points"):
        ts = [float(t) for t, _ in samples["points"]]
        left = [int(n) for _, n in samples["points"]]
        backlog = int(samples.get("backlog", left[0]))
        rate = figures.get("drain_events_per_s") if figures else None
        label = f"measured, mean {format_value(rate)}/s" if rate else "measured"
        ax.plot(ts, left, color="tab:green", label=label)
    elif figures and figures.get("drain_events_per_s"):
        rate = float(figures["drain_events_per_s"])
        backlog = _link_backlog(doc)
        ax.plot(
            [0, backlog / rate],
            [backlog, 0],
            color="tab:green",
            linestyle="-.",
            label=f"from the mean rate {format_value(rate)}/s (no samples)",
        )
    else:
        what = "failed" if link and link.get("error") else "not run"
        ax.text(0.5, 0.5, f"link benchmark {what}", ha="center", va="center")
        return
    ax.plot([0, backlog / 2000], [backlog, 0], color="grey", linestyle="--", label="target 2,000/s")
    ax.set_ylim(0, backlog * 1.05)
    ax.set_xlim(left=0)
    ax.legend(fontsize=8)


def _link_backlog(doc: Mapping[str, Any]) -> int:
    args = doc.get("benchmarks", {}).get("link", {}).get("args", [])
    if "--backlog" in args:
        return int(args[args.index("--backlog") + 1])
    return 100_000


# --- outputs and the command line ------------------------------------------------------------


def write_outputs(doc: Mapping[str, Any], out: Path) -> None:
    """latest.json, figures.md and figures.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(
        json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    plot_line = "\n![door flow latency and outbox drain](figures.png)\n"
    (out / "figures.md").write_text(
        "# Benchmark figures\n\n" + section(doc) + plot_line, encoding="utf-8"
    )
    plot(doc, out / "figures.png")


def is_full_run(doc: Mapping[str, Any]) -> bool:
    """Every benchmark ran at full size and gave figures."""
    benches = doc.get("benchmarks", {})
    return not doc.get("run", {}).get("quick") and all(
        benches.get(b.name, {}).get("figures") for b in BENCHES
    )


def write_readme(doc: Mapping[str, Any], readme: Path) -> None:
    """Put the table of a full run into the README's figures section."""
    body = section(doc) + (
        "\n![door flow latency and outbox drain](bench/results/figures.png)\n\n"
        "`.venv/bin/python bench/run_all.py --write-readme` runs every benchmark again "
        "(about 9 minutes; on a quiet machine) and rewrites this section; "
        "`bench/results/latest.json` holds the raw figures and samples.\n"
    )
    readme.write_text(splice_readme(readme.read_text(encoding="utf-8"), body), "utf-8")


def _select(only: str | None) -> list[Bench]:
    if not only:
        return list(BENCHES)
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {b.name: b for b in BENCHES}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"unknown benchmark {', '.join(unknown)!s}; choose from {', '.join(known)}"
        )
    return [b for b in BENCHES if b.name in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="NAMES", help="comma-separated benchmarks to run")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--write-readme", action="store_true", help="update README's figures")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-run", action="store_true", help="redo the outputs from OUT/latest.json"
    )
    args = parser.parse_args(argv)
    try:
        benches = _select(args.only)
    except ValueError as exc:
        print(f"run_all: {exc}", file=sys.stderr)
        return 2
    if args.write_readme and (args.quick or args.only):
        print("run_all: --write-readme needs a full run (no --quick, no --only)", file=sys.stderr)
        return 2
    if args.no_run:
        latest = args.out / "latest.json"
        try:
            doc = json.loads(latest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"run_all: cannot read {latest}: {exc}", file=sys.stderr)
            return 1
    else:
        try:
            doc = run_all(benches, args.quick)
        except KeyboardInterrupt:
            return 130
    write_outputs(doc, args.out)
    note(f"wrote {args.out / 'latest.json'}, figures.md, figures.png")
    print(section(doc))
    failed = [name for name, b in doc["benchmarks"].items() if b.get("error")]
    if args.write_readme:
        if not is_full_run(doc):
            print("run_all: README not updated: not a full run of every benchmark", file=sys.stderr)
            return 1
        try:
            write_readme(doc, args.readme)
        except (OSError, ValueError) as exc:
            print(f"run_all: README not updated: {exc}", file=sys.stderr)
            return 1
        note(f"updated {args.readme}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
