"""`facemoment trace summary`: what a trace.jsonl says, without jq.

The reader (trace_reader) streams the file line by line, so a long run's trace
never has to fit in memory as records. Lines that are not records (garbage, a torn
last line from a run that was killed mid-write, JSON that is not an object with a
``record_type``) are counted and reported, never fatal.

Frame drops count ``dropped_count`` when a record has it: the ZMQ source caps the
``dropped_frame_ids`` list of a wire gap, and ``dropped_count`` keeps the total."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List

from facemoment.runtime.why import why_lines
from facemoment.tools.trace_reader import TraceFileError, number
from facemoment.tools.trace_summary import Table, read_line, summarize_trace, summary_tables


def format_table(table: Table) -> List[str]:
    lines = [table.title]
    if not table.rows:
        return lines + ["  none"]
    cells = [[_fmt(v) for v in row] for row in [table.headers, *table.rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.headers))]
    # Numbers right-aligned, text left-aligned.
    numeric = [
        all(v is None or number(v) is not None for v in (row[i] for row in table.rows))
        for i in range(len(table.headers))
    ]
    for row in cells:
        parts = [v.rjust(w) if right else v.ljust(w) for v, w, right in zip(row, widths, numeric)]
        lines.append("  " + "  ".join(parts).rstrip())
    if table.note:
        lines.append(f"  ({table.note})")
    return lines


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_summary(summary: Dict[str, Any]) -> str:
    lines = [f"Trace summary: {summary['file']}", read_line(summary)]
    for example in summary["read"]["bad_examples"]:
        lines.append(f"  unreadable line {example['line']}: {example['text']}")
    bottleneck = summary["bottleneck"]
    lines.append(f"bottleneck: {bottleneck}" if bottleneck else "bottleneck: none (no timing records)")
    fired = sum(t["count"] for t in summary["triggers"].values())
    why = why_lines(summary.get("gate_tallies") or {}, fired)
    if why:
        lines.append("")
        lines.extend(why)
    for table in summary_tables(summary):
        lines.append("")
        lines.extend(format_table(table))
    return "\n".join(lines)


def cmd_trace_summary(args: argparse.Namespace) -> int:
    try:
        summary = summarize_trace(args.trace)
    except TraceFileError as exc:
        print(f"facemoment trace summary: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(summary, indent=2) if args.json else format_summary(summary)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # The reader went away (`| head`): not a problem of the trace. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def add_trace_args(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Register `trace` (with `summary`) on a CLI's sub-command parsers."""
    trace = subparsers.add_parser("trace", help="tools for trace.jsonl files")
    trace_sub = trace.add_subparsers(dest="trace_command", required=True)
    p = trace_sub.add_parser(
        "summary",
        help="bottlenecks, drops, sync delays, triggers and counts of a trace",
        description="Summarize a trace.jsonl: processing time per component, drops, sync delays, "
        "triggers, gate changes and record counts. Unreadable lines are counted, not fatal.",
    )
    p.add_argument("trace", help="a trace.jsonl file")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_trace_summary)
    return trace
