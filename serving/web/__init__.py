"""Browser pages of the service: the specialist worklist, the case view and the hospital view.

The pages are server-rendered shells (Jinja2) plus small static scripts that call the JSON API
with the bearer token the person signed in with. ``routes.router`` is included by the app factory.
"""
