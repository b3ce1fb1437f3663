"""The quarantine dispositions over the sandbox GCS emulator (``SANDBOX_GCS_URL``; the tests fail without
it): the local scenarios of test_quarantine_verbs.py, collected again here with a ``connector`` on a fresh
bucket, so every write, rewrite and delete goes through gcsfs (GCS has no rename and no directories)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress

import pytest

from connectors.quarantine import QuarantineConnector
from tests.connectors.test_quarantine_verbs import (
    test_cleanup_acts_on_the_plan_not_on_files_written_since,
    test_cleanup_deletes_expired_partitions_and_leaves_kept_ones,
    test_discard_deletes_one_reasons_rows_and_leaves_the_others,
    test_discard_of_every_reason_deletes_whole_files,
    test_keep_writes_a_record_and_changes_no_data,
    test_plans_change_nothing,
    test_release_acts_on_the_plan_and_names_rows_quarantined_since,
    test_release_again_with_the_same_action_id_writes_nothing,
    test_release_crash_after_the_valid_files_is_completed_by_the_redelivery,
    test_release_crash_between_the_rewritten_copy_and_the_delete_keeps_one_copy,
    test_release_crash_while_removing_from_quarantine_is_completed_by_the_redelivery,
    test_release_moves_exactly_the_reasons_rows_of_the_days,
    test_release_refuses_a_file_changed_since_the_plan_and_changes_nothing,
    test_the_counts_never_see_a_released_row_twice,
)
from tests.quarantine_qwrite import gcs_connector, seed_source

__all__ = [
    "test_cleanup_acts_on_the_plan_not_on_files_written_since",
    "test_cleanup_deletes_expired_partitions_and_leaves_kept_ones",
    "test_discard_deletes_one_reasons_rows_and_leaves_the_others",
    "test_discard_of_every_reason_deletes_whole_files",
    "test_keep_writes_a_record_and_changes_no_data",
    "test_plans_change_nothing",
    "test_release_acts_on_the_plan_and_names_rows_quarantined_since",
    "test_release_again_with_the_same_action_id_writes_nothing",
    "test_release_crash_after_the_valid_files_is_completed_by_the_redelivery",
    "test_release_crash_between_the_rewritten_copy_and_the_delete_keeps_one_copy",
    "test_release_crash_while_removing_from_quarantine_is_completed_by_the_redelivery",
    "test_release_moves_exactly_the_reasons_rows_of_the_days",
    "test_release_refuses_a_file_changed_since_the_plan_and_changes_nothing",
    "test_the_counts_never_see_a_released_row_twice",
]


@pytest.fixture
def connector() -> Iterator[QuarantineConnector]:
    qc = gcs_connector()
    seed_source(qc.store)
    yield qc
    bucket = qc.store.root.split("/", 1)[0]
    with suppress(OSError):
        qc.store.fs.rm(bucket, recursive=True)


def test_the_source_is_on_the_emulator(connector: QuarantineConnector) -> None:
    assert connector.store.remote
    assert connector.store.tables() == ["customers", "orders"]
