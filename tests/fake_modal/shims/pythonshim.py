"""``python`` in the stand-in builder: this interpreter, except ``-m pip`` / ``-m uv``, which are checked."""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
arguments = sys.argv[1:]
if arguments[:2] in (["-m", "pip"], ["-m", "uv"]):
    os.execv(sys.executable, [sys.executable, os.path.join(here, "checkreq.py"), *arguments[2:]])
os.execv(sys.executable, [sys.executable, *arguments])
