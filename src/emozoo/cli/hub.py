"""``emozoo push`` and ``emozoo pull``: publish to and fetch from the Hugging Face Hub."""
from __future__ import annotations

import click


@click.command("push")
@click.argument("model_or_dir")
@click.option("--repo", "repo_id", required=True, metavar="ORG/NAME", help="Hub model repo (created if missing).")
@click.option("--revision", metavar="BRANCH", help="Branch to commit to (created from main if missing).")
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--token", help="Hub token with write access (default: HF_TOKEN or `hf auth login`).")
@click.option("--message", "-m", "commit_message", help="Commit message.")
@click.option("--notes", type=click.Path(exists=True, dir_okay=False),
              help="Markdown file added to the model card (e.g. what was tried and what it gave).")
@click.option("--license", "license_", metavar="SPDX", help="Licence of the weights, e.g. apache-2.0.")
@click.option("--to-dir", type=click.Path(file_okay=False),
              help="Write the repo's files into this folder instead of uploading them.")
def push_cmd(model_or_dir, repo_id, revision, private, token, commit_message, notes, license_, to_dir):
    """Publish MODEL_OR_DIR (a save_pretrained folder or published weights' name) in one commit.

    The commit holds model.safetensors, config.json (with the weights' sha256) and a generated
    README.md model card. Nothing is sent unless the folder validates. With --to-dir the same
    three files are written to a folder instead (how emozoo's shipped weights are made).
    """
    from pathlib import Path

    from .._publish import push_to_hub, write_repo

    notes_text = Path(notes).read_text() if notes else None
    if to_dir:
        folder = write_repo(model_or_dir, repo_id, to_dir, notes=notes_text, license=license_)
        click.echo(f"wrote {repo_id}'s files into {folder}")
        return
    _quiet_hub()
    info = push_to_hub(model_or_dir, repo_id, revision=revision, private=private, token=token,
                       commit_message=commit_message, notes=notes_text, license=license_)
    click.echo(f"pushed {repo_id}@{info.oid}: {info.commit_url}")
    click.echo(f'load it: emozoo.create("hf-hub:{repo_id}@{info.oid}", pretrained=True)')


@click.command("pull")
@click.argument("repo")
def pull_cmd(repo):
    """Fetch REPO (ORG/NAME[@REVISION]) into the Hugging Face cache and check that it loads.

    REVISION is a branch, tag or commit sha. Once pulled, the model loads offline
    (HF_HUB_OFFLINE=1) with emozoo.create("hf-hub:ORG/NAME").
    """
    from .._config import ModelConfig
    from .._hub import parse_repo
    from .._publish import pull as pull_repo

    repo_id, _ = parse_repo(repo)
    _quiet_hub()
    folder = pull_repo(repo)
    config = ModelConfig.load(folder)
    click.echo(f"pulled {repo_id}@{folder.name} ({config.architecture}, {config.num_classes} labels) "
               f"into {folder}")
    click.echo(f"pin this exact version with hf-hub:{repo_id}@{folder.name}")


COMMANDS = (push_cmd, pull_cmd)


def _quiet_hub() -> None:
    """Silence huggingface_hub's retry warnings: a failure is reported once, as one line (progress bars stay)."""
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
