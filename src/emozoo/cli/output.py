"""What every command shares: JSON output for scripts."""
from __future__ import annotations

import json

import click


def echo_json(data) -> None:
    """Print ``data`` as indented JSON (``--json`` output); anything not JSON-native is written as text."""
    click.echo(json.dumps(data, indent=2, default=str))
