"""Parameter sets: capture, validate, resolve, serialise, hash and compare.

A parameter set is what a ``%%sm_params NAME`` cell assigned at top level.
At train time the inline ``# @param`` defaults, the sets given to ``--params``
(in order) and the ``--hp K=V`` pairs are merged into one document, which is
written as canonical JSON and addressed by its SHA-256.

Values must survive a JSON round trip unchanged: ``str``, ``int``, ``float``
(finite), ``bool``, ``None``, and ``list`` / ``dict`` (string keys) of those.
Tuples are refused rather than silently turned into lists, because the
training code would get a list back; sets, NaN/infinity, NumPy scalars and
other objects are refused too. :func:`json_problem` is that rule for every
parameter, ``# @param`` defaults in container cells included. Names starting
with ``_`` are helpers and are not recorded (SageMaker reserves such
hyperparameter names).

Example::

    >>> fraud = capture("fraud", "lr = 0.05\\nfeatures = ['amount']\\n", namespace={}, run=None)
    >>> doc = resolve({"lr": 0.1, "epochs": 3}, [fraud], ["epochs=5"])
    >>> canonical_json(doc)
    '{"epochs":5,"features":["amount"],"lr":0.05}'
    >>> hyperparameters(doc).values
    {'epochs': '5', 'features': '["amount"]', 'lr': '0.05'}
"""

from __future__ import annotations

import ast
import collections
import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import usage_error
from .table import Table

__all__ = [
    "HYPERPARAMETER_LIMIT",
    "HYPERPARAMETER_VALUE_LIMIT",
    "DiffRow",
    "HyperparameterFit",
    "ParameterSet",
    "ParameterSets",
    "SecretParameterWarning",
    "assigned_names",
    "canonical_json",
    "capture",
    "diff",
    "diff_table",
    "hyperparameters",
    "json_problem",
    "parse_hp",
    "resolve",
    "secret_reason",
    "sha256",
    "shown",
    "validate",
    "warn_if_secret",
]

HYPERPARAMETER_LIMIT = 100
HYPERPARAMETER_VALUE_LIMIT = 256
_SET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
_HP_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,255}$")
_SHOWN = 60


# ---------------------------------------------------------------- display


def shown(value: Any) -> str:
    """A parameter value as a table shows it: its JSON, cut at 60 characters.

    >>> shown("rbf"), shown(0.5), shown(list(range(30)))[-5:]
    ('"rbf"', '0.5', '16, …')
    """
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# ---------------------------------------------------------------- validation


def json_problem(value: Any, path: str) -> str | None:
    """Why ``value`` (found at ``path``) cannot go through JSON unchanged, or ``None``.

    >>> json_problem({"size": [224, 224]}, "cfg") is None, json_problem((224, 224), "shape")
    (True, 'shape is a tuple, which would come back as a list; write it as a list [...]')
    """
    kind = type(value)
    if value is None or kind in (str, bool):
        return None
    if kind is int:
        try:
            str(value)  # Python refuses to write integers of over 4300 digits as text
        except ValueError:
            return f"{path} is an integer too large to write as JSON text"
        return None
    if kind is float:
        return None if math.isfinite(value) else f"{path} is {value!r}, which JSON cannot hold"
    if kind is list:
        for i, item in enumerate(value):
            problem = json_problem(item, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{path} has the key {key!r} ({type(key).__name__}); JSON keys are strings"
            problem = json_problem(item, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    if kind is tuple:
        return f"{path} is a tuple, which would come back as a list; write it as a list [...]"
    hint = ""
    if hasattr(value, "item") or hasattr(value, "tolist"):
        hint = " (for a NumPy or pandas value, use .item() or .tolist())"
    return f"{path} is a {kind.__name__}{hint}"


def validate(name: str, value: Any, where: str) -> Any:
    """Return ``value`` when JSON represents it faithfully, else raise a ``UsageError``.

    ``where`` says where the value came from, for the message.

    >>> validate("lr", 0.05, "%%sm_params fraud")
    0.05
    """
    problem = json_problem(value, name)
    if problem:
        raise usage_error(
            f"{where}: the parameter {name} cannot be passed to a training job: {problem}. "
            "Parameters must be str, int, float (finite), bool, None, or lists and dicts "
            "(with string keys) of those."
        )
    return value


# ---------------------------------------------------------------- secrets


class SecretParameterWarning(UserWarning):
    """A parameter looks like a password, a token or a key.

    Parameters are stored in S3 and shown as hyperparameters in the SageMaker
    console, so a secret there is readable by everyone who can see the job.
    Silence it with ``warnings.filterwarnings("ignore", category=SecretParameterWarning)``.
    """


# Names that hold a secret whatever the value (compared without '_', '-', '.' and case).
_SECRET_NAMES = ("password", "passwd", "passphrase", "secret", "apikey", "accesskey",
                 "privatekey", "credential", "authtoken", "accesstoken", "sessiontoken",
                 "bearertoken", "refreshtoken")
_SECRET_VALUES = (
    (re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"), "an AWS access key ID"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\b(?:ghp_[A-Za-z0-9]{36}|github_pat_\w{22,}|hf_[A-Za-z0-9]{30,}"
                r"|sk-[A-Za-z0-9_-]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}"
                r"|eyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]+)"), "an API token"),
)


def _char_class(char: str) -> int:
    return 0 if char.islower() else 1 if char.isupper() else 2 if char.isdigit() else 3


def _looks_random(text: str) -> bool:
    """A long key-like string: no spaces, dots or URL, mixed case and digits, high entropy.

    Random base64 keys change character class (lower, upper, digit) at most
    characters and carry over 4.2 bits per character; words, paths, model ids,
    hex digests and UUIDs do not.
    """
    if len(text) < 32 or any(c.isspace() for c in text) or "." in text or "://" in text:
        return False
    if not (any(c.islower() for c in text) and any(c.isupper() for c in text)
            and any(c.isdigit() for c in text)):
        return False
    counts = collections.Counter(text)
    entropy = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    switches = sum(_char_class(a) != _char_class(b) for a, b in zip(text, text[1:], strict=False))
    return entropy >= 4.2 and switches / (len(text) - 1) >= 0.4


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)


