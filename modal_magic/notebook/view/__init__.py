"""What a person sees while a cell runs and after: ``progress.py`` (one timeline of named parts),
``live.py`` (the widget or text view), ``html.py`` (its markup), ``came_back.py`` (what came back)."""
