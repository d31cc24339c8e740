"""The ASGI entry point: `uvicorn tests.conformance.apps.django_project.asgi:application`."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.conformance.apps.django_project.settings")
application = get_asgi_application()