def secret_reason(name: str, value: Any) -> str | None:
    """Why the parameter ``name = value`` looks like a secret, or ``None``.

    >>> secret_reason("db_password", "hunter2"), secret_reason("max_tokens", 512)
    ('its name', None)
    >>> secret_reason("key", "AKIA" + "Z" * 16)
    'its value looks like an AWS access key ID'
    """
    folded = re.sub(r"[^a-z0-9]", "", name.lower())
    texts = list(_strings(value))
    if any(texts) and any(word in folded for word in _SECRET_NAMES):
        return "its name"
    for text in texts:
        for pattern, what in _SECRET_VALUES:
            if pattern.search(text):
                return f"its value looks like {what}"
        if _looks_random(text):
            return "its value looks like a random key"
    return None


def warn_if_secret(name: str, value: Any, where: str) -> None:
    """Issue a :class:`SecretParameterWarning` when ``name = value`` looks like a secret.

    The message names the parameter, never its value.

    >>> warn_if_secret("lr", 0.05, "--hp lr=0.05")       # nothing to say
    """
    reason = secret_reason(name, value)
    if reason:
        warnings.warn(
            f"{where}: the parameter {name} looks like a secret ({reason}); parameters are "
            "stored in S3 and shown in the SageMaker console, so keep secrets in AWS Secrets "
            "Manager and read them in the training code with "
            "boto3.client('secretsmanager').get_secret_value(SecretId=...).",
            SecretParameterWarning, stacklevel=3)


# ---------------------------------------------------------------- capture


def _target_names(target: ast.expr) -> Iterator[str]:
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _target_names(element.value if isinstance(element, ast.Starred)
                                     else element)


def assigned_names(source: str) -> list[str]:
    """Names assigned at top level of ``source``, in first-assignment order.

    Plain, annotated, augmented and unpacking assignments count; names inside
    functions, loops and other blocks do not, nor do names starting with ``_``.

    >>> assigned_names("a = 1\\nb, c = 2, 3\\nd: int = 4\\na += 1\\n_tmp = 5\\nfor i in []: pass")
    ['a', 'b', 'c', 'd']
    """
    names: list[str] = []
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)):
            targets = [statement.target] if getattr(statement, "value", True) else []
        else:
            continue
        for target in targets:
            for name in _target_names(target):
                if not name.startswith("_") and name not in names:
                    names.append(name)
    return names


@dataclass(frozen=True)
class ParameterSet:
    """The parameters one ``%%sm_params NAME`` cell assigned. Shows as a table.

    >>> ParameterSet("fraud", {"lr": 0.05})
    parameter set fraud
    name  value  type
    ----  -----  -----
    lr    0.05   float
    """

    name: str
    values: dict[str, Any]

    def table(self) -> Table:
        """The parameters as a (name, value, type) table."""
        rows = [(k, shown(v), _kind(v)) for k, v in self.values.items()]
        return Table(("name", "value", "type"), rows, title=f"parameter set {self.name}")

    def __repr__(self) -> str:
        return repr(self.table())

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


