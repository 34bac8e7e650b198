"""Run an atheris fuzz target against the sanitizer build of the extensions.

    DATAPLANE_FUZZ=1 .venv/bin/python setup.py build_ext      # once: build/fuzz/dataplane/*.so
    .venv/bin/python tests/fuzz/run.py TARGET [libFuzzer options] [corpus dirs]

TARGET is one of tests/fuzz/targets.py's TARGETS (pipeline, conntrack, config); the seeds are in
tests/fuzz/corpus/TARGET. With no corpus directory given, new inputs go to a temporary copy, so
the repository's corpus is only read. The interpreter is not instrumented, so the process runs
itself again with atheris' ASan + libFuzzer runtime preloaded; the extensions are then loaded from
build/fuzz (libFuzzer counts their edges), the configuration loader's Python through atheris'
bytecode instrumentation. Exit status: libFuzzer's (0: nothing found).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FUZZ_BUILD = ROOT / "build" / "fuzz" / "dataplane"


def _reexec_with_runtime() -> None:
    spec = importlib.util.find_spec("atheris")
    if spec is None:
        sys.exit("atheris is not installed (pip install atheris)")
    runtime = Path(spec.submodule_search_locations[0]).parent / "asan_with_fuzzer.so"
    if not runtime.exists():
        sys.exit(f"{runtime} not found: this atheris has no ASan runtime")
    if not any(FUZZ_BUILD.glob("parse.*.so")):
        sys.exit(f"no sanitizer build in {FUZZ_BUILD}: run DATAPLANE_FUZZ=1 setup.py build_ext")
    env = dict(os.environ, LD_PRELOAD=str(runtime), DATAPLANE_FUZZ_CHILD="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
               # CPython's own allocations look like leaks to LeakSanitizer; a failed huge malloc
               # must surface as MemoryError, as it does without ASan.
               ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:"
                            + os.environ.get("ASAN_OPTIONS", ""))
    os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) >= 2 else 2
    if os.environ.get("DATAPLANE_FUZZ_CHILD") != "1":
        _reexec_with_runtime()
    import atheris
    import dataplane
    dataplane.__path__.insert(0, str(FUZZ_BUILD))   # the instrumented modules win
    with atheris.instrument_imports(include=["dataplane.config"]):
        import targets
    name, args = sys.argv[1], sys.argv[2:]
    if name not in targets.TARGETS:
        print(f"unknown target {name!r}; targets: {', '.join(targets.TARGETS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as work:
        if not any(not a.startswith("-") for a in args):
            shutil.copytree(HERE / "corpus" / name, Path(work) / "corpus")
            args.append(str(Path(work) / "corpus"))
        atheris.Setup([sys.argv[0], *args], targets.TARGETS[name])
        atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
