"""Helpers shared by the tests, one module per kind.

- `deployments`: `ScriptedDeployment`, a deployment whose runs follow a script.
- `servers`: a free port, an ASGI app under uvicorn in a thread (`serving`,
  `serve_in_thread`), a server process (`running_server`), the repository's `ROOT`.
- `http`: reading a stream until a marker, the proxy's JSON error, multipart bodies.
- `images`: a small PNG and hostile image files.
- `hostile_cases`: the table of hostile requests every surface is checked against.
- `held`: tests shared by the adapters served on loopback.
- `redis`: a real redis-server for a block.
- `browser`: headless Chromium (playwright) and the browser test app.
- `store_app`, `takeover_app`, `upload_app`: apps served by the integration tests.
- `ikclient`: the official SCALE client in its own virtual environment.
"""
