"""From ``%sm_train`` options to a ``CreateTrainingJob`` request, and the job started.

:func:`plan` checks every option and resolves the parameters without creating
anything; :func:`start` then uploads the parameters, syncs local inputs and
creates the job. The same requests go to AWS and to the sandbox.

Example::

    >>> job = plan(aws, TrainOptions(target="fraud", params=["fraud"]), images, sets)
    >>> run = start(aws, job)
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import params as params_mod
from . import service_rules
from .config import clean_value
from .errors import RemoteFailure, usage_error
from .runtime import metric_regex
from .s3uri import split_s3_uri

__all__ = ["JobPlan", "TrainOptions", "check_job_name", "check_request", "job_name",
           "logged_metric_names", "notebook_tag", "parse_duration", "plan", "start"]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")
_REPOSITORY = re.compile(r"^[^/]+/(.+?)(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")
DEFAULT_MAX_RUN = 24 * 3600
RESERVED_CHANNEL = "params"
# How ``--input CHANNEL:WORD=...`` spreads a channel's S3 objects over the instances.
DEFAULT_DISTRIBUTION = "FullyReplicated"
DISTRIBUTIONS = {"replicated": DEFAULT_DISTRIBUTION, "sharded": "ShardedByS3Key"}
NOTEBOOK_TAG = "sm-magics:notebook"
# What stands for values that exist only once start() runs, while the request is checked:
# an account id (the default bucket's name keeps its length) and a role.
_PLACEHOLDER_ACCOUNT = "000000000000"
_PLACEHOLDER_ROLE = f"arn:aws:iam::{_PLACEHOLDER_ACCOUNT}:role/sm-magics-placeholder"


# ---------------------------------------------------------------- names and values


def job_name(base: str, now: datetime | None = None) -> str:
    """A unique job name ``BASE-YYYYmmdd-HHMMSS-xxxx`` that the API accepts (<= 63 chars).

    >>> job_name("fraud_model", datetime(2026, 11, 24, 10, 15, 0))[:-4]
    'fraud-model-20261124-101500-'
    """
    now = now or datetime.now(UTC)
    cleaned = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "job"
    cleaned = re.sub(r"-{2,}", "-", cleaned)[:42].rstrip("-")
    return f"{cleaned}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def check_job_name(name: str, where: str = "--job-name") -> str:
    """``name`` when the API accepts it as a training-job name, else a UsageError.

    >>> check_job_name("fraud-20261124-101500-ab12")
    'fraud-20261124-101500-ab12'
    """
    if not service_rules.check_value("sagemaker", "TrainingJobName", name):
        return name
    raise usage_error(
        f"{where}: '{name}' is not a valid training-job name: use 1 to 63 letters, digits "
        "and hyphens, starting and ending with a letter or digit."
    )


def parse_duration(text: str, flag: str) -> int:
    """Seconds in ``90m``, ``2h``, ``1h30m``, ``1d`` or a plain number of seconds.

    >>> parse_duration("1h30m", "--max-run")
    5400
    """
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise usage_error(
            f"{flag}: '{text}' is not a duration. Use seconds (3600) or units, e.g. 90m, 2h, "
            "1h30m, 1d."
        )
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise usage_error(f"{flag}: the duration must be longer than 0 seconds.")
    return total


def logged_metric_names(source: str) -> list[str]:
    """Names passed as a string literal to ``log_metric(...)`` in training code, in order.

    >>> logged_metric_names('log_metric("loss", 0.1)\\nlog_metric(name="acc", value=1)')
    ['loss', 'acc']
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "log_metric"):
            continue
        first = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "name"), None)
        if (isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value
                and first.value not in names and " " not in first.value):
            names.append(first.value)
    return names


