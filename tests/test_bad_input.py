"""Bad input to every magic: random lines and cells fail as one-paragraph UsageErrors.

Hypothesis writes magic lines (known and unknown flags, odd values, every kind
of quoting, unicode, braces for IPython's expansion, empty and huge words) and
cell bodies, and runs them through the real shell against the real sandbox.
For every input:

* a failure is the exact ``IPython.core.error.UsageError`` with a message of
  one paragraph, or an exception raised by the user's own cell code (a
  ``NameError`` in a ``%%sm_params`` cell); nothing else escapes the tool;
* the sandbox holds the same ECR repositories, S3 buckets and objects, and
  training jobs before and after.

The sandbox answers like AWS on parameter validation: a request whose
parameters break the service model's length or pattern constraints is answered
with a ``ValidationException``, as AWS does (moto accepts them).

Valid inputs stay cheap: ``%sm_sandbox`` only gets invalid actions,
``%%sm_container`` finds no Docker engine (so a valid cell ends in the
UsageError that says how to start one, before any repository is created) and
``%sm_train`` finds no execution role (checked last, after every option).
"""

from __future__ import annotations

import collections
import functools
import os
import re
import shlex
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

import sm_magics
from sm_magics import build, service_rules
from sm_magics.aws import AwsContext
from sm_magics.build import ContainerImage
from sm_magics.params import ParameterSet

pytestmark = [pytest.mark.sandbox]

