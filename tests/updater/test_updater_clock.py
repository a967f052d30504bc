"""A Raspberry Pi has no RTC: a wrong or unsynchronised clock never rejects or expires the installed bundle."""

import logging

import pytest
from updaterkit import DAY, NOW, make_bundle, serve

V1, V2 = 2026120101, 2026120102


@pytest.fixture
def installed(tmp_path, mirror, box, keys):
    """V1 (created NOW-1d, expires NOW+29d) installed with a good clock."""
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V1), keys.dept)
    updater, _ = box()
    assert updater.poll_once() == "updated"
    return updater.department_dir()


def test_unsynchronised_clock_keeps_an_expired_looking_bundle(installed, box, caplog):
    far = (NOW + 90 * DAY).timestamp()
    updater, rec = box(clock=lambda: far, clock_synced=lambda: False)
    with caplog.at_level(logging.WARNING, "gateway.updater"):
        updater.recover()
        assert updater.poll_once() == "unchanged"
    assert rec.failures == []  # not reported as expired: the date cannot be believed
    assert rec.untrusted and all(rec.untrusted)
    assert updater.department_dir() == installed
    assert "clock not synchronised" in caplog.text

    synced, _ = box(clock=lambda: far, clock_synced=lambda: True)
    assert synced.poll_once() == "expired"  # the same date, once synchronised, is believed (and only reported)
    assert synced.department_dir() == installed


def test_clock_earlier_than_the_installed_bundle_is_not_trusted(installed, tmp_path, mirror, keys, box, caplog):
    updater, rec = box(clock=lambda: 86400.0 * 3, clock_synced=lambda: True)  # 1970: a Pi after a cold boot
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V2, created=NOW), keys.dept)
    with caplog.at_level(logging.WARNING, "gateway.updater"):
        assert updater.poll_once() == "updated"
    assert rec.untrusted == [True]
    assert "earlier than the installed bundle's creation" in caplog.text
    # The "now" it used is the installed bundle's creation, not 1970.
    assert rec.successes[-1][1] == (NOW - DAY).timestamp()


def test_untrusted_clock_still_refuses_what_is_certainly_expired(installed, tmp_path, mirror, keys, box):
    """Expired before a bundle the box already accepted was even created: expired whatever the clock says."""
    updater, _ = box(clock=lambda: 0.0, clock_synced=lambda: False)
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V2, created=NOW - 40 * DAY, valid=30 * DAY), keys.dept)
    assert updater.poll_once() == "expired"
    assert updater.department_dir() == installed


def test_untrusted_clock_does_not_reject_a_new_bundle_for_a_wrong_date(installed, tmp_path, mirror, keys, box):
    far = (NOW + 400 * DAY).timestamp()  # clock far ahead and not synchronised
    updater, rec = box(clock=lambda: far, clock_synced=lambda: False)
    serve(mirror.root, make_bundle(tmp_path, keys.dept, V2, created=NOW), keys.dept)
    assert updater.poll_once() == "updated"
    assert rec.failures == []