def capture(name: str, source: str, namespace: Mapping[str, Any],
            run: Callable[[str], None] | None) -> ParameterSet:
    """Run ``source`` with ``run`` and return what it assigned at top level as set ``name``.

    ``run`` executes the cell in the user namespace (``shell.ex`` in a magic);
    with ``run=None`` the cell is executed in ``namespace`` directly. A name or
    value that cannot become a parameter is a ``UsageError`` naming it, raised
    after the cell ran (its variables exist in the namespace either way).

    >>> ns = {}
    >>> capture("fraud", "lr = 0.05", ns, run=None).values, ns["lr"]
    ({'lr': 0.05}, 0.05)
    """
    if not _SET_NAME.match(name or ""):
        raise usage_error(
            f"%%sm_params: {name!r} is not a parameter set name. Use letters, digits, '_' "
            "and '-', starting with a letter, e.g. `%%sm_params fraud`."
        )
    try:
        names = assigned_names(source)
    except SyntaxError as exc:
        raise usage_error(
            f"%%sm_params {name}: line {exc.lineno} of the cell is not valid Python ({exc.msg})."
        ) from None
    if not names:
        raise usage_error(
            f"%%sm_params {name}: the cell assigns no variables. Write one assignment per "
            "parameter, e.g. `learning_rate = 0.05`."
        )
    if run is None:
        exec(compile(source, f"<%%sm_params {name}>", "exec"), namespace)
    else:
        run(source)
    where = f"%%sm_params {name}"
    values = {n: validate(n, namespace[n], where) for n in names if n in namespace}
    for parameter, value in values.items():
        warn_if_secret(parameter, value, where)
    return ParameterSet(name, values)


class ParameterSets(MutableMapping[str, ParameterSet]):
    """The parameter sets defined in one session, by name.

    >>> sets = ParameterSets()
    >>> sets["fraud"] = ParameterSet("fraud", {"lr": 0.05})
    >>> [s.name for s in sets.pick(["fraud"])]
    ['fraud']
    """

    def __init__(self) -> None:
        self._sets: dict[str, ParameterSet] = {}

    def __getitem__(self, name: str) -> ParameterSet:
        return self._sets[name]

    def __setitem__(self, name: str, value: ParameterSet) -> None:
        self._sets[name] = value

    def __delitem__(self, name: str) -> None:
        del self._sets[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sets)

    def __len__(self) -> int:
        return len(self._sets)

    def pick(self, names: Sequence[str]) -> list[ParameterSet]:
        """The sets called ``names``, in that order, or a ``UsageError`` for an unknown one."""
        unknown = [n for n in names if n not in self._sets]
        if unknown:
            known = ", ".join(self._sets) or "none yet"
            raise usage_error(
                f"--params: no parameter set called {', '.join(unknown)} (defined: {known}). "
                f"Run a `%%sm_params {unknown[0]}` cell first."
            )
        return [self._sets[n] for n in names]


# ---------------------------------------------------------------- resolution


def parse_hp(pair: str) -> tuple[str, Any]:
    """Split ``K=V``; the value is a Python or JSON literal when it reads as one, else a string.

    >>> parse_hp("lr=0.1"), parse_hp("optimizer=adam"), parse_hp("layers=[64, 32]")
    (('lr', 0.1), ('optimizer', 'adam'), ('layers', [64, 32]))
    >>> parse_hp("amp=true")
    ('amp', True)
    """
    key, sep, text = pair.partition("=")
    key = key.strip()
    if not sep or not _HP_KEY.match(key):
        raise usage_error(
            f"--hp {pair}: write KEY=VALUE with a name of letters, digits, '_', '.' or '-' "
            "starting with a letter, e.g. `--hp learning_rate=0.1`."
        )
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            value = json.loads(text)
        except ValueError:
            value = text
    validate(key, value, f"--hp {pair}")
    warn_if_secret(key, value, f"--hp {key}")
    return key, value


def resolve(defaults: Mapping[str, Any], sets: Sequence[Mapping[str, Any] | ParameterSet],
            hp_pairs: Sequence[str] = ()) -> dict[str, Any]:
    """Merge inline defaults < parameter sets (in order) < ``--hp`` pairs; keys sorted.

    >>> resolve({"lr": 0.1}, [{"lr": 0.2, "depth": 3}], ["lr=0.3"])
    {'depth': 3, 'lr': 0.3}
    """
    merged: dict[str, Any] = {}
    for name, value in defaults.items():
        merged[name] = validate(name, value, "# @param default")
    for entry in sets:
        values = entry.values if isinstance(entry, ParameterSet) else entry
        where = f"--params {entry.name}" if isinstance(entry, ParameterSet) else "--params"
        for name, value in values.items():
            merged[name] = validate(name, value, where)
    for pair in hp_pairs:
        key, value = parse_hp(pair)
        merged[key] = value
    return dict(sorted(merged.items()))


