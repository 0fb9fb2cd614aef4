"""Configuration: the resolution ladder, validation, and the %sm_config magic."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError

from sm_magics import config

ROLE = "arn:aws:iam::111122223333:role/SageMakerRole"
OTHER_ROLE = "arn:aws:iam::111122223333:role/OtherRole"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No AWS or sm-magics variables, and no AWS or SageMaker SDK config files."""
    import os

    for key in list(os.environ):
        if key.startswith(("AWS_", "SM_MAGICS_", "SAGEMAKER_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", str(tmp_path / "admin.yaml"))
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(tmp_path / "user.yaml"))
    return tmp_path


def write_sdk_config(path, bucket=None, prefix=None, role=None):
    session = {}
    if bucket:
        session["DefaultS3Bucket"] = bucket
    if prefix:
        session["DefaultS3ObjectKeyPrefix"] = prefix
    document = {"SchemaVersion": "1.0",
                "SageMaker": {"PythonSDK": {"Modules": {"Session": session}}}}
    if role:
        document["SageMaker"]["TrainingJob"] = {"RoleArn": role}
    import yaml

    path.write_text(yaml.safe_dump(document))


def test_builtin_defaults_when_nothing_is_configured(clean_env):
    settings = config.resolve(platform={})
    assert settings["prefix"] == config.Value("sm-magics", "default")
    assert settings["base"] == config.Value("python:3.12-slim", "default")
    assert settings["instance_type"].value == "ml.m5.large"
    assert settings["builder"].value == "auto"
    assert settings["region"] == config.Value(None, "not set")
    assert settings["role"] == config.Value(None, "not set")


def test_each_level_outranks_the_ones_below(clean_env, monkeypatch):
    write_sdk_config(clean_env / "user.yaml", bucket="sdk-bucket", prefix="sdk-prefix", role=ROLE)
    platform = {"role": ("arn:aws:iam::111122223333:role/StudioRole", "SageMaker Studio metadata")}

    settings = config.resolve(platform=platform)
    assert settings["role"].value == ROLE
    assert settings["role"].source.startswith("SageMaker SDK config (")
    assert settings["bucket"].value == "sdk-bucket"
    assert settings["prefix"].value == "sdk-prefix"

    monkeypatch.setenv("SM_MAGICS_BUCKET", "env-bucket")
    monkeypatch.setenv("SM_MAGICS_ROLE", OTHER_ROLE)
    settings = config.resolve(platform=platform)
    assert settings["bucket"] == config.Value("env-bucket", "environment (SM_MAGICS_BUCKET)")
    assert settings["role"] == config.Value(OTHER_ROLE, "environment (SM_MAGICS_ROLE)")

    session = {"bucket": ("session-bucket", "%sm_config")}
    settings = config.resolve(session=session, platform=platform)
    assert settings["bucket"] == config.Value("session-bucket", "%sm_config")

    settings = config.resolve(flags={"bucket": "flag-bucket"}, session=session, platform=platform)
    assert settings["bucket"] == config.Value("flag-bucket", "this magic's flag")


def test_platform_metadata_is_used_when_nothing_else_says(clean_env, tmp_path):
    metadata = tmp_path / "resource-metadata.json"
    metadata.write_text(json.dumps({
        "ResourceArn": "arn:aws:sagemaker:eu-central-1:111122223333:app/d-abc/user/JupyterLab/x",
        "ExecutionRoleArn": ROLE,
    }))
    platform = config.load_platform_metadata(metadata)
    settings = config.resolve(platform=platform)
    assert settings["region"] == config.Value(
        "eu-central-1", "SageMaker Studio / notebook metadata")
    assert settings["role"] == config.Value(ROLE, "SageMaker Studio / notebook metadata")


def test_admin_sdk_config_is_overridden_by_user_sdk_config(clean_env):
    write_sdk_config(clean_env / "admin.yaml", bucket="admin-bucket", prefix="admin-prefix")
    write_sdk_config(clean_env / "user.yaml", bucket="user-bucket")
    settings = config.resolve(platform={})
    assert settings["bucket"].value == "user-bucket"
    assert settings["prefix"].value == "admin-prefix"


