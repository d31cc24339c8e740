"""The README's set-up commands and server snippets are what they claim to be."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest

from tests.support.servers import ROOT

README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def test_the_readme_opens_with_the_two_set_up_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["./dev demo", "./dev test"]
    assert README.index("```sh") < README.index("**ikproxy**")


def test_ci_runs_the_readme_test_command() -> None:
    assert "\n./dev test\n" in CI


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("index", range(2))
def test_the_server_snippets_serve_the_endpoints(
    index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IKOMIA_TOKEN", "readme-token")
    namespace: dict[str, Any] = {"__name__": __name__}
    exec(compile(_python_blocks()[index], f"README snippet {index}", "exec"), namespace)
    app = namespace["app"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if hasattr(app, "test_client"):  # Flask
            client: Any = app.test_client()
        else:
            from starlette.testclient import TestClient

            client = TestClient(app)
    assert client.get("/api/health").status_code == 200
    refused = (
        client.get("/api/run", query_string={"seed": "1"})
        if hasattr(app, "test_client")
        else client.get("/api/run", params={"seed": "1"})
    )
    assert refused.status_code == 400
