"""The magics: parse the line, call a service, show the result. Nothing else.

Each setting declared in :data:`sm_magics.config.SETTINGS` becomes a traitlets
option of :class:`SageMakerMagics` (``%config SageMakerMagics.role = "arn:..."``,
``c.SageMakerMagics.role = ...`` in ``ipython_config.py``), a flag of
``%sm_config``, and the flag of any magic that overrides it for one run
(:func:`setting_argument`). What the magics remember between cells lives in
one :class:`~sm_magics.session.Session`.

Example::

    >>> ip.run_line_magic("load_ext", "sm_magics")
    >>> ip.run_line_magic("sm_config", "--region eu-west-1")["region"].source
    '%sm_config'
"""

from __future__ import annotations

import os
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
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import TraitError, Unicode, observe, validate
from traitlets.config import Configurable

from . import config
from .errors import usage_error
from .session import Session, place

__all__ = ["SageMakerMagics", "setting_argument", "setting_arguments"]

_UNEXPANDED = re.compile(r"(?<!\{)\{[A-Za-z_][^{}]*\}(?!\})")


def _setting_traits() -> dict[str, Unicode]:
    """One configurable trait per setting, unset (``None``) until something sets it."""
    return {s.name: Unicode(None, allow_none=True, config=True, help=s.described)
            for s in config.SETTINGS}


def setting_argument(name: str, help: str | None = None) -> argument:
    """The flag of setting ``name`` on a magic that overrides the setting for one run.

    The help is the setting's own, saying that the setting is the default, unless
    ``help`` is given.

    Example::

        @magic_arguments()
        @setting_argument("base")   # --base BASE  Base image of built containers (default: ...
        @cell_magic
        def sm_container(self, line, cell): ...
    """
    setting = config.BY_NAME[name]
    return argument(setting.flag, help=help or setting.help_with_default(f"the {name} setting"))


def setting_arguments(func):
    """Give a magic one flag per setting, in :data:`~sm_magics.config.SETTINGS` order.

    Example::

        @magic_arguments()
        @setting_arguments          # --profile, --region, ... as %sm_config? lists them
        @line_magic
        def sm_config(self, line): ...
    """
    # magic_arguments adds the arguments in the reverse order of their decorators'
    # application, so the last setting is applied first.
    for setting in reversed(config.SETTINGS):
        func = setting_argument(setting.name, help=setting.described)(func)
    return func


def _setting_flags(args, where: str) -> dict[str, str]:
    """The settings given as flags in the parsed line ``args``, checked and cleaned up."""
    return {
        s.name: config.check_value(s.name, getattr(args, s.name), where)
        for s in config.SETTINGS if getattr(args, s.name, None) is not None
    }


def _check_name_filter(name: str | None, magic: str) -> None:
    """A ``--name`` filter of job names must be something a job name can contain."""
    if name is not None and not re.fullmatch(r"[a-zA-Z0-9-]{1,63}", name):
        raise usage_error(
            f"{magic} --name: '{name}' cannot be part of a training-job name: give "
            "up to 63 letters, digits and hyphens, e.g. --name fraud.")


def parse(magic, line: str, name: str):
    """Parse ``line`` with ``magic``'s ``magic_arguments``; every problem is a UsageError.

    Also catches ``{expr}`` left in the line when IPython could not expand it. A
    trailing ``;`` (which silences the output) is not part of the options.
    """
    line = line.rstrip()
    if line.endswith(";"):
        line = line[:-1]
    leftover = _UNEXPANDED.search(line)
    if leftover:
        raise usage_error(
            f"%{name}: {leftover.group(0)} in the line was not expanded, because IPython "
            "could not evaluate one of its {…} expressions. Check the names inside the "
            "braces exist, or write {{ and }} for literal braces."
        )
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise usage_error(f"%{name}: cannot read the line ({exc}). Check the quotes.") from None
    try:
        # Split like a shell (IPython's own splitting keeps the quotes in the values).
        return magic.parser.parse_args(words)
    except UsageError as exc:
        message = str(exc).replace("argument ", "option ")
        raise usage_error(f"%{name}: {message}. See `%{name}?` for the options.") from None


