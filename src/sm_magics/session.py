"""What one notebook session remembers between cells.

The magics keep all their state in one :class:`Session`: the latest image of
each container, the training runs by job name, the parameter sets, the
parameters of each container's previous run (to show what changed), the
engines of ``--local`` jobs, the environment ``%sm_sandbox start`` replaced,
and the notes already shown. It holds the few rules about that state and
imports neither IPython nor AWS libraries, so a test can make one and look
inside.

Example::

    >>> session = Session()
    >>> session.params_changed("fraud", {"lr": 0.1}) is None   # no earlier run to compare
    True
    >>> session.channel_only_note("fraud", {"vocabulary": ["word"] * 50})[:45]
    'Passed only through the params channel, not a'
    >>> session.channel_only_note("fraud", {"vocabulary": ["word"] * 60})   # said already
    ''
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import ContainerImage
    from .config import Settings
    from .jobs import TrainingRun
    from .local import LocalJobs
    from .params import ParameterSets
    from .table import Table

__all__ = ["Session", "place"]


def place(settings: Settings) -> tuple[str | None, str | None, str | None]:
    """Where the jobs of ``settings`` live: the same job name elsewhere is another job.

    >>> from sm_magics.config import resolve
    >>> place(resolve(flags={"region": "eu-west-1"}, environ={}, sdk_defaults={}, platform={}))
    (None, 'eu-west-1', None)
    """
    return settings.endpoint_url, settings.region, settings.profile


@dataclass
class Session:
    """The state of the magics in one notebook session.

    >>> session = Session()
    >>> session.save_environment({"AWS_REGION": None})
    >>> session.save_environment({"AWS_REGION": "us-east-1"})   # started again: keeps the first
    >>> session.take_saved_environment()
    {'AWS_REGION': None}
    """

    images: dict[str, ContainerImage] = field(default_factory=dict)
    """The latest image built by ``%%sm_container`` for each container name."""
    runs: dict[str, TrainingRun] = field(default_factory=dict)
    """The training runs started or attached in this session, by job name."""
    last_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The parameters of each container's latest run started in this session."""
    local_engines: dict[tuple, LocalJobs] = field(default_factory=dict)
    """The engine of ``--local`` jobs for each :func:`place`."""
    sandbox_env: dict[str, str | None] | None = None
    """The variables ``%sm_sandbox start`` replaced, as they were before (``None``: unset)."""
    notes_shown: set[tuple[str, frozenset[str]]] = field(default_factory=set)
    """(container, names) whose channel-only note was shown."""
    _parameter_sets: ParameterSets | None = field(default=None, repr=False)

    @property
    def parameter_sets(self) -> ParameterSets:
        """The sets recorded by ``%%sm_params`` cells, by name.

        Made on first use: :mod:`sm_magics.params` is not needed to load the magics.
        """
        if self._parameter_sets is None:
            from .params import ParameterSets

            self._parameter_sets = ParameterSets()
        return self._parameter_sets

    def local_jobs(self, aws) -> LocalJobs:
        """The engine of ``--local`` jobs for where ``aws`` points, made on first use."""
        key = place(aws.settings)
        if key not in self.local_engines:
            from .local import LocalJobs

            self.local_engines[key] = LocalJobs(aws)
        return self.local_engines[key]

    def local_runs(self, aws) -> list[TrainingRun]:
        """This session's ``--local`` runs where ``aws`` points (SageMaker does not list them).

        >>> [run.name for run in session.local_runs(aws)]   # doctest: +SKIP
        ['fraud-20261124-101500-ab12']
        """
        return [run for run in self.runs.values()
                if run.jobs.local and place(run.aws.settings) == place(aws.settings)]

    def params_changed(self, container: str, params: Mapping[str, Any]) -> Table | None:
        """What changed since the previous run of ``container``, or ``None`` (no run, no change).

        >>> session = Session(last_params={"fraud": {"lr": 0.1}})
        >>> session.params_changed("fraud", {"lr": 0.2}).rows
        [('lr', '0.1', '0.2')]
        """
        previous = self.last_params.get(container)
        if previous is None or previous == params:
            return None
        from .params import diff_table

        return diff_table(previous, params)

    def channel_only_note(self, container: str, params: Mapping[str, Any]) -> str:
        """The note naming the parameters too big for HyperParameters, the first time only.

        Those parameters reach the code through the ``params`` channel alone. The
        note is returned once per container and set of such names; ``""`` after
        that, and when every parameter fits.

        >>> Session().channel_only_note("fraud", {"lr": 0.1})
        ''
        """
        from .params import hyperparameters

        fit = hyperparameters(params)
        key = (container, frozenset(fit.left_out))
        if not fit.left_out or key in self.notes_shown:
            return ""
        self.notes_shown.add(key)
        return fit.note()

    def add_run(self, run: TrainingRun, container: str | None = None) -> TrainingRun:
        """Remember ``run``; with ``container``, its parameters are that container's latest.

        >>> run = Session().add_run(run, container="fraud")   # doctest: +SKIP
        """
        self.runs[run.name] = run
        if container is not None:
            self.last_params[container] = run.params
        return run

    def save_environment(self, previous: dict[str, str | None]) -> None:
        """Keep the variables as they were before ``%sm_sandbox start`` (the first start's)."""
        if self.sandbox_env is None:
            self.sandbox_env = previous

    def take_saved_environment(self) -> dict[str, str | None] | None:
        """The variables kept by :meth:`save_environment`, forgotten here (``%sm_sandbox stop``)."""
        saved, self.sandbox_env = self.sandbox_env, None
        return saved
