"""Builds every Cython module in ext/ as dataplane.<name>.

Cython resolves `from dataplane.X cimport ...` by looking for dataplane/X.pxd on its include
path, but the sources live in ext/. A generated include directory holding a `dataplane` link to
ext/ lets the .pxd contracts keep their package names without moving the sources.
"""
import os
import platform
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
EXT = ROOT / "ext"
INCLUDE = ROOT / "build" / "cython_include"

# Correctness first while developing: DATAPLANE_DEBUG=1 turns the checks back on.
DEBUG = os.environ.get("DATAPLANE_DEBUG") == "1"
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}


CFLAGS = ["-O3", "-fno-strict-aliasing"]
if platform.machine() == "x86_64":
    CFLAGS.append("-march=x86-64-v2")  # SSE4.2/POPCNT: every x86 server of the last decade
LDFLAGS = []

# Sanitizer builds, with clang: DATAPLANE_ASAN=1 adds AddressSanitizer; DATAPLANE_FUZZ=1 adds it
# and libFuzzer's coverage instrumentation (-fsanitize=fuzzer-no-link) for the atheris harnesses
# in tests/fuzz. They go to build/asan or build/fuzz (never next to the sources, whatever
# --inplace says), so the normal modules stay in place:
#   DATAPLANE_FUZZ=1 python setup.py build_ext     -> build/fuzz/dataplane/*.so
# Load them with the ASan runtime preloaded (tests/fuzz/run.py does it).
SANITIZE = "fuzz" if os.environ.get("DATAPLANE_FUZZ") == "1" else \
    "asan" if os.environ.get("DATAPLANE_ASAN") == "1" else None
if SANITIZE:
    flags = ["-fsanitize=address" + (",fuzzer-no-link" if SANITIZE == "fuzz" else ""),
             "-fno-omit-frame-pointer", "-g"]
    CFLAGS = ["-O1", "-fno-strict-aliasing"] + flags
    LDFLAGS = flags
    os.environ["CC"] = os.environ.get("DATAPLANE_CLANG", "clang")
    os.environ["LDSHARED"] = os.environ["CC"] + " -shared"


def _include_dir() -> str:
    INCLUDE.mkdir(parents=True, exist_ok=True)
    link = INCLUDE / "dataplane"
    if not link.is_symlink():
        link.symlink_to(EXT, target_is_directory=True)
    return str(INCLUDE)


def _extensions():
    # DATAPLANE_MODULES=burst,lpm builds a subset: handy while another module is half-written.
    only = {m for m in os.environ.get("DATAPLANE_MODULES", "").split(",") if m}
    return [
        Extension(
            f"dataplane.{pyx.stem}",
            [str(pyx.relative_to(ROOT))],
            include_dirs=[numpy.get_include(), str(EXT / "includes")],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=CFLAGS,
            extra_link_args=LDFLAGS,
        )
        for pyx in sorted(EXT.glob("*.pyx"))
        if not only or pyx.stem in only
    ]


def _sanitizer_build_dirs():
    if SANITIZE is None:
        return {}
    from setuptools.command.build_ext import build_ext

    class SanitizerBuildExt(build_ext):
        def finalize_options(self):
            super().finalize_options()
            self.inplace = False
            self.build_lib = str(ROOT / "build" / SANITIZE)
            self.build_temp = str(ROOT / "build" / f"{SANITIZE}-temp")

    return {"cmdclass": {"build_ext": SanitizerBuildExt}}


setup(
    **_sanitizer_build_dirs(),
    ext_modules=cythonize(
        _extensions(),
        include_path=[_include_dir(), str(EXT)],
        compiler_directives=DIRECTIVES,
        language_level=3,
        nthreads=os.cpu_count() or 1,
    ),
)
