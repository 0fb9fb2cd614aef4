"""The magics: parse the line, call a service, show the result. Nothing else.

Every option of ``%sm_config`` is also a traitlets option of
:class:`SageMakerMagics`, so ``%config SageMakerMagics.role = "arn:..."`` and
``c.SageMakerMagics.role = ...`` in ``ipython_config.py`` work too.
"""

from __future__ import annotations

import re
import shlex

from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    cell_magic,
    line_magic,
    magics_class,
    output_can_be_silenced,
)
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import TraitError, Unicode, observe, validate
from traitlets.config import Configurable

from . import config
from .errors import usage_error

__all__ = ["SageMakerMagics"]

_UNEXPANDED = re.compile(r"(?<!\{)\{[A-Za-z_][^{}]*\}(?!\})")


def _trait(help_text: str) -> Unicode:
    return Unicode(None, allow_none=True, config=True, help=help_text)


def parse(magic, line: str, name: str):
    """Parse ``line`` with ``magic``'s ``magic_arguments``; every problem is a UsageError.

    Also catches ``{expr}`` left in the line when IPython could not expand it.
    """
    leftover = _UNEXPANDED.search(line)
    if leftover:
        raise usage_error(
            f"%{name}: {leftover.group(0)} in the line was not expanded, because IPython "
            "could not evaluate one of its {…} expressions. Check the names inside the "
            "braces exist, or write {{ and }} for literal braces."
        )
    try:
        shlex.split(line)
    except ValueError as exc:
        raise usage_error(f"%{name}: cannot read the line ({exc}). Check the quotes.") from None
    try:
        return parse_argstring(magic, line)
    except UsageError as exc:
        message = str(exc).replace("argument ", "option ")
        raise usage_error(f"%{name}: {message}. See `%{name}?` for the options.") from None


