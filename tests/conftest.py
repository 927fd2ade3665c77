"""Suite-wide settings that belong to no single fixture plugin."""

from hypothesis import settings

# Property tests run beside PostgreSQL clusters on 2 cores: a per-example time limit would make them flaky,
# and speed is measured in bench/, never asserted in tests.
settings.register_profile("migrate-bot", deadline=None)
settings.load_profile("migrate-bot")
