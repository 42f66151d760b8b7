"""``python -m tests.fake_modal STATE_DIR``: print the port, serve until stdin closes."""

import sys
from pathlib import Path

from . import main

if __name__ == "__main__":
    main(Path(sys.argv[1]))
