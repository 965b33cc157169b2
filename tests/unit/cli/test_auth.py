"""``shoal auth ...``: the identities file, credentials files, the broker's files."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from core.identities import authorize, load_auth, password_matches
from services.cli.main import cli


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["auth", *args])
    return result.exit_code, result.output


def test_identities_credentials_grants_and_the_broker_files(tmp_path: Path) -> None:
    f = str(tmp_path / "ids.yaml")
    assert run("init", "-f", f, "--prefix", "c1")[0] == 0
    assert run("add-service", "controller", "-f", f)[0] == 0
    assert run("add-node", "n1", "--mesh", "-f", f)[0] == 0
    assert run("add-user", "alice", "-n", "test", "-f", f)[0] == 0
    assert run("add-user", "ops", "--admin", "-f", f)[0] == 0
    code, out = run("grant", "alice", "prod", "--verb", "history", "-f", f)
    assert (code, out.strip()) == (0, "alice: granted history in prod")

    auth = load_auth(Path(f))
    assert sorted(auth.identities) == ["agent-n1", "alice", "controller", "mesh-n1", "ops"]
    assert authorize(auth, "alice", "history", "prod") is None
    assert authorize(auth, "alice", "apply", "prod") is not None
    assert authorize(auth, "ops", "drain", None) is None
    user, _, password = (tmp_path / "alice.credentials").read_text().strip().partition(":")
    assert user == "alice"
    assert password_matches(password, auth.identities["alice"].password_hash)
    for path in (tmp_path / "ids.yaml", tmp_path / "alice.credentials"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    code, acl = run("acl", "-f", f)
    assert code == 0
    assert "user agent-n1\n" in acl
    assert "topic read c1/nodes/n1/assign" in acl
    code, passwd = run("passwd", "-f", f)
    assert [line.split(":")[0] for line in passwd.splitlines()] == sorted(auth.identities)
    assert run("acl", "-f", f, "-o", str(tmp_path / "acl"))[0] == 0
    assert (tmp_path / "acl").read_text() == acl

    assert run("revoke", "alice", "prod", "-f", f)[0] == 0
    assert authorize(load_auth(Path(f)), "alice", "history", "prod") is not None
    assert run("rm", "alice", "-f", f)[0] == 0
    assert "alice" not in load_auth(Path(f)).identities


def test_mistakes_are_refused_and_change_nothing(tmp_path: Path) -> None:
    f = str(tmp_path / "ids.yaml")
    code, out = run("ls", "-f", f)
    assert code == 1
    assert "shoal auth init" in out
    run("init", "-f", f)
    run("add-user", "alice", "-f", f)
    before = Path(f).read_text()
    for args, message in (
        (("add-user", "alice"), "exists"),
        (("grant", "bob", "prod"), "no identity 'bob'"),
        (("grant", "alice"), "name a namespace, or --admin"),
        (("grant", "alice", "Prod"), "DNS label"),
        (("add-user", "a/b"), "not a valid user name"),
        (("add-service", "mesh"), "add-node"),
    ):
        code, out = run(*args, "-f", f)
        assert code != 0, args
        assert message in out, (args, out)
    assert Path(f).read_text() == before