def test_region_comes_from_aws_variables_in_their_order(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    assert config.resolve(platform={})["region"] == config.Value(
        "eu-west-3", "environment (AWS_DEFAULT_REGION)")
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    assert config.resolve(platform={})["region"].value == "eu-west-2"
    monkeypatch.setenv("SM_MAGICS_REGION", "ap-south-1")
    assert config.resolve(platform={})["region"].value == "ap-south-1"


def test_region_of_the_aws_profile_is_used(clean_env, monkeypatch):
    (clean_env / "aws-config").write_text(
        "[default]\nregion = us-west-2\n[profile research]\nregion = ca-central-1\n")
    assert config.resolve(platform={})["region"] == config.Value(
        "us-west-2", "AWS config (~/.aws/config)")
    monkeypatch.setenv("AWS_PROFILE", "research")
    settings = config.resolve(platform={})
    assert settings["profile"] == config.Value("research", "environment (AWS_PROFILE)")
    assert settings["region"].value == "ca-central-1"


def test_a_bad_environment_value_names_the_variable(clean_env, monkeypatch):
    monkeypatch.setenv("SM_MAGICS_INSTANCE_TYPE", "m5.large")
    with pytest.raises(UsageError) as err:
        config.resolve(platform={})
    assert type(err.value) is UsageError
    assert str(err.value) == (
        "The environment variable SM_MAGICS_INSTANCE_TYPE is not usable: 'm5.large' is not a "
        "SageMaker instance type (for example ml.m5.large or ml.g5.xlarge)."
    )


def test_variables_set_by_the_sandbox_are_labelled_as_such(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv(config.SANDBOX_VARS, "AWS_REGION,SM_MAGICS_ROLE")
    assert config.resolve(platform={})["region"].source == "sandbox (AWS_REGION)"


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("region", ["us-east-1", "eu-west-2", "us-gov-west-1", "ap-southeast-3"],
         ["mars", "US-EAST-1", "us-east", "useast1", ""]),
        ("role", [ROLE, "arn:aws:iam::111122223333:role/service-role/AmazonSageMaker-Exec"],
         ["SageMakerRole", "arn:aws:iam::1234:role/x", "arn:aws:iam::111122223333:user/x"]),
        ("bucket", ["my-bucket", "a.b.c", "sagemaker-us-east-1-123456789012"],
         ["My_Bucket", "ab", "-abc", "a..b", "192.168.1.1", "xn--abc", "abc-s3alias", "a" * 64]),
        ("instance_type", ["ml.m5.large", "ml.g5.12xlarge", "ml.trn1.32xlarge"],
         ["m5.large", "ml.m5", "local"]),
        ("base", ["python:3.12-slim", "sm-magics/sandbox-base:bookworm",
                  "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3-cpu-py311",
                  "127.0.0.1:5000/base@sha256:" + "a" * 64],
         ["Python:3.12", "python:", "python::3", "a b"]),
        ("builder", ["auto", "docker", "registry"], ["codebuild", "kaniko", "Docker"]),
        ("base_python", ["3.11", "3.9", "3.13"], ["3", "3.11.7", "python3.11", "2.7"]),
        ("prefix", ["sm-magics", "team/fraud", "/team//fraud/"], ["/", "//", ""]),
    ],
)
def test_values_are_validated(name, good, bad):
    for value in good:
        assert config.clean_value(name, value)[1] is None, value
    for value in bad:
        assert config.clean_value(name, value)[1], value


def test_profile_must_exist(clean_env):
    (clean_env / "aws-credentials").write_text("[work]\naws_access_key_id = x\n")
    assert config.clean_value("profile", "work")[1] is None
    problem = config.clean_value("profile", "home")[1]
    assert "known profiles: work" in problem and "aws configure --profile home" in problem


# ---------------------------------------------------------------- %sm_config


def test_sm_config_sets_session_values_and_shows_their_source(ip, clean_env):
    settings = ip.run_line_magic("sm_config", f"--region eu-west-1 --role {ROLE} --prefix /team/")
    assert settings["region"] == config.Value("eu-west-1", "%sm_config")
    assert settings["role"] == config.Value(ROLE, "%sm_config")
    assert settings["prefix"] == config.Value("team", "%sm_config")
    shown = repr(settings)
    assert shown.splitlines()[0].split() == ["setting", "value", "from"]
    assert any(line.split() == ["region", "eu-west-1", "%sm_config"] for line in shown.splitlines())
    assert "<td><code>eu-west-1</code></td><td>%sm_config</td>" in settings._repr_html_()


def test_every_setting_is_a_trait_and_a_flag_with_the_help_of_its_one_declaration(ip):
    from sm_magics.magics import SageMakerMagics

    traits = SageMakerMagics.class_traits(config=True)
    magics = ip.magics_manager.registry["SageMakerMagics"]

    def options_of(magic) -> str:  # the %magic? help, on one line
        return " ".join(magic.__doc__.split())

    shown = options_of(magics.sm_config)
    positions = [shown.index(f"{s.flag} {s.name.upper()} {s.described}") for s in config.SETTINGS]
    assert positions == sorted(positions)
    for setting in config.SETTINGS:
        assert traits[setting.name].help == setting.described
    for magic, name in ((magics.sm_container, "base"), (magics.sm_container, "builder"),
                        (magics.sm_train, "instance_type")):
        setting = config.BY_NAME[name]
        expected = setting.help_with_default(f"the {name} setting")
        assert f"{setting.flag} {name.upper()} {expected}" in options_of(magic)


