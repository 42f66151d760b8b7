"""Where cells run: ``local.py`` (a worker process on this machine), ``modal/`` (a Modal container).

``base.py`` is the interface every backend implements, its description of itself included (name,
availability, the words the user sees); ``registry.py`` finds the backends by their entry point and
chooses one for ``--backend``, and its ``Backends`` keeps a kernel's live instances (the kernel's
``Extension`` holds one). Nothing is imported here: the worker in a Modal container imports
``backends.local`` alone.
"""
