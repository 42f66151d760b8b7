"""Where cells run: ``local.py`` (a worker process on this machine), ``modal/`` (a Modal container).

``base.py`` is the interface every backend implements; ``registry.py`` knows which exist and keeps one
live instance of each per kernel. Nothing is imported here: the worker in a Modal container imports
``backends.local`` alone.
"""
