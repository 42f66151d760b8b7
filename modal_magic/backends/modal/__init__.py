"""The Modal backend: ``backend.py`` (the notebook's side: apps, calls, the cell's events), ``container.py``
(what runs inside the container: the Modal class around a local worker), ``plan.py`` (credentials, GPU
types, the image), ``errors.py`` (Modal's failures as one sentence each)."""