@magics_class
class SageMakerMagics(Magics, Configurable):
    """Train your own algorithm on Amazon SageMaker from notebook cells."""

    region = _trait("AWS region of every call, e.g. 'us-east-1'.")
    profile = _trait("AWS profile (from ~/.aws/config) to take credentials from.")
    role = _trait("IAM role ARN that SageMaker training jobs run as.")
    bucket = _trait("S3 bucket for parameters, inputs and artifacts "
                    "(default: sagemaker-<region>-<account>).")
    prefix = _trait("Key prefix inside the bucket (default: 'sm-magics').")
    base = _trait("Base image of built containers (default: python:3.12-slim).")
    instance_type = _trait("Instance type of training jobs (default: ml.m5.large).")
    builder = _trait("How images are built (default: 'docker').")
    endpoint_url = _trait("AWS API endpoint URL (the sandbox sets it; unset means AWS).")
    registry = _trait("Registry host to push images to instead of the ECR host.")

    def __init__(self, shell=None, **kwargs) -> None:
        self._sources: dict[str, str] = {}
        self._setting_from = "IPython config"  # the label of values set while loading
        super().__init__(shell=shell, config=shell.config if shell else None, **kwargs)
        self._setting_from = "%config"
        self._sandbox_previous_env: dict[str, str | None] | None = None

    @validate(*(s.name for s in config.SETTINGS))
    def _check_setting(self, proposal) -> str | None:
        name, value = proposal["trait"].name, proposal["value"]
        if value is None:
            return None
        value, problem = config.clean_value(name, value)
        if problem:
            raise TraitError(f"SageMakerMagics.{name}: {problem}")
        return value

    @observe(*(s.name for s in config.SETTINGS))
    def _record_source(self, change) -> None:
        if change["new"] is None:
            self._sources.pop(change["name"], None)
        else:
            self._sources[change["name"]] = self._setting_from

    def settings(self, **flags: str | None) -> config.Settings:
        """The effective settings for a magic run with ``flags``."""
        session = {name: (getattr(self, name), source) for name, source in self._sources.items()}
        return config.resolve(flags=flags, session=session)

    # ------------------------------------------------------------ %sm_config

    @magic_arguments()
    @argument("--region", help="AWS region, e.g. us-east-1.")
    @argument("--profile", help="AWS profile from ~/.aws/config.")
    @argument("--role", help="IAM role ARN for training jobs.")
    @argument("--bucket", help="S3 bucket (default: sagemaker-<region>-<account>).")
    @argument("--prefix", help="Key prefix in the bucket (default: sm-magics).")
    @argument("--base", help="Base image of built containers.")
    @argument("--instance-type", help="Instance type of training jobs, e.g. ml.m5.large.")
    @argument("--builder", help="How images are built: docker.")
    @argument("--endpoint-url", help="AWS API endpoint URL (the sandbox sets it).")
    @argument("--registry", help="Registry host to push to instead of the ECR host.")
    @argument("--unset", nargs="+", metavar="NAME", default=[],
              help="Forget session values, e.g. --unset role bucket.")
    @argument("--show", action="store_true", help="Show the effective settings (the default).")
    @output_can_be_silenced
    @line_magic
    def sm_config(self, line: str = ""):
        """Set session defaults and show the effective settings with where each came from.

        Example::

            %sm_config --region eu-west-1 --role arn:aws:iam::111122223333:role/SageMakerRole
            %sm_config            # the table: setting, value, and where it came from

        Values set here outrank the environment and the SageMaker SDK config,
        and are outranked by the flags of the magic that uses them.
        """
        args = parse(self.sm_config, line, "sm_config")
        unknown = [n for n in args.unset if n.replace("-", "_") not in config.BY_NAME]
        if unknown:
            raise usage_error(
                f"%sm_config --unset: {', '.join(unknown)} is not a setting. "
                f"Settings: {', '.join(s.name for s in config.SETTINGS)}."
            )
        given = {
            s.name: config.check_value(s.name, getattr(args, s.name))
            for s in config.SETTINGS if getattr(args, s.name) is not None
        }
        self._setting_from = "%sm_config"
        try:
            for name in args.unset:
                setattr(self, name.replace("-", "_"), None)
            for name, value in given.items():
                setattr(self, name, value)
        finally:
            self._setting_from = "%config"
        settings = self.settings()
        if settings.region and not settings.bucket:
            settings = self._with_default_bucket(settings)
        return settings

    @staticmethod
    def _with_default_bucket(settings: config.Settings) -> config.Settings:
        from .aws import AwsContext

        try:
            return settings.with_bucket(AwsContext(settings).account)
        except Exception:  # no credentials or no network: the table still shows the rest
            return settings

    # ------------------------------------------------------------ %sm_sandbox

    @magic_arguments()
    @argument("action", choices=["start", "stop", "status"], help="What to do.")
    @output_can_be_silenced
    @line_magic
    def sm_sandbox(self, line: str = ""):
        """Run the whole flow offline: a local AWS endpoint, registry and job runner.

        Example::

            %sm_sandbox start     # then boto3.client("s3") in this notebook reaches the sandbox
            %sm_sandbox status
            %sm_sandbox stop      # stops what start started and restores the environment

        The services run on 127.0.0.1 only and need a Docker engine. They keep
        running when the kernel restarts; `%sm_sandbox start` finds them again.
        """
        args = parse(self.sm_sandbox, line, "sm_sandbox")
        from .sandbox import Sandbox

        box = Sandbox()
        if args.action == "start":
            status = box.start(log=print)
            previous = box.apply_environment()
            if self._sandbox_previous_env is None:
                self._sandbox_previous_env = previous
            return status
        if args.action == "stop":
            status = box.stop()
            if self._sandbox_previous_env is not None:
                box.restore_environment(self._sandbox_previous_env)
                self._sandbox_previous_env = None
            return status
        return box.status()

    # ------------------------------------------------------------ %%sm_params

    @magic_arguments()
    @argument("name", help="Name of the parameter set, as given to `%sm_train --params NAME`.")
    @output_can_be_silenced
    @cell_magic
    def sm_params(self, line: str = "", cell: str = ""):
        """Run the cell and record the variables it assigns as the parameter set NAME.

        Example::

            %%sm_params fraud
            learning_rate = 0.05
            n_estimators = 200
            features = ["amount", "hour"]

        The variables exist in the notebook too. `%sm_train fraud --params fraud`
        passes them to the job, where the code sees them typed. Values must be
        str, int, float, bool, None, or lists and dicts of those (write tuples as
        lists); names starting with `_` are not recorded.
        """
        args = parse(self.sm_params, line, "%sm_params")
        from . import params

        source = self.shell.transform_cell(cell)
        captured = params.capture(args.name, source, self.shell.user_ns, run=self.shell.ex)
        params.sets_for(self)[captured.name] = captured
        return captured
