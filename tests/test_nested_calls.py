"""Functions that call functions, on real worker processes: every nested call reaches the
control plane of its caller (``nested_app.py`` holds the functions and the checks)."""

from __future__ import annotations

import nested_app


def test_nested_remote_reaches_the_callers_control_plane():
    nested_app.check_nested_remote()


def test_nested_call_from_async_code():
    nested_app.check_nested_call_from_async_code()


def test_nested_map_and_stats():
    nested_app.check_nested_map()


def test_spawn_on_a_worker_and_from_id_both_ways():
    nested_app.check_spawn_and_from_id()


def test_gathered_spawns_on_a_worker_are_children_of_its_input():
    nested_app.check_gathered_spawns_on_a_worker()


def test_spawn_map_on_a_worker():
    nested_app.check_spawn_map_on_a_worker()


def test_max_containers_holds_across_nested_calls():
    nested_app.check_max_containers_across_nested_calls()


def test_cancelling_a_parent_cancels_its_spawned_children():
    nested_app.check_cancelling_a_parent_cancels_its_children()


def test_cancelling_a_parent_cancels_the_map_it_waits_on():
    nested_app.check_cancelling_a_parent_cancels_the_map_it_waits_on()


def test_recursive_fan_out_three_levels():
    nested_app.check_recursive_fan_out()


def test_a_function_calling_itself_with_max_containers_1_completes():
    nested_app.check_self_call_with_one_container()


def test_a_deadlock_where_slots_cannot_be_lent_fails_fast():
    nested_app.check_unlendable_deadlock_fails_fast()
