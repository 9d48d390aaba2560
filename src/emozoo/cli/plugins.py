"""``emozoo plugins``."""
from __future__ import annotations

import click

from .output import echo_json


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def plugins_cmd(as_json):
    """List plugins: distribution, version, hooks and what each registered."""
    from ..plugins import plugin_info

    infos = plugin_info()
    if as_json:
        echo_json([i.as_dict() for i in infos])
        return
    for info in infos:
        origin = f"{info.distribution} {info.version}" if info.distribution else "not packaged"
        kind = " (built-in)" if info.builtin else ""
        click.echo(f"{info.name}{kind}  [{origin}]")
        if info.error:
            click.echo(f"  FAILED: {info.error}")
        for what, names in info.registered.items():
            if names:
                click.echo(f"  {what}{'es' if what.endswith('s') else 's'}: {', '.join(names)}")


COMMANDS = (plugins_cmd,)
