"""``edge-predict self-test MODEL``: replay the bundle's conformance kit on this machine, per format."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import click

from ..cli_support import exit_on_error
from ..conformance import self_test_bundle
from ..errors import ExitCode

__all__ = ["run_self_test"]


def run_self_test(model: str, *, model_format: str | None, threads: int | None, verify_key: str | None, fmt: str,
                  debug: bool) -> NoReturn:
    """The report on stdout (JSON with --output-format jsonl); exit 0 when every format passed, else 3."""
    with exit_on_error(debug):
        report = self_test_bundle(model, formats=[model_format] if model_format else None, threads=threads,
                                  verify_key=verify_key)
    click.echo(json.dumps(report.to_dict()) if fmt == "jsonl" else report.text())
    sys.exit(ExitCode.OK if report.passed else ExitCode.SELF_TEST_FAILED)