PACKAGE_DIR = Path(sm_magics.__file__).resolve().parent
EXAMPLES = settings(
    max_examples=int(os.environ.get("SM_MAGICS_BAD_INPUT_EXAMPLES", "80")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TRIED: collections.Counter[str] = collections.Counter()
OUTCOMES: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    """Print how many inputs each magic got and how they ended (shown with -s)."""
    yield
    total = sum(TRIED.values())
    counts = ", ".join(f"{magic} {n}" for magic, n in sorted(TRIED.items()))
    print(f"\nbad inputs tried: {total} ({counts})")
    print(f"outcomes: {dict(sorted(OUTCOMES.items()))}")


# ---------------------------------------------------------------- AWS-like validation


class _HttpAnswer:
    status_code = 400
    headers: dict = {}


def _check_params(params, model, context, **_):
    """Refuse, as the service would, a request that breaks its operation's model."""
    found = service_rules.check(model.service_model, model.name, params)
    if found:
        context["aws_validation_error"] = found[0].message


def _answer_like_aws(context, **_):
    problem = context.get("aws_validation_error")
    if problem:
        return _HttpAnswer(), {"Error": {"Code": "ValidationException", "Message": problem},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}
    return None


@pytest.fixture
def validating_clients(monkeypatch):
    """Clients made by the tool validate their parameters against the model, as AWS does."""
    from sm_magics import ecr

    original = AwsContext.client

    def client(self, service, **kwargs):
        made = original(self, service, **kwargs)
        made.meta.events.register("before-parameter-build", _check_params)
        made.meta.events.register("before-call", _answer_like_aws)
        return made

    monkeypatch.setattr(AwsContext, "client", client)
    monkeypatch.setattr(ecr, "_CLIENTS", {})


# ---------------------------------------------------------------- what exists


@functools.cache
def _client(service: str, endpoint: str):
    return boto3.client(service, endpoint_url=endpoint)


def sandbox_contents() -> dict:
    """ECR repositories, S3 buckets with their objects, and training jobs in the sandbox."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    s3 = _client("s3", endpoint)
    buckets = {}
    for bucket in sorted(b["Name"] for b in s3.list_buckets()["Buckets"]):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        buckets[bucket] = sorted(
            (o["Key"], o["ETag"]) for page in pages for o in page.get("Contents", []))
    repositories = sorted(
        r["repositoryName"]
        for page in _client("ecr", endpoint).get_paginator("describe_repositories").paginate()
        for r in page["repositories"])
    jobs = sorted(
        j["TrainingJobName"]
        for page in _client("sagemaker", endpoint).get_paginator("list_training_jobs").paginate()
        for j in page["TrainingJobSummaries"])
    return {"s3": buckets, "ecr": repositories, "jobs": jobs}


def _raised_by_user_code(exc: BaseException) -> bool:
    """True when the innermost frame of the package comes before the user's cell code."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    ours = [i for i, f in enumerate(frames) if Path(f).resolve().is_relative_to(PACKAGE_DIR)]
    users = [i for i, f in enumerate(frames) if f.startswith("<")]
    return bool(users) and (not ours or users[-1] > ours[-1])


def check(magic: str, call) -> str:
    """Run ``call``; assert it ends well or with the exact UsageError, and created nothing."""
    TRIED[magic] += 1
    before = sandbox_contents()
    outcome = "ran"
    try:
        call()
    except UsageError as exc:
        assert type(exc) is UsageError, f"{type(exc)} is a subclass of UsageError"
        message = str(exc)
        assert message.strip(), "empty UsageError message"
        assert not re.search(r"[\n\r\x0b\x0c\x85\u2028\u2029]", message), message
        assert "Traceback" not in message
        outcome = "usage error: " + " ".join(message.split()[:3])
    except Exception as exc:
        if not _raised_by_user_code(exc):
            raise AssertionError(
                f"{magic}: {type(exc).__name__} escaped from inside the tool: {exc}") from exc
        outcome = f"user code {type(exc).__name__}"
    OUTCOMES[f"{magic}: {outcome}"] += 1
    assert sandbox_contents() == before, f"{magic} created something"
    return outcome


# ---------------------------------------------------------------- strategies

ODD = [
    "", " ", "''", '""', "'", '"', "'unclosed", '"unclosed', "{", "}", "{}", "{x}", "{{x}}",
    "{1/0}", "{nope.attr}", "$x", "$", "--", "-", "-h", "--help", "=", "a=b", "=b", "a=", "==",
    "é", "日本語", "🙂", "\u200b", "\x00", "\x1b[31m", "\t", "\\", ";", "\\;", "s3://", "s3://b",
    "s3://b/k", "-1", "0", "1", "100", "101", "1e309", "nan", "NaN", "inf", "null", "None",
    "True", "[", "]", "[1,", "{'a':", "a b", "a\nb", "$(rm -rf /)",
    "`id`", "|", "&&", ">", "*", "?", "~", "..", "/", ".", "ml.m5.large", "us-east-1",
    "arn:aws:iam::111122223333:role/R", "127.0.0.1:5000", "python:3.12-slim",
    "job-name", "Name With Spaces", "UPPER", "under_score",
]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
HUGE = st.sampled_from([64, 300, 10_000]).map(lambda n: "y" * n)  # built when drawn
WORD = st.one_of(st.sampled_from(ODD), TEXT, HUGE,
                 st.from_regex(r"[a-z0-9._/:=-]{1,20}", fullmatch=True))


def quoted(word: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A word as it may appear on a magic line: raw, shell-quoted, or in either quote."""
    return st.one_of(
        word, word.map(shlex.quote), word.map(lambda w: f"'{w}'"), word.map(lambda w: f'"{w}"'))


def line_of(flags: list[str], positional: st.SearchStrategy[str] | None = None,
            values: list[str] = ()):
    """Magic lines: an optional positional word, then flags (mostly known) with values.

    ``values`` are plausible values for the flags, mixed with odd words so that
    many lines get past the parser and reach the checks behind it.
    """
    flag = st.one_of(st.sampled_from(flags or ["--nope"]),
                     st.sampled_from(["--nope", "-x", "--", "-h", "--help", "--=", "---"]))
    value = quoted(st.one_of(st.sampled_from(values or ODD), WORD))
    values_of_one = st.one_of(st.lists(value, min_size=1, max_size=1), st.lists(value, max_size=3))
    option = st.tuples(flag, values_of_one).map(
        lambda pair: " ".join([pair[0], *pair[1]]))
    first = quoted(positional) if positional is not None else st.just("")
    ending = st.sampled_from(["", " ", ";", " ;"])
    options = st.lists(option, max_size=4 if flags else 1)
    return st.tuples(first, options, ending).map(
        lambda parts: " ".join(p for p in [parts[0], *parts[1]] if p) + parts[2])


def words_of(line: str) -> list[str]:
    try:
        return shlex.split(line.rstrip().rstrip(";"))
    except ValueError:
        return []


def touches_outside(words: list[str], cwd: Path) -> bool:
    """True when a word names an existing path other than the scratch folder's own files."""
    allowed = {(cwd / name).resolve() for name in ("data.txt", "assets", "requirements.txt")}
    for word in words:
        for candidate in (word, word.partition("=")[2]):
            if not candidate:
                continue
            try:
                path = (cwd / candidate).expanduser()
                if path.exists() and path.resolve() not in allowed:
                    return True
            except (OSError, ValueError):
                continue
    return False


@pytest.fixture
def shell(ip, sandbox, validating_clients, tmp_path):
    """The test shell in a scratch folder with a few files that --file and --input may name."""
    (tmp_path / "data.txt").write_text("1,2,3\n")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "a.txt").write_text("a\n")
    (tmp_path / "requirements.txt").write_text("pandas\n")
    return ip


def magics_of(ip):
    return ip.magics_manager.registry["SageMakerMagics"]


# ---------------------------------------------------------------- the magics

CONFIG_FLAGS = ["--region", "--profile", "--role", "--bucket", "--prefix", "--base",
                "--instance-type", "--builder", "--endpoint-url", "--registry", "--unset", "--show"]


def _safe_endpoint(words: list[str], sandbox_endpoint: str) -> bool:
    """Only the sandbox's endpoint may be a usable --endpoint-url (traffic stays on 127.0.0.1)."""
    for i, word in enumerate(words):
        if word.startswith("--e") or word.startswith("--endpoint"):
            value = word.partition("=")[2] if "=" in word else (
                words[i + 1] if i + 1 < len(words) else "")
            if re.match(r"^\s*https?://", value) and not value.strip().startswith(sandbox_endpoint):
                return False
    return True


@EXAMPLES
@given(line=line_of(CONFIG_FLAGS, values=[
    "us-east-1", "eu-west-2", "mars-1", "default", "nope", "arn:aws:iam::111122223333:role/R",
    "arn:aws:iam::1:role/R", "my-bucket", "My_Bucket", "a..b", "192.168.1.1", "team/fraud",
    "//", "python:3.12-slim", "Not An Image", "ml.m5.large", "m5.large", "docker", "codebuild",
    "127.0.0.1:5000", "http://127.0.0.1:1/", "ftp://x", "region", "role", "bucket", "nosuch"]))
def test_sm_config_lines(shell, line):
    words = words_of(line)
    assume(_safe_endpoint(words, os.environ["AWS_ENDPOINT_URL"]))
    magics = magics_of(shell)
    try:
        check("%sm_config", lambda: shell.run_line_magic("sm_config", line))
    finally:
        for setting in sm_magics.config.SETTINGS:
            setattr(magics, setting.name, None)


@EXAMPLES
@given(line=line_of([], positional=WORD))
def test_sm_sandbox_lines_with_no_valid_action(shell, line):
    words = words_of(line)
    assume(not {"start", "stop", "status"} & set(words))
    assume(not any(w.startswith(("sta", "sto")) for w in words))
    check("%sm_sandbox", lambda: shell.run_line_magic("sm_sandbox", line))


SET_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,20}", fullmatch=True)
NAMES = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
                  st.sampled_from(["é", "λ", "_hidden", "a1", "class", "None", "print"]))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8)
