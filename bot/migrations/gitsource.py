"""Migrations from a git repository: a branch, tag or commit, pinned to its commit.

The bot keeps its own bare mirror under the state directory and extracts
each commit into a read-only folder named by the commit hash, so a deploy
uses byte-for-byte the files that were validated, whatever the branch does
afterwards.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from bot.errors import MigrationSourceError, ToolMissing


def _git(*args: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    except FileNotFoundError:
        raise ToolMissing("git is not installed, so migrations cannot come from a repository.",
                          "Install git, or set migrations.dir instead of migrations.repo.") from None
    if done.returncode != 0:
        raise MigrationSourceError(f"git {args[0]} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no output'}.",
                                   "Check migrations.repo and that the bot can read it.")
    return done.stdout.strip()


def _mirror(repo: str, cache: Path) -> Path:
    bare = cache / hashlib.sha256(repo.encode()).hexdigest()[:16]
    if not (bare / "HEAD").exists():
        cache.mkdir(parents=True, exist_ok=True)
        _git("clone", "--mirror", "--quiet", repo, str(bare))
    else:
        _git("--git-dir", str(bare), "fetch", "--prune", "--quiet", "origin")
    return bare


def resolve_commit(bare: Path, ref: str | None) -> str:
    target = ref or "HEAD"
    try:
        return _git("--git-dir", str(bare), "rev-parse", "--verify", "--quiet", f"{target}^{{commit}}")
    except MigrationSourceError:
        raise MigrationSourceError(f"There is no branch, tag or commit called {target!r} in the migrations repository.",
                                   "Check the name; `git ls-remote` lists what exists.") from None


def checkout(repo: str, ref: str | None, subdir: str, cache: Path) -> tuple[Path, str]:
    """(folder holding the migrations at that commit, commit hash)."""
    bare = _mirror(repo, cache)
    commit = resolve_commit(bare, ref)
    target = cache / "commits" / commit
    if not target.exists():
        archive = subprocess.run(["git", "--git-dir", str(bare), "archive", "--format=tar", commit],
                                 capture_output=True, timeout=300, check=False)
        if archive.returncode != 0:
            raise MigrationSourceError(f"Could not read commit {commit[:10]} from the repository.", "")
        partial = target.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted extract
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(partial, filter="data")
        partial.rename(target)
    folder = target / subdir if subdir else target
    if not folder.is_dir():
        raise MigrationSourceError(f"Commit {commit[:10]} has no folder {subdir!r}.", "Check migrations.path.")
    return folder, commit
