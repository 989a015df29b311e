"""The commands the README and docs/ show work as written: every shell block is either run here,
word for word, in a copy of the checkout (its tracked files, with this checkout's .venv), or says
on its first line what it needs that a test machine does not have (`# needs a real tenant: ...`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^[ \t]*```(?:bash|sh|shell)\n(.*?)^[ \t]*```", re.S | re.M)
# The blocks this module runs, by page and first line.
RUN = {
    ("README.md", "bash scripts/demo.sh"),
    ("README.md", ".venv/bin/duckdb -readonly data/demo.duckdb"),
    ("docs/emulator.md", "# emulator.env holds the client secret"),
    ("docs/configuration.md", "openssl req -x509"),
}


def shell_blocks() -> dict[tuple[str, str], str]:
    """Every shell block of the README and docs/, by (page, its first line's start)."""
    found = {}
    for page in PAGES:
        for indented in BLOCK.findall(page.read_text(encoding="utf-8")):
            text = textwrap.dedent(indented)
            first = text.strip().splitlines()[0].strip()
            key = next((k for k in RUN if k[0] == _name(page) and first.startswith(k[1])), None)
            found[key or (_name(page), first)] = text
    return found


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_every_shell_block_is_run_here_or_says_what_it_needs() -> None:
    blocks = shell_blocks()
    unaccounted = [
        key for key, text in blocks.items() if key not in RUN and not text.startswith("# needs ")
    ]
    assert unaccounted == []
    assert set(blocks) >= RUN  # nothing here runs a block the docs no longer have


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The checkout's tracked files as they are now, with its .venv: what a fresh clone holds
    once `scripts/setup.sh` has run (which then finds everything installed)."""
    copy = tmp_path / "checkout"
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    return copy


def _clean_env() -> dict[str, str]:
    """A user's shell: none of the variables the docs export set already."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ENTRA_", "DAGSTER_", "PYTEST_")) and k != "VIRTUAL_ENV"
    }


def _run(block: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`block` as a bash script (stopping at the first failing command), in its own session;
    whatever it left running in the background is stopped afterwards. Its output goes to files:
    a background server keeps a pipe open long after the script ends."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=cwd,
            env=_clean_env(),
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(block, process.returncode, out.read(), err.read())


def _block(page: str, first: str) -> str:
    return shell_blocks()[(page, first)]


def test_the_quick_start_runs_as_written_twice(checkout: Path) -> None:
    """README's first command, twice on the same database (the second records only its own
    night), and the query the README gives for its file; the second command is what CI runs."""
    quick_start = _block("README.md", "bash scripts/demo.sh").strip().splitlines()
    assert quick_start[1].startswith("bash scripts/test.sh")
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "bash scripts/test.sh"
    first = _run(quick_start[0], checkout)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = _run(quick_start[0], checkout)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "as the last demo left it: 1 night of changes" in second.stdout
    query = _run(_block("README.md", ".venv/bin/duckdb -readonly data/demo.duckdb"), checkout)
    assert query.returncode == 0, query.stderr
    assert query.stdout.count("@contoso.com") >= 5  # five users, with their UPNs


def test_the_emulator_walkthrough_runs_as_written(checkout: Path) -> None:
    """docs/emulator.md's block: the emulator in the background, check, a Dagster run."""
    block = _block("docs/emulator.md", "# emulator.env holds the client secret")
    done = _run(block, checkout, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "exit 0" in done.stdout  # check: a sync can run
    assert (checkout / "emulator.env").stat().st_mode & 0o777 == 0o600
    assert "emulator.env" in (checkout / ".gitignore").read_text().split()
    with duckdb.connect(str(checkout / "data" / "emulator.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.users").fetchall() == [(1000,)]
        runs = con.execute("SELECT job, status FROM ops.sync_runs").fetchall()
    assert runs == [("entra_id_sync", "success")]
    assert (checkout / ".dagster_home").stat().st_mode & 0o777 == 0o700


@pytest.fixture
def openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        pytest.skip("openssl is not installed (Debian: apt-get install openssl)")
    return found


def test_the_certificate_command_runs_as_written(openssl: str, tmp_path: Path) -> None:
    """docs/configuration.md's key and certificate: made as shown, loaded as the config would."""
    from entra_pipeline.credentials import load_certificate_credential

    done = _run(_block("docs/configuration.md", "openssl req -x509"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "app.key").stat().st_mode & 0o777 == 0o600
    credential = load_certificate_credential(
        private_key_path=str(tmp_path / "app.key"), certificate_path=str(tmp_path / "app.crt")
    )
    assert len(credential.sha1_thumbprint) == 40
