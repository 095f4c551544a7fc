"""Development sessions: tests, lint, typecheck, bench."""

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"

TYPED = ["core", "transports"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite with branch coverage; core/ must stay at or above 90%."""
    session.install("-e", ".[test]")
    session.run(
        "python",
        "-bb",
        "-m",
        "pytest",
        "--cov",
        "--cov-branch",
        "--cov-report=term",
        *session.posargs,
    )
    session.run("coverage", "report", "--include=core/*", "--fail-under=90", "--skip-covered")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core and the transports.

    The folders are mapped onto ``sealchat.*`` by setuptools, which mypy cannot follow, so
    the check runs over a tree of symlinks that has the import layout.
    """
    session.install("-e", ".", "mypy")
    tree = Path("build/typecheck")
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "sealchat").mkdir(parents=True)
    shutil.copy("sealchat/__init__.py", tree / "sealchat")
    for folder in TYPED:
        (tree / "sealchat" / folder).symlink_to(Path(folder).resolve(), target_is_directory=True)
    with session.chdir(tree):
        session.run("mypy", "--strict", *(f"sealchat/{folder}" for folder in TYPED))


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, each next to the ceiling it is measured against in the same run."""
    session.install("-e", ".")
    session.run("python", "-m", "bench", *session.posargs)
