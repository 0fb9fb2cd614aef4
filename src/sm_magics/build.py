"""Building a ``%%sm_container`` cell into an image in ECR, only when its content changed.

The steps, each reported to a :class:`BuildListener` (the panel):

1. **Prepare**: check the recipe and write the build context
   (:mod:`sm_magics.recipe`); every mistake is a UsageError, raised before
   anything exists in AWS.
2. **Look up**: the image tag is the context's content hash. When the ECR
   repository exists and the registry already has that tag, the image is
   returned as it is (``built=False``): nothing is built or pushed, and the
   Docker engine is not needed.
3. **Build** with the Docker engine (docker SDK, streamed, host networking),
   after creating the ECR repository when missing.
4. **Push** with the ECR login, reporting progress per layer.

A failed build raises :class:`~sm_magics.errors.RemoteFailure` naming the
failing Dockerfile step with its last log lines; nothing is tagged or pushed.

Example::

    >>> service = BuildService(resolve(), listener=TextBuildPanel("fraud"))
    >>> image = service.build(Recipe(name="fraud", body="print('hi')", base="python:3.12-slim"))
    >>> image.uri, image.built      # built=False when this exact content was pushed before
    ('123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud:<16 hex digits>', True)
"""

from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import RemoteFailure, usage_error
from .recipe import BuildContext, Recipe, prepare

__all__ = ["STAGES", "BuildListener", "BuildService", "ContainerImage"]

STAGES = ("Prepare", "Look up", "Build", "Push")
# SageMaker training runs x86_64 instances only, so every image is built for
# linux/amd64 whatever machine the notebook runs on (an Apple Silicon laptop
# would otherwise build arm64 images that fail with "exec format error").
PLATFORM = "linux/amd64"
EMULATION_HINT = (
    "This machine cannot run linux/amd64 programs, which building a SageMaker image needs. "
    "On a Mac with Apple Silicon, turn on Docker Desktop's 'Use Rosetta for x86_64/amd64 "
    "emulation on Apple Silicon' (Settings > General); on an arm64 Linux machine, install "
    "QEMU's binfmt handlers (`sudo apt-get install qemu-user-static binfmt-support`).")
_TAIL = 12
_STEP = re.compile(r"^Step \d+/\d+ : ")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_AUTH_ERROR = re.compile(r"unauthorized|authentication required|denied|expired", re.I)
_UNREACHABLE = re.compile(r"connection refused|no such host|i/o timeout|connection reset|EOF$",
                          re.I)


@dataclass(frozen=True)
class ContainerImage:
    """An image built from a ``%%sm_container`` cell.

    ``uri`` is what a training job runs (``host/name:tag``), ``digest`` the
    manifest digest in the registry (the local image id when not pushed),
    ``built`` whether this run built it (``False``: it existed already), and
    ``param_defaults`` the cell's ``# @param`` values, the lowest-priority
    parameters of a training job.

    >>> image = ContainerImage("fraud", "127.0.0.1:5000/fraud:5b0d6c2e", "5b0d6c2e",
    ...                        "sha256:4b1e...", Path(".sm_magics/builds/fraud/5b0d6c2e"), True)
    >>> image
    ContainerImage fraud  127.0.0.1:5000/fraud:5b0d6c2e (built and pushed)
    """

    name: str
    uri: str
    tag: str
    digest: str | None
    build_dir: Path
    built: bool
    param_defaults: dict[str, Any] = field(default_factory=dict)
    pushed: bool = True

    @property
    def state(self) -> str:
        if not self.pushed:
            return "built locally, not pushed" if self.built else "local image, unchanged"
        return "built and pushed" if self.built else "unchanged, already in the registry"

    def __repr__(self) -> str:
        return f"ContainerImage {self.name}  {self.uri} ({self.state})"

    def _repr_html_(self) -> str:
        from .table import Table

        params = ", ".join(f"{k}={v!r}" for k, v in self.param_defaults.items()) or "none"
        fields = {"image": self.uri, "digest": self.digest or "-", "state": self.state,
                  "build context": str(self.build_dir), "# @param defaults": params}
        code = ("image", "digest", "build context", "# @param defaults")
        return Table.record(fields, title=f"ContainerImage {self.name}", code=code,
                            css_class="sm-magics-image")._repr_html_()


