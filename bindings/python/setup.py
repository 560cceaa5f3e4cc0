"""Builds the Rust library with cargo, then the cffi extension that links it.

`pip install ./bindings/python` and `pip wheel ./bindings/python` run this
from a checkout of the repository: it needs cargo and a C compiler. The
cffi declarations are in _build_ffi.py.
"""

import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, __import__("os").path.dirname(__file__))
import _build_ffi  # noqa: E402


class BuildRustThenExtension(build_ext):
    def run(self):
        if not (_build_ffi.ROOT / "Cargo.toml").exists():
            sys.exit(f"evroute: {_build_ffi.ROOT} is not the evroute repository; build the package from a checkout")
        # Default features: the package carries the Redis node like the installed library.
        subprocess.run(["cargo", "build", "--release", "--lib"], cwd=_build_ffi.ROOT, check=True)
        # The extension embeds libevroute.a, which setuptools does not track as a source.
        self.force = True
        super().run()


setup(cffi_modules=["_build_ffi.py:ffibuilder"], cmdclass={"build_ext": BuildRustThenExtension})