NOT_JSON = st.sampled_from([
    "(1, 2)", "{1, 2}", "float('nan')", "float('inf')", "[float('-inf')]", "object()", "b'x'",
    "1j", "range(3)", "{1: 2}", "{'a': (1,)}", "len", "type", "...", "[[[(0,)]]]",
    "10 ** 400", "10 ** 5000", "'x' * 100_000",
])
PARAM_LINE = st.one_of(
    st.tuples(NAMES, JSON.map(repr)).map(lambda p: f"{p[0]} = {p[1]}"),
    st.tuples(NAMES, NOT_JSON).map(lambda p: f"{p[0]} = {p[1]}"),
    st.tuples(NAMES, NAMES).map(lambda p: f"{p[0]}, {p[1]} = 1, 2"),
    NAMES.map(lambda n: f"{n}: int = 3"),
    NAMES.map(lambda n: f"{n}: int"),
    NAMES.map(lambda n: f"{n} += 1"),
    NAMES.map(lambda n: f"{n} = undefined_name"),
    NAMES.map(lambda n: f"for {n} in []: pass"),
    NAMES.map(lambda n: f"def {n}(): return 1"),
    st.sampled_from(["", "   ", "# only a comment", "pass", "x = (", "x = 1 +", "if True:",
                     "\tx = 1", "x = '''", "x = 1; y = 2", "import math", "x = {", "1 = x",
                     "x = '\\N{bad}'", "x = 0b2", "λ = 1"]),
)
BODY = st.one_of(
    st.lists(PARAM_LINE, min_size=1, max_size=6).map("\n".join),
    st.sampled_from(["", "\n\n"]),
    st.sampled_from([2000, 20_000]).map(lambda n: "x = 1\n" * n),
    st.sampled_from([300, 200_000]).map(lambda n: "x = '" + "y" * n + "'"),
)