_ENGINE: dict[str | None, Any] = {}


def _engine():
    """The Docker engine's client, reused while the engine at ``DOCKER_HOST`` answers."""
    where = os.environ.get("DOCKER_HOST")
    if where in _ENGINE:
        try:
            _ENGINE[where].ping()
            return _ENGINE[where]
        except Exception:  # the engine went away: connect again, or say how to start one
            del _ENGINE[where]
    from .docker_engine import docker_client

    _ENGINE[where] = docker_client()
    return _ENGINE[where]


def _engine_answers() -> bool:
    """Whether a Docker engine answers at ``DOCKER_HOST`` (or the local socket)."""
    from .errors import UsageError

    try:
        _engine()
        return True
    except UsageError:
        return False


def choose_builder(recipe: Recipe, setting: str | None, push: bool = True) -> tuple[str, str]:
    """``(builder, why)``: the builder of ``recipe`` for the ``builder`` setting.

    ``auto`` (the default) takes the Docker builder when a Docker engine answers, or
    when the recipe runs commands in the image (``--apt``, ``--run``,
    ``--dockerfile``) or is not pushed, and the registry builder when no engine
    answers. A builder that cannot build the recipe is a UsageError naming why.
    """
    from .registry_build import needs_docker

    commands = needs_docker(recipe)
    if setting == "registry":
        if commands or not push:
            from .docker_engine import start_hint

            what = ", ".join(commands) if commands else "--no-push"
            raise usage_error(
                f"%%sm_container {recipe.name}: {what} needs a Docker engine: the registry "
                "builder assembles images in the registry without running commands or "
                f"keeping local images. Build with --builder docker. {start_hint()}")
        return "registry", "chosen with the builder setting"
    if setting == "docker":
        return "docker", "chosen with the builder setting"
    if commands:
        verb = "runs" if len(commands) == 1 else "run"
        if not _engine_answers():
            from .docker_engine import engine_problem, start_hint

            raise usage_error(
                f"%%sm_container {recipe.name}: {', '.join(commands)} {verb} commands in the "
                f"image, which needs a Docker engine. {engine_problem()} {start_hint()}")
        return "docker", f"{', '.join(commands)} {verb} commands in the image"
    if not push:
        return "docker", "--no-push keeps the image in the local engine"
    if _engine_answers():
        return "docker", "a Docker engine answers"
    return "registry", "no Docker engine answers"


def _check_base_platform(client, context: BuildContext) -> None:
    """A UsageError, before anything is built or created, for a local base that is not amd64.

    A base that is not on this machine is pulled by the build for :data:`PLATFORM`;
    one that is here already is used as it is, so it must be that platform.
    """
    import docker.errors

    if not context.base:
        return
    try:
        attrs = client.images.get(context.base).attrs
    except docker.errors.ImageNotFound:
        _check_remote_platforms(client, context)
        return
    except docker.errors.DockerException:  # unreadable: the build says what is wrong
        return
    found = f"{attrs.get('Os', '?')}/{attrs.get('Architecture', '?')}"
    if found != PLATFORM:
        raise usage_error(
            f"%%sm_container {context.name}: the base image {context.base} on this machine is "
            f"{found}, and SageMaker training runs {PLATFORM} images only. Get its amd64 "
            f"variant with `docker pull --platform {PLATFORM} {context.base}`, or choose a base "
            "that has one.")


