"""wire/updates.py: the one record → apply / discard flow of identity's references and resident's keys."""

from __future__ import annotations

import numpy as np
import torch

from modal_magic.wire.updates import Updates


def test_an_update_is_copied_in_only_on_apply_and_keeps_the_object() -> None:
    updates = Updates("remotely")
    local, new = [1, 2], [3]
    assert updates.record(local, new) is local
    assert local == [1, 2]
    updates.apply()
    assert local == [3] and updates.notes == []


def test_an_object_that_cannot_take_the_content_is_replaced_with_a_note() -> None:
    updates = Updates("on the other side")
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    new = np.ones(3)
    assert updates.record(frozen, new) is new
    updates.apply()
    assert not frozen.any()
    assert updates.notes == [("a ndarray changed on the other side could not be updated in place; it was replaced "
                              "(other references to the old one do not see the change)")]


def test_discard_drops_the_updates_unapplied_and_says_what_they_were() -> None:
    updates = Updates("remotely")
    local = torch.zeros(2)
    new = torch.ones(2)
    updates.record(local, new)
    updates.defer(local.untyped_storage(), new.untyped_storage())
    assert [pair[0] is local for pair in updates.discard()] == [True, False]
    updates.apply()
    assert not local.any()
