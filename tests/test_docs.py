"""The documentation stands on its own: nothing points outside the repository, BENCHMARKS.md stays a short
report, and every file, folder or link that README.md, BENCHMARKS.md and docs/*.md cite exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Inputs that live beside the repository on the machine it was written on, not in a clone.
OUTSIDE = ("../shared", "shared/GRAM.md", "shared/DESIGN.md")
# Which tracked files the OUTSIDE check reads: every text file kind the repository holds.
CHECKED_SUFFIXES = (".md", ".py", ".sh", ".toml", ".yml", ".yaml", ".txt", ".js", ".html", ".css", ".json")
EXEMPT = {Path(__file__).resolve().relative_to(ROOT).as_posix()}  # this file names the strings it bans
MAX_BENCHMARK_LINES = 320
# Cited docs written on a branch not merged yet; remove an entry once its file exists.
PENDING: set[str] = set()

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# A repository path anywhere in the text (prose, inline code, code blocks): it starts at a top-level folder
# and stops at a character no path here uses, so `model/weights/<name>.md` is checked as model/weights/;
# a glob (`tests/test_loadtests_*.py`) must match something.
TOP = ("model", "service", "kernels", "loadtests", "tests", "deploy", "docs", "examples")
REPO_PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(TOP) + r")/[\w./*-]*)")
# BENCHMARKS.md names its result folders without the loadtests/results/ prefix.
RESULT_FOLDER = re.compile(r"`((?:sweep|quality|temperature|overhead|step_scaling)-[\w.-]+)`")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in out.split("\0") if p]


def user_docs() -> list[Path]:
    return [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def test_no_tracked_file_points_outside_the_repository() -> None:
    offenders = []
    for rel in tracked_files():
        if not rel.endswith(CHECKED_SUFFIXES) or rel in EXEMPT:
            continue
        path = ROOT / rel
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if any(s in line for s in OUTSIDE):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "point to docs/GRAM.md or docs/ARCHITECTURE.md instead:\n" + "\n".join(offenders)


def test_benchmarks_stays_a_short_report() -> None:
    lines = (ROOT / "BENCHMARKS.md").read_text().count("\n")
    assert lines <= MAX_BENCHMARK_LINES, f"BENCHMARKS.md has {lines} lines; history belongs in git"


@pytest.mark.parametrize("doc", user_docs(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_cited_path_and_link_exists(doc: Path) -> None:
    text = doc.read_text()
    missing = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if rel in PENDING and not dest.exists():
            continue
        if not dest.exists():
            missing.append(f"link {target}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            missing.append(f"link {target} (no such heading)")
    for path in REPO_PATH.findall(text):
        path = path.rstrip(".")
        found = any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()
        if path not in PENDING and not found:
            missing.append(f"path {path}")
    if doc.name == "BENCHMARKS.md":
        for folder in RESULT_FOLDER.findall(text):
            if not (ROOT / "loadtests" / "results" / folder).is_dir():
                missing.append(f"result folder loadtests/results/{folder}")
    listing = "\n".join(sorted(set(missing)))
    assert not missing, f"{doc.relative_to(ROOT)} cites what does not exist:\n{listing}"
