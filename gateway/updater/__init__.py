"""Signed Department policy bundles: build and publish them (Department), fetch, verify and apply them (box)."""

from gateway.updater.layer import make_validator, policy_paths
from gateway.updater.reasons import REASONS, UpdateFailure
from gateway.updater.settings import UpdaterSettings, read_updater_settings
from gateway.updater.updater import STEPS, UpdateObserver, Updater

__all__ = ["REASONS", "STEPS", "UpdateFailure", "UpdateObserver", "Updater", "UpdaterSettings", "make_validator",
           "policy_paths", "read_updater_settings"]