@EXAMPLES
@given(line=line_of([], positional=st.one_of(SET_NAME, SET_NAME, WORD)), body=BODY)
def test_sm_params_cells(shell, line, body):
    check("%%sm_params", lambda: shell.run_cell_magic("sm_params", line, body))


CONTAINER_FLAGS = ["-o", "--output", "--base", "--pip", "--requirements", "--apt", "--file",
                   "--run", "--env", "--dockerfile", "--no-push", "--builder"]
CODE_LINE = st.one_of(
    PARAM_LINE.map(lambda s: s + "  # @param"),
    PARAM_LINE,
    st.sampled_from([
        "print('hi')", "!pip install x", "%time x = 1", "log_metric('acc', 0.9)",
        "x = 1  # @param", "x = 2  # @param", "x = [1,\n 2]  # @param", "# @param",
        "def f():\n    y = 1  # @param", "x = y = 1  # @param", "x.a = 1  # @param",
        "FROM python:3.12-slim", "RUN echo hi", "ARG X", "COPY . /x", "RUN echo \\",
        "from os import *", "import sys; sys.exit(3)", "\x00", "\ufeffx = 1", "async def f(): ...",
    ]),
)
CONTAINER_BODY = st.one_of(
    st.lists(CODE_LINE, min_size=1, max_size=6).map("\n".join),
    st.sampled_from(["", "   \n"]),
    st.sampled_from([5000, 20_000]).map(lambda n: "print(1)\n" * n),
)
CONTAINER_NAME = st.one_of(
    WORD, st.just("demo"),
    st.from_regex(r"[a-z0-9]{1,8}([._/-][a-z0-9]{1,8}){0,2}", fullmatch=True))


@pytest.fixture
def no_docker_engine(monkeypatch):
    """The Docker engine is out of reach: a valid cell stops at the engine, before ECR.

    The Docker builder is asked for: the registry builder would go on to ECR.
    """
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("SM_MAGICS_BUILDER", "docker")
    monkeypatch.setattr(build, "_ENGINE", [])


@EXAMPLES
@given(line=line_of(CONTAINER_FLAGS, positional=CONTAINER_NAME, values=[
    "image", "1image", "python:3.12-slim", "Not_An_Image!", "pandas==2.2.2", "scikit-learn",
    "requirements.txt", "missing.txt", "libgomp1", "Bad Pkg", "data.txt", "assets", "nope.txt",
    "echo hi", "'echo hi'", "A=1", "JUSTAKEY", "AWS_SECRET_ACCESS_KEY=x", "1X=2", "docker",
    "codebuild", "train.py", "Dockerfile"]), body=CONTAINER_BODY)
def test_sm_container_cells(shell, no_docker_engine, tmp_path, line, body):
    assume(not touches_outside(words_of(line), tmp_path))
    outcome = check("%%sm_container", lambda: shell.run_cell_magic("sm_container", line, body))
    assert outcome != "ran", "a cell was built although no Docker engine answers"


TRAIN_FLAGS = ["--params", "--hp", "--input", "--output", "--instance-type", "--instance-count",
               "--volume-size", "--max-run", "--spot", "--max-wait", "--keep-alive", "--env",
               "--tag", "--job-name", "--metric", "--wait"]


@pytest.fixture
def no_role(shell, monkeypatch, tmp_path):
    """A container and a parameter set exist, but no execution role: no job can start."""
    monkeypatch.delenv("SM_MAGICS_ROLE")
    magics = magics_of(shell)
    magics.images["demo"] = ContainerImage(
        "demo", f"{os.environ['SM_MAGICS_REGISTRY']}/demo:0123456789abcdef", "0123456789abcdef",
        None, tmp_path / "no-build", built=False, param_defaults={"lr": 0.1})
    magics.session.parameter_sets["demo"] = ParameterSet("demo", {"epochs": 3})
    return shell


