"""`manage.py` of the test site (run from the repository root: `python -m tests.support.django_site.manage check`)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.django_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
