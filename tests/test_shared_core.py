"""The decisions of Dicts and Queues (``shared_core.py``), without a control plane."""

from __future__ import annotations

import pytest

from nbscale_server.shared_core import (
    DICT,
    PARTITION_ITEMS_MAX,
    QUEUE,
    QUEUE_ITEM_MAX,
    Getter,
    Item,
    PartitionExpiry,
    Registry,
    SharedDict,
    SharedError,
    SharedQueue,
    check_name,
    check_partition_ttl,
    ungot_items,
)


def getter(
    got: list[list[Item]], n: int = 1, partition: str = "", deadline: float | None = None
) -> Getter:
    return Getter(partition, n, deadline, got.append, b"caller", 1)


def test_a_put_serves_the_oldest_waiting_getter_of_its_partition_first():
    q = SharedQueue("qu-1", "jobs")
    first: list[list[Item]] = []
    second: list[list[Item]] = []
    other: list[list[Item]] = []
    q.getters += [getter(first), getter(other, partition="p"), getter(second, n=5)]
    made, served = q.put("", [b"a", b"b", b"c"])
    assert [i.value for i in made] == [b"a", b"b", b"c"]
    assert [(g.n, [i.value for i in items]) for g, items in served] == [
        (1, [b"a"]),
        (5, [b"b", b"c"]),
    ]
    assert [g.partition for g in q.getters] == ["p"]  # still waiting
    assert q.length(None) == 0


def test_take_is_fifo_and_put_back_undoes_it():
    q = SharedQueue("qu-1", None)
    q.put("", [b"1", b"2", b"3"])
    taken = q.take("", 2)
    assert [i.value for i in taken] == [b"1", b"2"]
    q.put_back("", taken)
    assert [i.value for i in q.take("", 5)] == [b"1", b"2", b"3"]
    assert q.partitions == {}


def test_items_given_back_by_a_withdrawn_get_keep_their_places_and_serve_waiting_getters():
    q = SharedQueue("qu-1", None)
    q.put("", [b"1", b"2", b"3"])
    withdrawn = q.take("", 2)  # answered to a get whose caller had stopped waiting
    q.put("", [b"4"])
    given_back = ungot_items(q, "", [i.seq for i in withdrawn], [i.value for i in withdrawn])
    waiting: list[list[Item]] = []
    q.getters.append(getter(waiting))
    served = q.unget("", given_back)
    assert [[i.value for i in items] for _, items in served] == [[b"1"]]
    assert [i.value for i in q.take("", 5)] == [b"2", b"3", b"4"]
    # only what was taken from this queue comes back, and once
    q.put("", [b"5"])
    held = q.partitions[""][0].seq
    for seqs in ([held], [q.next_seq], [0], ["1"], [1, 2]):
        with pytest.raises(SharedError, match="unget"):
            ungot_items(q, "", seqs, [b"x"])


def test_getters_expire_at_their_deadline_only():
    q = SharedQueue("qu-1", None)
    got: list[list[Item]] = []
    q.getters += [getter(got, deadline=10.0), getter(got, deadline=None)]
    assert q.expired(9.9) == []
    assert [g.deadline for g in q.expired(10.0)] == [10.0]
    assert len(q.getters) == 1


def test_queue_limits_are_modals():
    q = SharedQueue("qu-1", None)
    with pytest.raises(SharedError, match=r"over the Queue limit of 1\.0 MiB"):
        q.check_put("", [b"x" * (QUEUE_ITEM_MAX + 1)])
    with pytest.raises(SharedError, match="over 64 bytes"):
        q.check_put("p" * 65, [b"x"])
    q.put("", [b"x"] * (PARTITION_ITEMS_MAX - 1))
    assert q.check_put("", [b"x"]) is True
    assert q.check_put("", [b"x", b"y"]) is False  # full: the client waits or raises Full


def test_dict_values_over_100_mib_are_refused():
    d = SharedDict("di-1", "d")
    d.check_values([b"x" * (100 << 20)])
    with pytest.raises(SharedError, match=r"100\.0 MiB"):
        d.check_values([b"x" * ((100 << 20) + 1)])


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "é", "a/b"])
def test_bad_names_are_refused(name: str):
    with pytest.raises(SharedError, match="is not a valid"):
        check_name(DICT, name)


def test_registry_finds_by_name_and_kind_and_says_what_is_missing():
    r = Registry()
    d = r.make(DICT, "same")
    q = r.make(QUEUE, "same")
    eph = r.make(QUEUE, None, owner=b"k1")
    assert r.named(DICT, "same") is d and r.named(QUEUE, "same") is q
    assert r.ephemeral_of(b"k1") == [eph]
    r.remove(d)
    with pytest.raises(SharedError, match="Dict 'same' does not exist"):
        r.get(DICT, d.object_id, "'same'")
    with pytest.raises(SharedError):
        r.get(DICT, q.object_id, "'same'")  # a Queue's id is no Dict's


def test_a_partition_is_due_its_ttl_after_its_last_put():
    expiry = PartitionExpiry()
    expiry.touch("q1", "a", 10.0)
    expiry.touch("q1", "b", 5.0)
    expiry.touch("q1", "a", 20.0)  # a later put: later
    expiry.touch("q1", "b", 3.0)  # a shorter ttl: sooner
    assert expiry.due(2.9) == []
    assert expiry.due(3.0) == [("q1", "b")]
    assert expiry.due(19.0) == []  # "a" moved to 20
    expiry.ensure("q1", "a", 100.0)  # has a time: kept
    assert expiry.due(20.0) == [("q1", "a")]
    assert expiry.due(1e9) == []
    assert check_partition_ttl(None) == 86400.0
    for bad in (0, -1, 86401, "10", True):
        with pytest.raises(SharedError, match="partition_ttl"):
            check_partition_ttl(bad)