def canonical_json(doc: Mapping[str, Any]) -> str:
    """The one serialisation of ``doc``: sorted keys, no spaces, UTF-8 text, no NaN.

    >>> canonical_json({"b": [1, 2], "a": "é"})
    '{"a":"é","b":[1,2]}'
    """
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def sha256(doc: Mapping[str, Any]) -> str:
    """The hex SHA-256 of ``canonical_json(doc)`` encoded as UTF-8.

    >>> sha256({})[:12]
    '44136fa355b3'
    """
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- diff


@dataclass(frozen=True)
class DiffRow:
    """One parameter that differs between two runs: ``change`` is added/removed/changed.

    >>> DiffRow("lr", "changed", before=0.1, after=0.2).change
    'changed'
    """

    name: str
    change: str
    before: Any = None
    after: Any = None


def diff(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[DiffRow]:
    """What changed from ``previous`` to ``current``, by parameter name.

    >>> diff({"lr": 0.1, "old": 1}, {"lr": 0.2, "new": 2})
    [DiffRow(name='lr', change='changed', before=0.1, after=0.2), \
DiffRow(name='new', change='added', before=None, after=2), \
DiffRow(name='old', change='removed', before=1, after=None)]
    """
    previous = previous or {}
    rows = []
    for name in sorted(set(previous) | set(current)):
        if name not in previous:
            rows.append(DiffRow(name, "added", after=current[name]))
        elif name not in current:
            rows.append(DiffRow(name, "removed", before=previous[name]))
        elif canonical_json({"v": previous[name]}) != canonical_json({"v": current[name]}):
            rows.append(DiffRow(name, "changed", previous[name], current[name]))
    return rows


def diff_table(previous: Mapping[str, Any] | None, current: Mapping[str, Any],
               title: str = "parameters changed since the previous run") -> Table:
    """The rows of :func:`diff` as a (name, before, after) table.

    >>> diff_table({"lr": 0.1}, {"lr": 0.2}, title="")
    name  before  after
    ----  ------  -----
    lr    0.1     0.2
    """
    rows = [
        (r.name, "" if r.change == "added" else shown(r.before),
         "(removed)" if r.change == "removed" else shown(r.after))
        for r in diff(previous, current)
    ]
    return Table(("name", "before", "after"), rows, title=title or None)


# ---------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class HyperparameterFit:
    """Hyperparameters that fit the API limits, and the names left to the channel alone.

    >>> hyperparameters({"lr": 0.1, "vocabulary": ["word"] * 50}).left_out
    {'vocabulary': 'value is 351 characters as JSON, over 256'}
    """

    values: dict[str, str]
    left_out: dict[str, str] = field(default_factory=dict)

    def note(self) -> str:
        """One sentence naming what only the ``params`` channel carries, or ``""``."""
        if not self.left_out:
            return ""
        listed = "; ".join(f"{k} ({why})" for k, why in self.left_out.items())
        return (f"Passed only through the params channel, not as hyperparameters: {listed}. "
                "The training code still sees them in `params`.")


def hyperparameters(doc: Mapping[str, Any]) -> HyperparameterFit:
    """Each value as JSON text, within SageMaker's limits; nothing is truncated.

    At most 100 keys (in sorted order) and values of at most 256 characters are
    kept; the rest are listed in ``left_out`` with the reason.

    >>> fit = hyperparameters({"small": 1, "big": "x" * 300})
    >>> fit.values, fit.left_out
    ({'small': '1'}, {'big': 'value is 302 characters as JSON, over 256'})
    """
    values: dict[str, str] = {}
    left_out: dict[str, str] = {}
    for key in sorted(doc):
        text = json.dumps(doc[key], ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if len(key) > HYPERPARAMETER_VALUE_LIMIT:
            left_out[key] = f"name is over {HYPERPARAMETER_VALUE_LIMIT} characters"
        elif len(text) > HYPERPARAMETER_VALUE_LIMIT:
            left_out[key] = (f"value is {len(text)} characters as JSON, "
                             f"over {HYPERPARAMETER_VALUE_LIMIT}")
        elif len(values) >= HYPERPARAMETER_LIMIT:
            left_out[key] = f"over the limit of {HYPERPARAMETER_LIMIT} hyperparameters"
        else:
            values[key] = text
    return HyperparameterFit(values, left_out)
