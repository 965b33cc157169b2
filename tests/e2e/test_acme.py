"""Issue 13 item 5 (ACME and redirects) on a real cluster, on both balancer engines: Debian's
pebble test CA issues, validating HTTP-01 for real against the balancer's plain listener
(names resolved by pebble's mock DNS to 127.0.0.1), a certificate for a route with
``tls: {acme: true}``, which the route then serves over HTTPS (``curl --cacert`` pebble's
root, SNI); the same route's ``redirect: true`` sends plain HTTP to HTTPS with 308. A second
balancer instance, whose plain port pebble never reaches, gets its certificate too: its
challenge went on the bus and the first instance answered it. A host whose validation
cannot succeed (the mock DNS points it at 127.0.0.2, where nothing listens) is reported with
pebble's reason and retried with backoff."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.cluster import Cluster, wait_for
from tests.support.net import free_port
from tests.support.pebble import start_pebble

pytestmark = pytest.mark.e2e

HOST = "acme-web.shoal.test"
BROKEN = "acme-broken.shoal.test"
BROKEN_SPEC = f"""
name: broken
image: shoal-test/echo:v1
replicas: 1
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
route: {{host: {BROKEN}, port: http, tls: {{acme: true}}}}
termination: {{drain: 0s, grace: 1s}}
"""
SPEC = f"""
name: web
image: shoal-test/echo:v1
replicas: 1
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
route: {{host: {HOST}, port: http, tls: {{acme: true, redirect: true}}}}
termination: {{drain: 0s, grace: 1s}}
"""


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_pebble_issues_the_certificate_the_route_serves(
    cluster: Cluster, tmp_path: Path, engine: str
) -> None:
    pebble = start_pebble(cluster.procs, tmp_path / "pebble", http_port=cluster.listen_port)
    tls_port = free_port()

    def acme(storage: str) -> list[str]:
        return [
            "--engine", engine,
            "--acme-directory", pebble.directory,
            "--acme-email", "ops@shoal.test",
            "--acme-ca-file", str(pebble.ca_file),
            "--acme-storage", str(tmp_path / storage),
            "--acme-retry", "2",
        ]  # fmt: skip

    cluster.start(balancer_args=["--tls-listen", f"127.0.0.1:{tls_port}", *acme("acme")])
    other_tls = free_port()
    other = cluster.procs.service(
        "balancer",
        cluster.broker.url,
        "--listen", f"127.0.0.1:{free_port()}",
        "--tls-listen", f"127.0.0.1:{other_tls}",
        *acme("acme-other"),
        prefix=cluster.prefix,
        name="balancer-other",
    )  # fmt: skip
    cluster.wait_serving()
    cluster.apply_text(SPEC, "--wait")
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.issuing_root())

    def curl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "curl", "-sS", "--max-time", "5", "--cacert", str(root),
                "--resolve", f"{HOST}:{tls_port}:127.0.0.1",
                "--resolve", f"{HOST}:{other_tls}:127.0.0.1",
                "--resolve", f"{HOST}:{cluster.listen_port}:127.0.0.1",
                "-w", "\\n%{http_code} %{ssl_verify_result} %{redirect_url}", *args,
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip

    https = f"https://{HOST}:{tls_port}/"
    wait_for(lambda: curl(https).returncode == 0, timeout=90, message="the ACME certificate")
    served = curl(https)
    assert served.stdout.splitlines()[-1].startswith("200 0"), served
    redirected = curl(f"http://{HOST}:{cluster.listen_port}/a/b?x=1")
    assert redirected.stdout.splitlines()[-1] == f"308 0 {https}a/b?x=1", redirected

    # the certificate is pebble's, for the route's host, and kept for the next start
    stored = (tmp_path / "acme" / f"{HOST}.crt").read_bytes()
    leaf = x509.load_pem_x509_certificate(stored)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [HOST]
    assert (tmp_path / "acme" / f"{HOST}.key").stat().st_mode & 0o077 == 0
    assert "ACME certificate issued" in cluster.services["balancer"].output()

    # the other instance: pebble validated its order on the first instance's plain port
    elsewhere = f"https://{HOST}:{other_tls}/"
    wait_for(lambda: curl(elsewhere).returncode == 0, timeout=90, message="the other instance")
    assert curl(elsewhere).stdout.splitlines()[-1].startswith("200 0")
    assert "ACME certificate issued" in other.output()
    assert (tmp_path / "acme-other" / f"{HOST}.crt").read_bytes() != stored

    # validation fails: logged with pebble's reason, retried after 2 s, then 4 s, ...
    pebble.resolve(BROKEN, "127.0.0.2")
    cluster.apply_text(BROKEN_SPEC, "--wait")
    log = cluster.services["balancer"]

    def failures() -> list[str]:
        return [
            line
            for line in log.output().splitlines()
            if "ACME certificate not issued" in line and BROKEN in line
        ]

    wait_for(lambda: len(failures()) >= 2, timeout=90, message="two failed orders")
    first, second = failures()[:2]
    assert "attempts=1" in first, first
    assert "attempts=2" in second, second
    assert "retry_in=4" in second, second
    assert "validation failed" in first, first  # with pebble's reason after it
