"""The console table of a sweep, from result rows alone (no torch import)."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _fmt(value: Optional[float], digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(fraction: Optional[float]) -> str:
    return "-" if fraction is None else f"{fraction * 100:.1f}"


def build_table(rows: Iterable[Dict[str, Any]], title: str = "") -> Table:
    """One line per cell; a cell that is not ``ok`` shows its status and reason, never a blank."""
    table = Table(title=title, title_justify="left")
    for name in ("batch", "input", "output", "status", "latency s", "cv %", "tokens/s", "TTFT ms",
                 "TPOT ms", "TPOT limit ms", "MBU %", "MFU %", "decode tok/s", "prefill tok/s", "peak GiB"):
        table.add_column(name, justify="left" if name == "status" else "right")
    for row in rows:
        status = row.get("status", "?")
        cells = [str(row.get("batch_size")), str(row.get("input_length")), str(row.get("output_length"))]
        if status != "ok":
            reason = row.get("error") or row.get("reason") or ""
            # escape: allocator messages start with "[enforce fail at ...]", which is rich markup
            table.add_row(*cells, f"[red]{status}[/red] {escape(reason[:60])}", *["-"] * 11)
            continue
        flags = []
        if row.get("noisy"):
            flags.append("[yellow]noisy[/yellow]")
        if row.get("outputs_match") is False:
            flags.append("[red]outputs differ[/red]")
        cv = row.get("latency_cv")
        table.add_row(
            *cells,
            " ".join(["ok", *flags]),
            _fmt(row.get("latency_s"), 4),
            _fmt(cv * 100 if cv is not None else None, 1),
            _fmt(row.get("tokens_per_s"), 1),
            _fmt(row.get("ttft_ms"), 2),
            _fmt(row.get("tpot_ms"), 2),
            _fmt(row.get("tpot_limit_ms"), 2),  # the decode step at peak bandwidth
            _percent(row.get("mbu")),
            _percent(row.get("mfu")),
            _fmt(row.get("decode_tokens_per_s"), 1),
            _fmt(row.get("prefill_tokens_per_s"), 0),
            _fmt(row.get("peak_memory_gib"), 2),
        )
    return table


def make_console() -> Console:
    """A console that does not squeeze the table to 80 columns when output is piped to a file."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    return console


def print_table(rows: Iterable[Dict[str, Any]], title: str = "", console: Optional[Console] = None) -> None:
    (console or make_console()).print(build_table(rows, title))
