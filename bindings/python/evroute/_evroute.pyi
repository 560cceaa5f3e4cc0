# The cffi extension built by _build_ffi.py: `lib` holds the C functions and
# constants of include/evroute.h, `ffi` the cffi helpers.
from typing import Any

ffi: Any
lib: Any
