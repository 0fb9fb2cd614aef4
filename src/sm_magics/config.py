"""Settings, and where each value came from.

:data:`SETTINGS` declares every setting once (name, help, variables, check,
default); the magics derive its trait and its flags from that declaration.

Every setting is resolved through the same ladder, highest first:

1. the running magic's own flags (``%sm_train --instance-type ml.c5.xlarge``);
2. the session: ``%sm_config --role ...`` or ``%config SageMakerMagics.role = ...``
   (also ``c.SageMakerMagics.role`` in ``ipython_config.py``);
3. the environment: ``SM_MAGICS_<NAME>`` and the standard AWS variables
   (``AWS_PROFILE``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``,
   ``AWS_ENDPOINT_URL``), then the region of the AWS profile in ``~/.aws/config``;
4. the SageMaker SDK's ``config.yaml`` defaults (admin file, then user file);
5. SageMaker Studio / notebook-instance metadata (execution role, region);
6. built-in defaults (prefix ``sm-magics``, bucket ``sagemaker-<region>-<account>``).

Example::

    >>> settings = resolve(session={"role": ("arn:aws:iam::111122223333:role/Train", "%sm_config")})
    >>> settings["role"].value, settings["role"].source
    ('arn:aws:iam::111122223333:role/Train', '%sm_config')
"""

from __future__ import annotations

import configparser
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import usage_error
from .s3uri import bucket_problem

__all__ = [
    "SETTINGS",
    "Setting",
    "Settings",
    "Value",
    "check_value",
    "clean_value",
    "resolve",
    "tidy_value",
]

DEFAULT_PREFIX = "sm-magics"
DEFAULT_BASE = "python:3.12-slim"
DEFAULT_INSTANCE_TYPE = "ml.m5.large"
# AmazonSageMakerFullAccess, the role most notebooks run as, may push only to ECR
# repositories whose name contains "sagemaker" (statement AllowECRActions, v29).
DEFAULT_REPOSITORY_PREFIX = "sagemaker-"
BUILDERS = ("auto", "docker", "registry")
PLANNED_BUILDERS = ("codebuild",)

STUDIO_METADATA = Path("/opt/ml/metadata/resource-metadata.json")
SANDBOX_VARS = "SM_MAGICS_SANDBOX_VARS"
# Where the sandbox's registry serves its base image (the registry builder reads it there).
SANDBOX_BASE_VARIABLE = "SM_MAGICS_SANDBOX_BASE_URI"

# ---------------------------------------------------------------- validation

