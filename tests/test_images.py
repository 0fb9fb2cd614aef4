"""``%sm_images``: a container's images in ECR and pruning them, on real sandbox pushes.

Each test pushes its images with ``%%sm_container`` cells and checks what the
registry itself holds afterwards (its v2 API), not only what ECR answers.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from IPython.core.error import UsageError

from images import registry_head, repository_of
from sm_magics.images import EcrImage, ImageList, JobUse

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]







def edit(ip, name: str, version: int, body: str = ""):
    """Run the container cell NAME with a code edit: version ``version`` of its code."""
    return ip.run_cell_magic("sm_container", name, f"print('version {version}')\n{body}")


def wait_until(run, statuses: tuple[str, ...], limit: float = 120) -> str:
    deadline = time.monotonic() + limit
    while (status := run.describe()["TrainingJobStatus"]) not in statuses:
        assert time.monotonic() < deadline, f"{run.name} stayed {status}"
        time.sleep(0.5)
    return status


def test_three_code_edits_are_three_images_newest_first_with_the_jobs_that_used_one(sandbox, ip):
    first = edit(ip, "img-list", 1)
    second = edit(ip, "img-list", 2)
    run = ip.run_line_magic("sm_train", "img-list --wait")
    third = edit(ip, "img-list", 3)

    images = ip.run_line_magic("sm_images", "img-list")

    assert isinstance(images, ImageList)
    assert images.repository == repository_of(third)
    assert [i.digest for i in images] == [third.digest, second.digest, first.digest]
    assert [i.tags for i in images] == [(third.tag,), (second.tag,), (first.tag,)]
    assert [i.jobs for i in images] == [(), (JobUse(run.name, "Completed"),), ()]
    assert images[0].pushed_at >= images[1].pushed_at >= images[2].pushed_at
    assert all(i.size > 1_000_000 for i in images)
    text = repr(images)
    assert text.splitlines()[0] == f"img-list: 3 images in ECR repository {images.repository}"
    assert text.index(third.tag) < text.index(second.tag) < text.index(first.tag)
    assert f"{run.name} (Completed)" in text
    html = images._repr_html_()
    assert "<table" in html and f"<code>{second.tag}</code>" in html and run.name in html


def test_prune_keeps_the_newest_and_an_image_a_running_job_uses(sandbox, ip):
    sleeper = edit(ip, "img-prune", 1, "import time\ntime.sleep(600)\n")
    run = ip.run_line_magic("sm_train", "img-prune")
    try:
        middle = edit(ip, "img-prune", 2)
        newest = edit(ip, "img-prune", 3)
        repository = repository_of(newest)
        assert registry_head(repository, middle.digest) == 200

        before = len(sandbox.authorizations())
        pruned = ip.run_line_magic("sm_images", "img-prune --prune 1")
        needed = {(a["action"], a["resource"]) for a in sandbox.authorizations()[before:]}
        status_after = run.describe()["TrainingJobStatus"]
        left = ip.run_line_magic("sm_images", "img-prune")
    finally:
        run.stop()
    stopped = wait_until(run, ("Stopped", "Failed", "Completed"))

    assert pruned.outcome == {newest.digest: "kept: newest",
                              sleeper.digest: f"kept: used by running job {run.name}",
                              middle.digest: "deleted"}
    assert [i.digest for i in pruned.deleted] == [middle.digest]
    assert registry_head(repository, middle.digest) == 404
    assert registry_head(repository, middle.tag) == 404
    assert registry_head(repository, newest.digest) == 200
    assert registry_head(repository, sleeper.digest) == 200
    assert status_after == "InProgress"  # the job survived the prune
    assert stopped == "Stopped"
    assert [i.digest for i in left] == [newest.digest, sleeper.digest]
    assert "(--prune 1: 1 deleted)" in repr(pruned) and "deleted" in pruned._repr_html_()
    # only what the default execution role may do, as the sandbox recorded it
    from sm_magics.sandbox.policy import Policy

    default_role = Policy.load("AmazonSageMakerFullAccess")
    assert {action for action, _ in needed} == {
        "ecr:DescribeImages", "ecr:BatchDeleteImage", "sagemaker:ListTrainingJobs",
        "sagemaker:DescribeTrainingJob"}
    assert [(a, r) for a, r in needed if not default_role.evaluate(a, r).allowed] == []


@pytest.mark.parametrize(("line", "message"), [
    ("Img_Bad", "'Img_Bad' cannot be an ECR repository name"),
    ("img-bad --prune 0", "give how many of the newest images to keep, 1 or more"),
    ("img-bad --prune many", "invalid int value: 'many'"),
    ("img-bad --repository Not_Valid", "--repository Not_Valid cannot be an ECR repository"),
    ("img-never-built --prune 1", "there is no ECR repository sagemaker-img-never-built"),
])
def test_bad_input_is_a_usage_error_and_deletes_nothing(sandbox, ip, line, message):
    old = edit(ip, "img-bad", 1)
    new = edit(ip, "img-bad", 2)

    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("sm_images", line)

    assert type(caught.value) is UsageError
    assert message in str(caught.value)
    assert registry_head(repository_of(old), old.digest) == 200
    assert registry_head(repository_of(new), new.digest) == 200


def test_an_image_list_reads_as_a_table_with_what_a_prune_did():
    now = datetime(2026, 11, 24, 10, 15)
    digest = "sha256:" + "ab" * 32
    images = [EcrImage(digest, ("9c1d0e2f3a4b5c6d",), now, 97_100_000,
                       (JobUse("fraud-20261124-101500-ab12", "InProgress"),)),
              EcrImage("sha256:" + "cd" * 32, (), now - timedelta(hours=1), 1_500, ())]

    listing = ImageList("fraud", "sagemaker-fraud", images,
                        {digest: "kept: newest", "sha256:" + "cd" * 32: "deleted"}, keep=1)

    assert repr(listing).splitlines() == [
        "fraud: 2 images in ECR repository sagemaker-fraud (--prune 1: 1 deleted)",
        "tag               digest               pushed               size     jobs"
        "                                     prune",
        "----------------  -------------------  -------------------  -------  "
        "---------------------------------------  ------------",
        "9c1d0e2f3a4b5c6d  sha256:abababababab  2026-11-24 10:15:00  97.1 MB  "
        "fraud-20261124-101500-ab12 (InProgress)  kept: newest",
        "(untagged)        sha256:cdcdcdcdcdcd  2026-11-24 09:15:00  1.5 kB   -"
        "                                        deleted",
    ]
    assert [i.digest for i in listing.deleted] == ["sha256:" + "cd" * 32]
    assert "<caption>fraud: 2 images" in listing._repr_html_()
    assert repr(ImageList("fraud", "sagemaker-fraud", [])) == (
        "(no images of fraud in ECR repository sagemaker-fraud)")
