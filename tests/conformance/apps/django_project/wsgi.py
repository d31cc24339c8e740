"""The WSGI entry point: `gunicorn tests.conformance.apps.django_project.wsgi:application`."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.conformance.apps.django_project.settings")
application = get_wsgi_application()
