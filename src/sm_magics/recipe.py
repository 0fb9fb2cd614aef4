"""From a ``%%sm_container`` cell to a Docker build context and its content hash.

A :class:`Recipe` is what the cell asks for (name, code, base image, pip and
apt packages, files...). :func:`prepare` checks it completely, without
touching the disk or AWS, and returns a :class:`BuildContext`: the files of
the context (``Dockerfile``, ``train.py``, ``requirements.txt``, the ``--file``
files), the ``# @param`` defaults, and a content hash that becomes the image
tag. :meth:`BuildContext.write` writes the context atomically under
``.sm_magics/builds/NAME/<hash>/``.

Inline parameters (``lr = 0.05  # @param``) are found with :mod:`tokenize`
and :mod:`ast` and rewritten to ``lr = param("lr")  # @param``: the value then
comes from the resolved parameters at run time, the defaults travel separately
(:attr:`BuildContext.param_defaults`), and the hash does not change when only
a value does.

Example::

    >>> ctx = prepare(Recipe(name="fraud", body="lr = 0.05  # @param\\nprint(lr)\\n",
    ...                      base="python:3.12-slim", pip=("pandas==2.2.2",)))
    >>> ctx.param_defaults, len(ctx.tag)
    ({'lr': 0.05}, 16)
    >>> ctx.write(Path.cwd()) == Path.cwd() / ".sm_magics/builds/fraud" / ctx.tag
    True
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import usage_error
from .params import json_problem, warn_if_secret

__all__ = [
    "BuildContext",
    "ContextFile",
    "ParamScript",
    "Recipe",
    "check_dockerfile",
    "check_repository_name",
    "prepare",
    "rewrite_params",
]

BUILDS_DIR = Path(".sm_magics") / "builds"
PROGRAM_DIR = "/opt/program"
VENV_DIR = "/opt/venv"
LAUNCHER_DIR = "/opt/sm-magics/bin"  # holds `train` only; first on the image's PATH
TAG_LENGTH = 16

_REPOSITORY = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_APT_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.:~+-]+)?")
_PARAM_MARKER = re.compile(r"#\s*@param\b")
CREDENTIAL_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                         "AWS_SECURITY_TOKEN"}
# Folders left out of a --file folder: build contexts (so `--file .` does not nest
# earlier builds), version control and caches.
_SKIPPED_DIRS = {".sm_magics", ".git", "__pycache__", ".ipynb_checkpoints"}
_RESERVED_FILES = {"Dockerfile", "train.py", "requirements.txt", ".dockerignore"}
_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
}


# ---------------------------------------------------------------- checks


def check_repository_name(name: str) -> str:
    """Return ``name`` when it is a valid ECR repository name, else raise a UsageError.

    >>> check_repository_name("team/fraud-model")
    'team/fraud-model'
    """
    if 2 <= len(name) <= 256 and _REPOSITORY.fullmatch(name):
        return name
    raise usage_error(
        f"%%sm_container: '{name}' cannot be an ECR repository name. Use 2 to 256 lowercase "
        "letters and digits, separated by single '.', '_', '-' or '/' (for example "
        "'fraud-model' or 'team/fraud')."
    )


def check_dockerfile(text: str) -> None:
    """Raise a UsageError unless ``text`` reads as a Dockerfile with a ``FROM``.

    Checks what can be checked without the Docker engine: every instruction is
    a known one, continuation lines are closed, and the first instruction
    after any ``ARG`` is ``FROM``.

    >>> check_dockerfile("FROM python:3.12-slim\\nCOPY train.py /opt/program/\\n")
    """
    instructions: list[tuple[int, str]] = []
    pending: int | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if pending is None:
            if not line or line.startswith("#"):
                continue
            keyword = line.split(None, 1)[0].upper()
            if keyword not in _INSTRUCTIONS:
                raise usage_error(
                    f"%%sm_container --dockerfile: line {number} starts with '{line.split()[0]}', "
                    "which is not a Dockerfile instruction (FROM, RUN, COPY, ENV, ...). With "
                    "--dockerfile the cell must be a complete Dockerfile."
                )
            instructions.append((number, keyword))
        elif line.startswith("#"):
            continue
        pending = number if line.endswith("\\") else None
    if pending is not None:
        raise usage_error(
            f"%%sm_container --dockerfile: line {pending} ends with '\\' but no line follows it."
        )
    keywords = [k for _, k in instructions if k != "ARG"]
    if not keywords or keywords[0] != "FROM":
        raise usage_error(
            "%%sm_container --dockerfile: the Dockerfile must start with a FROM instruction "
            "(only ARG may come before it), for example `FROM python:3.12-slim`."
        )


def _check_code(code: str, name: str) -> None:
    try:
        compile(code, f"<%%sm_container {name}>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" if exc.lineno else "the cell"
        text = (exc.text or "").strip()
        shown = f": `{text}`" if text else ""
        hint = ""
        if text.startswith(("!", "%")):
            hint = (" The cell becomes a plain Python script, so IPython syntax (`!cmd`, "
                    "`%magic`) cannot be used; use --pip/--apt/--run for installs.")
        raise usage_error(
            f"%%sm_container {name}: the training code has a syntax error at {where}{shown} "
            f"({exc.msg}).{hint}"
        ) from None


# ---------------------------------------------------------------- @param


@dataclass(frozen=True)
class ParamScript:
    """The cell's code with ``# @param`` values replaced, and those values.

    >>> rewrite_params("lr = 0.05  # @param\\n")
    ParamScript(source='lr = param("lr")  # @param\\n', defaults={'lr': 0.05})
    """

    source: str
    defaults: dict[str, Any]


def _marker_lines(code: str) -> list[int]:
    """Lines that end a statement with a ``# @param`` comment (not comment-only lines)."""
    lines = []
    code_on_line: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type not in skip:
            code_on_line.update(range(token.start[0], token.end[0] + 1))
        elif (token.type == tokenize.COMMENT and _PARAM_MARKER.match(token.string)
              and token.start[0] in code_on_line):
            lines.append(token.start[0])
    return lines


