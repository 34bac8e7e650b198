"""deploy/Containerfile, read statically (no container engine here): it downloads from Debian and
PyPI only, installs what install.sh installs, and the wheel it builds carries every runtime
dependency of the code."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "deploy" / "Containerfile"
DEBIAN_IMAGE = re.compile(r"^(docker\.io/library/)?debian:bookworm(-slim)?$")
BUILD_ONLY = {"gcc", "python3-dev", "python3-venv"}
DEV_ONLY = {"clang"}   # the ASan / fuzzing builds of the test suite, never in an image


@dataclass(frozen=True)
class Instruction:
    stage: int        # index of the FROM it belongs to
    op: str           # upper case: FROM, RUN, COPY, ...
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out, stage = [], -1
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    for line in filter(None, (line.strip() for line in logical.splitlines())):
        op, _, args = line.partition(" ")
        op = op.upper()
        stage += op == "FROM"
        out.append(Instruction(stage, op, " ".join(args.split())))
    return out


def foreign_sources(text: str) -> list[str]:
    """Everything in a Containerfile that would fetch from somewhere other than Debian's
    archive (through apt, with the image's own sources) and PyPI (through pip's default index)."""
    problems, stages = [], set()
    for ins in parse(text):
        words = shlex.split(ins.args)
        if ins.op == "FROM":
            image = next(w for w in words if not w.startswith("--"))
            if image not in stages and not DEBIAN_IMAGE.match(image):
                problems.append(f"FROM {image}: not a Debian bookworm image")
            if len(words) >= 3 and words[-2].upper() == "AS":
                stages.add(words[-1])
        elif ins.op == "ADD":
            problems.append(f"ADD {ins.args}: use COPY (ADD fetches URLs and git repositories)")
        elif ins.op == "COPY":
            source = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            if source is not None and source not in stages:
                problems.append(f"COPY --from={source}: not a stage of this file")
        elif ins.op == "RUN":
            if re.search(r"\b(curl|wget|git|add-apt-repository|apt-key)\b|/etc/apt|://", ins.args):
                problems.append(f"RUN {ins.args}: downloads outside apt and pip, or changes apt's sources")
            for pip_args in re.findall(r"\bpip3? install ([^&;|]*)", ins.args):
                if re.search(r"--(index-url|extra-index-url|find-links|trusted-host)\b|(^|\s)-[if]\b", pip_args):
                    problems.append(f"RUN pip install {pip_args.strip()}: an index other than PyPI")
    return problems


def _apt_packages(stage: int) -> set[str]:
    packages = set()
    for ins in parse(CONTAINERFILE.read_text()):
        if ins.stage == stage and ins.op == "RUN":
            for command in re.findall(r"apt-get install ([^&;|]*)", ins.args):
                packages |= {w for w in command.split() if not w.startswith("-")}
    return packages


def test_containerfile_fetches_from_debian_and_pypi_only():
    assert foreign_sources(CONTAINERFILE.read_text()) == []


@pytest.mark.parametrize("line", [
    "FROM python:3.11-slim",
    "FROM docker.io/library/debian:trixie",
    "ADD https://example.com/tool.tar.gz /tmp/",
    "RUN curl -fsSL https://example.com/install.sh | sh",
    "RUN echo 'deb http://example.com/debian bookworm main' > /etc/apt/sources.list.d/x.list",
    "RUN pip install --extra-index-url https://example.com/simple dataplane",
    "RUN /opt/venv/bin/pip install -i https://example.com/simple .",
    "COPY --from=example.com/image:1 /bin/tool /bin/tool",
])
def test_foreign_sources_are_caught(line):
    text = "FROM debian:bookworm-slim AS build\n" + line + "\n"
    assert foreign_sources(text), line


def test_image_installs_the_packages_install_sh_installs():
    script = (REPO / "install.sh").read_text()
    wanted = {p for group in re.findall(r"want\+?=\(([^)]*)\)", script) for p in group.split()}
    assert {"nftables", "iproute2", "gcc"} <= wanted   # the parse found the list
    build, runtime = _apt_packages(0), _apt_packages(1)
    assert wanted - DEV_ONLY <= build | runtime
    assert BUILD_ONLY <= build and not BUILD_ONLY & runtime   # no compiler in the running image
    assert "nftables" in runtime   # `dataplane run` calls nft to claim its interfaces
    assert "python3" in runtime


def test_image_copies_what_the_wheel_build_reads():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    copied = set()
    for ins in parse(CONTAINERFILE.read_text()):
        if ins.op == "COPY" and "--from=" not in ins.args:
            copied |= set(ins.args.split()[:-1])
    assert {"pyproject.toml", "setup.py", project["readme"], "ext", "dataplane"} <= copied
    assert all((REPO / path).exists() for path in copied)


def _third_party_imports() -> dict[str, str]:
    """Top-level modules the package imports that are neither stdlib nor our own -> a file."""
    found = {}
    for path in (REPO / "dataplane").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in (name.split(".")[0] for name in names):
                if top not in sys.stdlib_module_names and top != "dataplane":
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_a_declared_dependency():
    """The image installs the wheel's dependencies and nothing else."""
    declared = {_normalize(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0])
                for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    imports = _third_party_imports()
    assert "yaml" in imports   # the scan sees the code
    for module, where in imports.items():
        names = {_normalize(d) for d in distributions.get(module, [module])}
        assert names & declared, f"{where} imports {module}: add it to pyproject.toml dependencies"