@magics_class
class SageMakerMagics(Magics, Configurable):
    """Train your own algorithm on Amazon SageMaker from notebook cells.

    ``%load_ext sm_magics`` makes one; ``%config SageMakerMagics`` lists its settings.

    >>> magics = SageMakerMagics(shell=ip)
    >>> magics.region = "eu-west-1"            # what %config SageMakerMagics.region = ... does
    >>> magics.settings()["region"].source
    '%config'
    """

    # The settings' traits, from their one declaration. A class body's locals()
    # is the namespace the class is made from.
    locals().update(_setting_traits())

    def __init__(self, shell=None, **kwargs) -> None:
        self._sources: dict[str, str] = {}
        self._setting_from = "IPython config"  # the label of values set while loading
        super().__init__(shell=shell, config=shell.config if shell else None, **kwargs)
        self._setting_from = "%config"
        self.session = Session()

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
    @setting_arguments
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
        given = _setting_flags(args, "%sm_config")
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
        """The table's settings with the default bucket and a found execution role filled in."""
        from .aws import AwsContext

        try:
            aws = AwsContext(settings)
            settings = settings.with_bucket(aws.account)
            found = aws.role
        except Exception:  # no credentials or no network: the table still shows the rest
            return settings
        return settings.with_value("role", *found) if found else settings

    # ------------------------------------------------------------ %sm_sandbox

    @magic_arguments()
    @argument("action", choices=["start", "stop", "status", "interrupt"], help="What to do.")
    @argument("job", nargs="?", metavar="JOB",
              help="With interrupt: the running managed-spot training job to interrupt.")
    @argument("--profile", metavar="NAME",
              help="With start: plain (the default), or studio to meet SageMaker Studio's "
                   "Docker rules (API 1.41, network sagemaker) as a Studio space does.")
    @argument("--policy", metavar="FILE",
              help="With start: refuse what this IAM policy (a JSON file, or "
                   "AmazonSageMakerFullAccess) does not allow, as AWS refuses it.")
    @output_can_be_silenced
    @line_magic
    def sm_sandbox(self, line: str = ""):
        """Run the whole flow offline: a local AWS endpoint, registry and job runner.

        Example::

            %sm_sandbox start     # then boto3.client("s3") in this notebook reaches the sandbox
            %sm_sandbox start --profile studio   # as in a SageMaker Studio space with Docker
            %sm_sandbox start --policy AmazonSageMakerFullAccess   # as the default role may
            %sm_sandbox status
            %sm_sandbox interrupt fraud-20261124-101500-ab12   # as if EC2 reclaimed its spot hosts
            %sm_sandbox stop      # stops what start started and restores the environment

        The services run on 127.0.0.1 only and need a Docker engine. They keep
        running when the kernel restarts; `%sm_sandbox start` finds them again.

        `interrupt JOB` interrupts a running managed-spot job (`%sm_train --spot`) as
        EC2 reclaiming its spot capacity would: its hosts get SIGTERM, the job shows
        Interrupted, then restarts and finds its checkpoints.
        """
        args = parse(self.sm_sandbox, line, "sm_sandbox")
        if args.action == "interrupt" and not args.job:
            raise usage_error(
                "%sm_sandbox interrupt: name the running spot job to interrupt, e.g. "
                "`%sm_sandbox interrupt fraud-20261124-101500-ab12` (`%sm_jobs` lists the jobs).")
        if args.action != "interrupt" and args.job:
            raise usage_error(f"%sm_sandbox {args.action}: takes no job name ({args.job}); only "
                              "`%sm_sandbox interrupt JOB` does.")
        from .sandbox import Sandbox

        box = Sandbox(profile=args.profile, policy=args.policy)
        if args.action == "interrupt":
            box.interrupt_spot(args.job)
            print(f"Interrupting {args.job} as EC2 reclaiming its spot capacity would: its hosts "
                  "get SIGTERM, the job shows Interrupted, then it starts again and finds its "
                  "checkpoints.")
            return None
        if args.action == "start":
            status = box.start(log=print)
            self.session.save_environment(box.apply_environment())
            return status
        if args.action == "stop":
            status = box.stop()
            previous = self.session.take_saved_environment()
            if previous is not None:
                box.restore_environment(previous)
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
        self.session.parameter_sets[captured.name] = captured
        return captured

    # ------------------------------------------------------------ %%sm_container

    @property
    def images(self) -> dict:
        """The latest ``ContainerImage`` built by ``%%sm_container`` for each name."""
        return self.session.images

    @magic_arguments()
    @argument("name", help="Container name, also the ECR repository: e.g. fraud or team/fraud. "
              "Write it first, as options such as --pip take several values.")
    @argument("-o", "--output", metavar="VAR", help="Store the ContainerImage in VAR.")
    @setting_argument("base")
    @argument("--pip", nargs="+", action="extend", default=[], metavar="SPEC",
              help="pip packages, e.g. --pip pandas==2.2.2 scikit-learn.")
    @argument("--requirements", metavar="FILE", help="A requirements file to install.")
    @argument("--apt", nargs="+", action="extend", default=[], metavar="PKG",
              help="Debian/Ubuntu packages, e.g. --apt libgomp1.")
    @argument("--file", nargs="+", action="extend", default=[], dest="files", metavar="PATH",
              help="Files or folders copied next to train.py in /opt/program.")
    @argument("--run", nargs="+", action="extend", default=[], metavar="CMD",
              help="Shell commands run while building, one step each (quote each command).")
    @argument("--env", nargs="+", action="extend", default=[], metavar="K=V",
              help="Environment variables of the image.")
    @argument("--dockerfile", action="store_true",
              help="The cell is a complete Dockerfile instead of training code; "
              "`ARG BASE_IMAGE` + `FROM ${BASE_IMAGE}` uses the base setting.")
    @argument("--no-push", action="store_true",
              help="Build in the local Docker engine only: no ECR, no push.")
    @argument("--repository", metavar="REPO",
              help="The ECR repository to push to, used as given (default: NAME with the "
                   "repository_prefix setting, e.g. sagemaker-NAME).")
    @setting_argument("builder")
    @setting_argument("repository_prefix")
    @cell_magic
    def sm_container(self, line: str = "", cell: str = ""):
        """Turn the cell into a training image in ECR; rebuild only when the code changes.

        Example::

            %%sm_container fraud -o image --pip scikit-learn==1.5.2
            from sklearn.linear_model import LogisticRegression
            C = 1.0  # @param
            model = LogisticRegression(C=C)
            log_metric("accuracy", 0.93)

        The cell becomes `train.py` in the image, after a short prelude that
        gives `params`, `channels`, `model_dir`, `output_dir` and `log_metric`.
        `x = value  # @param` lines read their value from the job's parameters,
        so changing only such a value rebuilds nothing. The image tag is a hash
        of everything in the image: an unchanged cell is one registry look-up.
        The image goes to the ECR repository `sagemaker-NAME` (a name the default
        execution role, AmazonSageMakerFullAccess, may push to), or `--repository`.
        The build context (Dockerfile, train.py, requirements.txt) is written
        to `.sm_magics/builds/NAME/<tag>/` and can be built without this tool.
        Returns a ContainerImage (also stored with -o VAR), remembered for
        `%sm_train NAME`.
        """
        args = parse(self.sm_container, line, "%sm_container")
        if args.output is not None and not args.output.isidentifier():
            raise usage_error(
                f"%%sm_container -o {args.output}: give a Python variable name, e.g. -o image."
            )
        settings = self.settings(**_setting_flags(args, "%%sm_container"))
        from IPython.display import display

        from .build import BuildService
        from .recipe import Recipe
        from .ui import build_panel

        recipe = Recipe(
            name=args.name, body=cell, base=settings.base, pip=tuple(args.pip),
            requirements=args.requirements, apt=tuple(args.apt), files=tuple(args.files),
            run=tuple(args.run), env=tuple(args.env), dockerfile=args.dockerfile,
        )
        panel = build_panel(
            args.name, widgets=getattr(self.shell, "kernel", None) is not None, display=display
        )
        image = BuildService(settings, listener=panel).build(
            recipe, push=not args.no_push, repository=args.repository)
        self.session.images[image.name] = image
        if args.output:
            self.shell.user_ns[args.output] = image
        return image

    # ------------------------------------------------------------ %sm_train and friends

    def _widgets(self) -> bool:
        """True in a Jupyter kernel (widgets can show), False in a terminal."""
        return getattr(self.shell, "kernel", None) is not None

    def _aws(self, **flags):
        from .aws import AwsContext

        return AwsContext(self.settings(**flags))

    def _follow(self, run, *, wait: bool):
        """Show the panel of ``run``, follow it from a thread, and wait when asked."""
        from IPython.display import display

        from .ui.job_panel import job_panel

        panel = job_panel(run.name, widgets=self._widgets(), display=display, on_stop=run.stop)
        run.watcher.subscribe(panel.update)
        run.watcher.start()
        if wait:
            try:
                run.wait()
            except KeyboardInterrupt:
                print(f"Stopped waiting. The job {run.name} goes on; `%sm_stop {run.name}` "
                      f"stops it and `%sm_attach {run.name}` follows it again.")
        return run

    @magic_arguments()
    @argument("target", help="A container built with %%sm_container, or a full image URI.")
    @argument("--params", nargs="+", action="extend", default=[], metavar="SET",
              help="Parameter sets from %%sm_params cells, later ones winning.")
    @argument("--hp", nargs="+", action="extend", default=[], metavar="K=V",
              help="Parameters given here, winning over everything else.")
    @argument("--input", nargs="+", action="extend", default=[], dest="inputs",
              metavar="CHANNEL[:sharded]=PATH_OR_S3",
              help="Input channels: local paths are synced to S3. Every instance gets all of "
                   "a channel's files (CHANNEL:replicated=..., the default); with "
                   "CHANNEL:sharded=... each of N instances gets about 1/N of them.")
    @argument("--output", metavar="S3URI", help="Where model.tar.gz goes.")
    @setting_argument("instance_type")
    @argument("--instance-count", type=int, default=1, help="Number of instances.")
    @argument("--volume-size", type=int, default=30, metavar="GB", help="Disk per instance.")
    @argument("--max-run", metavar="DURATION", help="Stop the job after this long: 90m, 2h.")
    @argument("--spot", action="store_true", help="Use managed spot training.")
    @argument("--max-wait", metavar="DURATION", help="Spot: longest wait plus run time.")
    @argument("--keep-alive", metavar="DURATION", help="Keep a warm pool this long (<= 1h).")
    @argument("--env", nargs="+", action="extend", default=[], metavar="K=V",
              help="Environment variables of the job.")
    @argument("--tag", nargs="+", action="extend", default=[], dest="tags", metavar="K=V",
              help="Tags of the job.")
    @argument("--job-name", help="Job name (default: NAME-YYYYmmdd-HHMMSS-xxxx).")
    @argument("--metric", nargs="+", action="extend", default=[], dest="metrics",
              metavar="NAME=REGEX", help="Extra metric definitions.")
    @argument("--wait", action="store_true", help="Block until the job ends; fail the cell "
              "when it fails.")
    @argument("--local", action="store_true", help="Run on this machine's Docker engine "
              "(same image and contract, inputs and outputs still in S3).")
    @output_can_be_silenced
    @line_magic
    def sm_train(self, line: str = ""):
        """Start a SageMaker training job from a container cell and watch it live.

        Example::

            job = %sm_train fraud --params fraud --hp n_estimators=400 --input train=data/
            job.wait()
            job.model_data, job.metrics
            # 4 hosts: each reads about a quarter of the objects under shards/, and all of vocab
            %sm_train fraud --instance-count 4 --input train:sharded=s3://bucket/shards/ vocab=vocab

        Parameters are resolved (`# @param` defaults < --params sets < --hp), written to
        S3 once per distinct content, and reach the code typed; values too big for
        SageMaker's hyperparameters travel only in the `params` channel (a note names
        them once). Local --input folders are synced to S3 (only changed files are
        uploaded). Every instance gets all of a channel's files, unless it is given as
        CHANNEL:sharded=..., which splits its S3 objects between the instances. The
        panel shows the phases, logs, metrics and a Stop button, while the notebook
        stays free; with --wait the cell blocks and fails when the job fails. Returns a
        TrainingRun.
        """
        args = parse(self.sm_train, line, "sm_train")
        from . import training
        from .jobs import TrainingRun

        aws = self._aws(**_setting_flags(args, "%sm_train"))
        notebook = self.shell.user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME")
        options = training.TrainOptions.from_args(args, notebook=notebook)
        job = training.plan(aws, options, self.session.images, self.session.parameter_sets)
        changed = self.session.params_changed(job.container, job.params)
        if changed is not None:
            print(repr(changed))
        note = self.session.channel_only_note(job.container, job.params)
        if note:
            print(note)
        from IPython.display import display

        from .ui.progress import upload_progress

        jobs = self.session.local_jobs(aws) if args.local else None
        training.start(aws, job, progress=lambda channel: upload_progress(
            f"--input {channel}", widgets=self._widgets(), display=display), local_jobs=jobs)
        run = TrainingRun(aws, job.name, params=job.params, image=job.image or job.image_uri,
                          jobs=jobs)
        self.session.add_run(run, container=job.container)
        return self._follow(run, wait=args.wait)

    def _run_named(self, name: str, fresh: bool = False):
        """The run of job ``name``: one of this session's (local jobs too), or attached.

        A session's job on SageMaker is looked up again with the current settings
        when they now point elsewhere (another endpoint, region or profile, e.g. a
        restarted sandbox).
        """
        from .jobs import TrainingRun
        from .training import check_job_name

        check_job_name(name, "job")
        known = self.session.runs.get(name)
        if known is not None and not known.jobs.local:
            aws = self._aws()
            if place(aws.settings) != place(known.aws.settings):
                known = None
        if known is None:
            return TrainingRun.attach(self._aws(), name)
        if fresh:
            return TrainingRun(known.aws, name, params=known.params, image=known.image,
                               jobs=known.jobs)
        return known

    @property
    def runs(self) -> dict:
        """The training runs started or attached in this session, by job name."""
        return self.session.runs

    @magic_arguments()
    @argument("job", help="Name of a training job.")
    @argument("--wait", action="store_true", help="Block until the job ends.")
    @output_can_be_silenced
    @line_magic
    def sm_attach(self, line: str = ""):
        """Show the live panel of an existing training job, e.g. after a kernel restart.

        Example::

            job = %sm_attach fraud-20261124-101500-ab12
        """
        args = parse(self.sm_attach, line, "sm_attach")
        run = self.session.add_run(self._run_named(args.job, fresh=True))
        return self._follow(run, wait=args.wait)

    @magic_arguments()
    @argument("--limit", type=int, default=20, help="How many jobs (newest first).")
    @argument("--name", help="Only jobs whose name contains this.")
    @output_can_be_silenced
    @line_magic
    def sm_jobs(self, line: str = ""):
        """A table of recent training jobs: status, duration, image and parameters hash.

        Example::

            %sm_jobs --limit 5 --name fraud
        """
        args = parse(self.sm_jobs, line, "sm_jobs")
        if not 1 <= args.limit <= 100:
            raise usage_error("%sm_jobs --limit: give a number from 1 to 100.")
        _check_name_filter(args.name, "%sm_jobs")
        from .jobs import JobsTable

        return JobsTable.fetch(self._aws(), limit=args.limit, name_contains=args.name)

    @magic_arguments()
    @argument("name", help="Container name, as in `%%sm_container NAME`.")
    @argument("--prune", type=int, metavar="KEEP",
              help="Delete all but the newest KEEP images (1 or more); never one that a "
                   "running job uses.")
    @argument("--repository", metavar="REPO",
              help="The ECR repository, when the cell pushed with --repository (default: "
                   "NAME with the repository_prefix setting, e.g. sagemaker-NAME).")
    @setting_argument("repository_prefix")
    @output_can_be_silenced
    @line_magic
    def sm_images(self, line: str = ""):
        """A container's images in ECR, newest first, with the jobs that used each.

        Example::

            %sm_images fraud              # tag, digest, pushed, size, jobs
            %sm_images fraud --prune 3    # keep the newest 3 and any a running job uses
            images = %sm_images fraud     # images[0].digest, images[0].jobs

        Every code edit of a `%%sm_container` cell pushes one more image. `--prune`
        deletes the older ones with ecr:BatchDeleteImage, which AmazonSageMakerFullAccess
        allows on repositories whose name contains `sagemaker` (as the default
        repository_prefix gives); listing needs only ecr:DescribeImages. Returns an
        ImageList (a table; after --prune it says what was kept and deleted).
        """
        args = parse(self.sm_images, line, "sm_images")
        from .images import container_images

        return container_images(self._aws(**_setting_flags(args, "%sm_images")), args.name,
                                repository=args.repository, prune=args.prune)

    @magic_arguments()
    @argument("jobs", nargs="*", metavar="JOB",
              help="Two or more training jobs (of this session, --local ones too, or any).")
    @argument("--name", help="Instead of JOBs: the newest jobs whose name contains this, "
              "e.g. the container's name.")
    @argument("--limit", type=int, metavar="N", help="With --name: how many (default 5).")
    @argument("--maximize", nargs="+", action="extend", default=[], metavar="METRIC",
              help="Metrics whose highest value is best.")
    @argument("--minimize", nargs="+", action="extend", default=[], metavar="METRIC",
              help="Metrics whose lowest value is best (others are guessed from their "
                   "names: loss, error, rmse... lowest; accuracy, auc, f1... highest).")
    @output_can_be_silenced
    @line_magic
    def sm_compare(self, line: str = ""):
        """Training runs side by side: the parameters that differ, the metrics, the best marked.

        Example::

            %sm_compare --name wine --limit 4
            x = %sm_compare wine-20261124-101500-ab12 wine-20261124-101502-cd34 --maximize f1

        One row per job: status, duration, billable time, image tag, the parameters
        that differ (those equal in all are folded into one line) and the final value
        of each logged metric, the best marked; then a chart of each metric over its
        steps, a line per job. Parameters are read from the params document each job
        was given in S3, metrics from every value it logged. Give the jobs first. While
        jobs run, a Jupyter kernel shows the comparison live until they end. Returns a
        Comparison (`.rows`, `.to_pandas()`).
        """
        args = parse(self.sm_compare, line, "sm_compare")
        if args.jobs and args.name is not None:
            raise usage_error("%sm_compare: give job names or --name NAME, not both.")
        if args.limit is not None and args.name is None:
            raise usage_error("%sm_compare --limit: it counts the jobs --name picks; add "
                              "--name NAME, e.g. --name fraud --limit 4.")
        limit = 5 if args.limit is None else args.limit
        if not 2 <= limit <= 20:
            raise usage_error("%sm_compare --limit: give a number from 2 to 20.")
        _check_name_filter(args.name, "%sm_compare")
        from .compare import Comparison, newest_jobs

        names = args.jobs
        if args.name is not None:
            aws = self._aws()
            names = newest_jobs(aws, args.name, limit, self.session.local_runs(aws))
            if len(names) < 2:
                found = f"only {names[0]}" if names else "none"
                raise usage_error(
                    f"%sm_compare --name {args.name}: two or more jobs are needed, and {found} "
                    f"has a name that contains '{args.name}' in {aws.settings.region}. "
                    "`%sm_jobs` lists recent jobs.")
        comparison = Comparison.of([self._run_named(name) for name in dict.fromkeys(names)],
                                   maximize=args.maximize, minimize=args.minimize)
        if not comparison.done and self._widgets():
            from IPython.display import display

            from .ui.compare_view import ComparisonPanel

            comparison.subscribe(ComparisonPanel(comparison, display=display).update)
        return comparison

    @magic_arguments()
    @argument("job", help="Name of a training job.")
    @argument("--tail", type=int, metavar="N", help="Only the last N lines.")
    @line_magic
    def sm_logs(self, line: str = ""):
        """Print the log of a training job (all instances).

        Example::

            %sm_logs fraud-20261124-101500-ab12 --tail 50
        """
        args = parse(self.sm_logs, line, "sm_logs")
        if args.tail is not None and args.tail < 1:
            raise usage_error("%sm_logs --tail: give a number of lines, 1 or more.")
        lines = self._run_named(args.job).logs()
        if args.tail is not None:
            lines = lines[-args.tail:]
        print("\n".join(lines) if lines else f"(no log lines for {args.job} yet)")

    @magic_arguments()
    @argument("job", help="Name of a training job.")
    @line_magic
    def sm_stop(self, line: str = ""):
        """Stop a training job: its program gets SIGTERM, and the job ends as Stopped.

        What the program saved in `model_dir` by then is still uploaded, as on SageMaker.

        Example::

            %sm_stop fraud-20261124-101500-ab12
        """
        args = parse(self.sm_stop, line, "sm_stop")
        run = self._run_named(args.job)
        if run.snapshot.done:
            print(f"The job {args.job} already ended: {run.status}.")
            return
        run.stop()
        print(f"Stopping {args.job}; it ends as Stopped in a few seconds.")
