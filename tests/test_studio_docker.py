"""The Studio Docker stand-in in front of the real engine, driven with the docker SDK.

Each test starts :class:`StudioDockerProxy` on a socket of its own and checks what
a Studio user would see: the refusals with Studio's exact messages, and real
builds and containers (on the host's network) for what Studio admits.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import uuid

import docker
import pytest
from docker.errors import APIError, DockerException
from docker.utils.socket import frames_iter

from sm_magics.sandbox.base_image import BASE_IMAGE, ensure_base_image
from sm_magics.sandbox.studio_docker import (
    BUILD_FORBIDDEN,
    CREATE_FORBIDDEN,
    StudioDockerProxy,
    build_query_for_engine,
    container_config_for_engine,
)

pytestmark = pytest.mark.docker

ENGINE = "unix:///var/run/docker.sock"
LABEL = {"sm-magics-test": "studio-docker"}


@pytest.fixture(scope="module")
def engine():
    """The real engine, spoken to directly (for setup and cleanup)."""
    client = docker.DockerClient(base_url=ENGINE, version="1.41")
    ensure_base_image(client)
    yield client
    client.close()


@pytest.fixture
def proxy(tmp_path_factory):
    # a short directory: a unix socket path has at most 107 bytes
    with StudioDockerProxy(tmp_path_factory.mktemp("sd"), engine=ENGINE, tcp_port=0) as served:
        yield served


@pytest.fixture
def studio(proxy):
    """A docker SDK client as Studio users must make it: API version 1.41, pinned."""
    client = docker.DockerClient(base_url=proxy.url, version="1.41")
    yield client
    client.close()


@pytest.fixture
def new_tag(engine):
    tag = f"sm-magics-test/studio-docker:{uuid.uuid4().hex[:12]}"
    yield tag
    with contextlib.suppress(docker.errors.ImageNotFound):
        engine.images.remove(tag, force=True)


@pytest.fixture
def containers(engine):
    """Containers the test created; removed at the end, whatever happened."""
    created: list[str] = []
    yield created
    for container_id in created:
        with contextlib.suppress(docker.errors.NotFound):
            engine.api.remove_container(container_id, force=True)


def build_context(padding: int = 0) -> bytes:
    """A tar build context: a Dockerfile on the base image, and ``padding`` bytes of filler."""
    dockerfile = f'FROM {BASE_IMAGE}\nRUN python3 -c "print(1)"\n'.encode()
    files = {"Dockerfile": dockerfile, "filler.bin": b"\0" * padding}
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return context.getvalue()


def framed(context: bytes, framing: str):
    """The context as docker-py sends it: a file (Content-Length) or a generator (chunked)."""
    if framing == "content-length":
        return io.BytesIO(context)
    return (context[i:i + 65536] for i in range(0, len(context), 65536))


def test_version_negotiation_fails_as_in_studio(proxy):
    with pytest.raises(DockerException, match="Error while fetching server API version") as info:
        docker.DockerClient(base_url=proxy.url)
    assert "Expecting value: line 1 column 1 (char 0)" in str(info.value)


def test_a_client_pinned_to_1_41_works_on_the_socket_and_on_tcp(proxy):
    for url in (proxy.url, proxy.tcp_url):
        client = docker.DockerClient(base_url=url, version="1.41")
        assert client.ping() is True
        assert client.version()["ApiVersion"] == "1.41"
        assert BASE_IMAGE in client.images.get(BASE_IMAGE).tags
        client.close()


def test_an_api_version_newer_than_1_41_is_too_new(proxy):
    client = docker.DockerClient(base_url=proxy.url, version="1.43")
    with pytest.raises(APIError) as info:
        client.version()
    assert info.value.status_code == 400
    assert info.value.explanation == (
        "client version 1.43 is too new. Maximum supported API version is 1.41")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("network_mode", ["host", None])
def test_a_build_on_another_network_is_forbidden(studio, engine, new_tag, framing, network_mode):
    context = framed(build_context(padding=4 << 20), framing)  # larger than a socket buffer
    with pytest.raises(APIError) as info:
        list(studio.api.build(fileobj=context, custom_context=True, tag=new_tag,
                              network_mode=network_mode, decode=True))
    assert info.value.status_code == 403
    assert info.value.explanation == BUILD_FORBIDDEN
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(new_tag)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_build_on_the_sagemaker_network_builds(studio, engine, new_tag, framing):
    context = framed(build_context(padding=1 << 20), framing)
    progress = list(studio.api.build(fileobj=context, custom_context=True, tag=new_tag,
                                     network_mode="sagemaker", rm=True, decode=True))
    assert not [line for line in progress if "error" in line], progress
    assert any("Successfully tagged" in line.get("stream", "") for line in progress)
    assert new_tag in engine.images.get(new_tag).tags


def test_a_container_on_another_network_is_forbidden(studio, engine):
    for network_mode in ("host", None):
        with pytest.raises(APIError) as info:
            studio.containers.create(BASE_IMAGE, "true", network_mode=network_mode, labels=LABEL)
        assert info.value.status_code == 403
        assert info.value.explanation == CREATE_FORBIDDEN
    with pytest.raises(APIError) as info:
        studio.containers.create(BASE_IMAGE, "true", network="bridge", labels=LABEL)
    assert info.value.explanation == CREATE_FORBIDDEN


def test_a_container_on_the_sagemaker_network_runs_on_the_host_network(studio, containers):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(60)
    port = listener.getsockname()[1]
    heard: list[bytes] = []

    def answer_once() -> None:
        with listener, listener.accept()[0] as peer:
            heard.append(peer.recv(100))
            peer.sendall(b"hello from the host")

    server = threading.Thread(target=answer_once, daemon=True)
    server.start()
    code = ("import socket, sys\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=30)\n"
            "s.sendall(b'hello from the container')\n"
            "print(s.recv(100).decode())\n"
            "print('bye', file=sys.stderr)\n")
    container = studio.containers.create(BASE_IMAGE, ["python3", "-c", code],
                                         network_mode="sagemaker", labels=LABEL)
    containers.append(container.id)
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"

    # attach before start (docker-py hijacks the connection: 101 and a raw stream)
    stream = studio.api.attach(container.id, stdout=True, stderr=True, stream=True, logs=True,
                               demux=True)
    container.start()
    stdout, stderr = b"", b""
    for out, err in stream:
        stdout += out or b""
        stderr += err or b""
    assert container.wait(timeout=60)["StatusCode"] == 0
    server.join(timeout=10)
    assert heard == [b"hello from the container"]
    assert (stdout, stderr) == (b"hello from the host\n", b"bye\n")
    assert container.logs(stderr=False) == stdout
    assert container.logs(stdout=False) == stderr


def test_stdin_of_an_attached_container_reaches_it_and_its_end_too(studio, containers):
    container = studio.containers.create(BASE_IMAGE, ["cat"], stdin_open=True,
                                         network_mode="sagemaker", labels=LABEL)
    containers.append(container.id)
    attached = studio.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1,
                                                              "stream": 1})
    raw = attached._sock
    container.start()
    raw.sendall(b"through the proxy\n")
    raw.shutdown(socket.SHUT_WR)  # cat sees the end of its input and exits
    output = b"".join(data for _, data in frames_iter(attached, tty=False))
    attached.close()
    assert output == b"through the proxy\n"
    assert container.wait(timeout=60)["StatusCode"] == 0


class UnixConnection(http.client.HTTPConnection):
    """Plain HTTP/1.1 over the proxy's unix socket, for requests the SDK does not make."""

    def __init__(self, path) -> None:
        super().__init__("localhost")
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def test_an_unversioned_path_gets_a_bare_301(proxy):
    for method, path in (("GET", "/version"), ("HEAD", "/_ping"), ("GET", "/images/json")):
        connection = UnixConnection(proxy.socket_path)
        connection.request(method, path)
        response = connection.getresponse()
        assert (response.status, response.read()) == (301, b"")
        assert response.getheader("Location") is None
        connection.close()


