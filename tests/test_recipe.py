"""From a cell to a build context: ``# @param`` rewriting, checks, hashing, writing."""

from __future__ import annotations

import ast
import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from sm_magics.recipe import (
    BUILDS_DIR,
    ParamScript,
    Recipe,
    check_dockerfile,
    check_repository_name,
    prepare,
    rewrite_params,
)
from sm_magics.runtime import prelude_source

BASE = "python:3.12-slim"


def recipe(body: str = "print('hi')\n", **options) -> Recipe:
    options.setdefault("base", BASE)
    return Recipe(name=options.pop("name", "fraud"), body=body, **options)


# ---------------------------------------------------------------- @param


def test_param_lines_read_their_value_from_the_parameters_and_keep_the_marker():
    script = rewrite_params("lr = 0.05  # @param\nprint(lr)\n")
    assert script.source == 'lr = param("lr")  # @param\nprint(lr)\n'
    assert script.defaults == {"lr": 0.05}


def test_param_defaults_keep_their_json_types():
    code = (
        "epochs = 10  # @param\n"
        "name: str = 'run-1'  #@param {type:\"string\"}\n"
        "features = ['amount', 'hour']  # @param\n"
        "opts = {'depth': 3, 'fast': True, 'seed': None}  # @param\n"
    )
    assert rewrite_params(code).defaults == {
        "epochs": 10, "name": "run-1", "features": ["amount", "hour"],
        "opts": {"depth": 3, "fast": True, "seed": None},
    }


def test_a_multi_line_param_value_keeps_the_line_numbers_of_the_cell():
    code = "layers = [\n    64,\n    32,\n]  # @param\nraise SystemExit(5)\n"
    script = rewrite_params(code)
    assert script.defaults == {"layers": [64, 32]}
    assert script.source.splitlines()[4] == "raise SystemExit(5)"
    assert ast.parse(script.source)


def test_markers_inside_strings_and_comment_only_lines_are_not_params():
    code = 'text = "lr = 1  # @param"\n# @param is how parameters are declared\nx = 2\n'
    assert rewrite_params(code) == ParamScript(code, {})


def test_param_values_with_non_ascii_text_are_replaced_exactly():
    script = rewrite_params("label = 'héllo wörld'  # @param\nafter = 1\n")
    assert script.source == 'label = param("label")  # @param\nafter = 1\n'


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("lr = compute()  # @param\n", "`compute()`, which is not a JSON value"),
        ("shape = (1, 2)  # @param\n", "`(1, 2)`, which is not a JSON value"),
        ("big = float('inf')  # @param\n", "not a JSON value"),
        ("a, b = 1, 2  # @param\n", "top-level assignment of one name"),
        ("def f():\n    lr = 1  # @param\n", "line 2 has a `# @param` marker"),
        ("lr = 1  # @param\nlr = 2  # @param\n", "declared with `# @param` twice"),
    ],
)
def test_params_that_cannot_be_carried_as_json_are_usage_errors(code, expected):
    with pytest.raises(UsageError) as caught:
        rewrite_params(code)
    assert type(caught.value) is UsageError
    assert expected in str(caught.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(first=json_values, second=json_values)
def test_the_image_hash_ignores_param_values(first, second):
    def context(value):
        body = f"import json\nsetting = {value!r}  # @param\nprint(setting)\n"
        return prepare(recipe(body))

    a, b = context(first), context(second)
    assert a.tag == b.tag
    assert a.param_defaults == {"setting": first}
    assert json.loads(json.dumps(a.param_defaults)) == a.param_defaults


# ---------------------------------------------------------------- checks


@pytest.mark.parametrize("name", ["fraud", "team/fraud-model", "a1.b_c-d", "x" * 256])
def test_ecr_repository_names_are_accepted(name):
    assert check_repository_name(name) == name


@pytest.mark.parametrize("name", ["f", "Fraud", "fraud_", "-fraud", "team//fraud", "a b",
                                  "x" * 257, "fraud!"])
def test_names_ecr_would_refuse_are_usage_errors(name):
    with pytest.raises(UsageError, match="cannot be an ECR repository name"):
        check_repository_name(name)


def test_a_syntax_error_names_its_line():
    with pytest.raises(UsageError, match="syntax error at line 2: `x = = 1`"):
        prepare(recipe("import os\nx = = 1\n"))


def test_ipython_syntax_in_the_cell_is_explained():
    with pytest.raises(UsageError, match="IPython syntax"):
        prepare(recipe("!pip install pandas\n"))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"env": ("NOEQUALS",)}, "--env 'NOEQUALS' is not KEY=VALUE"),
        ({"env": ("1BAD=x",)}, "--env '1BAD=x' is not KEY=VALUE"),
        ({"env": ("AWS_SECRET_ACCESS_KEY=abc",)}, "would store AWS credentials in the image"),
        ({"files": ("missing.csv",)}, "--file missing.csv does not exist"),
        ({"requirements": "nope.txt"}, "--requirements nope.txt cannot be read"),
        ({"apt": ("libgomp1; rm -rf /",)}, "is not a package name"),
        ({"run": ("echo one\necho two",)}, "must be one non-empty line"),
        ({"base": None}, "no base image"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, options, expected):
    with pytest.raises(UsageError) as caught:
        prepare(recipe(cwd=tmp_path, **options))
    assert expected in str(caught.value)


def test_an_empty_cell_is_a_usage_error():
    with pytest.raises(UsageError, match="the cell is empty"):
        prepare(recipe("\n  \n"))


