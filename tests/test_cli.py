"""The command line: dispatch, errors, and a closed stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ckalab
from ckalab.cli import main


def _run(*args: str, close_stdout: bool = False) -> tuple[int, str]:
    """Run ``python -m ckalab ARGS`` against the ckalab under test; (status, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(Path(ckalab.__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ckalab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    if close_stdout:  # like `ckalab datasets | head -0`: the reader is gone before any write
        assert proc.stdout is not None
        proc.stdout.close()
        err = proc.stderr.read() if proc.stderr is not None else b""
        return proc.wait(timeout=60), err.decode()
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


@pytest.mark.slow  # a fresh interpreter importing torch
def test_closed_stdout_exits_quietly(tmp_path: Path) -> None:
    status, err = _run("datasets", "--data-dir", str(tmp_path), close_stdout=True)
    assert err == ""
    assert status == 1  # the Python documentation's recipe for SIGPIPE


def test_closed_stdout_in_process(tmp_path: Path, monkeypatch, capsys) -> None:
    """The same, in this process: stdout is a pipe whose reader has gone."""
    import io

    read_end, write_end = os.pipe()
    os.close(read_end)
    stdout = io.TextIOWrapper(os.fdopen(write_end, "wb"), write_through=False)
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert main(["datasets", "--data-dir", str(tmp_path)]) == 1
    finally:
        monkeypatch.undo()
        try:
            stdout.close()
        except BrokenPipeError:  # pragma: no cover - already redirected to devnull
            pass
    assert capsys.readouterr().err == ""


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == 0
    assert "datasets" in capsys.readouterr().out