@dataclass
class TrainOptions:
    """The options of one ``%sm_train`` line, as given (strings; checked by :func:`plan`).

    >>> TrainOptions("fraud", params=["fraud"], hp=["lr=0.1"]).hp
    ['lr=0.1']
    """

    target: str
    params: Sequence[str] = ()
    hp: Sequence[str] = ()
    inputs: Sequence[str] = ()
    output: str | None = None
    instance_type: str | None = None
    instance_count: int = 1
    volume_size: int = 30
    max_run: str | None = None
    spot: bool = False
    max_wait: str | None = None
    keep_alive: str | None = None
    env: Sequence[str] = ()
    tags: Sequence[str] = ()
    job_name: str | None = None
    metrics: Sequence[str] = ()
    notebook: str | None = None
    local: bool = False

    @classmethod
    def from_args(cls, args: Any, **extra: Any) -> TrainOptions:
        """The options of a parsed ``%sm_train`` line: every field it has, plus ``extra``.

        The magic's options are stored under the fields' names (``--input`` as
        ``inputs``); options that are not fields, such as ``--wait``, are left out.

        >>> from argparse import Namespace
        >>> options = TrainOptions.from_args(Namespace(target="fraud", spot=True, wait=True),
        ...                                  notebook="fraud.ipynb")
        >>> options.spot, options.notebook
        (True, 'fraud.ipynb')
        """
        given = vars(args)
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given}, **extra)


@dataclass
class JobPlan:
    """A checked job, ready to start: nothing has been created yet.

    ``distributions`` maps each ``--input`` channel to its S3DataDistributionType:
    ``ShardedByS3Key`` (each instance gets about 1/N of the objects) or
    ``FullyReplicated`` (every instance gets all of them).
    """

    name: str
    container: str
    image_uri: str
    image_digest: str | None
    params: dict[str, Any]
    local_inputs: dict[str, Path] = field(default_factory=dict)
    s3_inputs: dict[str, str] = field(default_factory=dict)
    distributions: dict[str, str] = field(default_factory=dict)
    output: str | None = None
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    volume_size: int = 30
    max_run: int = DEFAULT_MAX_RUN
    max_wait: int | None = None
    keep_alive: int | None = None
    spot: bool = False
    env: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metric_definitions: list[dict[str, str]] = field(default_factory=list)
    role: str = ""
    image: Any = None


def notebook_tag(path: str) -> str:
    """The notebook's path as a tag value SageMaker takes (its pattern and length).

    Characters the TagValue pattern refuses become ``_``; a long path keeps its end.

    >>> notebook_tag("work/Untitled (1).ipynb")
    'work/Untitled _1_.ipynb'
    """
    return service_rules.fit("sagemaker", "TagValue", path)


