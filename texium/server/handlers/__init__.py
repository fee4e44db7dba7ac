"""One module of handlers per resource; base.py owns JSON parsing and error rendering."""
