"""A container's images in ECR: which there are, which jobs used them, and pruning old ones.

Every code edit of a ``%%sm_container`` cell pushes one more image, and nothing
removes them. :func:`container_images` lists the images of a container's
repository, newest first (tags, digest, when pushed, size), with the training
jobs that used each; with ``prune=KEEP`` it deletes all but the newest ``KEEP``,
never one that a running job uses.

Only what the default execution role, AmazonSageMakerFullAccess, may do is asked
of AWS: ``ecr:DescribeImages`` (its ``ecr:Describe*``), ``ecr:BatchDeleteImage``
(allowed on repositories whose name contains ``sagemaker``, which the default
``repository_prefix`` gives), ``sagemaker:ListTrainingJobs`` and
``sagemaker:DescribeTrainingJob``; never ``ecr:ListImages``, which it lacks.

A job used an image when its ``AlgorithmSpecification.TrainingImage`` names the
repository with one of the image's tags or with its digest. The jobs looked at
are the newest :data:`JOBS_LOOKED_AT` whose name contains the container's
(``%sm_train`` names jobs ``<container>-<time>``) and, before anything is
deleted, every job still running, whatever its name.

Example::

    >>> images = container_images(aws, "fraud")
    >>> images[0].tags, images[0].jobs
    (('5b0d6c2e91ab34cd',), (JobUse(name='fraud-20261124-101500-ab12', status='Completed'),))
    >>> container_images(aws, "fraud", prune=1).deleted   # all but the newest, unless running
    [EcrImage(digest='sha256:4b1e...', ...)]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import RemoteFailure, UsageError, usage_error
from .jobstate import status_is_terminal
from .table import Table

__all__ = ["JOBS_LOOKED_AT", "EcrImage", "ImageList", "JobUse", "container_images"]

JOBS_LOOKED_AT = 50  # the newest jobs of a container checked for the images they used
_DELETE_BATCH = 100  # image ids per BatchDeleteImage, the API's maximum
_JOBS_SHOWN = 3


@dataclass(frozen=True)
class JobUse:
    """A training job that ran (or runs) an image, with its ``TrainingJobStatus``.

    >>> JobUse("fraud-20261124-101500-ab12", "InProgress").running
    True
    """

    name: str
    status: str

    @property
    def running(self) -> bool:
        return not status_is_terminal(self.status)


@dataclass(frozen=True)
class EcrImage:
    """One image of a repository, as ``DescribeImages`` tells it, and the jobs that used it.

    >>> EcrImage("sha256:" + "4b1e" * 16, ("5b0d6c2e91ab34cd",), None, 97_000_000).short_digest
    'sha256:4b1e4b1e4b1e'
    """

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime | None
    size: int | None
    jobs: tuple[JobUse, ...] = ()

    @property
    def short_digest(self) -> str:
        return self.digest[:len("sha256:") + 12]

    @property
    def running_jobs(self) -> tuple[JobUse, ...]:
        return tuple(job for job in self.jobs if job.running)


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


class ImageList:
    """A container's images in ECR, newest first; reads as a table in a terminal and a notebook.

    ``outcome`` (after a prune) says for each digest whether the image was kept and why,
    or deleted; ``deleted`` are the deleted images.

    >>> images = container_images(aws, "fraud")            # doctest: +SKIP
    >>> [image.tags for image in images]                    # doctest: +SKIP
    [('9c1d0e2f3a4b5c6d',), ('5b0d6c2e91ab34cd',)]
    """

    columns = ("tag", "digest", "pushed", "size", "jobs")

    def __init__(self, container: str, repository: str, images: Iterable[EcrImage],
                 outcome: dict[str, str] | None = None, keep: int | None = None) -> None:
        self.container = container
        self.repository = repository
        self.images = list(images)
        self.outcome = outcome
        self.keep = keep

    def __iter__(self) -> Iterator[EcrImage]:
        return iter(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> EcrImage:
        return self.images[index]

    @property
    def deleted(self) -> list[EcrImage]:
        return [i for i in self.images if (self.outcome or {}).get(i.digest) == "deleted"]

    def table(self) -> Table:
        """The images as a :class:`~sm_magics.table.Table`, one row each."""
        headers = self.columns + (("prune",) if self.outcome is not None else ())
        rows = []
        for image in self.images:
            jobs = [f"{job.name} ({job.status})" for job in image.jobs]
            if len(jobs) > _JOBS_SHOWN:
                jobs = [*jobs[:_JOBS_SHOWN], f"+{len(jobs) - _JOBS_SHOWN} more"]
            row = [", ".join(image.tags) or "(untagged)", image.short_digest,
                   image.pushed_at.strftime("%Y-%m-%d %H:%M:%S") if image.pushed_at else "-",
                   _size(image.size), ", ".join(jobs) or "-"]
            if self.outcome is not None:
                row.append(self.outcome.get(image.digest, ""))
            rows.append(row)
        title = f"{self.container}: {len(self.images)} image" \
            f"{'' if len(self.images) == 1 else 's'} in ECR repository {self.repository}"
        if self.outcome is not None:
            title += f" (--prune {self.keep}: {len(self.deleted)} deleted)"
        return Table(headers, rows, title=title, code=("tag", "digest"),
                     css_class="sm-magics-images")

    def __repr__(self) -> str:
        if not self.images:
            return f"(no images of {self.container} in ECR repository {self.repository})"
        return repr(self.table())

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


# ---------------------------------------------------------------- reading AWS


def _failure(action: str, exc: Exception, repository: str) -> RemoteFailure:
    from .ecr import denied

    error = getattr(exc, "response", {}).get("Error", {})
    reason = f"{error.get('Code')}: {error.get('Message')}" if error else str(exc)
    hint = None
    if denied(exc):
        hint = (f"These credentials may not call {action} on {repository}. "
                "AmazonSageMakerFullAccess allows ecr:DescribeImages on every repository and "
                "ecr:BatchDeleteImage only on repositories whose name contains 'sagemaker'.")
    return RemoteFailure(f"ECR {action.split(':')[1]} failed for {repository}", reason=reason,
                         hint=hint)


def _describe_images(aws, repository: str, container: str) -> list[dict]:
    from botocore.exceptions import BotoCoreError, ClientError

    ecr = aws.client("ecr")
    try:
        return [detail for page in ecr.get_paginator("describe_images").paginate(
            repositoryName=repository) for detail in page["imageDetails"]]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "RepositoryNotFoundException":
            raise usage_error(
                f"%sm_images {container}: there is no ECR repository {repository} in "
                f"{aws.settings.region}. A `%%sm_container {container}` cell pushes its "
                "images there (or give the repository with --repository).") from None
        raise _failure("ecr:DescribeImages", exc, repository) from None
    except BotoCoreError as exc:
        raise _failure("ecr:DescribeImages", exc, repository) from None


def _image_reference(uri: str) -> tuple[str, str | None, str | None]:
    """``(repository, tag, digest)`` of an image URI ``host/repository[:tag][@digest]``.

    >>> _image_reference("127.0.0.1:5000/team/fraud:ab12")
    ('team/fraud', 'ab12', None)
    >>> _image_reference("1.dkr.ecr.us-east-1.amazonaws.com/fraud@sha256:00")
    ('fraud', None, 'sha256:00')
    """
    path = uri.split("/", 1)[1] if "/" in uri else uri
    name, _, digest = path.partition("@")
    repository, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        repository, tag = name, ""
    return repository, tag or None, digest or None


def _job_name_part(container: str) -> str:
    """What ``%sm_train`` puts of ``container`` in its job names (``<part>-<time>-<hex>``)."""
    from .training import job_name

    return job_name(container).rsplit("-", 3)[0]


def _jobs(aws, **filters: Any) -> list[dict]:
    """``DescribeTrainingJob`` of the jobs ``ListTrainingJobs(**filters)`` names (4 at once)."""
    from concurrent.futures import ThreadPoolExecutor

    sagemaker = aws.client("sagemaker")
    limit = filters.pop("limit", None)
    names: list[str] = []
    for page in sagemaker.get_paginator("list_training_jobs").paginate(
            SortBy="CreationTime", SortOrder="Descending", **filters):
        names += [s["TrainingJobName"] for s in page["TrainingJobSummaries"]]
        if limit is not None and len(names) >= limit:
            names = names[:limit]
            break
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda n: sagemaker.describe_training_job(TrainingJobName=n),
                             names))


def _uses(described: Iterable[dict], repository: str) -> dict[str, list[JobUse]]:
    """For each tag (``tag:...``) and digest of ``repository``, the jobs whose image names it."""
    found: dict[str, list[JobUse]] = {}
    for job in described:
        image = job.get("AlgorithmSpecification", {}).get("TrainingImage") or ""
        name, tag, digest = _image_reference(image)
        if name != repository:
            continue
        use = JobUse(job["TrainingJobName"], job["TrainingJobStatus"])
        for key in filter(None, (f"tag:{tag}" if tag else None, digest)):
            found.setdefault(key, []).append(use)
    return found


def _used_by(detail: dict, uses: dict[str, list[JobUse]]) -> tuple[JobUse, ...]:
    keys = [detail["imageDigest"], *(f"tag:{t}" for t in detail.get("imageTags", []))]
    return tuple(dict.fromkeys(use for key in keys for use in uses.get(key, [])))


def _newest_first(details: list[dict]) -> list[dict]:
    def when(detail: dict) -> float:
        pushed = detail.get("imagePushedAt")
        return pushed.timestamp() if isinstance(pushed, datetime) else float("-inf")

    return sorted(details, key=lambda d: (when(d), d["imageDigest"]), reverse=True)


def _image(detail: dict, jobs: tuple[JobUse, ...]) -> EcrImage:
    pushed = detail.get("imagePushedAt")
    return EcrImage(detail["imageDigest"], tuple(sorted(detail.get("imageTags", []))),
                    pushed.astimezone() if isinstance(pushed, datetime) else None,
                    detail.get("imageSizeInBytes"), jobs)


def _repository_of(container: str, repository: str | None, prefix: str | None) -> str:
    from .ecr import repository_name
    from .recipe import check_repository_name

    name = repository or repository_name(container, prefix)
    try:
        return check_repository_name(name)
    except UsageError:
        what = f"--repository {name}" if repository else f"'{container}'"
        raise usage_error(
            f"%sm_images {container}: {what} cannot be an ECR repository name. Give the name "
            "of a %%sm_container cell (lowercase letters and digits, separated by single "
            "'.', '_', '-' or '/'), e.g. `%sm_images fraud`.") from None


def container_images(aws, container: str, *, repository: str | None = None,
                     prune: int | None = None) -> ImageList:
    """The images of ``container`` in ECR, newest first; with ``prune``, all but that many go.

    ``repository`` is the ECR repository when the cell pushed to one of its own
    (``--repository``); by default it is the one ``%%sm_container`` uses for the
    name (:func:`~sm_magics.ecr.repository_name`). Every mistake is a UsageError,
    raised before anything is deleted: a name that cannot be a repository, a
    repository that does not exist, ``prune`` below 1 (the newest image is what
    ``%sm_train NAME`` runs).

    >>> container_images(aws, "fraud", prune=2).outcome        # doctest: +SKIP
    {'sha256:9c1d...': 'kept: newest', 'sha256:5b0d...': 'kept: newest',
     'sha256:0e4f...': 'kept: used by running job fraud-20261124-101500-ab12',
     'sha256:77aa...': 'deleted'}
    """
    if prune is not None and prune < 1:
        raise usage_error(
            f"%sm_images {container} --prune {prune}: give how many of the newest images to "
            "keep, 1 or more (the newest is the one `%sm_train` runs). To remove a whole "
            "repository use `aws ecr delete-repository`.")
    name = _repository_of(container, repository, aws.settings.repository_prefix)
    details = _newest_first(_describe_images(aws, name, container))
    uses = _uses(_jobs(aws, NameContains=_job_name_part(container), limit=JOBS_LOOKED_AT),
                 name)
    if prune is None:
        return ImageList(container, name, (_image(d, _used_by(d, uses)) for d in details))
    running = [job for status in ("InProgress", "Stopping")
               for job in _jobs(aws, StatusEquals=status)]
    for key, found in _uses(running, name).items():
        uses.setdefault(key, []).extend(u for u in found if u not in uses.get(key, []))
    images = [_image(d, _used_by(d, uses)) for d in details]
    outcome: dict[str, str] = {}
    doomed: list[EcrImage] = []
    for index, image in enumerate(images):
        if index < prune:
            outcome[image.digest] = "kept: newest"
        elif image.running_jobs:
            outcome[image.digest] = "kept: used by running job " + ", ".join(
                job.name for job in image.running_jobs)
        else:
            doomed.append(image)
    _delete(aws, name, doomed)
    outcome.update({image.digest: "deleted" for image in doomed})
    return ImageList(container, name, images, outcome, keep=prune)


def _delete(aws, repository: str, images: list[EcrImage]) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    ecr = aws.client("ecr")
    for start in range(0, len(images), _DELETE_BATCH):
        batch = images[start:start + _DELETE_BATCH]
        try:
            answer = ecr.batch_delete_image(
                repositoryName=repository,
                imageIds=[{"imageDigest": image.digest} for image in batch])
        except (ClientError, BotoCoreError) as exc:
            raise _failure("ecr:BatchDeleteImage", exc, repository) from None
        failures = [f for f in answer.get("failures", [])
                    if f.get("failureCode") != "ImageNotFound"]  # gone already: as wished
        if failures:
            raise RemoteFailure(
                f"ECR BatchDeleteImage did not delete {len(failures)} image"
                f"{'' if len(failures) == 1 else 's'} of {repository}",
                reason="; ".join(f"{f['imageId'].get('imageDigest')}: {f.get('failureCode')} "
                                 f"({f.get('failureReason')})" for f in failures),
                hint="`%sm_images` shows what is left; run the prune again.")
