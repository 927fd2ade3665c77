"""[refresh] keys for the three methods: defaults, and wrong combinations refused by name."""

from __future__ import annotations

import pytest

from bot import config
from bot.errors import ConfigError


def test_defaults_are_todays_dump() -> None:
    r = config.parse_settings("").refresh
    assert (r.method, r.template, r.command, r.timeout_s, r.target, r.stale_after_hours) == ("dump", "", "", 3600.0,
                                                                                            "", 24.0)


def test_each_method_with_its_keys_is_accepted() -> None:
    assert config.parse_settings('[refresh]\nmethod = "template"\ntemplate = "app_snapshot"').refresh.template == \
        "app_snapshot"
    r = config.parse_settings('[refresh]\nmethod = "command"\ncommand = "/opt/clone.sh --fast"\ntimeout_s = 600\n'
                              'target = "env:CLONE_URL"').refresh
    assert (r.command, r.timeout_s, r.target) == ("/opt/clone.sh --fast", 600.0, "env:CLONE_URL")


@pytest.mark.parametrize(("text", "sentence"), [
    ('method = "snapshot"', "Config key 'refresh.method' must be one of dump, template, command, not 'snapshot'."),
    ('method = "template"', 'refresh.method = "template" needs refresh.template.'),
    ('method = "command"', 'refresh.method = "command" needs refresh.command.'),
    ('template = "snap"', 'refresh.template is set, but it is used only with refresh.method = "template" '
                          '(the method is "dump").'),
    ('method = "template"\ntemplate = "s"\njobs = 2', 'refresh.jobs is set, but it is used only with '
                                                      'refresh.method = "dump"'),
    ('method = "command"\ncommand = "x"\ntimeout_s = 0', "Config key 'refresh.timeout_s' must be greater than 0."),
    ('stale_after_hours = -1', "Config key 'refresh.stale_after_hours' must be greater than 0."),
    ('method = "template"\ntemplate = "postgres://u:hunter2-xyz@staging/snap"',
     "refresh.template contains a password written into the config file."),
    ('method = "command"\ncommand = "x"\ntarget = "postgres://u:hunter2-xyz@staging/snap"',
     "refresh.target contains a password written into the config file."),
])
def test_wrong_refresh_settings_are_refused_by_name(text: str, sentence: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse_settings("[refresh]\n" + text)
    assert sentence in str(err.value)
    assert "hunter2-xyz" not in str(err.value)
