"""A Django site as the policy guide sets it up: sign-in, a per-user limit, Redis, two workers.

`settings.IKPROXY` is read from the environment: `IKPROXY_TEST_REDIS` (the
Redis URL) and `IKPROXY_TEST_PREFIX` (its key prefix); `IKPROXY_TEST_BAD=1`
gives a settings file with one misconfiguration of each kind, for
`manage.py check`. Users sign in at `/login?user=NAME` (a signed-cookie
session: no database).
"""