def _char_offset(lines: list[str], lineno: int, col_bytes: int) -> int:
    """Offset in the joined text of ``lines`` of an ``ast`` (line, UTF-8 column) position."""
    before = sum(len(line) for line in lines[: lineno - 1])
    return before + len(lines[lineno - 1].encode("utf-8")[:col_bytes].decode("utf-8"))


_NOT_LITERAL = object()


def rewrite_params(code: str, name: str = "cell") -> ParamScript:
    """Rewrite top-level ``x = <literal>  # @param`` lines to read ``param("x")``.

    The values must be literals that JSON can carry, by the same rule as
    parameter sets (:func:`~sm_magics.params.json_problem`); anything else is a
    UsageError naming the line. A rewritten value spanning several lines keeps
    its line count, so line numbers in tracebacks still match the cell.

    >>> rewrite_params("epochs = 10  # @param\\nprint(epochs)\\n").defaults
    {'epochs': 10}
    """
    _check_code(code, name)
    marked = _marker_lines(code)
    if not marked:
        return ParamScript(code, {})
    tree = ast.parse(code)
    ending_at: dict[int, ast.stmt] = {}
    for statement in tree.body:
        ending_at[statement.end_lineno or statement.lineno] = statement
    replacements: list[tuple[int, int, str]] = []
    defaults: dict[str, Any] = {}
    lines = io.StringIO(code, newline="").readlines()  # the line breaks Python itself uses
    for lineno in marked:
        statement = ending_at.get(lineno)
        target = value = None
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        if not isinstance(target, ast.Name) or value is None:
            raise usage_error(
                f"%%sm_container {name}: line {lineno} has a `# @param` marker, which only "
                "works on a top-level assignment of one name, like `lr = 0.05  # @param`."
            )
        variable = target.id
        segment = ast.get_source_segment(code, value) or ""
        try:
            default = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            default = _NOT_LITERAL
        problem = None if default is _NOT_LITERAL else json_problem(default, variable)
        if default is _NOT_LITERAL or problem:
            why = f" ({problem})" if problem else ""
            raise usage_error(
                f"%%sm_container {name}: the `# @param` value of `{variable}` on line {lineno} "
                f"is `{segment}`, which is not a JSON value{why}. Use a literal number, string, "
                "True/False, None, or a list or dict (with string keys) of those."
            )
        if variable in defaults:
            raise usage_error(
                f"%%sm_container {name}: `{variable}` is declared with `# @param` twice "
                f"(again on line {lineno}). Keep one declaration."
            )
        defaults[variable] = default
        warn_if_secret(variable, default, f"%%sm_container {name} `# @param`")
        start = _char_offset(lines, value.lineno, value.col_offset)
        end = _char_offset(lines, value.end_lineno or value.lineno, value.end_col_offset or 0)
        call = f"param({json.dumps(variable, ensure_ascii=False)})"
        extra_lines = (value.end_lineno or value.lineno) - value.lineno
        if extra_lines:
            call = f"({call}{chr(10) * extra_lines})"
        replacements.append((start, end, call))
    source = code
    for start, end, text in sorted(replacements, reverse=True):
        source = source[:start] + text + source[end:]
    return ParamScript(source, defaults)