_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_INSTANCE = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
_PROFILE = re.compile(r"^[\w+.@-]{1,128}$")
_HOSTPORT = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")
_IMAGE = re.compile(
    r"^(?:(?P<domain>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::\d+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def _check_region(value: str) -> str | None:
    if _REGION.match(value):
        return None
    return f"'{value}' is not an AWS region name (for example us-east-1 or eu-west-2)."


def _check_role(value: str) -> str | None:
    if _ROLE_ARN.match(value):
        return None
    return (
        f"'{value}' is not an IAM role ARN. Give the full ARN of the SageMaker execution "
        "role, for example arn:aws:iam::111122223333:role/SageMakerExecutionRole."
    )


def _check_bucket(value: str) -> str | None:
    problem = bucket_problem(value)
    if problem is None:
        return None
    return f"'{value}' is not a valid S3 bucket name: {problem}."


def _check_prefix(value: str) -> str | None:
    stripped = value.strip("/")
    if stripped and "//" not in stripped and stripped.isprintable() and len(stripped) <= 512:
        return None
    return (
        f"'{value}' is not a usable S3 key prefix: give one or more path segments such as "
        "'sm-magics' or 'team/fraud'."
    )


def _check_instance_type(value: str) -> str | None:
    if _INSTANCE.match(value):
        return None
    return f"'{value}' is not a SageMaker instance type (for example ml.m5.large or ml.g5.xlarge)."


def _check_image(value: str) -> str | None:
    if len(value) <= 255 and _IMAGE.match(value):
        return None
    return (
        f"'{value}' is not a container image reference. Use the form "
        "[registry/]repository[:tag][@sha256:digest], for example python:3.12-slim."
    )


def _check_base_python(value: str) -> str | None:
    if re.fullmatch(r"3\.\d{1,2}", value):
        return None
    return f"'{value}' is not a Python version: give MAJOR.MINOR, for example 3.11."


def _check_builder(value: str) -> str | None:
    if value in BUILDERS:
        return None
    if value in PLANNED_BUILDERS:
        return (f"The '{value}' builder is not available yet; use --builder docker (a Docker "
                "engine) or --builder registry (no Docker needed).")
    return f"'{value}' is not a builder. Available builders: {', '.join(BUILDERS)}."


def _check_profile(value: str) -> str | None:
    if not _PROFILE.match(value):
        return f"'{value}' is not a valid AWS profile name."
    known = available_profiles()
    if value in known:
        return None
    listed = ", ".join(sorted(known)) or "none"
    return (
        f"The AWS profile '{value}' is not in ~/.aws/config or ~/.aws/credentials "
        f"(known profiles: {listed}). Create it with `aws configure --profile {value}`."
    )


_REPOSITORY_PREFIX = re.compile(r"^(?:[a-z0-9]+(?:[._/-]+[a-z0-9]*)*)?$")


def _check_repository_prefix(value: str) -> str | None:
    if len(value) <= 64 and _REPOSITORY_PREFIX.match(value):
        return None
    return (f"'{value}' cannot start an ECR repository name: use lowercase letters, digits, "
            "'.', '_', '-' and '/', starting with a letter or digit (e.g. sagemaker- or "
            "team/sagemaker-).")


_DOCKER_NETWORK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _check_docker_network(value: str) -> str | None:
    if _DOCKER_NETWORK.match(value):
        return None
    return (f"'{value}' is not a Docker network name (for example host, bridge, or sagemaker "
            "in SageMaker Studio).")


def _check_endpoint(value: str) -> str | None:
    if re.match(r"^https?://[A-Za-z0-9.\-\[\]:]+(/.*)?$", value):
        return None
    return f"'{value}' is not an endpoint URL (for example http://127.0.0.1:4566)."


def _check_registry(value: str) -> str | None:
    if _HOSTPORT.match(value):
        return None
    return f"'{value}' is not a registry host (for example 127.0.0.1:5000)."


# ---------------------------------------------------------------- definitions


@dataclass(frozen=True)
class Setting:
    """One configurable value, declared once.

    The declaration is all there is to a setting: the magics derive its trait
    (``%config SageMakerMagics.<name>``), its ``%sm_config`` flag and the flag of
    a magic that overrides it for one run; :func:`resolve` reads its variables,
    SDK key and default; ``check`` says what is wrong with a value (``None``
    when nothing is). ``unset`` says what an unset value means when that is not
    a fixed ``default``.

    >>> BY_NAME["instance_type"].flag, BY_NAME["instance_type"].described
    ('--instance-type', 'Instance type of training jobs, e.g. ml.g5.xlarge (default: ml.m5.large).')
    """

    name: str
    help: str
    env: tuple[str, ...]
    check: Callable[[str], str | None]
    default: str | None = None
    sdk_key: tuple[str, ...] | None = None
    unset: str | None = None

    @property
    def flag(self) -> str:
        """The option of magics that set it, e.g. ``--instance-type``."""
        return "--" + self.name.replace("_", "-")

    @property
    def described(self) -> str:
        """The help, with the value used when nothing sets it (the trait's and %sm_config's)."""
        return self.help_with_default(self.unset or self.default)

    def help_with_default(self, default: str | None) -> str:
        """The help ending with ``(default: DEFAULT)`` when ``default`` is given."""
        if default is None:
            return self.help
        return f"{self.help.removesuffix('.')} (default: {default})."


SETTINGS: tuple[Setting, ...] = (
    Setting("profile", "AWS profile from ~/.aws/config to take credentials from.",
            ("SM_MAGICS_PROFILE", "AWS_PROFILE"), _check_profile),
    Setting("region", "AWS region of every call, e.g. us-east-1.",
            ("SM_MAGICS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"), _check_region),
    Setting("role", "IAM role ARN that SageMaker training jobs run as.", ("SM_MAGICS_ROLE",),
            _check_role, sdk_key=("SageMaker", "TrainingJob", "RoleArn")),
    Setting("bucket", "S3 bucket for parameters, inputs and model artifacts.",
            ("SM_MAGICS_BUCKET",), _check_bucket,
            sdk_key=("SageMaker", "PythonSDK", "Modules", "Session", "DefaultS3Bucket"),
            unset="sagemaker-<region>-<account>"),
    Setting("prefix", "Key prefix inside the bucket.", ("SM_MAGICS_PREFIX",), _check_prefix,
            default=DEFAULT_PREFIX,
            sdk_key=("SageMaker", "PythonSDK", "Modules", "Session", "DefaultS3ObjectKeyPrefix")),
    Setting("base", "Base image of built containers.", ("SM_MAGICS_BASE",), _check_image,
            default=DEFAULT_BASE),
    Setting("instance_type", "Instance type of training jobs, e.g. ml.g5.xlarge.",
            ("SM_MAGICS_INSTANCE_TYPE",), _check_instance_type, default=DEFAULT_INSTANCE_TYPE),
    Setting("builder", "How images are built: docker (a Docker engine), registry (through "
            "the registry's API, no Docker needed), or auto.", ("SM_MAGICS_BUILDER",),
            _check_builder, default="auto"),
    Setting("base_python", "The Python version (e.g. 3.11) of a base image that does not say "
            "it; the registry builder picks wheels for it.", ("SM_MAGICS_BASE_PYTHON",),
            _check_base_python),
    Setting("repository_prefix", "Prefix of the ECR repository of each container, unless the "
            "container's name contains 'sagemaker' already.",
            ("SM_MAGICS_REPOSITORY_PREFIX",), _check_repository_prefix,
            default=DEFAULT_REPOSITORY_PREFIX),
    Setting("docker_network", "Docker network of image builds and --local jobs.",
            ("SM_MAGICS_DOCKER_NETWORK",), _check_docker_network,
            unset="sagemaker in SageMaker Studio, else Docker's own"),
    Setting("endpoint_url", "AWS API endpoint URL, set by the sandbox.",
            ("SM_MAGICS_ENDPOINT_URL", "AWS_ENDPOINT_URL"), _check_endpoint,
            unset="AWS itself"),
    Setting("registry", "Registry host images are pushed to, set by the sandbox.",
            ("SM_MAGICS_REGISTRY",), _check_registry, unset="the ECR host"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def tidy_value(name: str, value: str) -> str:
    """``value`` as the settings hold it, whatever its source: trimmed; a prefix as key parts.

    A prefix loses its empty segments, as the SageMaker SDK's ``s3_path_join``
    drops them, so no key has ``//`` in it (one made only of slashes is left
    for :func:`clean_value` to refuse).

    >>> tidy_value("prefix", " /team//fraud/ ")
    'team/fraud'
    """
    value = value.strip()
    if name == "prefix" and value.strip("/"):
        value = "/".join(part for part in value.split("/") if part)
    return value


def clean_value(name: str, value: str) -> tuple[str, str | None]:
    """``value`` cleaned up, and a sentence saying what is wrong with it (or ``None``).

    >>> clean_value("prefix", "/team//fraud/")
    ('team/fraud', None)
    """
    value = tidy_value(name, value)
    return value, BY_NAME[name].check(value)


def check_value(name: str, value: str, where: str = "%sm_config") -> str:
    """Return ``value`` cleaned up, or raise a ``UsageError`` saying what is wrong.

    >>> check_value("region", "eu-west-1")
    'eu-west-1'
    """
    value, problem = clean_value(name, value)
    if problem:
        raise usage_error(f"{where} {BY_NAME[name].flag}: {problem}")
    return value


# ---------------------------------------------------------------- sources


def available_profiles() -> set[str]:
    """Profile names in the shared AWS config and credentials files."""
    names: set[str] = set()
    config_file = Path(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")).expanduser()
    creds_file = Path(
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    ).expanduser()
    for path, is_config in ((config_file, True), (creds_file, False)):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        for section in parser.sections():
            if is_config:
                if section == "default":
                    names.add("default")
                elif section.startswith("profile "):
                    names.add(section[len("profile "):].strip())
            else:
                names.add(section)
    return names


def _profile_region(profile: str | None) -> str | None:
    config_file = Path(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")).expanduser()
    parser = configparser.RawConfigParser()
    try:
        parser.read(config_file)
    except configparser.Error:
        return None
    section = "default" if profile in (None, "default") else f"profile {profile}"
    if parser.has_option(section, "region"):
        return parser.get(section, "region").strip() or None
    return None


def sdk_config_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The SageMaker SDK config files, admin first, as the SDK finds them."""
    environ = os.environ if environ is None else environ
    admin = environ.get("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", "/etc/xdg/sagemaker/config.yaml")
    user = environ.get(
        "SAGEMAKER_USER_CONFIG_OVERRIDE",
        str(Path(environ.get("XDG_CONFIG_HOME", "~/.config")) / "sagemaker" / "config.yaml"),
    )
    files = []
    for raw in (admin, user):
        path = Path(raw).expanduser()
        if path.is_dir():
            path = path / "config.yaml"
        files.append(path)
    return files


def load_sdk_defaults(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Values from the SageMaker SDK ``config.yaml`` files, with the file they came from.

    The user file overrides the admin file, as in the SDK. Only local files are
    read (S3 URIs in the override variables are not fetched).
    """
    found: dict[str, tuple[str, str]] = {}
    for path in sdk_config_files(environ):
        if not path.is_file():
            continue
        import yaml  # imported here: only needed when a config file exists

        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise usage_error(
                f"The SageMaker SDK config file {path} cannot be read ({exc}). Fix or remove it."
            ) from None
        for setting in SETTINGS:
            if setting.sdk_key is None:
                continue
            node = document
            for key in setting.sdk_key:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, str) and node:
                found[setting.name] = (node, f"SageMaker SDK config ({path})")
    return found


def studio_space(environ: Mapping[str, str] | None = None,
                 metadata: Mapping[str, object] | None = None) -> str | None:
    """The name of the SageMaker Studio space this kernel runs in, or ``None`` outside Studio.

    Studio gives its apps' kernels ``SAGEMAKER_SPACE_NAME`` and ``SAGEMAKER_APP_TYPE``
    and a ``/opt/ml/metadata/resource-metadata.json`` with ``SpaceName`` and
    ``DomainId`` (notebook instances have the file too, without those keys).

    >>> studio_space({"SAGEMAKER_SPACE_NAME": "my-space", "SAGEMAKER_APP_TYPE": "JupyterLab"})
    'my-space'
    >>> studio_space({}, {"ResourceArn": "arn:aws:sagemaker:us-east-1:1:notebook-instance/x"})
    """
    environ = os.environ if environ is None else environ
    if environ.get("SAGEMAKER_SPACE_NAME") or environ.get("SAGEMAKER_APP_TYPE"):
        return environ.get("SAGEMAKER_SPACE_NAME") or environ.get("SAGEMAKER_APP_TYPE")
    if metadata and (metadata.get("SpaceName") or metadata.get("DomainId")):
        return str(metadata.get("SpaceName") or metadata.get("DomainId"))
    return None


def load_platform_metadata(path: Path = STUDIO_METADATA,
                           environ: Mapping[str, str] | None = None,
                           ) -> dict[str, tuple[str, str]]:
    """What SageMaker Studio or a notebook instance says about this machine.

    The region comes from the resource ARN in the metadata file, the execution
    role from the file when it names one (when it does not, the role is found
    with AWS calls once a job needs one: :mod:`sm_magics.roles`). In
    Studio the Docker network is ``sagemaker``, the only one Studio's Docker
    allows for builds and containers (aws/sagemaker-python-sdk#5147).
    """
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError):
        metadata = {}
    found: dict[str, tuple[str, str]] = {}
    if studio_space(environ, metadata):
        found["docker_network"] = ("sagemaker", "SageMaker Studio (its Docker allows no other)")
    if not metadata:
        return found
    arn = metadata.get("ResourceArn", "")
    parts = arn.split(":")
    if len(parts) > 3 and parts[3]:
        found["region"] = (parts[3], "SageMaker Studio / notebook metadata")
    role = metadata.get("ExecutionRoleArn")
    if role:
        found["role"] = (role, "SageMaker Studio / notebook metadata")
    return found


# ---------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Value:
    """A resolved setting: the value (``None`` when unset) and where it came from."""

    value: str | None
    source: str


class Settings(Mapping[str, Value]):
    """The effective settings, each with its source. Renders as a table.

    >>> s = resolve()
    >>> s.prefix
    'sm-magics'
    """

    def __init__(self, values: dict[str, Value]) -> None:
        self._values = values

    def __getitem__(self, name: str) -> Value:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> str | None:
        try:
            return self._values[name].value
        except KeyError:
            raise AttributeError(name) from None

    def with_value(self, name: str, value: str, source: str) -> Settings:
        """A copy in which the unset setting ``name`` takes ``value`` from ``source``."""
        if self[name].value is not None:
            return self
        values = dict(self._values)
        values[name] = Value(value, source)
        return Settings(values)

    def with_bucket(self, account: str) -> Settings:
        """A copy in which an unset bucket becomes the SageMaker default bucket."""
        if self.bucket or not self.region:
            return self
        values = dict(self._values)
        values["bucket"] = Value(
            f"sagemaker-{self.region}-{account}", "default (sagemaker-<region>-<account>)"
        )
        return Settings(values)

    def rows(self) -> list[tuple[str, str, str]]:
        """(setting, value, source) for display."""
        return [
            (name, "" if v.value is None else v.value, v.source) for name, v in self._values.items()
        ]

    def __repr__(self) -> str:
        from .table import Table

        return repr(Table(("setting", "value", "from"), self.rows()))

    def _repr_html_(self) -> str:
        from .table import Table

        return Table(("setting", "value", "from"), self.rows(), code=("setting", "value"),
                     css_class="sm-magics-config")._repr_html_()


def _from_environment(setting: Setting, environ: Mapping[str, str]) -> Value | None:
    sandbox_vars = set(filter(None, environ.get(SANDBOX_VARS, "").split(",")))
    for var in setting.env:
        raw = environ.get(var)
        if raw:
            where = "sandbox" if var in sandbox_vars else "environment"
            return Value(raw, f"{where} ({var})")
    return None


def resolve(
    flags: Mapping[str, str | None] | None = None,
    session: Mapping[str, tuple[str, str]] | None = None,
    environ: Mapping[str, str] | None = None,
    sdk_defaults: Mapping[str, tuple[str, str]] | None = None,
    platform: Mapping[str, tuple[str, str]] | None = None,
) -> Settings:
    """Resolve every setting through the ladder described in this module's docstring.

    ``flags`` are the running magic's flags (``None`` means not given);
    ``session`` maps a name to ``(value, source)`` from ``%sm_config``/``%config``.
    The SDK config files and platform metadata are read when not given.
    Environment values are checked and a bad one raises a ``UsageError`` naming
    the variable. Every value, whatever its source, is tidied (:func:`tidy_value`).
    """
    flags = flags or {}
    session = session or {}
    environ = os.environ if environ is None else environ
    sdk_defaults = load_sdk_defaults(environ) if sdk_defaults is None else sdk_defaults
    platform = load_platform_metadata(environ=environ) if platform is None else platform

    values: dict[str, Value] = {}
    for setting in SETTINGS:
        name = setting.name
        if flags.get(name) is not None:
            values[name] = Value(flags[name], "this magic's flag")
            continue
        if name in session and session[name][0] is not None:
            values[name] = Value(*session[name])
            continue
        from_env = _from_environment(setting, environ)
        if from_env is not None:
            _, problem = clean_value(name, from_env.value)
            if problem:
                var = from_env.source.split("(")[-1].rstrip(")")
                raise usage_error(f"The environment variable {var} is not usable: {problem}")
            values[name] = from_env
            continue
        if name == "region":
            region = _profile_region(values["profile"].value)
            if region:
                values[name] = Value(region, "AWS config (~/.aws/config)")
                continue
        if name in sdk_defaults:
            values[name] = Value(*sdk_defaults[name])
            continue
        if name in platform:
            values[name] = Value(*platform[name])
            continue
        values[name] = Value(setting.default, "default" if setting.default else "not set")

    return Settings({name: Value(tidy_value(name, v.value), v.source) if v.value else v
                     for name, v in values.items()})
