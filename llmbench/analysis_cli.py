"""The analysis commands: plot, report, compare. They read result files only (no torch import).

    python benchmark.py plot RESULTS.jsonl [MORE.jsonl ...] [--out DIR] [--format png|svg]
    python benchmark.py report RESULTS.jsonl [...] [--max-latency S | --max-tpot-ms MS | --max-ttft-ms MS]
    python benchmark.py compare A.jsonl B.jsonl [--fail-above PCT]

Bad arguments print one line and exit 2. ``compare --fail-above`` exits 1 on a regression.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from llmbench.report import AnalysisError, load_result_files

COMMANDS = ("plot", "report", "compare")


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; the house style is one line and exit 2."""

    def error(self, message: str):
        raise AnalysisError(f"{self.prog}: {message}")


def _float_at_least(minimum: float, inclusive: bool):
    """An argparse type: a finite number above (or at) ``minimum``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= minimum if inclusive else value > minimum) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'>=' if inclusive else '>'} {minimum:g}")
        return value
    return parse


_positive_float = _float_at_least(0.0, inclusive=False)
_non_negative_float = _float_at_least(0.0, inclusive=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="benchmark.py", description="Charts, tables and comparisons from result files.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    plot = sub.add_parser("plot", help="write the charts")
    plot.add_argument("results", nargs="+", help="JSONL result files")
    plot.add_argument("--out", default="plots", help="output folder (default: plots)")
    plot.add_argument("--format", default="png", choices=["png", "svg"], help="image format (default: png)")

    report = sub.add_parser("report", help="best throughput under a latency limit, and the frontier")
    report.add_argument("results", nargs="+", help="JSONL result files")
    limit = report.add_mutually_exclusive_group()
    limit.add_argument("--max-latency", type=_positive_float, metavar="SECONDS",
                       help="limit on the end-to-end latency of a generate call")
    limit.add_argument("--max-tpot-ms", type=_positive_float, metavar="MS", help="limit on the time per output token")
    limit.add_argument("--max-ttft-ms", type=_positive_float, metavar="MS", help="limit on the time to first token")

    compare = sub.add_parser("compare", help="B / A per matching cell, with significance")
    compare.add_argument("a", metavar="A.jsonl")
    compare.add_argument("b", metavar="B.jsonl")
    compare.add_argument("--fail-above", type=_non_negative_float, metavar="PCT",
                         help="exit 1 when B is slower than A by more than PCT %% on any cell (beyond the noise)")
    return parser


def run_plot(args) -> int:
    from llmbench.plots import plot_all

    written = plot_all(load_result_files(args.results), args.out, args.format)
    for kind, paths in written.items():
        for path in paths:
            print(f"{kind:22s} {path}")
    print(f"{sum(len(p) for p in written.values())} charts written to {args.out}")
    return 0


def run_report(args) -> int:
    from llmbench.report import latest_rows, print_report

    if args.max_tpot_ms is not None:
        field, limit = "tpot_ms", args.max_tpot_ms
    elif args.max_ttft_ms is not None:
        field, limit = "ttft_ms", args.max_ttft_ms
    else:
        field, limit = "latency_s", args.max_latency
    print_report(latest_rows(load_result_files(args.results)), field, limit)
    return 0


def run_compare(args) -> int:
    from llmbench.compare import compare_rows, print_comparison, regressions

    cells = compare_rows(load_result_files([args.a]), load_result_files([args.b]))
    print_comparison(cells, args.a, args.b)
    if args.fail_above is None:
        return 0
    found = regressions(cells, args.fail_above)
    for line in found:
        print(f"regression: {line}")
    print(f"{len(found)} regression(s) above {args.fail_above:g}% (B slower than A beyond the noise)")
    return 1 if found else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run one analysis command; returns the exit status."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
        return {"plot": run_plot, "report": run_report, "compare": run_compare}[args.command](args)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
