"""One Config: every setting has a field, a flag, an environment variable and a docs row."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.config import ENV_ONLY, SETTINGS, Config, from_env
from gateway.errors import ConfigError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
TESTS = [*Path(__file__).resolve().parent.glob("*.py")]


def test_every_setting_has_a_config_field_with_the_same_default() -> None:
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for setting in SETTINGS:
        assert setting.name in fields, f"SETTINGS has {setting.name} but Config does not"
        default = fields[setting.name].default
        if setting.type is Path:
            assert Path(default) == Path(setting.default)
        else:
            assert default == setting.default, setting.name
        assert setting.help.strip(), f"{setting.name} has no help text"
    declared = {s.name for s in SETTINGS}
    assert set(fields) - declared == {"extra"}, "a Config field is missing from SETTINGS"
    assert len(declared) == len(SETTINGS), "a setting is declared twice"


def test_every_setting_has_a_row_in_docs_settings_md() -> None:
    text, _, env_only = DOCS.read_text().partition("## Environment only")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", text, re.M)}
    # Read from the environment only (how the process is built and tested), by name:
    for name in ("GATEWAY_NATIVE", "GATEWAY_REQUIRE_NATIVE", "GATEWAY_REQUIRE_DOCKER"):
        assert f"| `{name}` |" in env_only, f"docs/settings.md has no row for {name}"
    for setting in SETTINGS:
        assert setting.name in rows, f"docs/settings.md has no row for {setting.name}"
        row = rows[setting.name]
        assert f"`--{setting.name.replace('_', '-')}`" in row
        assert f"`GATEWAY_{setting.name.upper()}`" in row
    assert set(rows) <= {s.name for s in SETTINGS}, "docs/settings.md documents a ghost setting"


def test_every_environment_only_knob_is_in_the_table_the_docs_and_the_code() -> None:
    _, _, env_only = DOCS.read_text().partition("## Environment only")
    documented = set(re.findall(r"^\| `(GATEWAY_\w+)` \|", env_only, re.M))
    assert documented == {e.variable for e in ENV_ONLY}, "docs and config.ENV_ONLY differ"
    code = "\n".join(
        p.read_text() for p in [*(DOCS.parent.parent / "gateway").rglob("*.py"), *TESTS]
    )
    for knob in ENV_ONLY:
        assert code.count(f'"{knob.variable}"') >= 2, f"{knob.variable} is read nowhere"


def test_environment_variables_then_overrides() -> None:
    env = {"GATEWAY_DOMAIN": "Example.ORG.", "GATEWAY_PORT": "9001", "GATEWAY_HOLD_TIMEOUT": "2.5"}
    config = from_env(env)
    assert (config.domain, config.port, config.hold_timeout) == ("example.org", 9001, 2.5)
    assert from_env(env, port=9002).port == 9002  # an explicit flag wins
    assert config.team_url("alpha") == "http://alpha.example.org:9001"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT"),
        ({"GATEWAY_DOMAIN": "http://x.org/"}, "invalid domain"),
        ({"GATEWAY_RUNTIME": "kubernetes"}, "unknown runtime"),
        ({"GATEWAY_READ_TIMEOUT": "0"}, "--read-timeout must be a positive number"),
        ({"GATEWAY_READ_TIMEOUT": "nan"}, "--read-timeout must be a positive number"),
        ({"GATEWAY_PORT": "70000"}, "--port 70000 is out of range"),
        ({"GATEWAY_LOG_LEVEL": "verbose"}, "--log-level 'verbose' is not a log level"),
        ({"GATEWAY_REDIRECT_PORT": "8080"}, "--redirect-port .* needs --tls-cert"),
    ],
)
def test_bad_settings_give_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_env(env)


def test_flags_and_environment_reach_the_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    by_env = tmp_path / "by-env"
    by_flag = tmp_path / "by-flag"
    r = runner.invoke(cli, ["teams", "create", "alpha"], env={"GATEWAY_DATA_DIR": str(by_env)})
    assert r.exit_code == 0, r.output
    assert (by_env / "control.db").exists() and (by_env / "teams" / "alpha" / "data.db").exists()
    r = runner.invoke(
        cli,
        ["teams", "create", "beta", "--data-dir", str(by_flag), "--domain", "example.org"],
        env={"GATEWAY_DATA_DIR": str(by_env)},
    )
    assert r.exit_code == 0, r.output
    assert (by_flag / "teams" / "beta").is_dir()  # the flag won over the variable
    assert "beta.example.org" in r.output
    r = runner.invoke(cli, ["teams", "list", "--port", "nope", "--data-dir", str(by_flag)])
    assert r.exit_code == 2 and "nope" in r.output
    r = runner.invoke(cli, ["teams", "list", "--domain", "a/b", "--data-dir", str(by_flag)])
    assert r.exit_code == 2 and "invalid domain" in r.output


def test_settings_show_their_environment_variable_in_help() -> None:
    r = CliRunner().invoke(cli, ["serve", "--help"])
    assert r.exit_code == 0
    for setting in SETTINGS:
        assert f"GATEWAY_{setting.name.upper()}" in r.output