def _pairs(items: Sequence[str], flag: str, what: str) -> dict[str, str]:
    """``KEY=VALUE`` items as a dict; the keys and values are checked with the request."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise usage_error(f"{flag} {item}: write {what}=VALUE, e.g. `{flag} "
                              f"{'MODE=fast' if flag == '--env' else 'team=fraud'}`.")
        found[key] = value
    return found


def _container_of(image_uri: str) -> str:
    match = _REPOSITORY.match(image_uri)
    if not match:
        raise usage_error(
            f"%sm_train: '{image_uri}' is neither a container built in this session nor a full "
            "image URI (registry/repository:tag). Run its %%sm_container cell first."
        )
    return match.group(1).split("/")[-1]


def plan(aws, options: TrainOptions, images: Mapping[str, Any], sets) -> JobPlan:
    """Check every option and resolve the parameters; raise a UsageError on the first problem.

    ``images`` maps container names to their latest ``ContainerImage``; ``sets``
    are the session's parameter sets. The ``CreateTrainingJob`` request the job
    will send is checked against SageMaker's model (:func:`check_request`), so
    what AWS would refuse after the uploads is refused here. Nothing is created
    in AWS.
    """
    settings = aws.settings
    target = options.target
    image = images.get(target)
    if image is not None:
        if not image.pushed and not options.local:
            raise usage_error(
                f"%sm_train: the image of '{target}' was built with --no-push, so it exists "
                "only in this machine's Docker engine. Run it here with `--local`, or run the "
                "container cell without --no-push.")
        container, image_uri, digest = image.name, image.uri, image.digest
        defaults = dict(image.param_defaults)
        train_py = Path(image.build_dir) / "train.py"
        source = train_py.read_text() if train_py.is_file() else ""
    elif "/" in target:
        _, problem = clean_value("base", target)
        if problem:
            raise usage_error(f"%sm_train: {problem}")
        container, image_uri, digest, defaults, source = _container_of(target), target, None, {}, ""
    else:
        known = ", ".join(images) or "none yet"
        raise usage_error(
            f"%sm_train: there is no container '{target}' in this session (built: {known}). "
            f"Run its `%%sm_container {target}` cell first, or give a full image URI."
        )

    chosen = sets.pick(list(options.params))
    resolved = params_mod.resolve(defaults, chosen, list(options.hp))

    instance_type = options.instance_type or settings.instance_type
    _, problem = clean_value("instance_type", instance_type)
    if problem:
        raise usage_error(f"--instance-type: {problem}")
    if options.instance_count < 1:
        raise usage_error("--instance-count: give 1 or more instances.")
    if options.local and options.instance_count > 1:
        _check_local_hosts(settings, options.instance_count)
    if not 1 <= options.volume_size <= 16384:
        raise usage_error("--volume-size: give a size in GB between 1 and 16384.")
    max_run = parse_duration(options.max_run, "--max-run") if options.max_run else DEFAULT_MAX_RUN
    max_wait = parse_duration(options.max_wait, "--max-wait") if options.max_wait else None
    if options.spot and max_wait is None:
        max_wait = max_run
    if max_wait is not None and not options.spot:
        raise usage_error("--max-wait applies to spot training only: add --spot.")
    if max_wait is not None and max_wait < max_run:
        raise usage_error(
            f"--max-wait ({max_wait}s) must be at least --max-run ({max_run}s): it includes "
            "the time spent waiting for spot capacity.")
    keep_alive = parse_duration(options.keep_alive, "--keep-alive") if options.keep_alive \
        else None

    local_inputs: dict[str, Path] = {}
    s3_inputs: dict[str, str] = {}
    distributions: dict[str, str] = {}
    for item in options.inputs:
        channel, word, where = _input_parts(item)
        if not channel or not where:
            raise usage_error(
                f"--input {item}: write CHANNEL=PATH or CHANNEL=s3://bucket/prefix, e.g. "
                "`--input train=data/train` (or `--input train:sharded=...` to give each "
                "instance a share of the files).")
        if channel == RESERVED_CHANNEL:
            raise usage_error(f"--input {item}: the channel name 'params' carries the "
                              "parameters; choose another name.")
        if channel in distributions:
            raise usage_error(f"--input: the channel '{channel}' is given twice.")
        distributions[channel] = _distribution(item, channel, word)
        if where.startswith("s3://"):
            _check_s3_input(item, where)
            s3_inputs[channel] = where
        else:
            path = Path(where).expanduser()
            if not path.exists():
                raise usage_error(f"--input {item}: there is no file or folder '{where}' "
                                  f"(working directory: {Path.cwd()}).")
            _check_local_input(item, path)
            local_inputs[channel] = path
    if options.output is not None and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
                                                   options.output):
        raise usage_error(f"--output: '{options.output}' is not an S3 URI (s3://bucket/prefix).")

    env = _pairs(options.env, "--env", "NAME")
    from .recipe import CREDENTIAL_VARIABLES

    leaked = sorted(k for k in env if k.upper() in CREDENTIAL_VARIABLES)
    if leaked:
        raise usage_error(
            f"--env {leaked[0]}=...: AWS credentials do not belong in a job's environment, where "
            "anyone who can describe the job reads them. The job gets credentials from its "
            "execution role; leave them out.")
    tags = _pairs(options.tags, "--tag", "KEY")
    definitions = []
    for logged in logged_metric_names(source):
        with contextlib.suppress(ValueError):  # a name the metric line cannot carry is not shown
            definitions.append({"Name": logged, "Regex": metric_regex(logged)})
    for item in options.metrics:
        name, sep, regex = item.partition("=")
        if not sep or not name or not regex:
            raise usage_error(f"--metric {item}: write NAME=REGEX with one capture group, e.g. "
                              "`--metric 'auc=auc: ([0-9.]+)'`.")
        try:
            if re.compile(regex).groups < 1:
                raise re.error("no capture group")
        except re.error as exc:
            raise usage_error(f"--metric {item}: the regex is not usable ({exc}); it needs "
                              "one capture group around the value.") from None
        definitions = [d for d in definitions if d["Name"] != name]
        definitions.append({"Name": name, "Regex": regex})

    role = settings.role
    if options.local and not role:
        role = f"arn:aws:iam::{aws.account}:role/sm-magics-local"  # required, not used locally
    if not role:
        role = (aws.role or (None, None))[0]  # found on the platform, or the caller's role
    name = check_job_name(options.job_name) if options.job_name else job_name(container)

    all_tags = {"sm-magics:container": container,
                "sm-magics:params-sha256": params_mod.sha256(resolved)}
    if digest:
        all_tags["sm-magics:image-digest"] = digest
    if options.notebook:
        all_tags[NOTEBOOK_TAG] = notebook_tag(options.notebook)
    all_tags.update(tags)

    job = JobPlan(
        name=name, container=container, image_uri=image_uri, image_digest=digest,
        params=resolved, local_inputs=local_inputs, s3_inputs=s3_inputs,
        distributions=distributions, output=options.output,
        instance_type=instance_type, instance_count=options.instance_count,
        volume_size=options.volume_size, max_run=max_run, max_wait=max_wait,
        keep_alive=keep_alive, spot=options.spot, env=env, tags=all_tags,
        metric_definitions=definitions, role=role or "", image=image,
    )
    check_request(aws, job, options)
    if not role:
        raise usage_error(
            "No execution role for the training job. Give one with `%sm_config --role "
            "arn:aws:iam::<account>:role/<SageMakerExecutionRole>` (or run in SageMaker Studio, "
            "or `%sm_sandbox start` to work offline).")
    return job


def _check_local_hosts(settings, count: int) -> None:
    """``--local --instance-count N`` only where the job's containers may use the host's network.

    The hosts of a local multi-host job run on the host's network, where they
    reach each other as ``algo-1`` ... ``algo-N``: the ``docker_network``
    setting must be unset or ``host``. SageMaker Studio's local mode runs no
    multi-container jobs at all
    (https://docs.aws.amazon.com/sagemaker/latest/dg/studio-updated-local.html).
    """
    network = settings.docker_network
    if network in (None, "host"):
        return
    raise usage_error(
        f"--local --instance-count {count}: the hosts of a local multi-host job run on the "
        f"host's network, where they find each other as algo-1 to algo-{count}, but the "
        f"docker_network setting is '{network}' (from {settings['docker_network'].source}); "
        "SageMaker Studio's local mode does not run multi-container jobs. Run the job in the "
        "sandbox (`%sm_sandbox start`, then %sm_train without --local) or on SageMaker "
        "without --local, or set `%sm_config --docker-network host` where your Docker engine "
        "allows the host's network (SageMaker Studio's does not).")


def _input_parts(item: str) -> tuple[str, str | None, str]:
    """``--input CHANNEL[:WORD]=WHERE`` as ``(CHANNEL, WORD or None, WHERE)``.

    A channel name cannot hold ``:`` (SageMaker's ChannelName is
    ``[A-Za-z0-9.\\-_]+``), so the first ``:`` before the first ``=`` ends it.
    A part that is missing is ``""``.

    >>> _input_parts("train:sharded=s3://bucket/shards/")
    ('train', 'sharded', 's3://bucket/shards/')
    >>> _input_parts("train=data/")
    ('train', None, 'data/')
    """
    head, _, where = item.partition("=")
    channel, colon, word = head.partition(":")
    return channel, word if colon else None, where


def _distribution(item: str, channel: str, word: str | None) -> str:
    """The S3DataDistributionType of ``--input CHANNEL:WORD=...``: FullyReplicated without WORD.

    >>> _distribution("train:sharded=data/", "train", "sharded")
    'ShardedByS3Key'
    """
    if word is None:
        return DEFAULT_DISTRIBUTION
    if word in DISTRIBUTIONS:
        return DISTRIBUTIONS[word]
    # the words, and SageMaker's own names of what they stand for
    spellings = {**{w: w for w in DISTRIBUTIONS},
                 **{kind.lower(): w for w, kind in DISTRIBUTIONS.items()}}
    close = difflib.get_close_matches(word.lower(), spellings, n=1)
    where = item.partition("=")[2]
    hint = f" Did you mean `--input {channel}:{spellings[close[0]]}={where}`?" if close else ""
    named = f"'{word}'" if word else "nothing after ':'"
    raise usage_error(
        f"--input {item}: {named} is not a way to distribute a channel.{hint} Write "
        f"{channel}:sharded=... to give each instance about 1/N of the channel's S3 objects, "
        f"or {channel}:replicated=... (the default) to give every instance all of them.")


def _check_s3_input(item: str, uri: str) -> None:
    """An ``--input CHANNEL=s3://…`` whose URI S3 can be asked about (it is read in start)."""
    from botocore.handlers import VALID_BUCKET, VALID_S3_ARN

    try:
        bucket, _ = split_s3_uri(uri)
    except ValueError:
        raise usage_error(f"--input {item}: the S3 URI names no bucket. Write "
                          "CHANNEL=s3://BUCKET/PREFIX, e.g. `--input train=s3://my-bucket/data/`."
                          ) from None
    if not (VALID_BUCKET.search(bucket) or VALID_S3_ARN.search(bucket)):
        raise usage_error(f"--input {item}: '{bucket}' is not an S3 bucket name.")


def _check_local_input(item: str, path: Path) -> None:
    """An ``--input CHANNEL=PATH`` that syncs at least one file, every one readable.

    SageMaker refuses a channel with no objects; an unreadable file would stop the
    sync half-way.
    """
    from .s3 import _local_files  # the sync's own choice of files

    files = _local_files(path)
    if not files:
        raise usage_error(f"--input {item}: there are no files in '{path}' to upload, and "
                          "SageMaker refuses a channel with no objects.")
    unreadable = next((p for p in files.values() if not os.access(p, os.R_OK)), None)
    if unreadable is not None:
        raise usage_error(f"--input {item}: {unreadable} cannot be read (permission denied).")


# ---------------------------------------------------------------- the request, checked

# How a message names what a model shape holds.
_NOUNS = {
    "TagKey": "tag keys", "TagValue": "tag values", "TagList": "tags",
    "TrainingEnvironmentKey": "environment variable names",
    "TrainingEnvironmentValue": "environment values", "TrainingEnvironmentMap":
    "environment variables", "HyperParameterKey": "hyperparameter names",
    "HyperParameterValue": "hyperparameter values", "HyperParameters": "hyperparameters",
    "MetricName": "metric names", "MetricRegex": "metric regexes",
    "MetricDefinitionList": "metric definitions", "ChannelName": "channel names",
    "InputDataConfig": "input channels", "S3Uri": "S3 URIs",
    "TrainingJobName": "training-job names", "AlgorithmImage": "image URIs",
    "RoleArn": "role ARNs", "TrainingInstanceType": "instance types",
}
# What a count of entries includes besides the user's own.
_INCLUDED = {"InputDataConfig": ", the params channel included",
             "TagList": ", the sm-magics:... tags included"}
_FLAGS = {
    ("TrainingJobName",): "--job-name", ("RoleArn",): "the execution role",
    ("ResourceConfig", "InstanceType"): "--instance-type",
    ("ResourceConfig", "InstanceCount"): "--instance-count",
    ("ResourceConfig", "VolumeSizeInGB"): "--volume-size",
    ("ResourceConfig", "KeepAlivePeriodInSeconds"): "--keep-alive",
    ("StoppingCondition", "MaxRuntimeInSeconds"): "--max-run",
    ("StoppingCondition", "MaxWaitTimeInSeconds"): "--max-wait",
    ("Tags",): "--tag", ("Environment",): "--env", ("HyperParameters",): "--hp",
    ("InputDataConfig",): "--input", ("AlgorithmSpecification", "MetricDefinitions"): "--metric",
}


def _output_uri(job: JobPlan, bucket: str, prefix: str | None) -> str:
    """Where the model goes: ``--output``, else the container's folder in the session bucket."""
    return job.output or f"s3://{bucket}/{prefix}/{job.container}/output"


def _planned_uris(aws, job: JobPlan) -> tuple[str, dict[str, str], str]:
    """The S3 URIs :func:`start` will send, before anything exists and without asking AWS.

    A default bucket's account id is zeroed (every account id has 12 digits) and
    the parameters' URI is stood in for by a sibling of the same bucket and prefix.
    """
    from types import SimpleNamespace

    from . import s3

    settings = aws.settings
    place = SimpleNamespace(settings=settings, bucket=settings.bucket or settings.with_bucket(
        _PLACEHOLDER_ACCOUNT).bucket)
    inputs = dict(job.s3_inputs)
    inputs.update({channel: s3.input_uri(place, job.container, channel)
                   for channel in job.local_inputs})
    params_uri = s3.input_uri(place, job.container, RESERVED_CHANNEL)
    return params_uri, inputs, _output_uri(job, place.bucket, settings.prefix)


def check_request(aws, job: JobPlan, options: TrainOptions) -> dict:
    """The ``CreateTrainingJob`` request of ``job``, checked as SageMaker will check it.

    Nothing is sent: the S3 URIs of what :func:`start` uploads are computed (see
    :func:`_planned_uris`) and a missing role is stood in for. A broken rule of
    the service model (:mod:`.service_rules`) is a ``UsageError`` that names the
    option its value came from.

    >>> check_request(aws, plan_of("--tag team=a,b"), options)
    Traceback (most recent call last):
    UsageError: --tag team=a,b: SageMaker tag values may hold letters, digits, spaces and ...
    """
    params_uri, inputs, output = _planned_uris(aws, job)
    request = create_request(replace(job, role=job.role or _PLACEHOLDER_ROLE), params_uri,
                             inputs, output)
    found = service_rules.check("sagemaker", "CreateTrainingJob", request)
    if found:
        broken = found[0]
        raise usage_error(f"{_origin(broken.members, request, options)}: {_explain(broken)}")
    return request


def _given(items: Sequence[str], key: str) -> str | None:
    """The last ``KEY=…`` item of an option whose key is ``key`` (the one that counts)."""
    return next((item for item in reversed(items) if item.partition("=")[0] == key), None)


def _origin(members: tuple, request: dict, options: TrainOptions) -> str:
    """The option (or setting, or code) that the request's value at ``members`` came from."""
    head, rest = members[0], members[1:]
    if head == "Tags" and rest:
        key = request["Tags"][rest[0]]["Key"]
        item = _given(options.tags, key)
        if item is not None:
            return f"--tag {item}"
        return "the notebook's path (tag sm-magics:notebook)" if key == NOTEBOOK_TAG else \
            f"%sm_train (tag {key})"
    if head == "Environment" and rest:
        return f"--env {rest[0]}=..."
    if head == "HyperParameters" and rest:
        item = _given(options.hp, rest[0])
        return f"--hp {item}" if item is not None else f"the parameter {rest[0]}"
    if head == "InputDataConfig" and rest:
        channel = request["InputDataConfig"][rest[0]]["ChannelName"]
        item = next((i for i in options.inputs if _input_parts(i)[0] == channel), None)
        return f"--input {item}" if item is not None else "%sm_train (the params channel)"
    if members[:2] == ("AlgorithmSpecification", "MetricDefinitions") and len(members) > 2:
        name = request["AlgorithmSpecification"]["MetricDefinitions"][members[2]]["Name"]
        item = next((i for i in options.metrics if i.partition("=")[0] == name), None)
        return f"--metric {item}" if item is not None else \
            f"log_metric(\"{name}\", ...) in the container cell"
    if members[:2] == ("AlgorithmSpecification", "TrainingImage"):
        return f"%sm_train {options.target}"
    if head in ("OutputDataConfig", "CheckpointConfig"):
        return "--output" if options.output else "the bucket and prefix settings"
    for length in (2, 1):
        if members[:length] in _FLAGS:
            return _FLAGS[members[:length]]
    return "%sm_train"


def _explain(broken: service_rules.Violation) -> str:
    """What SageMaker's rule says, as a sentence about the value that breaks it."""
    noun = _NOUNS.get(broken.shape, f"values of {broken.shape}")
    rule, limit, value = broken.rule, broken.limit, broken.value
    if rule in ("min_length", "max_length"):
        bound = "at least" if rule == "min_length" else "at most"
        if isinstance(value, str):
            unit = "character" if limit == 1 else "characters"
            return f"SageMaker takes {noun} of {bound} {limit} {unit} ({len(value)} given)."
        return (f"SageMaker takes {bound} {limit} {noun} "
                f"({len(value)} given{_INCLUDED.get(broken.shape, '')}).")
    if rule == "pattern":
        characters = service_rules.character_rule(limit)
        if characters is not None:
            refused = ", ".join(f"'{service_rules.shown_character(c)}'"
                                for c in characters.refused(value))
            return (f"SageMaker {noun} may hold {characters.describe()} only"
                    + (f" (not {refused})." if refused else "."))
        return f"SageMaker {noun} must match the pattern {limit}."
    if rule == "enum":
        close = difflib.get_close_matches(value, limit, n=1)
        hint = f"; did you mean {close[0]}?" if close else "."
        return f"'{value}' is not one of SageMaker's {noun}{hint}"
    if rule in ("min", "max"):
        return f"SageMaker takes {noun} of {'at least' if rule == 'min' else 'at most'} {limit}."
    return f"sm-magics built a request SageMaker refuses ({broken.message}); please report it."


def _channel(name: str, uri: str, content_type: str | None = None,
             distribution: str = DEFAULT_DISTRIBUTION) -> dict:
    channel = {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": distribution}},
        "InputMode": "File"}
    if content_type:
        channel["ContentType"] = content_type
    return channel


def create_request(job: JobPlan, params_uri: str, inputs: Mapping[str, str],
                   output: str) -> dict:
    """The ``CreateTrainingJob`` request for a planned job whose data is in S3."""
    fit = params_mod.hyperparameters(job.params)
    resources: dict[str, Any] = {"InstanceType": job.instance_type,
                                 "InstanceCount": job.instance_count,
                                 "VolumeSizeInGB": job.volume_size}
    if job.keep_alive is not None:
        resources["KeepAlivePeriodInSeconds"] = job.keep_alive
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": job.max_run}
    if job.max_wait is not None:
        stopping["MaxWaitTimeInSeconds"] = job.max_wait
    request: dict[str, Any] = {
        "TrainingJobName": job.name,
        "AlgorithmSpecification": {"TrainingImage": job.image_uri, "TrainingInputMode": "File",
                                   "MetricDefinitions": job.metric_definitions},
        "RoleArn": job.role,
        "HyperParameters": fit.values,
        "InputDataConfig": [_channel(RESERVED_CHANNEL, params_uri, "application/json")]
        + [_channel(name, uri, distribution=job.distributions.get(name, DEFAULT_DISTRIBUTION))
           for name, uri in sorted(inputs.items())],
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": resources,
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": job.spot,
        "Tags": [{"Key": k, "Value": v} for k, v in job.tags.items()],
    }
    if job.env:
        request["Environment"] = job.env
    if job.spot:
        request["CheckpointConfig"] = {"S3Uri": f"{output.rstrip('/')}/{job.name}/checkpoints"}
    return request


def upload_inputs(aws, job: JobPlan, progress=None) -> tuple[str, dict[str, str], str]:
    """Check S3 inputs, then upload the parameters and sync local inputs; return their URIs.

    The checks only read, so a missing S3 input leaves nothing written.
    ``progress(channel)`` returns the ``(bytes_done, bytes_total)`` callback of
    one channel's upload.
    """
    from . import s3

    inputs = dict(job.s3_inputs)
    for uri in inputs.values():
        s3.check_s3_uri_exists(aws, uri)
    params_uri = s3.upload_params(aws, job.container, job.params)
    for channel, path in job.local_inputs.items():
        target = s3.input_uri(aws, job.container, channel)
        s3.sync_dir(aws, path, target, progress=progress(channel) if progress else None)
        inputs[channel] = target
    return params_uri, inputs, _output_uri(job, s3.ensure_bucket(aws), aws.settings.prefix)


def _created_by(sagemaker, request: dict) -> bool:
    """Whether the existing job of ``request``'s name is the one ``request`` describes.

    botocore retries a ``CreateTrainingJob`` whose answer did not arrive; when
    the first attempt did create the job, the retry finds the name taken.
    """
    from botocore.exceptions import ClientError

    try:
        existing = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])
    except ClientError:
        return False
    return _identity(existing) == _identity(request)