def test_percent_config_sets_the_same_options(ip, clean_env):
    ip.run_cell(f"%config SageMakerMagics.role = '{ROLE}'")
    ip.run_cell("%config SageMakerMagics.instance_type = 'ml.c5.xlarge'")
    settings = ip.run_line_magic("sm_config", "--show")
    assert settings["role"] == config.Value(ROLE, "%config")
    assert settings["instance_type"] == config.Value("ml.c5.xlarge", "%config")


def test_percent_config_rejects_a_bad_value_and_keeps_the_old_one(ip, clean_env, caplog):
    ip.run_cell("%config SageMakerMagics.bucket = 'good-bucket'")
    ip.run_cell("%config SageMakerMagics.bucket = 'Bad_Bucket'")
    assert "SageMakerMagics.bucket: 'Bad_Bucket' is not a valid S3 bucket name" in caplog.text
    assert ip.run_line_magic("sm_config", "")["bucket"].value == "good-bucket"


def test_config_given_before_loading_the_extension_is_used(ip, clean_env):
    ip.run_line_magic("unload_ext", "sm_magics")
    ip.run_cell("%config SageMakerMagics.bucket = 'early-bucket'")
    ip.run_line_magic("load_ext", "sm_magics")
    assert ip.run_line_magic("sm_config", "")["bucket"] == config.Value(
        "early-bucket", "IPython config")


def test_session_values_outrank_the_environment_and_unset_forgets_them(
        ip, clean_env, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-west-1")
    assert ip.run_line_magic("sm_config", "--region eu-north-1")["region"].value == "eu-north-1"
    settings = ip.run_line_magic("sm_config", "--unset region")
    assert settings["region"] == config.Value("us-west-1", "environment (AWS_REGION)")


def test_line_variables_are_expanded(ip, clean_env):
    ip.user_ns["my_region"] = "sa-east-1"
    assert ip.run_line_magic("sm_config", "--region {my_region}")["region"].value == "sa-east-1"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--region mars-1",
         "%sm_config --region: 'mars-1' is not an AWS region name (for example us-east-1 or "
         "eu-west-2)."),
        ("--bogus 1",
         "%sm_config: unrecognized arguments: --bogus 1. See `%sm_config?` for the options."),
        ("--region",
         "%sm_config: option --region: expected one argument. See `%sm_config?` for the options."),
        ("--role SageMakerRole",
         "%sm_config --role: 'SageMakerRole' is not an IAM role ARN. Give the full ARN of the "
         "SageMaker execution role, for example arn:aws:iam::111122223333:role/"
         "SageMakerExecutionRole."),
        ("--builder codebuild",
         "%sm_config --builder: The 'codebuild' builder is not available yet; use --builder "
         "docker (a Docker engine) or --builder registry (no Docker needed)."),
        ("--unset colour",
         "%sm_config --unset: colour is not a setting. Settings: profile, region, role, bucket, "
         "prefix, base, instance_type, builder, base_python, repository_prefix, docker_network, "
         "endpoint_url, registry."),
        ("--prefix 'a b",
         "%sm_config: cannot read the line (No closing quotation). Check the quotes."),
    ],
)
def test_bad_sm_config_lines_give_the_exact_usage_error(ip, clean_env, line, message):
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("sm_config", line)
    assert type(err.value) is UsageError
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_a_failed_sm_config_changes_nothing(ip, clean_env):
    ip.run_line_magic("sm_config", "--region eu-west-1")
    with pytest.raises(UsageError):
        ip.run_line_magic("sm_config", "--region us-east-2 --bucket Bad_Bucket")
    settings = ip.run_line_magic("sm_config", "")
    assert settings["region"].value == "eu-west-1"
    assert settings["bucket"].value != "Bad_Bucket"


def test_unexpanded_braces_in_the_line_are_reported(ip, clean_env):
    with pytest.raises(UsageError) as err:
        ip.run_cell("%sm_config --region {no_such_variable}")
    assert "{no_such_variable} in the line was not expanded" in str(err.value)


def test_unload_removes_the_magics_and_reload_restores_them(ip, clean_env):
    ip.run_line_magic("unload_ext", "sm_magics")
    assert "sm_config" not in ip.magics_manager.magics["line"]
    with pytest.raises(UsageError):
        ip.run_cell("%sm_config")
    ip.run_line_magic("load_ext", "sm_magics")
    assert "sm_config" in ip.magics_manager.magics["line"]


def test_loading_the_extension_imports_nothing_heavy():
    code = textwrap.dedent("""
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "sm_magics")
        heavy = ["boto3", "botocore", "docker", "moto", "ipywidgets", "sagemaker", "yaml"]
        print(",".join(m for m in heavy if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_trailing_semicolon_silences_the_output(ip, clean_env):
    assert ip.run_line_magic("sm_config", "--region eu-west-1;") is None
    assert ip.run_line_magic("sm_config", "")["region"].value == "eu-west-1"
