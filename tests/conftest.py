"""Shared fixtures: the read-only captures in ../shared/pcaps and config writers."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_PCAPS = REPO.parent / "shared" / "pcaps"


@pytest.fixture(scope="session")
def shared_pcaps() -> Path:
    if not (SHARED_PCAPS / "MANIFEST.tsv").exists():
        pytest.skip(f"shared captures not found at {SHARED_PCAPS}")
    return SHARED_PCAPS


@pytest.fixture
def write_config(tmp_path):
    """Write a YAML config (dedented) into tmp_path and return its path."""
    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write
