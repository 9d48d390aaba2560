"""The ``emozoo`` command line. Each command group lives in its own module of this package.

Commands are module-level click commands (``from emozoo.cli.predict import predict_cmd``), listed in each
module's ``COMMANDS`` and attached to a fresh root group by :func:`build_cli`, which then lets plugins add
theirs (``register_commands``).
"""
from __future__ import annotations

import sys

import click

from ..errors import EmozooError


class EmozooGroup(click.Group):
    """A click group that shows an :class:`EmozooError` as one line and exits with status 1."""

    def parse_args(self, ctx, args):
        ctx.meta["emozoo.argv"] = list(args)  # the exact command line, recorded in trained models' recipes
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EmozooError as exc:
            raise click.ClickException(str(exc)) from None


def build_cli() -> click.Group:
    """Build the root command group, with plugin commands (``register_commands``) added."""
    from .._version import __version__
    from ..plugins import call_register_commands
    from . import bench, hub, models, plugins, predict, serve, train

    @click.group(cls=EmozooGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="emozoo")
    def cli():
        """emozoo: facial expression recognition models (EmoXNet, EmoXNetLite) and their plugins."""

    for module in (models, plugins, train, hub, bench, predict, serve):
        for command in module.COMMANDS:
            cli.add_command(command)
    call_register_commands(cli)
    return cli


def main(argv=None) -> None:
    """Console entry point."""
    try:
        cli = build_cli()
    except EmozooError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    cli.main(args=argv, prog_name="emozoo")
