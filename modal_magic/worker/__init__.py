"""The worker: what runs a cell away from the notebook, as a local process or inside a Modal container.

``serve.py`` (``python -m modal_magic.worker``: a socket's requests in, events out), ``runner.py`` (one
cell in a fresh namespace), ``store.py`` (the tensors the remote session keeps). It imports ``wire/`` and
``errors.py``, never the notebook's side (``tests/test_layout.py`` checks that inside a real worker).
"""
