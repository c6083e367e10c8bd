"""gdslab.hostmem: what mutation testing found unchecked (docs/results/mutation.md).

The reason a ledger cannot count its memory must reach, word for word, every open window
and the parent ledger; a record with several reasons lists each of them.
"""

import pytest

from gdslab.hostmem import Ledger


def test_a_reason_reaches_every_open_window_and_the_parent_word_for_word():
    parent = Ledger("process")
    child = Ledger("load", parent)
    with parent.window() as on_parent, child.window() as on_child:
        child.cannot_count("peer X holds buffers of its own")
        child.cannot_count("peer X holds buffers of its own")  # said twice: one line
    assert parent.uncounted == ["peer X holds buffers of its own"]
    assert on_parent.uncounted == ["peer X holds buffers of its own"]
    assert on_child.uncounted == ["peer X holds buffers of its own"]
    assert parent.record() == {"host_overhead_bytes": None, "host_overhead_note": "peer X holds buffers of its own"}


def test_a_record_lists_each_reason_separated_by_a_semicolon():
    ledger = Ledger("load")
    ledger.cannot_count("peer A")
    ledger.cannot_count("peer B")
    assert ledger.record()["host_overhead_note"] == "peer A; peer B"


def test_taking_zero_bytes_is_allowed_and_a_negative_count_is_refused():
    ledger = Ledger("load")
    ledger.take(0)  # an empty tensor's staging: nothing held, no error
    assert (ledger.held, ledger.peak) == (0, 0)
    ledger.take(1)
    assert (ledger.held, ledger.peak) == (1, 1)
    with pytest.raises(ValueError, match=r"cannot take a negative number of bytes \(-1\)"):
        ledger.take(-1)
    assert ledger.held == 1


def test_a_ledger_that_gives_back_more_than_it_holds_names_itself():
    """The name is what the refusal says: a load's ledger calls itself "load"."""
    from gdslab.hostmem import PROCESS, load_ledger

    ledger = load_ledger()
    assert ledger.parent is PROCESS
    with pytest.raises(ValueError) as refused:
        ledger.give(1)
    assert str(refused.value) == "load ledger gives back 1 bytes but holds only 0"
    ledger.take(10)
    with pytest.raises(ValueError) as refused:
        ledger.give(11)
    assert str(refused.value) == "load ledger gives back 11 bytes but holds only 10"
    ledger.give(10)
    with pytest.raises(TypeError):
        Ledger()  # every ledger is named by its maker: there is no default to be wrong


def test_a_window_counts_from_what_is_held_when_it_opens():
    ledger = Ledger("t")
    ledger.take(100)
    with ledger.window() as window:
        assert (window.start, window.peak, window.overhead) == (100, 100, 0)
        ledger.take(50)
        ledger.give(120)
        ledger.take(10)
    assert (window.start, window.peak, window.overhead) == (100, 150, 50)
    ledger.take(1000)  # after the window closed: not its business
    assert window.peak == 150
