"""FILM output timestamps and call schedules, in exact arithmetic (no model involved)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from comfyui_webtv.nodes.film import timing


def test_multiplier_3_places_frames_at_thirds():
    times = timing.multiplier_times(5, 3)
    assert len(times) == 13 and times == [Fraction(k, 3) for k in range(13)]
    plan = timing.make_plan(times, 5, "auto", honours_t=True, bisect_depth=4)
    assert plan.strategy == "single_shot"
    assert [f.time for f in plan.frames] == times  # every frame shows exactly its time
    jobs = [j for levels in plan.jobs.values() for level in levels for j in level]
    assert sorted({j.t for j in jobs}) == [Fraction(1, 3), Fraction(2, 3)]  # not 0.5 and 0.75
    assert len(jobs) == 4 * 2


def test_8_to_24_fps_keeps_the_duration_at_exact_output_periods():
    times = timing.rate_times(8, Fraction(8), Fraction(24))
    assert len(times) == 24  # 1 s in, 1 s out
    assert [t / 8 for t in times] == [Fraction(k, 24) for k in range(24)]  # seconds = k / 24 exactly
    frames = timing.make_plan(times, 8, "single_shot", True, 4).frames
    assert [f.time for f in frames[:22]] == times[:22]
    assert all(f.hold and f.pair == 7 for f in frames[22:])  # past the last input frame: held


def test_24_to_60_fps_non_integer_ratio():
    times = timing.rate_times(24, timing.as_rate(24, "source_fps"), timing.as_rate(60, "target_fps"))
    assert len(times) == 60
    assert [t / 24 for t in times] == [Fraction(k, 60) for k in range(60)]
    frames = timing.make_plan(times, 24, "auto", True, 4).frames
    assert {f.t for f in frames if not f.hold} == {Fraction(k, 5) for k in range(5)}
    assert frames[3].pair == 1 and frames[3].t == Fraction(1, 5)  # 3 * 2/5 = 6/5


def test_ntsc_rates_are_exact_fractions():
    assert timing.as_rate(23.976, "source_fps") == Fraction(2997, 125)
    times = timing.rate_times(48, timing.as_rate(23.976, "s"), timing.as_rate(59.94, "t"))
    assert times[1] == Fraction(2997, 125) / Fraction(2997, 50) and len(times) == 120


def test_t_ignoring_weights_bisect_to_dyadic_times_only():
    times = timing.rate_times(8, Fraction(8), Fraction(24))  # targets 1/3 and 2/3 of each pair
    plan = timing.make_plan(times, 8, "auto", honours_t=False, bisect_depth=4)
    assert plan.strategy == "bisection"
    jobs = [j for levels in plan.jobs.values() for level in levels for j in level]
    assert jobs and all(j.t == Fraction(1, 2) for j in jobs)  # the model only ever makes midpoints
    for f in plan.frames:
        assert (f.t * 16).denominator == 1  # dyadic: a multiple of 1/16
        if not f.hold:
            assert abs(f.time - f.requested) <= Fraction(1, 32)
    assert {f.t for f in plan.frames if f.needs_model} == {Fraction(5, 16), Fraction(11, 16)}
    assert plan.report(Fraction(24))["max_time_error_frames"] == pytest.approx(1 / 48)
    # Each job reads frames that exist: inputs (0, 1) or results of an earlier level.
    for levels in plan.jobs.values():
        known = {Fraction(0), Fraction(1)}
        for level in levels:
            assert all(j.a in known and j.b in known for j in level)
            known |= {j.x for j in level}


def test_bisection_reaches_powers_of_two_exactly():
    times = timing.multiplier_times(3, 8)
    plan = timing.make_plan(times, 3, "bisection", honours_t=False, bisect_depth=3)
    assert [f.time for f in plan.frames] == times
    assert [len(level) for level in plan.jobs[0]] == [1, 2, 4]
    assert timing.call_count(plan.jobs) == 14


def test_auto_prefers_midpoints_only_when_they_cost_no_more():
    # x2: the same calls either way, so the trained midpoint. x4 / x8: bisection needs the features and flows
    # of every midpoint it makes, while one shot shares a pair's flows among all its times.
    assert timing.make_plan(timing.multiplier_times(4, 2), 4, "auto", True, 4).strategy == "bisection"
    for multiplier in (3, 4, 8):
        assert timing.make_plan(timing.multiplier_times(4, multiplier), 4, "auto", True, 4).strategy == "single_shot"


def test_work_counts_each_shared_part_once():
    single = timing.make_plan(timing.multiplier_times(4, 4), 4, "single_shot", True, 4)
    bisect = timing.make_plan(timing.multiplier_times(4, 4), 4, "bisection", True, 4)
    # 4 frames, 3 pairs, 3 frames made per pair; bisection adds a midpoint per pair and 3 flows per pair.
    assert timing.work(single.jobs) == {"features": 4, "flows": 3, "synthesize": 9}
    assert timing.work(bisect.jobs) == {"features": 7, "flows": 9, "synthesize": 9}
    assert single.report(None)["feature_frames"] == 4 and single.report(None)["flow_pairs"] == 3


def test_scene_cut_pairs_hold_the_earlier_frame():
    plan = timing.make_plan(timing.multiplier_times(4, 3), 4, "auto", True, 4, cut_pairs={1})
    held = [f for f in plan.frames if f.hold]
    assert [f.requested for f in held] == [Fraction(4, 3), Fraction(5, 3)]
    assert all(f.pair == 1 and f.time == 1 for f in held)
    assert 1 not in plan.jobs and plan.report(None)["scene_cuts_after_frames"] == [1]


def test_detect_cuts_from_luma_histograms():
    g = torch.Generator().manual_seed(0)
    dark = torch.rand(3, 32, 32, 3, generator=g) * 0.3
    light = 0.7 + torch.rand(3, 32, 32, 3, generator=g) * 0.3
    clip = torch.cat([dark, light])
    scores = timing.cut_scores(clip)
    assert scores[2] > 0.9 and scores[[0, 1, 3, 4]].max() < 0.2
    assert timing.detect_cuts(clip, 0.5) == {2}
    assert timing.detect_cuts(clip, 1.0) == set()


def test_bad_timing_inputs():
    with pytest.raises(ValueError, match="target_fps.*lower than source_fps"):
        timing.rate_times(8, Fraction(24), Fraction(8))
    with pytest.raises(ValueError, match="source_fps"):
        timing.as_rate(0, "source_fps")
    with pytest.raises(ValueError, match="single_shot.*ignore"):
        timing.make_plan(timing.multiplier_times(3, 3), 3, "single_shot", False, 4)
    with pytest.raises(ValueError, match="strategy"):
        timing.make_plan(timing.multiplier_times(3, 3), 3, "magic", True, 4)
    with pytest.raises(ValueError, match="scene_cut_threshold"):
        timing.detect_cuts(torch.zeros(2, 8, 8, 3), 1.5)