def _check_remote_platforms(client, context: BuildContext) -> None:
    """A UsageError when the base's registry lists platforms and linux/amd64 is not one.

    The engine asks the registry (``GET /distribution/{name}/json``, Engine API
    1.30 and later); when it cannot, the build's own pull says what is wrong.
    """
    import docker.errors

    try:
        platforms = client.api.inspect_distribution(context.base).get("Platforms") or []
    except docker.errors.DockerException:
        return
    offered = sorted({f"{p.get('os')}/{p.get('architecture')}" for p in platforms})
    if offered and PLATFORM not in offered:
        raise usage_error(
            f"%%sm_container {context.name}: the base image {context.base} has no {PLATFORM} "
            f"variant (its registry offers {', '.join(offered)}), and SageMaker training runs "
            f"{PLATFORM} images only. Choose a base that has one.")


class BuildListener:
    """Receives the progress of a build. Override what you show; the rest is ignored.

    >>> class Printer(BuildListener):
    ...     def stage(self, name, detail=""):
    ...         print(name, detail)
    """

    def plan(self, stages: tuple[str, ...], builder: str, reason: str) -> None:
        """The build's stages (:data:`STAGES` unless told otherwise), which builder runs
        them and why (``"registry"``, ``"no Docker engine answers"``)."""

    def stage(self, name: str, detail: str = "") -> None:
        """A stage of the plan (:data:`STAGES` by default) starts."""

    def step(self, text: str) -> None:
        """A Dockerfile step starts (``Step 3/8 : RUN pip install ...``)."""

    def log(self, line: str) -> None:
        """A line of build output."""

    def note(self, text: str) -> None:
        """Something the user should read once (e.g. an optional step that was skipped).

        By default it is shown as a line of output.
        """
        self.log(text)

    def layer(self, layer_id: str, status: str, current: int | None, total: int | None) -> None:
        """Push progress of one layer (``Pushing``, ``Pushed``, ``Layer already exists``...)."""

    def finished(self, image: ContainerImage) -> None:
        """The image is ready."""

    def failed(self, error: BaseException) -> None:
        """The build stopped with ``error`` (raised right after)."""


