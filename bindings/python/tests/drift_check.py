"""Proves the cffi build fails when a prototype drifts from include/evroute.h.

Run by scripts/test.d/40-python.sh with a Python that has cffi (the test venv):
    python drift_check.py BUILD_DIR
It builds the extension with the real prototypes (must succeed), then with
one argument type changed (must fail to compile)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _build_ffi  # noqa: E402
from cffi import VerificationError  # noqa: E402

tmp = sys.argv[1]
_build_ffi.make_ffi(module="_evroute_check").compile(tmpdir=tmp)

real = "enum evr_status evr_subscriber_next(const struct evr_subscriber *subscriber, uint32_t timeout_ms,"
assert real in _build_ffi.PROTOTYPES, "drift_check.py: update the prototype it changes"
drifted = _build_ffi.PROTOTYPES.replace(real, real.replace("uint32_t timeout_ms", "uint64_t timeout_ms"))
try:
    _build_ffi.make_ffi(drifted, module="_evroute_drifted").compile(tmpdir=tmp)
except VerificationError as e:
    print(f"drift check: a drifted prototype fails the build, as it should ({type(e).__name__})")
else:
    sys.exit("drift check: the build accepted evr_subscriber_next with a uint64_t timeout")
