"""Start, stop and inspect the sandbox's services.

The sandbox is a set of processes bound to 127.0.0.1 that stand in for AWS:

* ``api``: one AWS endpoint (moto's server behind :mod:`.gateway`) answering
  S3, ECR, STS, IAM, CloudWatch Logs and SageMaker;
* ``registry``: a container registry standing in for ECR's data plane
  (Debian's ``docker-registry`` binary, or the ``registry:2`` image when the
  Docker engine can pull it);
* ``studio-docker`` (the ``studio`` profile only): the Docker engine behind a
  local endpoint that refuses what SageMaker Studio's Docker refuses
  (:mod:`.studio_docker`), and a session that looks like a Studio space
  (``SAGEMAKER_SPACE_NAME``, ``SAGEMAKER_APP_TYPE``), so builds and ``--local``
  runs meet Studio's rules. The sandbox's own jobs still use the engine itself,
  as SageMaker's hosts are not Studio.

The ``studio-docker-off`` profile is a Studio space as most are: Docker access is
off for the domain, so the session has no Docker engine (its ``DOCKER_HOST``
names a socket that does not exist, as no socket exists in such a space).
Images then come from the registry builder, and what needs Docker says so.

The profile is ``Sandbox(profile=...)``, ``%sm_sandbox start --profile studio``,
or ``SM_MAGICS_SANDBOX_PROFILE``; the default is ``plain``.

Every authorization the notebook's requests need (IAM actions on resource
ARNs, at the endpoint and at the registry) is recorded
(:meth:`Sandbox.authorizations`, :mod:`.authorization`). With a policy,
``Sandbox(policy=...)``, ``%sm_sandbox start --policy FILE`` or
``SM_MAGICS_SANDBOX_POLICY`` (a JSON file, or ``AmazonSageMakerFullAccess``
for the managed policy most notebooks run as), what it does not allow is
refused as AWS refuses it.

The processes are detached from the notebook kernel and recorded in
``state.json`` under the sandbox home (``SM_MAGICS_SANDBOX_HOME``, default
``~/.sm_magics/sandbox``), so a kernel restart or a second notebook finds
them again, and ``stop`` ends exactly what ``start`` started.

Example::

    >>> box = Sandbox()
    >>> status = box.start(log=print)
    >>> os.environ.update(box.environment())   # plain boto3 now reaches the sandbox
    >>> box.stop()
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SANDBOX_BASE_VARIABLE, SANDBOX_VARS
from ..docker_engine import engine_problem, start_hint
from ..errors import RemoteFailure, UsageError, usage_error
from ..table import Table
from .account import NOTEBOOK_KEY, SANDBOX_ACCOUNT, SANDBOX_REGION
from .authorization import RECORD_NAME, read_record, record_path

__all__ = ["SANDBOX_ACCOUNT", "SANDBOX_REGION", "Sandbox", "SandboxStatus", "temporary_sandbox"]

REGISTRY_IMAGE = "registry:2"
REGISTRY_CONTAINER = "sm-magics-sandbox-registry"
# Variables that would send requests elsewhere or pick other credentials while
# the sandbox is active; they are removed and restored on stop.
_CLEARED_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_DEFAULT_PROFILE")
_START_TIMEOUT = 30.0
PROFILES = ("plain", "studio", "studio-docker-off")
# What a Studio space gives its kernels (shared/notes/real-environments.md); the
# names of the space the sandbox imitates.
STUDIO_SPACE = {"SAGEMAKER_SPACE_NAME": "sandbox-space", "SAGEMAKER_APP_TYPE": "JupyterLab"}
ENGINE_VAR = "SM_MAGICS_DOCKER_ENGINE"  # the real engine, behind the Studio stand-in
REGISTRY_MARKER = "sm_magics.sandbox.registry_proxy"  # the registry's process (its front door)


DEFAULT_ENGINE = "unix:///var/run/docker.sock"  # where docker.from_env() looks on Linux


def real_engine() -> str | None:
    """Where the Docker engine itself listens (not a Studio stand-in in front of it)."""
    return os.environ.get(ENGINE_VAR) or os.environ.get("DOCKER_HOST") or None


def _engine():
    """A docker client of the engine itself: the sandbox's own containers and images."""
    from ..docker_engine import docker_client

    return docker_client(real_engine())