class BuildService:
    """Builds recipes into images, with the settings' AWS account and registry.

    ``cwd`` is where ``.sm_magics/builds`` goes (default: the working directory).
    """

    def __init__(self, settings: Settings, listener: BuildListener | None = None,
                 cwd: Path | None = None) -> None:
        self.settings = settings
        self.listener = listener or BuildListener()
        self.cwd = cwd or Path.cwd()

    def build(self, recipe: Recipe, push: bool = True,
              repository: str | None = None) -> ContainerImage:
        """Build (and push, unless ``push`` is false) the image of ``recipe``.

        The ECR repository is ``repository`` when given (used as given), else the
        container's name with the ``repository_prefix`` setting
        (:func:`~sm_magics.ecr.repository_name`). Returns the
        :class:`ContainerImage`; raises a UsageError for a mistake in the recipe
        or the setup, and :class:`RemoteFailure` when the build or push fails.
        """
        try:
            image = self._build(recipe, push, repository)
        except KeyboardInterrupt:
            # The engine abandons a build or push whose client went away: no tag is left.
            interrupted = KeyboardInterrupt(
                f"%%sm_container {recipe.name} was interrupted. An unfinished build or push "
                "leaves no tag behind; run the cell again to finish it.")
            self.listener.failed(interrupted)
            raise interrupted from None
        except BaseException as exc:
            self.listener.failed(exc)
            raise
        self.listener.finished(image)
        return image

    def _build(self, recipe: Recipe, push: bool, repository_given: str | None) -> ContainerImage:
        from .ecr import repository_name
        from .recipe import check_repository_name

        builder, why = choose_builder(recipe, self.settings.builder, push)
        if builder == "registry":
            from .registry_build import STAGES as REGISTRY_STAGES

            self.listener.plan(REGISTRY_STAGES, builder, why)
        else:
            self.listener.plan(STAGES, builder, why)
        self.listener.stage("Prepare", "checking the cell and writing the build context")
        context = prepare(recipe)
        name = check_repository_name(
            repository_given or repository_name(context.name, self.settings.repository_prefix))
        if builder == "registry":
            return self._build_in_registry(recipe, context, name)
        build_dir = context.write(self.cwd)
        if not push:
            return self._build_local(context, build_dir)

        from .aws import AwsContext
        from .ecr import Ecr
        from .registry import Registry

        ecr = Ecr(AwsContext(self.settings), self.settings.registry)
        self.listener.stage("Look up", f"{name}:{context.tag}")
        repository = ecr.find(name)
        if repository is not None:
            registry = Registry(repository.host, ecr.credential)
            digest = registry.manifest_digest(name, context.tag)
            if digest is not None:
                return self._image(context, repository.image_uri(context.tag), digest,
                                   build_dir, built=False)
        client = _engine()
        _check_base_platform(client, context)
        repository = ecr.ensure(name, note=self.listener.note)
        uri = repository.image_uri(context.tag)
        self.listener.stage("Build", uri)
        self._docker_build(client, context, build_dir, uri)
        self.listener.stage("Push", uri)
        digest = self._push(client, repository, context.tag, ecr)
        return self._image(context, uri, digest, build_dir, built=True)

    def _build_in_registry(self, recipe: Recipe, context: BuildContext,
                           name: str) -> ContainerImage:
        """The registry builder (:mod:`.registry_build`): no Docker engine involved."""
        from .aws import AwsContext
        from .ecr import Ecr
        from .registry import Registry
        from .registry_build import RegistryBuilder, registry_tag

        context = registry_tag(context)
        build_dir = context.write(self.cwd)
        ecr = Ecr(AwsContext(self.settings), self.settings.registry)
        self.listener.stage("Look up", f"{name}:{context.tag}")
        repository = ecr.find(name)
        if repository is not None:
            digest = Registry(repository.host, ecr.credential).manifest_digest(name, context.tag)
            if digest is not None:
                return self._image(context, repository.image_uri(context.tag), digest,
                                   build_dir, built=False)
        uri, digest = RegistryBuilder(self.settings, self.listener).build(
            context, recipe, ecr, name, build_dir)
        return self._image(context, uri, digest, build_dir, built=True)

    def _build_local(self, context: BuildContext, build_dir: Path) -> ContainerImage:
        import docker.errors

        client = _engine()
        _check_base_platform(client, context)
        reference = f"{context.name}:{context.tag}"
        self.listener.stage("Look up", f"local image {reference}")
        try:
            existing = client.images.get(reference)
        except docker.errors.ImageNotFound:
            existing = None
        if existing is not None:
            return self._image(context, reference, existing.id, build_dir, built=False,
                               pushed=False)
        self.listener.stage("Build", reference)
        image_id = self._docker_build(client, context, build_dir, reference)
        return self._image(context, reference, image_id, build_dir, built=True, pushed=False)

    @staticmethod
    def _image(context: BuildContext, uri: str, digest: str | None, build_dir: Path, *,
               built: bool, pushed: bool = True) -> ContainerImage:
        return ContainerImage(context.name, uri, context.tag, digest or None, build_dir, built,
                              dict(context.param_defaults), pushed)

    def _docker_build(self, client, context: BuildContext, build_dir: Path, reference: str) -> str:
        """Build ``build_dir`` tagged ``reference`` for :data:`PLATFORM`; return the image id.

        The build's network is the ``docker_network`` setting (``sagemaker`` in
        SageMaker Studio, ``host`` in the sandbox, Docker's own default elsewhere).
        """
        import docker.errors

        current = "the start of the build"
        tail: deque[str] = deque(maxlen=_TAIL)
        image_id = None
        try:
            events = client.api.build(
                path=str(build_dir), tag=reference, rm=True, forcerm=True, decode=True,
                pull=False, platform=PLATFORM, buildargs=dict(context.build_args) or None,
                **({"network_mode": self.settings.docker_network}
                   if self.settings.docker_network else {}),
            )
            for event in events:
                if "error" in event:
                    detail = event.get("errorDetail", {}).get("message") or event["error"]
                    said = "\n".join([detail, *tail]).lower()
                    hint = (EMULATION_HINT if "exec format error" in said
                            else "Fix the cell and run it again.")
                    raise RemoteFailure(
                        f"Build of {context.name} failed at {current}",
                        reason=detail.strip(), log_tail=tail,
                        hint=f"{hint} The build context is in {build_dir}.",
                    )
                if "aux" in event and "ID" in event["aux"]:
                    image_id = event["aux"]["ID"]
                if event.get("progressDetail", {}).get("current") is not None:
                    continue  # byte counts while the base image is pulled
                text = _ANSI.sub("", event.get("stream") or event.get("status") or "")
                for line in text.splitlines():
                    if not line.strip():
                        continue
                    if _STEP.match(line):
                        number, _, instruction = line.partition(" : ")
                        current = f"{number.lower()}: {instruction}"
                        tail.clear()
                        self.listener.step(line)
                    else:
                        tail.append(line)
                        self.listener.log(line)
        except docker.errors.APIError as exc:
            from .docker_engine import refusal

            network = self.settings.docker_network
            refused = refusal(exc, f"the build's network '{network or 'default'}'")
            if refused:
                raise RemoteFailure(
                    f"Build of {context.name} was refused by the Docker engine", reason=refused,
                    hint="Set the Docker network it allows, e.g. `%sm_config --docker-network "
                         "sagemaker` in SageMaker Studio, and run the cell again.") from None
            raise RemoteFailure(
                f"Build of {context.name} failed at {current}",
                reason=str(exc.explanation or exc), log_tail=tail,
                hint=f"The build context is in {build_dir}.",
            ) from None
        return image_id or client.images.get(reference).id

    def _push(self, client, repository, tag: str, ecr) -> str:
        """Push ``repository:tag`` with the ECR login; return the manifest digest."""
        import docker.errors

        repository_uri = repository.uri
        refreshed = False
        while True:
            token = ecr.token(refresh=refreshed)
            auth = {"username": token.username, "password": token.password}
            tail: deque[str] = deque(maxlen=_TAIL)
            digest = None
            error = None
            try:
                for event in client.api.push(repository_uri, tag=tag, stream=True, decode=True,
                                             auth_config=auth):
                    if "error" in event:
                        error = event.get("errorDetail", {}).get("message") or event["error"]
                        break
                    if "aux" in event and "Digest" in event["aux"]:
                        digest = event["aux"]["Digest"]
                    status = event.get("status", "")
                    if "id" in event and status:
                        progress = event.get("progressDetail") or {}
                        self.listener.layer(event["id"], status, progress.get("current"),
                                            progress.get("total"))
                    elif status:
                        tail.append(status)
                        self.listener.log(status)
            except docker.errors.APIError as exc:
                error = str(exc.explanation or exc)
            if error is None:
                if digest is None:
                    raise RemoteFailure(f"Push of {repository_uri}:{tag} reported no digest",
                                        log_tail=tail)
                return digest
            if _AUTH_ERROR.search(error) and not refreshed:
                refreshed = True
                continue
            if _UNREACHABLE.search(error):
                raise RemoteFailure(
                    f"Push of {repository_uri}:{tag} failed: the registry cannot be reached",
                    reason=error.strip(), log_tail=tail,
                    hint="Nothing was tagged in the registry. Check the network (or "
                         "`%sm_sandbox status` when working offline) and run the cell again.")
            if re.search(r"denied|not authorized|forbidden", error, re.I):
                from .ecr import PUSH_ACTIONS

                arn = repository.ecr_arn or repository.name
                raise RemoteFailure(
                    f"Push of {repository_uri}:{tag} was denied", reason=error.strip(),
                    log_tail=tail,
                    hint=f"These credentials may not push to {arn}. Grant "
                         f"{', '.join(PUSH_ACTIONS)} on it, or push to a repository whose name "
                         "contains 'sagemaker', which AmazonSageMakerFullAccess allows (the "
                         "default repository_prefix setting gives such names).")
            raise RemoteFailure(
                f"Push of {repository_uri}:{tag} failed", reason=error.strip(), log_tail=tail,
                hint="Check the credentials may push to this repository "
                     "(ecr:InitiateLayerUpload, ecr:PutImage) and run the cell again.",
            )
