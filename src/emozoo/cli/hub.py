"""``emozoo push`` and ``emozoo pull``: publish to and fetch from the Hugging Face Hub."""
from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("model_or_dir")
    @click.option("--repo", "repo_id", required=True, metavar="ORG/NAME", help="Hub model repo (created if missing).")
    @click.option("--revision", metavar="BRANCH", help="Branch to commit to (created from main if missing).")
    @click.option("--private", is_flag=True, help="Create the repo private.")
    @click.option("--token", help="Hub token with write access (default: HF_TOKEN or `hf auth login`).")
    @click.option("--message", "-m", "commit_message", help="Commit message.")
    def push(model_or_dir, repo_id, revision, private, token, commit_message):
        """Publish MODEL_OR_DIR (a save_pretrained folder or published weights' name) in one commit.

        The commit holds model.safetensors, config.json (with the weights' sha256) and a generated
        README.md model card. Nothing is sent unless the folder validates.
        """
        from .._hub import push_to_hub

        _quiet_hub()
        info = push_to_hub(model_or_dir, repo_id, revision=revision, private=private, token=token,
                           commit_message=commit_message)
        click.echo(f"pushed {repo_id}@{info.oid}: {info.commit_url}")
        click.echo(f'load it: emozoo.create("hf-hub:{repo_id}@{info.oid}", pretrained=True)')

    @cli.command()
    @click.argument("repo")
    def pull(repo):
        """Fetch REPO (ORG/NAME[@REVISION]) into the Hugging Face cache and check that it loads.

        REVISION is a branch, tag or commit sha. Once pulled, the model loads offline
        (HF_HUB_OFFLINE=1) with emozoo.create("hf-hub:ORG/NAME").
        """
        from .._config import ModelConfig
        from .._hub import parse_repo, pull as pull_repo

        repo_id, _ = parse_repo(repo)
        _quiet_hub()
        folder = pull_repo(repo)
        config = ModelConfig.load(folder)
        click.echo(f"pulled {repo_id}@{folder.name} ({config.architecture}, {config.num_classes} labels) "
                   f"into {folder}")
        click.echo(f"pin this exact version with hf-hub:{repo_id}@{folder.name}")


def _quiet_hub() -> None:
    """Silence huggingface_hub's retry warnings: a failure is reported once, as one line (progress bars stay)."""
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