def test_a_file_named_like_a_generated_file_is_refused(tmp_path):
    (tmp_path / "train.py").write_text("x = 1\n")
    with pytest.raises(UsageError, match="would be 'train.py' in the image"):
        prepare(recipe(files=("train.py",), cwd=tmp_path))


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        ("RUN echo hi\n", "must start with a FROM"),
        ("# only a comment\n", "must start with a FROM"),
        ("FROM python:3.12\nRUNN echo\n", "line 2 starts with 'RUNN'"),
        ("FROM python:3.12\nRUN echo \\\n", "ends with '\\' but no line follows"),
        ("print('this is python')\n", "not a Dockerfile instruction"),
    ],
)
def test_dockerfiles_that_cannot_build_are_usage_errors(dockerfile, expected):
    with pytest.raises(UsageError) as caught:
        check_dockerfile(dockerfile)
    assert expected in str(caught.value)


def test_a_dockerfile_with_args_continuations_and_comments_passes():
    check_dockerfile(
        "# syntax=docker/dockerfile:1\nARG BASE=python:3.12\nFROM $BASE\n"
        "RUN pip install \\\n    # a comment inside\n    numpy\nCMD [\"train\"]\n"
    )


def test_dockerfile_mode_refuses_options_that_belong_in_the_dockerfile():
    with pytest.raises(UsageError, match="--pip, --apt cannot be combined with --dockerfile"):
        prepare(recipe("FROM python:3.12\n", dockerfile=True, pip=("x",), apt=("curl",)))


# ---------------------------------------------------------------- the context


def test_the_context_holds_the_dockerfile_script_requirements_and_files(tmp_path):
    (tmp_path / "reqs.txt").write_text("numpy==2.1.0\n\n")
    (tmp_path / "config.yaml").write_text("depth: 3\n")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "vocab.txt").write_text("a\nb\n")
    ctx = prepare(recipe("lr = 0.1  # @param\nprint(lr)\n", cwd=tmp_path, pip=("pandas",),
                         requirements="reqs.txt", files=("config.yaml", "assets")))
    assert sorted(ctx.files) == ["Dockerfile", "assets/vocab.txt", "config.yaml",
                                 "requirements.txt", "train.py"]
    assert ctx.files["requirements.txt"].data == b"numpy==2.1.0\npandas\n"
    script = ctx.files["train.py"].data.decode()
    assert script.startswith(prelude_source().rstrip())
    assert script.endswith('lr = param("lr")  # @param\nprint(lr)\n')
    assert "COPY config.yaml /opt/program/\n" in ctx.dockerfile
    assert "COPY assets /opt/program/assets\n" in ctx.dockerfile


def test_dependency_layers_come_before_the_code_so_code_edits_rebuild_little(tmp_path):
    (tmp_path / "data.json").write_text("{}")
    ctx = prepare(recipe(cwd=tmp_path, pip=("pandas",), apt=("libgomp1",),
                         run=("python -c 'print(1)'",), env=("MODE=fast",),
                         files=("data.json",)))
    lines = [line.split()[0] + " " + line.split()[1] for line in ctx.dockerfile.splitlines()
             if line and not line.startswith((" ", "#"))]
    order = [
        "FROM python:3.12-slim", "ENV PYTHONUNBUFFERED=1", "ENV MODE=\"fast\"",
        "RUN apt-get", "RUN python3", "COPY requirements.txt",
        "RUN (python", "RUN python", "COPY data.json", "COPY train.py", "CMD [\"train\"]",
    ]
    assert lines == order


def test_env_values_are_quoted_literally():
    ctx = prepare(recipe(env=('GREETING=say "hi" $HOME \\o/',)))
    assert 'ENV GREETING="say \\"hi\\" \\$HOME \\\\o/"' in ctx.dockerfile


def test_the_hash_changes_with_code_base_packages_and_file_contents(tmp_path):
    data = tmp_path / "data.json"
    data.write_text("{}")
    reference = prepare(recipe(cwd=tmp_path, files=("data.json",))).tag
    variants = [
        recipe("print('bye')\n", cwd=tmp_path, files=("data.json",)),
        recipe(cwd=tmp_path, files=("data.json",), base="python:3.11-slim"),
        recipe(cwd=tmp_path, files=("data.json",), pip=("numpy",)),
        recipe(cwd=tmp_path, files=("data.json",), env=("A=1",)),
    ]
    tags = {prepare(r).tag for r in variants}
    assert reference not in tags and len(tags) == len(variants)
    data.write_text('{"changed": true}')
    assert prepare(recipe(cwd=tmp_path, files=("data.json",))).tag != reference


def test_writing_a_context_is_all_or_nothing_and_idempotent(tmp_path):
    (tmp_path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "run.sh").chmod(0o700)
    ctx = prepare(recipe(cwd=tmp_path, files=("run.sh",)))
    first = ctx.write(tmp_path)
    assert first == tmp_path / BUILDS_DIR / "fraud" / ctx.tag
    assert sorted(p.name for p in first.iterdir()) == ["Dockerfile", "run.sh", "train.py"]
    assert stat.S_IMODE(os.stat(first / "run.sh").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(first / "train.py").st_mode) == 0o644
    assert ctx.write(tmp_path) == first
    assert sorted(p.name for p in first.parent.iterdir()) == [ctx.tag]


def test_dockerfile_mode_context_is_the_dockerfile_and_the_files(tmp_path):
    (tmp_path / "train.sh").write_text("#!/bin/sh\necho trained\n")
    body = "FROM python:3.12-slim\nCOPY train.sh /usr/local/bin/train\n"
    ctx = prepare(recipe(body, dockerfile=True, base=None, files=("train.sh",), cwd=tmp_path))
    assert sorted(ctx.files) == ["Dockerfile", "train.sh"]
    assert ctx.dockerfile == body
    assert ctx.param_defaults == {}