# ---------------------------------------------------------------- recipe


@dataclass(frozen=True)
class Recipe:
    """What a ``%%sm_container`` cell asks for, before any check.

    Paths (``requirements``, ``files``) are relative to ``cwd``.

    >>> recipe = Recipe(name="fraud", body="print('hi')", base="python:3.12-slim",
    ...                 apt=("libgomp1",))
    """

    name: str
    body: str
    base: str | None = None
    pip: tuple[str, ...] = ()
    requirements: str | None = None
    apt: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    dockerfile: bool = False
    cwd: Path = field(default_factory=Path.cwd)


@dataclass(frozen=True)
class ContextFile:
    """One file of a build context: its bytes, or the local file it is copied from."""

    mode: int
    data: bytes | None = None
    source: Path | None = None

    def chunks(self):
        if self.data is not None:
            yield self.data
            return
        with open(self.source, "rb") as handle:
            while chunk := handle.read(1 << 20):
                yield chunk


@dataclass(frozen=True)
class BuildContext:
    """A checked build context: its files, ``# @param`` defaults and content hash.

    ``files`` maps a path inside the context to its content. The hash covers the
    base image reference and every file (path, mode, bytes), so it changes
    exactly when something that goes into the image changes.

    >>> ctx = prepare(Recipe(name="fraud", body="print(1)", base="python:3.12-slim"))
    >>> sorted(ctx.files)
    ['Dockerfile', 'train.py']
    """

    name: str
    base: str | None
    files: Mapping[str, ContextFile]
    param_defaults: dict[str, Any]
    sha256: str
    build_args: Mapping[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The image tag: the first hex digits of the content hash."""
        return self.sha256[:TAG_LENGTH]

    @property
    def dockerfile(self) -> str:
        return (self.files["Dockerfile"].data or b"").decode()

    def directory(self, root: Path) -> Path:
        """Where :meth:`write` puts this context below ``root`` (the working directory)."""
        return root / BUILDS_DIR / self.name / self.tag

    def write(self, root: Path) -> Path:
        """Write the context under ``root/.sm_magics/builds/NAME/<tag>/``, all or nothing.

        The files go to a temporary directory next to the final one, which is
        then renamed into place; an existing directory for the same hash holds
        the same content and is kept as it is.
        """
        final = self.directory(root)
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.tag}-", dir=final.parent))
        try:
            for relative, entry in self.files.items():
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                if entry.data is not None:
                    target.write_bytes(entry.data)
                else:
                    shutil.copyfile(entry.source, target)
                target.chmod(entry.mode)
            for directory in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
                directory.chmod(0o755)
            try:
                staging.rename(final)
            except OSError:
                if not final.is_dir():
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return final


def _parse_env(items: tuple[str, ...], name: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key):
            raise usage_error(
                f"%%sm_container {name}: --env '{item}' is not KEY=VALUE with a variable name "
                "of letters, digits and '_' (for example --env OMP_NUM_THREADS=4)."
            )
        if "\n" in value:
            raise usage_error(f"%%sm_container {name}: the --env value of {key} has a newline.")
        if key.upper() in CREDENTIAL_VARIABLES:
            raise usage_error(
                f"%%sm_container {name}: --env {key}=... would store AWS credentials in the "
                "image, where anyone who can pull it reads them. Training jobs get credentials "
                "from their execution role; leave them out."
            )
        pairs.append((key, value))
    return pairs


def parse_env(recipe: Recipe) -> list[tuple[str, str]]:
    """The ``--env KEY=VALUE`` pairs of ``recipe``, checked (a UsageError names a bad one)."""
    return _parse_env(recipe.env, recipe.name)


def _quote_env(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _collect_files(recipe: Recipe) -> dict[str, ContextFile]:
    found: dict[str, ContextFile] = {}
    for given in recipe.files:
        path = (recipe.cwd / given).expanduser()
        if not path.exists():
            raise usage_error(
                f"%%sm_container {recipe.name}: --file {given} does not exist (looked in "
                f"{path.parent}). Paths are relative to the notebook's working directory."
            )
        top = path.resolve().name
        if not re.fullmatch(r"[\w.+@-]+", top):
            raise usage_error(
                f"%%sm_container {recipe.name}: --file {given}: the name '{top}' has spaces or "
                "special characters; use letters, digits and . _ - + @ only."
            )
        if top in _RESERVED_FILES or top in found or any(k.startswith(top + "/") for k in found):
            raise usage_error(
                f"%%sm_container {recipe.name}: --file {given} would be '{top}' in the image, "
                "which is taken (by another --file or by a generated file: "
                f"{', '.join(sorted(_RESERVED_FILES))}). Rename it."
            )
        if not (path.is_file() or path.is_dir()):
            raise usage_error(
                f"%%sm_container {recipe.name}: --file {given} is neither a file nor a folder."
            )
        members = [path] if path.is_file() else sorted(
            p for p in path.rglob("*")
            if p.is_file() and not _SKIPPED_DIRS & set(p.relative_to(path).parts[:-1]))
        for member in members:
            relative = top if member == path else f"{top}/{member.relative_to(path).as_posix()}"
            executable = os.stat(member).st_mode & stat.S_IXUSR
            found[relative] = ContextFile(0o755 if executable else 0o644, source=member)
    return found


def _requirements(recipe: Recipe) -> str:
    lines: list[str] = []
    if recipe.requirements:
        path = (recipe.cwd / recipe.requirements).expanduser()
        if path.exists() and not path.is_file():
            raise usage_error(
                f"%%sm_container {recipe.name}: --requirements {recipe.requirements} is not a "
                "file. Give a requirements file, e.g. --requirements requirements.txt."
            )
        try:
            lines += path.read_text().splitlines()
        except OSError as exc:
            raise usage_error(
                f"%%sm_container {recipe.name}: --requirements {recipe.requirements} cannot be "
                f"read ({exc.strerror or exc}). Paths are relative to the notebook's working "
                "directory."
            ) from None
    for spec in recipe.pip:
        if not spec.strip() or "\n" in spec:
            raise usage_error(f"%%sm_container {recipe.name}: --pip '{spec}' is not a package.")
        lines.append(spec.strip())
    return "".join(line.rstrip() + "\n" for line in lines if line.strip())


def _dockerfile(recipe: Recipe, env: list[tuple[str, str]], requirements: str,
                files: Mapping[str, ContextFile]) -> str:
    """The generated Dockerfile; layers ordered from least to most often changed."""
    # SageMaker runs `docker run IMAGE train`: the base's ENTRYPOINT, if it has one,
    # gets `train` as its argument and finds it on PATH. Of the base, this keeps:
    # - PATH, with the launcher's directory put first. Deep Learning Containers put
    #   /opt/conda/bin first, where the training toolkit's own `train` (which wants a
    #   `sagemaker_program` hyperparameter) would otherwise run instead of the cell.
    #   The directory holds only the launcher: no pip package's script can shadow it.
    # - the ENTRYPOINT. Entrypoints do set-up the code needs (a DLC's fixes the
    #   hostname for distributed training) and then run `train`.
    # - the WORKDIR (there is no WORKDIR line). A DLC's entrypoint works on files of
    #   its working directory `/`; the launcher changes into /opt/program itself.
    # The launcher `exec`s Python, so the SIGTERM of StopTrainingJob reaches the
    # prelude's handler when Python is PID 1 or the entrypoint `exec`s `train`.
    out = [
        f"# Generated by sm-magics for the container '{recipe.name}'. Build it by hand with:",
        f"#   docker build --network host -t {recipe.name} .",
        f"FROM {recipe.base}",
        "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\",
        "    PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \\",
        f"    PATH={LAUNCHER_DIR}:{VENV_DIR}/bin:$PATH",
    ]
    if env:
        out.append("ENV " + " \\\n    ".join(f"{k}={_quote_env(v)}" for k, v in env))
    if recipe.apt:
        out.append(
            "RUN apt-get update \\\n"
            "    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            + " ".join(recipe.apt)
            + " \\\n    && apt-get clean && rm -rf /var/lib/apt/lists/*"
        )
    # A virtual environment answers PEP 668 on Debian-based Pythons, and
    # --system-site-packages keeps what the base image installed (Deep Learning
    # Containers) importable.
    out.append("# SageMaker runs `train`: this one, first on PATH. The base's ENTRYPOINT "
               "and WORKDIR are kept.")
    out.append(
        f"RUN python3 -m venv --system-site-packages --without-pip {VENV_DIR} \\\n"
        f"    && mkdir -p {LAUNCHER_DIR} {PROGRAM_DIR} \\\n"
        f"    && printf '#!/bin/sh\\ncd {PROGRAM_DIR} || exit 1\\nexec {VENV_DIR}/bin/python "
        f"{PROGRAM_DIR}/train.py \"$@\"\\n' > {LAUNCHER_DIR}/train \\\n"
        f"    && chmod 0755 {LAUNCHER_DIR}/train"
    )
    if requirements:
        out.append(f"COPY requirements.txt {PROGRAM_DIR}/requirements.txt")
        out.append(
            "RUN (python -m pip --version >/dev/null 2>&1 || python -m ensurepip) \\\n"
            f"    && python -m pip install -r {PROGRAM_DIR}/requirements.txt"
        )
    out += [f"RUN {command}" for command in recipe.run]
    plain = sorted(k for k in files if "/" not in k)
    folders = sorted({k.split("/", 1)[0] for k in files if "/" in k})
    if plain:
        out.append(f"COPY {' '.join(plain)} {PROGRAM_DIR}/")
    out += [f"COPY {folder} {PROGRAM_DIR}/{folder}" for folder in folders]
    out.append(f"COPY train.py {PROGRAM_DIR}/train.py")
    out.append('CMD ["train"]')
    return "\n".join(out) + "\n"


def _train_script(code: str) -> str:
    from .runtime import prelude_source

    return f"{prelude_source().rstrip()}\n{code.rstrip()}\n"


def _content_hash(base: str | None, files: Mapping[str, ContextFile]) -> str:
    digest = hashlib.sha256()
    digest.update(f"base\0{base or ''}\0".encode())
    for relative in sorted(files):
        entry = files[relative]
        digest.update(f"file\0{relative}\0{entry.mode:o}\0".encode())
        size = 0
        for chunk in entry.chunks():
            size += len(chunk)
            digest.update(chunk)
        digest.update(f"\0{size}\0".encode())
    return digest.hexdigest()


def prepare(recipe: Recipe) -> BuildContext:
    """Check ``recipe`` completely and return its build context (nothing is written).

    Every problem is a UsageError: a bad repository name, a syntax error in the
    code, a bad ``# @param`` value, a missing ``--file``/``--requirements`` file, a
    bad ``--env`` pair, options that do not fit ``--dockerfile``, a Dockerfile
    without ``FROM``.

    >>> a = prepare(Recipe(name="fraud", body="lr = 0.1  # @param", base="python:3.12-slim"))
    >>> b = prepare(Recipe(name="fraud", body="lr = 0.2  # @param", base="python:3.12-slim"))
    >>> a.tag == b.tag, b.param_defaults
    (True, {'lr': 0.2})
    """
    name = check_repository_name(recipe.name)
    if not recipe.body.strip():
        raise usage_error(
            f"%%sm_container {name}: the cell is empty. Write the training code in the cell "
            "below the magic line."
        )
    env = _parse_env(recipe.env, name)
    for package in recipe.apt:
        if not _APT_PACKAGE.fullmatch(package):
            raise usage_error(f"%%sm_container {name}: --apt '{package}' is not a package name.")
    for command in recipe.run:
        if not command.strip() or "\n" in command:
            raise usage_error(
                f"%%sm_container {name}: --run '{command}' must be one non-empty line; give "
                "several --run commands for several steps."
            )
    files = _collect_files(recipe)
    user_files = dict(files)

    if recipe.dockerfile:
        given = [flag for flag, value in (("--pip", recipe.pip), ("--requirements",
                 recipe.requirements), ("--apt", recipe.apt), ("--run", recipe.run),
                 ("--env", recipe.env)) if value]
        if given:
            raise usage_error(
                f"%%sm_container {name}: {', '.join(given)} cannot be combined with "
                "--dockerfile; write those steps in the Dockerfile itself."
            )
        check_dockerfile(recipe.body)
        files["Dockerfile"] = ContextFile(0o644, data=recipe.body.encode())
        # `ARG BASE_IMAGE` + `FROM ${BASE_IMAGE}` lets one Dockerfile follow the base setting
        base = recipe.base if re.search(r"^\s*ARG\s+BASE_IMAGE\b", recipe.body, re.M) else None
        return BuildContext(name, base, files, {}, _content_hash(base, files),
                            {"BASE_IMAGE": base} if base else {})

    if not recipe.base:
        raise usage_error(f"%%sm_container {name}: no base image; give --base IMAGE.")
    script = rewrite_params(recipe.body, name)
    requirements = _requirements(recipe)
    if requirements:
        files["requirements.txt"] = ContextFile(0o644, data=requirements.encode())
    files["train.py"] = ContextFile(0o644, data=_train_script(script.source).encode())
    files["Dockerfile"] = ContextFile(
        0o644, data=_dockerfile(recipe, env, requirements, user_files).encode()
    )
    return BuildContext(name, recipe.base, files, script.defaults,
                        _content_hash(recipe.base, files))