def _identity(job: dict) -> tuple:
    """What tells one job from another of the same name (AWS adds defaults to the rest)."""
    channels = sorted((c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"],
                       c["DataSource"]["S3DataSource"].get("S3DataDistributionType",
                                                           DEFAULT_DISTRIBUTION))
                      for c in job.get("InputDataConfig", []))
    return (job.get("AlgorithmSpecification", {}).get("TrainingImage"), job.get("RoleArn"),
            channels, job.get("OutputDataConfig", {}).get("S3OutputPath"),
            job.get("HyperParameters") or {})


def start(aws, job: JobPlan, progress=None, local_jobs=None) -> dict:
    """Upload what the job needs and create it; returns the request that was sent.

    With ``local_jobs`` (:class:`~sm_magics.local.LocalJobs`) the job runs on
    this machine's Docker engine instead of SageMaker.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        params_uri, inputs, output = upload_inputs(aws, job, progress)
    except (ClientError, BotoCoreError) as exc:
        error = getattr(exc, "response", {}).get("Error", {})
        raise RemoteFailure(
            f"S3 did not take the parameters and inputs of training job {job.name}",
            reason=f"{error.get('Code')}: {error.get('Message')}" if error else str(exc),
            hint="No job was started. Run the cell again: what was uploaded completely is "
                 "not uploaded again, and nothing is left half-written.") from None
    request = create_request(job, params_uri, inputs, output)
    if local_jobs is not None:
        local_jobs.create(request)
        return request
    sagemaker = aws.client("sagemaker")
    try:
        sagemaker.create_training_job(**request)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ResourceInUse" and _created_by(sagemaker, request):
            return request  # an earlier attempt of this call created it; its answer was lost
        hint = None
        if "PassRole" in error.get("Message", "") or error.get("Code") == "AccessDeniedException":
            hint = ("The identity running this notebook needs iam:PassRole on the execution "
                    "role and sagemaker:CreateTrainingJob (see the README's IAM policy).")
        raise RemoteFailure(f"SageMaker did not start training job {job.name}",
                            reason=f"{error.get('Code')}: {error.get('Message')}",
                            hint=hint) from None
    return request