@EXAMPLES
@given(line=line_of(TRAIN_FLAGS, positional=st.one_of(
    st.just("demo"), st.just("demo"), WORD, st.just("127.0.0.1:5000/demo:latest")), values=[
    "demo", "nope", "lr=0.5", "lr=[1,", "=3", "k=v", "train=data.txt", "train=assets",
    "params=data.txt", "train=s3://bucket/x", "train", "s3://bucket/out", "bucket/x",
    "ml.m5.large", "m5.large", "0", "1", "-3", "2", "99999", "90m", "2h", "1h30m", "forever",
    "0s", "A=1", "1X=2", "team=fraud", "job-1", "bad_name", "acc=acc: ([0-9.]+)", "acc=[",
    "acc=acc", "x" * 70]))
def test_sm_train_lines(no_role, tmp_path, line):
    assume(not touches_outside(words_of(line), tmp_path))
    check("%sm_train", lambda: no_role.run_line_magic("sm_train", line))


JOB = st.one_of(WORD, st.from_regex(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,70}", fullmatch=True))


@EXAMPLES
@given(line=line_of(["--limit", "--name"], values=[
    "1", "5", "100", "0", "101", "-1", "x", "fraud", "a b", "demo-1"]))
def test_sm_jobs_lines(shell, line):
    check("%sm_jobs", lambda: shell.run_line_magic("sm_jobs", line))


@EXAMPLES
@given(line=line_of(["--wait"], positional=JOB, values=["1"]))
def test_sm_attach_lines(shell, line):
    check("%sm_attach", lambda: shell.run_line_magic("sm_attach", line))


@EXAMPLES
@given(line=line_of(["--tail"], positional=JOB, values=["1", "0", "-2", "10", "x"]))
def test_sm_logs_lines(shell, line):
    check("%sm_logs", lambda: shell.run_line_magic("sm_logs", line))


@EXAMPLES
@given(line=line_of([], positional=JOB, values=["1"]))
def test_sm_stop_lines(shell, line):
    check("%sm_stop", lambda: shell.run_line_magic("sm_stop", line))


# ---------------------------------------------------------------- the emulated validation


def test_the_sandbox_answers_invalid_parameters_like_aws(sandbox, validating_clients):
    from botocore.exceptions import ClientError

    from sm_magics.config import resolve

    client = AwsContext(resolve()).client("sagemaker")
    with pytest.raises(ClientError) as caught:
        client.describe_training_job(TrainingJobName="not a job name")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "regular expression pattern" in caught.value.response["Error"]["Message"]
    assert client.list_training_jobs(NameContains="ok-name")["TrainingJobSummaries"] == []


# ---------------------------------------------------------------- found by the suite


def test_a_folder_given_to_file_leaves_out_earlier_build_contexts(tmp_path):
    from sm_magics.recipe import Recipe, prepare

    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "util.py").write_text("X = 1\n")
    recipe = Recipe(name="nested", body="print(1)\n", base="python:3.12-slim",
                    files=("project",), cwd=tmp_path)
    first = prepare(recipe)
    first.write(tmp_path / "project")  # a build context inside the folder itself
    (tmp_path / "project" / ".git").mkdir()
    (tmp_path / "project" / ".git" / "HEAD").write_text("ref: main\n")

    second = prepare(recipe)

    assert second.tag == first.tag
    assert sorted(k for k in second.files if k.startswith("project/")) == ["project/util.py"]


@pytest.mark.parametrize("flag", ["requirements", "files"])
def test_a_device_given_as_a_file_is_a_usage_error(flag, tmp_path):
    from sm_magics.recipe import Recipe, prepare

    value = "/dev/null" if flag == "requirements" else ("/dev/null",)
    recipe = Recipe(name="device", body="print(1)\n", base="python:3.12-slim", cwd=tmp_path,
                    **{flag: value})
    with pytest.raises(UsageError) as caught:
        prepare(recipe)
    assert type(caught.value) is UsageError
    assert "/dev/null" in str(caught.value)


def test_an_integer_too_long_for_json_text_is_a_usage_error(ip):
    from sm_magics.recipe import Recipe, prepare

    with pytest.raises(UsageError) as in_params:
        ip.run_cell_magic("sm_params", "huge", "n = 10 ** 5000\n")
    with pytest.raises(UsageError) as in_cell:
        prepare(Recipe(name="huge", body="n = 0x" + "f" * 5000 + "  # @param\n",
                       base="python:3.12-slim"))
    assert "n is an integer too large to write as JSON text" in str(in_params.value)
    assert "is not a JSON value" in str(in_cell.value)