def sandbox_home() -> Path:
    """Where the sandbox keeps its state file, logs and registry storage."""
    return Path(os.environ.get("SM_MAGICS_SANDBOX_HOME", "~/.sm_magics/sandbox")).expanduser()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int | None, marker: str) -> bool:
    """True when ``pid`` runs and its command line contains ``marker`` (no PID reuse)."""
    if not pid:
        return False
    try:
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        zombie = False
    if zombie:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # a sandbox service this process started
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return marker in cmdline


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def _wait_until(check: Callable[[], bool], timeout: float = _START_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _terminate(pid: int, timeout: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    if _wait_until(lambda: not _pid_alive(pid, ""), timeout):
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    _wait_until(lambda: not _pid_alive(pid, ""), 5)


def _policy_source(policy: str | os.PathLike | None) -> str | None:
    """``policy`` as the state file keeps it (a managed name, or an absolute path), checked."""
    if not policy:
        return None
    from .policy import MANAGED_POLICIES, Policy, PolicyError

    source = str(policy) if str(policy) in MANAGED_POLICIES else str(
        Path(policy).expanduser().resolve())
    try:
        Policy.load(source)
    except PolicyError as exc:
        raise usage_error(f"The sandbox's --policy: {exc}.") from None
    return source


def _policy_file(source: str) -> Path:
    from .policy import MANAGED_POLICIES

    return MANAGED_POLICIES.get(source, Path(source))


def _policy_words(source: str | None) -> str:
    return f"the IAM policy {Path(source).name}" if source else "no IAM policy"


@dataclass
class ServiceStatus:
    """One service: what it is, whether it runs, and where."""

    name: str
    running: bool
    where: str
    detail: str = ""

    @property
    def state(self) -> str:
        if self.name == "base":
            return "present" if self.running else "missing"
        return "running" if self.running else "stopped"


@dataclass
class SandboxStatus:
    """What runs where. Reads as a table in a terminal and in a notebook."""

    home: Path
    services: list[ServiceStatus] = field(default_factory=list)
    note: str = ""

    @property
    def running(self) -> bool:
        return any(s.running for s in self.services if s.name in ("api", "registry"))

    def rows(self) -> list[tuple[str, str, str, str]]:
        return [
            (s.name, s.state, s.where, s.detail)
            for s in self.services
        ]

    def __repr__(self) -> str:
        table = Table(("service", "state", "where", "detail"), self.rows(),
                      title=f"sm-magics sandbox ({self.home})")
        return "\n".join([repr(table), *([self.note] if self.note else [])])

    def _repr_html_(self) -> str:
        from html import escape

        table = Table(("service", "state", "where", "detail"), self.rows(),
                      title=f"sm-magics sandbox ({self.home})", code=(), css_class="sm-sandbox")
        note = f"<p>{escape(self.note)}</p>" if self.note else ""
        return table._repr_html_() + note


class Sandbox:
    """The sandbox's services under one home directory.

    ``max_jobs`` is how many training jobs run at once (the others wait in
    ``Starting``, as on a SageMaker account at its instance quota). ``policy``
    is an IAM policy the notebook's requests are held to: a JSON file, or the
    name of a shipped managed policy (``AmazonSageMakerFullAccess``).
    """

    def __init__(self, home: Path | None = None, max_jobs: int = 2,
                 profile: str | None = None, policy: str | os.PathLike | None = None) -> None:
        self.home = home or sandbox_home()
        self.max_jobs = max_jobs
        # None: the running sandbox's profile, else plain (decided at start)
        self.profile = profile or os.environ.get("SM_MAGICS_SANDBOX_PROFILE") or None
        if self.profile is not None and self.profile not in PROFILES:
            raise usage_error(f"'{self.profile}' is not a sandbox profile. Profiles: "
                              f"{', '.join(PROFILES)} (studio: SageMaker Studio's Docker rules; "
                              "studio-docker-off: a Studio space with no Docker).")
        self.state_file = self.home / "state.json"
        self.run_dir = self.home / "run"
        # None: the running sandbox's policy, else none (decided at start)
        self.policy = _policy_source(policy or os.environ.get("SM_MAGICS_SANDBOX_POLICY"))

    # ------------------------------------------------------------ state

    def state(self) -> dict | None:
        """The recorded state, or ``None`` when the sandbox was not started."""
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_suffix(".partial")
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(self.state_file)

    def _api_alive(self, state: dict) -> bool:
        api = state.get("api", {})
        return _pid_alive(api.get("pid"), "sm_magics.sandbox.gateway") and _http_ok(
            f"http://127.0.0.1:{api.get('port')}/moto-api/"
        )

    def _registry_alive(self, state: dict) -> bool:
        reg = state.get("registry", {})
        if not _pid_alive(reg.get("proxy_pid", reg.get("pid")), REGISTRY_MARKER):
            return False
        return _http_ok(f"http://127.0.0.1:{reg.get('port')}/v2/")

    def is_running(self) -> bool:
        state = self.state()
        return bool(state) and self._api_alive(state) and self._registry_alive(state)

    # ------------------------------------------------------------ start

    def preflight(self) -> None:
        """Raise a ``UsageError`` naming what is missing, before anything starts."""
        try:
            import moto  # noqa: F401
            import werkzeug  # noqa: F401
        except ImportError:
            raise usage_error(
                "The sandbox needs moto's server, which is not installed. Install it with "
                "`pip install 'sm-magics[sandbox]'`."
            ) from None
        problem = engine_problem(real_engine())
        if problem:
            raise usage_error(f"The sandbox needs a Docker engine. {problem} {start_hint()}")
        if shutil.which("docker-registry") is None and not self._registry_image_available():
            raise usage_error(
                "The sandbox needs a container registry: neither the `docker-registry` program "
                f"nor the {REGISTRY_IMAGE} image is available, and the Docker engine could not "
                f"pull {REGISTRY_IMAGE}. Install the program with `sudo apt-get install "
                f"docker-registry`, or make `docker pull {REGISTRY_IMAGE}` work."
            )

    def _registry_image_available(self) -> bool:
        import docker

        client = _engine()
        try:
            client.images.get(REGISTRY_IMAGE)
            return True
        except docker.errors.ImageNotFound:
            pass
        try:
            client.images.pull(REGISTRY_IMAGE)
            return True
        except docker.errors.APIError:
            return False

    def start(self, log: Callable[[str], None] = lambda _: None) -> SandboxStatus:
        """Start the services (or find them running) and return their status.

        A registry that stopped is started again on its port, with its images.
        When the AWS endpoint stopped, whose state lives in memory, everything
        starts afresh on new ports (jobs recorded as running end ``Failed``).
        Raises a ``UsageError`` when something needed is missing; whatever was
        started before a failure is stopped again.
        """
        state = self.state()
        self.profile = self.profile or (state or {}).get("profile") or "plain"
        if state and state.get("profile", "plain") != self.profile:
            log(f"The sandbox runs with the {state.get('profile', 'plain')} profile; starting it "
                f"again with the {self.profile} profile.")
            self.stop()
            state = None
        self.policy = self.policy or (state or {}).get("policy")
        if state and state.get("policy") != self.policy:
            log(f"The sandbox runs with {_policy_words(state.get('policy'))}; starting it again "
                f"with {_policy_words(self.policy)}.")
            self.stop()
            state = None
        if state and self._api_alive(state):
            if self._registry_alive(state):
                log("The sandbox is already running.")
                return self.status()
            if state.get("registry", {}).get("port"):
                return self._revive_registry(state, log)
        if state:
            self.stop()
        self.preflight()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record_path(self.home).touch()  # this run's record, empty until the first request
        state = {"started_at": time.time(), "region": SANDBOX_REGION, "profile": self.profile,
                 "engine": real_engine(), "policy": self.policy}
        try:
            state["api"] = self._start_api(log)
            self._write_state(state)
            state["registry"] = self._start_registry(log)
            self._write_state(state)
            if self.profile == "studio":
                state["studio_docker"] = self._start_studio_docker(log, state["engine"])
                self._write_state(state)
            state["base_image"], state["base_note"] = self._base_image(log)
            self._write_state(state)
            if state["base_image"]:
                state["base_uri"] = self._serve_base(state, log)
                self._write_state(state)
        except BaseException:
            self.stop()
            raise
        return self.status()

    def _start_api(self, log: Callable[[str], None]) -> dict:
        port = _free_port()
        log_path = self.run_dir / "api.log"
        ready = self.run_dir / "api.ready"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.pop("DOCKER_HOST", None)
        env.pop("SM_MAGICS_SANDBOX_POLICY", None)  # given as --policy, resolved here
        if real_engine():  # the jobs run on the engine itself, never behind a stand-in
            env["DOCKER_HOST"] = real_engine()
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "sm_magics.sandbox.gateway", "--port", str(port),
                 "--ready-file", str(ready), "--home", str(self.home),
                 "--max-jobs", str(self.max_jobs), *self._policy_args()],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env, cwd=self.run_dir,
            )
        if not _wait_until(lambda: process.poll() is None and ready.exists()):
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise usage_error(
                f"The sandbox's AWS endpoint did not start on 127.0.0.1:{port}: "
                f"{' '.join(tail) or 'no output'}. See {log_path}."
            )
        log(f"AWS endpoint (moto) on http://127.0.0.1:{port}")
        seeded = json.loads(ready.read_text())
        return {"pid": process.pid, "port": port, "log": str(log_path),
                "role_arn": seeded["role_arn"], "max_jobs": self.max_jobs}

    def _revive_registry(self, state: dict, log: Callable[[str], None]) -> SandboxStatus:
        """Start the registry again where it was, on its port and with its images."""
        dead = state["registry"]
        with contextlib.suppress(OSError):  # what is left of the proxy's group holds the port
            os.killpg(dead.get("proxy_pid", dead.get("pid")), signal.SIGKILL)
        if dead.get("kind") == "container":
            import docker

            with contextlib.suppress(docker.errors.NotFound):
                _engine().containers.get(dead["container"]).remove(force=True)
        log("The sandbox registry had stopped; starting it again.")
        state["registry"] = self._start_registry(log, port=dead["port"])
        self._write_state(state)
        return self.status()

    def _start_registry(self, log: Callable[[str], None], port: int | None = None) -> dict:
        """The registry on an internal port, behind its proxy on ``port`` (the one reported).

        The proxy (:mod:`.registry_proxy`) records what ECR would authorize; it
        runs ``docker-registry`` as its child, so the two start and end as one.
        """
        port = port or _free_port()
        internal = _free_port()
        storage = self.run_dir / "registry"
        storage.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("docker-registry")
        proxy = [sys.executable, "-m", REGISTRY_MARKER, "--port", str(port),
                 "--upstream-port", str(internal), "--home", str(self.home),
                 *self._policy_args()]
        log_path = self.run_dir / "registry.log"
        if binary:
            config = self.run_dir / "registry.yml"
            config.write_text(
                "version: 0.1\n"
                "log:\n  level: warn\n"
                f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
                "  delete:\n    enabled: true\n"
                f"http:\n  addr: 127.0.0.1:{internal}\n"
            )
            proxy += ["--", binary, "serve", str(config)]
            info: dict = {"kind": "binary", "port": port, "log": str(log_path)}
        else:
            container = _engine().containers.run(
                REGISTRY_IMAGE, detach=True, network_mode="host",
                name=f"{REGISTRY_CONTAINER}-{port}",
                environment={"REGISTRY_HTTP_ADDR": f"127.0.0.1:{internal}",
                             "REGISTRY_STORAGE_DELETE_ENABLED": "true"},
                volumes={str(storage): {"bind": "/var/lib/registry", "mode": "rw"}},
            )
            info = {"kind": "container", "container": container.id, "port": port,
                    "log": str(log_path)}
        with open(log_path, "ab") as out:
            process = subprocess.Popen(proxy, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        info["pid" if binary else "proxy_pid"] = process.pid
        info["internal_port"] = internal
        if not _wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/v2/")):
            raise usage_error(
                f"The sandbox registry did not start on 127.0.0.1:{port}. "
                f"See {info.get('log', 'the registry container logs')}."
            )
        log(f"Container registry on 127.0.0.1:{port}")
        return info

    def _policy_args(self) -> list[str]:
        return ["--policy", str(_policy_file(self.policy))] if self.policy else []

    def _start_studio_docker(self, log: Callable[[str], None], engine: str | None) -> dict:
        """The engine behind a Studio-like endpoint (a unix socket in the run folder)."""
        from .studio_docker import DEFAULT_ENGINE

        path = self.run_dir / "studio-docker.sock"
        log_path = self.run_dir / "studio-docker.log"
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "sm_magics.sandbox.studio_docker", "--socket", str(path),
                 "--engine", engine or DEFAULT_ENGINE, "--network-as", "host"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        url = f"unix://{path}"
        if not _wait_until(lambda: process.poll() is None and path.exists()
                           and engine_problem(url) is None):
            raise usage_error(f"The sandbox's Studio Docker endpoint did not start at {url}. "
                              f"See {log_path}.")
        log(f"SageMaker Studio's Docker rules at {url}")
        return {"pid": process.pid, "url": url, "log": str(log_path)}

    def _base_image(self, log: Callable[[str], None]) -> tuple[str | None, str]:
        from .base_image import BaseImageUnavailable, ensure_base_image

        try:
            return ensure_base_image(_engine(), log=log), ""
        except BaseImageUnavailable as exc:
            note = (f"The offline base image is missing and {exc}; builds use the default base "
                    "image, which the Docker engine must be able to pull.")
            log(note)
            return None, note

    # ------------------------------------------------------------ environment

    def _serve_base(self, state: dict, log: Callable[[str], None]) -> str:
        """Put the base image in the sandbox's registry too; returns its URI there.

        So builds with no Docker engine on the notebook's side (the registry builder)
        find the base where a registry serves it, as ``python:3.12-slim`` is served by
        Docker Hub. It is pushed behind the ECR proxy (the sandbox publishing its own
        image is no request of the notebook's), from the same root filesystem the
        engine's image was made of (:func:`.base_image.registry_form`).
        """
        from ..registry import Registry
        from .base_image import BASE_IMAGE, MANIFEST_TYPE, registry_form

        form = registry_form(log)
        repository, tag = BASE_IMAGE.split(":")
        registry = Registry(f"127.0.0.1:{state['registry']['internal_port']}")
        registry.upload_blob(repository, form.layer, form.layer_digest, form.layer_size)
        registry.upload_blob(repository, io.BytesIO(form.config), form.config_digest,
                             len(form.config))
        registry.put_manifest(repository, tag, form.manifest, MANIFEST_TYPE)
        return f"127.0.0.1:{state['registry']['port']}/{BASE_IMAGE}"

    def environment(self) -> dict[str, str]:
        """The variables that point boto3, the magics and ``docker`` at the sandbox."""
        state = self.state()
        if not state:
            raise usage_error("The sandbox is not running. Start it with `%sm_sandbox start`.")
        endpoint = f"http://127.0.0.1:{state['api']['port']}"
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": NOTEBOOK_KEY,
            "AWS_SECRET_ACCESS_KEY": NOTEBOOK_KEY,
            "AWS_REGION": state["region"],
            "AWS_DEFAULT_REGION": state["region"],
            "SM_MAGICS_REGISTRY": f"127.0.0.1:{state['registry']['port']}",
            "SM_MAGICS_ROLE": state["api"]["role_arn"],
        }
        studio = state.get("studio_docker")
        if studio:
            # A Studio space: Studio's Docker at DOCKER_HOST, and the network setting left to
            # its automatic value there (sagemaker), which the stand-in runs as host.
            env.update(STUDIO_SPACE, DOCKER_HOST=studio["url"])
            # the engine itself, for the sandbox's own containers (and a sandbox started
            # from this session, whose jobs must not run behind Studio's rules)
            env[ENGINE_VAR] = state.get("engine") or DEFAULT_ENGINE
        elif state.get("profile") == "studio-docker-off":
            # No Docker socket in the space; the network setting keeps its Studio value.
            env.update(STUDIO_SPACE, DOCKER_HOST=f"unix://{self.run_dir}/no-docker.sock")
            # the sandbox's own containers are still on this machine's engine
            env[ENGINE_VAR] = state.get("engine") or DEFAULT_ENGINE
        else:
            # Builds and --local containers use the host's network: on the machines the
            # sandbox runs on, nothing but 127.0.0.1 may be reached and Docker runs without
            # a bridge (shared/notes/offline-sandbox.md).
            env["SM_MAGICS_DOCKER_NETWORK"] = "host"
        if state.get("base_image"):
            env["SM_MAGICS_BASE"] = state["base_image"]
        if state.get("base_uri"):
            env[SANDBOX_BASE_VARIABLE] = state["base_uri"]
        env[SANDBOX_VARS] = ",".join(sorted(env))
        return env

    def apply_environment(self, environ: dict | None = None) -> dict[str, str | None]:
        """Point ``environ`` (default ``os.environ``) at the sandbox.

        Returns the previous values, for :meth:`restore_environment`.
        """
        environ = os.environ if environ is None else environ
        new = self.environment()
        earlier = filter(None, environ.get(SANDBOX_VARS, "").split(","))  # a sandbox's before
        changed = list(dict.fromkeys([*new, *_CLEARED_VARS, *earlier,
                                      *(k for k in environ if k.startswith("AWS_ENDPOINT_URL_"))]))
        previous = {k: environ.get(k) for k in changed}
        for key in changed:
            environ.pop(key, None)
        environ.update(new)
        return previous

    @staticmethod
    def restore_environment(previous: dict[str, str | None], environ: dict | None = None) -> None:
        """Undo :meth:`apply_environment`."""
        environ = os.environ if environ is None else environ
        for key, value in previous.items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value

    # ------------------------------------------------------------ faults (for tests)

    def inject_fault(self, service: str, *, status: int = 503, code: str = "ServiceUnavailable",
                     count: int = 1, method: str | None = None, path: str | None = None,
                     target: str | None = None, after: bool = False,
                     message: str | None = None) -> dict:
        """Make the next ``count`` requests to ``service`` fail, as AWS does when it errs.

        A test facility of the sandbox's endpoint (see :mod:`.gateway` for what
        ``method``, ``path``, ``target`` and ``after`` match and do); returns
        the rule as armed.

        >>> box.inject_fault("s3", method="PUT", status=503, code="SlowDown", count=3)
        """
        rule = {"service": service, "status": status, "code": code, "count": count,
                "method": method, "path": path, "target": target, "after": after}
        if message is not None:
            rule["message"] = message
        return self._faults("POST", rule)

    def faults(self) -> list[dict]:
        """The armed fault rules, each with ``failed``: how many requests it made fail."""
        return self._faults("GET")

    def clear_faults(self) -> None:
        """Disarm every fault rule."""
        self._faults("DELETE")

    def _faults(self, method: str, rule: dict | None = None):
        from .gateway import FAULTS_PATH

        return self._ask(FAULTS_PATH, method, rule)

    def _ask(self, path: str, method: str, body: dict | None = None):
        """The JSON answer of the endpoint's own ``path`` (urllib's HTTPError for an error)."""
        state = self.state()
        if not state:
            raise usage_error("The sandbox is not running. Start it with `%sm_sandbox start`.")
        request = urllib.request.Request(
            f"http://127.0.0.1:{state['api']['port']}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            return json.loads(response.read())

    # ------------------------------------------------------------ spot interruptions

    def interrupt_spot(self, job_name: str) -> dict:
        """Interrupt a running managed-spot job as EC2 reclaiming its spot capacity would:
        its hosts get SIGTERM, the job shows Interrupted, then restarts and finds its
        checkpoints.

        Returns the endpoint's answer. A job that is unknown, not a spot job or
        not running is a ``UsageError`` saying so.

        >>> box.interrupt_spot("fraud-20261124-101500-ab12")
        """
        from ..training import check_job_name
        from .gateway import SPOT_INTERRUPTIONS_PATH

        check_job_name(job_name, "The job to interrupt")
        try:
            return self._ask(SPOT_INTERRUPTIONS_PATH, "POST", {"TrainingJobName": job_name})
        except urllib.error.HTTPError as exc:
            with exc:
                text = exc.read()
            try:
                message = str(json.loads(text)["message"])
            except (ValueError, KeyError, TypeError):
                message = f"the sandbox's endpoint answered HTTP {exc.code}."
            if exc.code >= 500:
                raise RemoteFailure(f"The sandbox could not interrupt the training job {job_name}",
                                    reason=message) from None
            if not message.endswith((".", "!", "?")):
                message += "."
            raise usage_error(
                f"The sandbox did not interrupt the training job {job_name}: {message} Only a "
                "running job of this sandbox started with --spot can be interrupted "
                "(`%sm_jobs` lists the jobs).") from None
        except urllib.error.URLError as exc:
            raise usage_error(f"The sandbox's endpoint does not answer ({exc.reason}). Start "
                              "it again with `%sm_sandbox start`.") from None

    # ------------------------------------------------------------ stop / status

    def stop(self) -> SandboxStatus:
        """Stop what ``start`` started (never the Docker engine) and forget its data."""
        state = self.state() or {}
        api = state.get("api", {})
        if _pid_alive(api.get("pid"), "sm_magics.sandbox.gateway"):
            _terminate(api["pid"])
        studio = state.get("studio_docker", {})
        if _pid_alive(studio.get("pid"), "sm_magics.sandbox.studio_docker"):
            _terminate(studio["pid"])
        registry = state.get("registry", {})
        front = registry.get("proxy_pid", registry.get("pid"))
        if _pid_alive(front, REGISTRY_MARKER):
            _terminate(front)  # with the docker-registry it runs, when it runs one
        if registry.get("kind") == "container":
            import docker

            with contextlib.suppress(docker.errors.NotFound):
                _engine().containers.get(registry["container"]).remove(force=True)
        if registry.get("port"):
            self._forget_registry_tags(f"127.0.0.1:{registry['port']}/")
        self.state_file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # kept for authorizations() once stopped
            record_path(self.home).replace(self.home / RECORD_NAME)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        return self.status()

    def authorizations(self) -> list[dict]:
        """Every authorization the notebook's requests needed, oldest first.

        Each is a dict: ``action`` and ``resource`` (as IAM authorizes them, e.g.
        ``ecr:PutImage`` on ``arn:aws:ecr:us-east-1:123456789012:repository/sagemaker-digits``),
        ``allowed``, ``enforced`` (whether a policy decided), ``reason`` when denied,
        ``request`` and ``when``. While the sandbox runs, those of this run; once it is
        stopped, those of the run that stopped last.

        >>> sorted({(a["action"], a["resource"]) for a in box.authorizations()})[:1]
        [('ecr:BatchCheckLayerAvailability', 'arn:aws:ecr:us-east-1:123456789012:repository/...')]
        """
        running = record_path(self.home)
        return read_record(running if running.exists() else self.home / RECORD_NAME)

    @staticmethod
    def _forget_registry_tags(prefix: str) -> None:
        """Remove the local engine's tags of the stopped registry (the layers stay cached)."""
        import docker

        try:
            client = _engine()
            tags = [t for image in client.images.list() for t in image.tags
                    if t.startswith(prefix)]
        except (docker.errors.DockerException, UsageError):  # no engine: nothing to forget
            return
        for tag in tags:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(tag, noprune=True)

    def status(self) -> SandboxStatus:
        """What runs where, checked now (not only what the state file says)."""
        state = self.state() or {}
        status = SandboxStatus(self.home)
        api = state.get("api")
        status.services.append(ServiceStatus(
            "api", bool(api) and self._api_alive(state),
            f"http://127.0.0.1:{api['port']}" if api else "-",
            "S3, ECR, STS, IAM, CloudWatch Logs, SageMaker" + (
                f" (pid {api['pid']})" if api else "") + (
                f"; {_policy_words(state['policy'])} enforced"
                if state.get("policy") else ""),
        ))
        reg = state.get("registry")
        status.services.append(ServiceStatus(
            "registry", bool(reg) and self._registry_alive(state),
            f"127.0.0.1:{reg['port']}" if reg else "-",
            ("docker-registry" if reg.get("kind") == "binary" else f"{REGISTRY_IMAGE} container")
            + " behind the ECR authorization proxy" + (
                f" (pid {reg['pid']})" if reg.get("kind") == "binary" else "") if reg else "",
        ))
        engine = state.get("engine") or real_engine()
        problem = engine_problem(engine)
        status.services.append(ServiceStatus(
            "docker", problem is None, engine or "unix:///var/run/docker.sock",
            "Docker engine (not managed by the sandbox)" if problem is None else problem,
        ))
        studio = state.get("studio_docker")
        if studio:
            status.services.append(ServiceStatus(
                "studio-docker", _pid_alive(studio.get("pid"), "sm_magics.sandbox.studio_docker"),
                studio["url"], "SageMaker Studio's Docker rules: API 1.41, network sagemaker"))
        if state.get("base_image"):
            status.services.append(ServiceStatus("base", True, state["base_image"],
                                                 "default --base of sandbox builds"))
        status.note = state.get("base_note", "")
        if not state:
            status.note = "The sandbox is not running. Start it with `%sm_sandbox start`."
        return status


@contextlib.contextmanager
def temporary_sandbox(home: Path | None = None, log: Callable[[str], None] = lambda _: None,
                      max_jobs: int = 2, profile: str | None = None,
                      policy: str | None = None) -> Iterator[Sandbox]:
    """A sandbox of its own, with this process's environment pointed at it, for a while.

    For scripts, benchmarks and tests: starts the services under ``home`` (a new
    temporary folder by default), applies :meth:`Sandbox.environment` to
    ``os.environ``, and on exit restores the environment, stops the services
    and removes a temporary home. ``max_jobs`` training jobs run at once;
    ``profile`` is ``plain`` or ``studio`` (see the module's docstring);
    ``policy`` an IAM policy to enforce (see :class:`Sandbox`).

    >>> with temporary_sandbox() as box:
    ...     boto3.client("s3").list_buckets()
    """
    owned = home is None
    home = Path(tempfile.mkdtemp(prefix="sm-magics-sandbox-")) if owned else Path(home)
    previous_home = os.environ.get("SM_MAGICS_SANDBOX_HOME")
    os.environ["SM_MAGICS_SANDBOX_HOME"] = str(home)
    box = Sandbox(home, max_jobs=max_jobs, profile=profile, policy=policy)
    try:
        box.start(log=log)
        previous = box.apply_environment()
        try:
            yield box
        finally:
            box.restore_environment(previous)
    finally:
        box.stop()
        Sandbox.restore_environment({"SM_MAGICS_SANDBOX_HOME": previous_home})
        if owned:
            shutil.rmtree(home, ignore_errors=True)
