"""The kernel's side: what runs in the notebook's own process.

``magic.py`` (``%%modal_gpu`` and friends, ``%load_ext`` and ``%unload_ext``), ``options.py`` (every option,
once), ``extension.py`` (the kernel's state: backends, defaults, session), ``driver.py`` (a cell's stages, the
Python API), ``dry_run.py`` (``--dry-run``), ``fanout.py`` (``--map``), ``analysis.py`` (what a cell reads and binds),
``session.py`` and ``report.py`` (the remote-resident session), ``secrets.py`` (credentials held back),
``output.py`` (the remote cell's output, published here), ``view/`` (progress and the summary).
"""
