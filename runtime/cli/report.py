"""The one end of every streaming command: print each record as it comes, the summary on stderr, then the exit
code from the one table (``errors.ExitCode``): 0 all classified, 6 some inputs failed, 130 Ctrl-C, 143 SIGTERM,
or the code of the error that ended the stream (a watched folder removed …) after the summary."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, NoReturn

import click

from ..cli_support import exit_on_error
from ..errors import EdgeportError, ExitCode
from ..records import Summary, csv_header, escape_controls, format_record, to_record
from ..shutdown import SigtermStop, Terminated
from ..stream import SourceEvent, StateChange

__all__ = ["Echo", "print_stream"]

_STOP_CODES = {"interrupted": ExitCode.INTERRUPTED, "terminated": ExitCode.TERMINATED}


class Echo:
    """Whole lines only: records come from the loop, reload records from the reloader's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, text: str, err: bool = False) -> None:
        with self._lock:
            click.echo(text, err=err)

    def json(self, record: dict, fmt: str) -> None:
        """A side record (a model swap, a rejected update): stdout in jsonl, else stderr."""
        self(json.dumps(record, ensure_ascii=False), err=fmt != "jsonl")


def _event_text(record: dict) -> str:
    if record["event"] == "state":
        name = "/".join(str(record[key]) for key in ("source_id", "region") if record.get(key) is not None)
        since = f"frame {record['since_frame']}" if record.get("since_frame") is not None else record["since"]
        return escape_controls(f"[{name or record['source']}] state: {record['label']} ({record['score']:.2%}) since {since}"
                               + (f", was {record['previous']}" if record.get("previous") is not None else ""))
    detail = record.get("error") or (f"after {record['down_s']} s" if "down_s" in record else "")
    return f"[{record['source_id']}] {record['event']}: {record['source']}" + (f" ({detail})" if detail else "")


def print_stream(results: Callable[[Callable], Iterator], *, fmt: str, echo: Echo, describe: Callable[[], str],
                 with_ids: bool = False, with_regions: bool = False, closers: Iterable[Callable[[], object]] = (),
                 failures: Callable[[], list[BaseException]] = list, debug: bool = False) -> NoReturn:
    """Run ``results(gate)`` to its end, printing each record (events and states as JSON lines in jsonl, else on
    stderr); then the summary with ``describe()``, and exit. ``closers`` run once the stream stops, whatever stopped
    it; ``failures()`` gives a source's error that did not stop the others (its code is the exit code)."""
    if fmt == "csv":
        click.echo(csv_header(with_ids=with_ids, with_regions=with_regions))
    summary, stopped, failure = Summary(started=time.perf_counter()), None, None
    with SigtermStop() as sigterm, exit_on_error(debug):
        try:
            for item in results(sigterm.frames):
                if isinstance(item, (SourceEvent, StateChange)):
                    record = item.record()
                    echo(json.dumps(record, ensure_ascii=True)) if fmt == "jsonl" else echo(_event_text(record), err=True)
                else:
                    summary.add(item)  # counted before printed: a Ctrl-C in between never loses a shown record
                    echo(format_record(to_record(item), fmt))
        except KeyboardInterrupt:
            stopped = "interrupted"
        except Terminated:
            pass
        except EdgeportError as exc:  # the source failed mid-stream (a watched folder removed): summary first
            failure = exc
        finally:
            for close in closers:
                close()
        if sigterm.requested:
            stopped = "terminated"
    click.echo(f"{summary.text(time.perf_counter(), stopped=stopped)} ({describe()})", err=True)
    if failure is None and not stopped:
        failure = next((f for f in failures() if isinstance(f, EdgeportError)), None)
    if failure is not None:
        with exit_on_error(debug):
            raise failure
    sys.exit(_STOP_CODES[stopped] if stopped else ExitCode.SOME_INPUTS_FAILED if summary.failed else ExitCode.OK)
