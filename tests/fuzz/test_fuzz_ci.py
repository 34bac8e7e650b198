"""CI-sized fuzz run (about 2 minutes): every target of tests/fuzz/targets.py for 35 s against
the ASan + libFuzzer build of the extensions, from the corpus kept in tests/fuzz/corpus.

    DATAPLANE_FUZZ=1 .venv/bin/python setup.py build_ext      # once, about 4 minutes
    .venv/bin/python -m pytest tests/fuzz -m slow

Fails with libFuzzer's report (the crashing input is kept in the test's temporary directory) if
any input crashes, trips AddressSanitizer, or raises an error its API does not document. Checks
too that libFuzzer really sees the extensions' edges: without the instrumented build the
native coverage would be zero.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SECONDS = 35

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target", ["pipeline", "conntrack", "config"])
def test_fuzz_target(target, tmp_path):
    pytest.importorskip("atheris")
    if not any((ROOT / "build" / "fuzz" / "dataplane").glob("parse.*.so")):
        pytest.skip("no fuzz build: DATAPLANE_FUZZ=1 python setup.py build_ext")
    proc = subprocess.run(
        [sys.executable, str(HERE / "run.py"), target, f"-max_total_time={SECONDS}",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=SECONDS * 4, cwd=tmp_path)
    log = proc.stderr
    assert proc.returncode == 0, log[-6000:]
    modules = re.search(r"Loaded (\d+) modules\s+\((\d+) inline 8-bit counters\)", log)
    assert modules and int(modules.group(2)) > 10_000, "extensions not instrumented"
    cov = [int(c) for c in re.findall(r"cov: (\d+)", log)]
    assert cov and cov[-1] > 300, log[-3000:]
