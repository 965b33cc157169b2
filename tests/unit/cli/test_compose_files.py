"""``shoal apply|diff|delete -f`` with compose files: the I/O around ``core.compose``
(the ``.env`` beside the file, the process environment, content tags), without Docker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.compose import Build
from core.errors import SpecError
from services.cli.compose import ComposeOptions, compose_documents, context_files
from services.cli.main import cli

COMPOSE = """
services:
  web:
    build: {context: ./web, args: {GREETING: "${GREETING:-default}"}}
    ports: ["8080:80"]
    tty: true
  db:
    image: "redis:${REDIS_TAG}"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "My_Project"
    (folder / "web" / "sub").mkdir(parents=True)
    (folder / "web" / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (folder / "web" / "sub" / "page.html").write_text("hi")
    os.symlink("sub/page.html", folder / "web" / "link")
    (folder / "compose.yaml").write_text(COMPOSE)
    (folder / ".env").write_text("REDIS_TAG=7\nGREETING=from-dotenv\n")
    return folder


def documents(project: Path, mode: str = "diff", **options: object) -> list[dict[str, object]]:
    path = project / "compose.yaml"
    found = compose_documents(
        path.read_text(),
        str(path),
        ComposeOptions(**options),  # type: ignore[arg-type]
        mode,  # type: ignore[arg-type]
    )
    assert found is not None
    return found


def test_dotenv_folder_namespace_and_content_tag(project: Path) -> None:
    web, db = documents(project, allow_unsupported=True)
    assert web["namespace"] == db["namespace"] == "my-project"
    assert db["image"] == "redis:7"
    image = str(web["image"])
    assert image.startswith("my-project-web:")
    assert len(image.rsplit(":", 1)[1]) == 12
    # the same content is the same tag; a changed file is a new one
    assert documents(project, allow_unsupported=True)[0]["image"] == image
    (project / "web" / "sub" / "page.html").write_text("changed")
    assert documents(project, allow_unsupported=True)[0]["image"] != image


def test_the_environment_wins_over_dotenv_and_registry_names_the_tag(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = documents(project, allow_unsupported=True)[0]["image"]
    monkeypatch.setenv("GREETING", "from-shell")
    monkeypatch.setenv("REDIS_TAG", "6")
    web, db = documents(project, allow_unsupported=True, registry="127.0.0.1:5000", namespace="ns")
    assert db["image"] == "redis:6"
    assert str(web["image"]).startswith("127.0.0.1:5000/ns-web:")
    assert str(web["image"]).rsplit(":", 1)[1] != str(before).rsplit(":", 1)[1]  # build arg


def test_unsupported_keys_refuse_apply_but_not_delete(project: Path) -> None:
    with pytest.raises(SpecError) as caught:
        documents(project, mode="diff")
    assert caught.value.errors == [f"{project / 'compose.yaml'}: service web: tty is not supported"]
    assert [d["name"] for d in documents(project, mode="delete")] == ["web", "db"]


def test_app_spec_files_are_not_compose_files(tmp_path: Path) -> None:
    spec = "name: web\nimage: i\n---\nname: api\nimage: i\n"
    assert compose_documents(spec, str(tmp_path / "a.yaml"), ComposeOptions(), "apply") is None
    assert compose_documents("name: web\nimage: i\n", "a.yaml", ComposeOptions(), "apply") is None


def test_context_files_hold_files_and_links(project: Path) -> None:
    entries = {f.path: f for f in context_files(project / "web")}
    assert set(entries) == {"Dockerfile", "sub/page.html", "link"}
    assert entries["link"].content == b"sub/page.html"
    assert entries["sub/page.html"].content == b"hi"


def test_a_missing_context_is_an_error(project: Path) -> None:
    (project / "compose.yaml").write_text("services: {web: {build: ./nowhere}}\n")
    with pytest.raises(SpecError, match=r"build context .*nowhere is not a folder"):
        documents(project)
    assert Build(service="web", app="web", context="/x").dockerfile == "Dockerfile"


def test_invalid_compose_file_exits_1_listing_the_problems(project: Path) -> None:
    (project / "compose.yaml").write_text("services: {web: {image: i, restart: 'no'}}\n")
    result = CliRunner().invoke(cli, ["apply", "-f", str(project / "compose.yaml")])
    assert result.exit_code == 1
    assert "the spec is invalid; nothing was changed" in result.output
    assert "service web: restart: no: Shoal keeps every replica running" in result.output


def test_n_is_for_compose_files_only(tmp_path: Path) -> None:
    spec = tmp_path / "web.yaml"
    spec.write_text("name: web\nimage: i\n")
    result = CliRunner().invoke(cli, ["apply", "-f", str(spec), "-n", "prod"])
    assert result.exit_code == 1
    assert "-n applies to compose files; a spec names its namespace" in result.output
