"""pytest plugin (loaded with ``-p tests.fix_slack``): a local Slack emulator per test.

Why a plugin rather than conftest: unit, integration and e2e suites all need
the same workspace, and loading it by name in ``addopts`` makes the
dependency explicit. The workspace is small and fixed so tests can name its
people: a requester, two DBA approvers (the ``S_DBA`` usergroup) and a
bystander, all in ``#deploys``. Standalone: imports nothing from ``bot``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.slack_emulator import Channel, SlackEmulator, User, Usergroup

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-1-A_TEST-test-app-token"  # Socket Mode's app-level token
SIGNING_SECRET = "test-signing-secret"
TEAM_ID = "T_TEST"
BOT_USER_ID = "U_BOT"
DEPLOYS = "C_DEPLOYS"
REQUESTER = "U_REQ"
APPROVER1 = "U_APPROVER1"
APPROVER2 = "U_APPROVER2"
OTHER = "U_OTHER"
DBA_GROUP = "S_DBA"


def default_workspace() -> SlackEmulator:
    """The standard test workspace, not yet started (for tests that need their own lifecycle)."""
    people = [
        User(REQUESTER, "requester", real_name="Rita Requester"),
        User(APPROVER1, "approver1", real_name="Ada Approver"),
        User(APPROVER2, "approver2", real_name="Bo Approver"),
        User(OTHER, "other", real_name="Oscar Other"),
    ]
    return SlackEmulator(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN,
        signing_secret=SIGNING_SECRET,
        team_id=TEAM_ID,
        bot_user_id=BOT_USER_ID,
        users=people,
        channels=[Channel(DEPLOYS, "deploys", members={p.id for p in people} | {BOT_USER_ID})],
        usergroups=[Usergroup(DBA_GROUP, "dba", users=[APPROVER1, APPROVER2], name="DBAs")],
    )


@pytest.fixture
def slack_emulator() -> Iterator[SlackEmulator]:
    """A running emulator with the default workspace on 127.0.0.1 (kernel-chosen port); stopped after the test."""
    with default_workspace() as emulator:
        yield emulator


def pytest_report_header(config: pytest.Config) -> str:
    return "slack: local Slack Web API emulator (tests/slack_emulator.py), 127.0.0.1 on a random port per test"
