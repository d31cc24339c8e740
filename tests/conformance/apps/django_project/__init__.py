"""A minimal Django project for the conformance suite (settings, URLs, WSGI and ASGI)."""