def test_a_chunked_container_create_is_rewritten_with_a_content_length(proxy, engine, containers):
    body = json.dumps({"Image": BASE_IMAGE, "Cmd": ["true"], "Labels": LABEL,
                       "HostConfig": {"NetworkMode": "sagemaker"}}).encode()
    connection = UnixConnection(proxy.socket_path)
    connection.request("POST", "/v1.41/containers/create", body=iter([body[:10], body[10:]]),
                       headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 201, answer
    assert response.getheader("Connection") == "close"
    containers.append(answer["Id"])
    assert engine.api.inspect_container(answer["Id"])["HostConfig"]["NetworkMode"] == "host"
    connection.close()


def test_closing_cuts_a_live_stream_and_removes_the_socket(tmp_path_factory):
    proxy = StudioDockerProxy(tmp_path_factory.mktemp("sd"), engine=ENGINE)
    events = socket.socket(socket.AF_UNIX)
    events.settimeout(10)
    events.connect(str(proxy.socket_path))
    events.sendall(b"GET /v1.41/events HTTP/1.1\r\nHost: docker\r\n\r\n")  # streams forever
    received = b""
    while b"\r\n\r\n" not in received:
        received += events.recv(4096)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in received
    proxy.close()
    assert not proxy.socket_path.exists()
    while chunk := events.recv(4096):  # ends, rather than timing out
        received += chunk
    events.close()
    with pytest.raises(OSError):
        socket.socket(socket.AF_UNIX).connect(str(proxy.socket_path))


@pytest.fixture
def registry(tmp_path_factory):
    """A registry of its own on 127.0.0.1 (Debian's docker-registry), stopped at the end."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("needs Debian's docker-registry (apt-get install docker-registry)")
    home = tmp_path_factory.mktemp("registry")
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    config = home / "registry.yml"
    config.write_text("version: 0.1\nlog:\n  level: warn\n"
                      f"storage:\n  filesystem:\n    rootdirectory: {home / 'storage'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    with open(home / "registry.log", "wb") as log:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_image_import_push_and_pull_stream_through(studio, engine, registry):
    repository = f"{registry}/sm-magics-test/studio-docker"
    tag = uuid.uuid4().hex[:12]
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    try:
        imported = studio.api.import_image_from_data(layer.getvalue(), repository=repository,
                                                     tag=tag)
        assert "sha256:" in imported
        pushed = list(studio.api.push(repository, tag, stream=True, decode=True))
        assert not [line for line in pushed if "error" in line], pushed
        digests = [line["aux"]["Digest"] for line in pushed if "Digest" in line.get("aux", {})]
        manifest = urllib.request.Request(
            f"http://{registry}/v2/sm-magics-test/studio-docker/manifests/{tag}", method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(manifest, timeout=10) as response:
            assert [response.headers["Docker-Content-Digest"]] == digests
        studio.images.remove(f"{repository}:{tag}")
        pulled = list(studio.api.pull(repository, tag, stream=True, decode=True))
        assert not [line for line in pulled if "error" in line], pulled
        assert f"{repository}:{tag}" in studio.images.get(f"{repository}:{tag}").tags
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.images.remove(f"{repository}:{tag}", force=True)


def test_the_network_rules_keep_every_other_value_as_it_was():
    query = "t=a%3Ab&buildargs=%7B%22X%22%3A+%221%22%7D&networkmode=sagemaker&rm=1"
    assert build_query_for_engine(query, "host") == query.replace("=sagemaker", "=host")
    assert build_query_for_engine("networkmode=", "host") is None
    assert build_query_for_engine("networkmode=sagemaker&networkmode=host", "host") is None
    config = {"Image": "x", "HostConfig": {"NetworkMode": "sagemaker", "Memory": 5},
              "NetworkingConfig": {"EndpointsConfig": {"sagemaker": None}}}
    assert container_config_for_engine(config, "host") == {
        "Image": "x", "HostConfig": {"NetworkMode": "host", "Memory": 5},
        "NetworkingConfig": {"EndpointsConfig": {"host": None}}}
    config["HostConfig"]["NetworkMode"] = "container:abc"
    assert container_config_for_engine(config, "host") is None


def test_it_runs_as_its_own_process_until_sigterm(tmp_path_factory):
    sock = tmp_path_factory.mktemp("sd") / "studio.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "sm_magics.sandbox.studio_docker", "--socket", str(sock),
         "--engine", ENGINE, "--network-as", "host"], stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert banner.startswith(f"Studio Docker stand-in at unix://{sock} -> {ENGINE}"), banner
        client = docker.DockerClient(base_url=f"unix://{sock}", version="1.41")
        assert client.ping() is True
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
    assert not sock.exists()
