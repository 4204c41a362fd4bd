"""The CPU budget: empty cameras only look for someone, occupied ones get their rates,
load lowers rates down to the floors, and every frame says what ran on it."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

from facemoment.core.config import BudgetConfig, Config, ConfigError, load_config
from facemoment.core.records import CameraRates
from facemoment.core.types import Face, Frame, FrameObservations, FramePresence, Observation
from operators.align import FrameGrouper
from operators.extraction.budget import Budget
from operators.extraction.orchestrator import Orchestrator, process_budget
from operators.fusion_step import Fuser

ALL = ("face", "pose", "gesture", "quality")
FRAME_NS = 33_333_333


def _frame(i: int, stream: str = "cam0", moving: bool = False, interval_ns: int = FRAME_NS) -> Frame:
    image = np.zeros((36, 64, 3), np.uint8)
    if moving:
        image[:, (i * 7) % 64:] = 200  # an edge that moves every frame
    return Frame(stream, i, i * interval_ns, image)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(budget: Budget, frames: List[Frame], depth: int = 0, faces_from: Optional[int] = None) -> Dict[int, Tuple[str, ...]]:
    plans = {}
    for frame in frames:
        chosen, _records = budget.plan(frame, ALL, depth)
        plans[frame.frame_id] = chosen
        if "face" in chosen:
            budget.saw_face(frame.stream_id, frame.t_src_ns, faces_from is not None and frame.frame_id >= faces_from)
    return plans


def test_an_empty_still_camera_runs_only_face_and_quality_at_the_still_rate():
    budget = Budget(BudgetConfig(still_fps=2.0, idle_fps=10.0), ALL, live=False)
    plans = _run(budget, [_frame(i) for i in range(60)])  # 2 s at 30 fps, nobody, no motion
    ran = [i for i, chosen in plans.items() if chosen]
    assert all(set(plans[i]) == {"face", "quality"} for i in ran)
    assert len(ran) == 4  # 2 fps over 2 s


def test_motion_raises_an_empty_camera_to_the_idle_rate():
    budget = Budget(BudgetConfig(still_fps=1.0, idle_fps=10.0), ALL, live=False)
    plans = _run(budget, [_frame(i, moving=True) for i in range(60)])
    assert 18 <= sum(1 for chosen in plans.values() if chosen) <= 21  # about 10 fps over 2 s


def test_someone_found_gives_the_camera_every_extractor_until_the_hold_passes():
    settings = BudgetConfig(still_fps=2.0, idle_fps=10.0, occupied_hold_s=1.0)
    budget = Budget(settings, ALL, live=False)
    frames = [_frame(i) for i in range(150)]
    plans = {}
    for frame in frames:  # face finds someone on frames 0-44 only
        chosen, _ = budget.plan(frame, ALL, 0)
        plans[frame.frame_id] = chosen
        if "face" in chosen:
            budget.saw_face("cam0", frame.t_src_ns, frame.frame_id < 45)
    assert plans[0] == ("face", "quality")  # nobody known yet
    assert all(plans[i] == ALL for i in range(1, 45))
    # Occupied for 1 s after the last face (frame 44 at 1.47 s), then empty again.
    assert all(plans[i] == ALL for i in range(45, 74))
    assert all(set(plans[i]) <= {"face", "quality"} for i in range(76, 150))


def test_rates_are_in_event_time_so_a_lower_input_rate_gets_the_same_schedule_in_seconds():
    def run_times(interval_ns: int, count: int) -> List[int]:
        budget = Budget(BudgetConfig(still_fps=2.0), ALL, live=False)
        return [f.t_src_ns for f in (_frame(i, interval_ns=interval_ns) for i in range(count)) if budget.plan(f, ALL, 0)[0]]

    at_30 = run_times(FRAME_NS, 90)
    at_10 = run_times(3 * FRAME_NS, 30)
    assert len(at_30) == len(at_10) == 6
    assert all(abs(a - b) <= 3 * FRAME_NS for a, b in zip(at_30, at_10))


def test_load_lowers_occupied_rates_one_level_at_a_time_down_to_the_floors_and_back():
    clock = _Clock()
    settings = BudgetConfig(high_water=4, step_s=0.5, relax_s=2.0, floor_fps=["face=10", "pose=5", "gesture=5", "quality=5"])
    budget = Budget(settings, ALL, live=True, clock=clock)
    budget.saw_face("cam0", 0, True)
    budget.saw_face("cam0", 10_000_000_000, True)  # occupied throughout
    levels = []
    for i in range(60):
        clock.now = i * 0.1
        budget.plan(_frame(i), ALL, depth=9)  # the lanes are far behind
        levels.append(budget.level)
    assert levels[0] == 1 and levels[-1] > levels[10] > 1  # a level per step_s, not at once
    # At a high level each extractor still runs at its floor.
    runs: Dict[str, int] = {name: 0 for name in ALL}
    for i in range(60, 120):
        clock.now = 6.0 + (i - 60) * 0.001  # no time to step again
        chosen, _ = budget.plan(_frame(i), ALL, depth=9)
        for name in chosen:
            runs[name] += 1
    assert runs["face"] >= 19 and runs["pose"] >= 9 and runs["quality"] >= 9  # 2 s at >= floor
    # Short queues for relax_s bring the level down again.
    top = budget.level
    for i in range(120, 300):
        clock.now = 7.0 + (i - 120) * 0.1
        budget.plan(_frame(i), ALL, depth=0)
    assert budget.level < top


def test_a_missed_deadline_raises_the_level_though_the_queues_look_short():
    # The lanes can miss a frame's deadline with fewer jobs queued than high_water.
    clock = _Clock()
    budget = Budget(BudgetConfig(high_water=4, step_s=0.5, relax_s=2.0), ALL, live=True, clock=clock)
    budget.saw_face("cam0", 10_000_000_000, True)
    for i in range(10):
        clock.now = i * 0.1
        budget.plan(_frame(i), ALL, depth=2)
    assert budget.level == 0
    budget.missed_deadline()
    clock.now = 1.0
    budget.plan(_frame(10), ALL, depth=2)
    assert budget.level == 1
    # Once: the miss is spent, and short queues later bring the level back.
    for i in range(11, 60):
        clock.now = 1.0 + (i - 10) * 0.1
        budget.plan(_frame(i), ALL, depth=0)
    assert budget.level == 0


def test_load_is_lane_busy_time_so_several_cameras_frames_at_once_are_no_overload():
    clock = _Clock()
    budget = Budget(BudgetConfig(high_water=4, busy_high=0.9, busy_low=0.7, step_s=0.5, relax_s=2.0), ALL,
                    live=True, clock=clock)
    cams = ["cam0", "cam1", "cam2", "cam3"]
    for cam in cams:
        budget.saw_face(cam, 100_000_000_000, True)
    for i in range(20):
        clock.now = i * 0.1
        for cam in cams:
            budget.plan(_frame(i, cam), ALL, depth=4, busy=0.6)  # four frames queued, the lane keeps up
    assert budget.level == 0
    clock.now = 2.0
    budget.plan(_frame(20, "cam0"), ALL, depth=1, busy=0.95)  # a lane busy all the time
    assert budget.level == 1
    for i in range(21, 40):
        clock.now = 2.0 + (i - 20) * 0.1
        budget.plan(_frame(i, "cam0"), ALL, depth=1, busy=0.8)  # neither overloaded nor calm
    assert budget.level == 1
    for i in range(40, 70):
        clock.now = 4.0 + (i - 40) * 0.1
        budget.plan(_frame(i, "cam0"), ALL, depth=0, busy=0.5)
    assert budget.level == 0


def test_under_load_an_empty_camera_keeps_its_idle_rate():
    # A rider coming in must be found within one idle period, whatever the load.
    def runs(level: int) -> int:
        budget = Budget(BudgetConfig(idle_fps=15.0, still_fps=2.0), ALL, live=False)
        budget.level = level
        return sum("face" in budget.plan(_frame(i, moving=True), ALL, 0)[0] for i in range(90))

    assert 40 <= runs(0) <= 47 and runs(8) == runs(0)  # 15 fps over 3 s


def test_files_are_not_load_controlled():
    clock = _Clock()
    budget = Budget(BudgetConfig(), ALL, live=False, clock=clock)
    for i in range(100):
        clock.now = i
        budget.plan(_frame(i), ALL, depth=50)
    assert budget.level == 0


def test_each_change_of_a_cameras_schedule_is_a_record_with_counts():
    budget = Budget(BudgetConfig(still_fps=2.0, occupied_hold_s=0.5), ALL, live=False)
    records: List[CameraRates] = []
    for i in range(90):
        frame = _frame(i)
        chosen, recs = budget.plan(frame, ALL, 0)
        records += recs
        if "face" in chosen:
            budget.saw_face("cam0", frame.t_src_ns, 30 <= i < 40)
    reasons = [r.reason for r in records]
    assert reasons[0] == "empty" and "occupied" in reasons and reasons[-1] == "empty"
    occupied = next(r for r in records if r.reason == "occupied")
    assert occupied.rates_fps["pose"] > 0 and records[0].rates_fps["pose"] == 0
    assert records[-1].frames <= 90 and records[-1].runs["face"] >= 1


class _Quick:
    def __init__(self, name: str, faces: bool = False):
        self.name = name
        self.faces = faces

    def extract(self, frame: Frame) -> Observation:
        from facemoment.core.types import Face

        faces = [Face(0, 0.9, (0.3, 0.3, 0.3, 0.3))] if self.name == "face" and self.faces else []
        return Observation(self.name, frame.stream_id, frame.frame_id, frame.t_src_ns, faces=faces)


def test_the_orchestrator_runs_what_the_budget_chose_and_the_presence_says_so():
    cfg = load_config(env={})
    orch = Orchestrator(cfg, lambda name, _c: _Quick(name), Budget(BudgetConfig(still_fps=1.0), cfg.extract.extractors, False))
    try:
        out = orch.run([_frame(i) for i in range(30)])
    finally:
        orch.close()
    presences = [o for o in out if isinstance(o, FramePresence)]
    assert len(presences) == 30
    ran = [p for p in presences if p.scheduled]
    assert len(ran) == 1 and set(ran[0].scheduled) == {"face", "quality"}
    sources = {(o.frame_id, o.source) for o in out if isinstance(o, Observation)}
    assert sources == {(ran[0].frame_id, "face"), (ran[0].frame_id, "quality")}
    assert any(isinstance(o, CameraRates) for o in out)


class _Faces:
    """A face extractor that finds the given faces on every frame."""

    def __init__(self, name: str, faces: List[Face]):
        self.name = name
        self.faces = faces

    def extract(self, frame: Frame) -> Observation:
        faces = self.faces if self.name == "face" else []
        return Observation(self.name, frame.stream_id, frame.frame_id, frame.t_src_ns, faces=list(faces))


@pytest.mark.parametrize("face,occupied", [
    (Face(0, 0.9, (0.4, 0.3, 0.2, 0.25), area_ratio=0.05), True),
    (Face(0, 0.65, (0.4, 0.3, 0.2, 0.25), area_ratio=0.05), False),  # below gate.min_confidence (0.7)
    (Face(0, 0.9, (0.1, 0.4, 0.08, 0.1), area_ratio=0.008), False),  # below gate.min_area_ratio (0.01)
])
def test_only_a_face_that_could_open_the_gate_occupies_a_camera(face, occupied):
    cfg = load_config(env={})
    budget = Budget(BudgetConfig(still_fps=30.0), cfg.extract.extractors, False)
    orch = Orchestrator(cfg, lambda name, _c: _Faces(name, [face]), budget)
    try:
        out = [o for i in range(10) for o in orch.run([_frame(i)])]  # face's result is in before the next frame
    finally:
        orch.close()
    ran = {o.source for o in out if isinstance(o, Observation)}
    assert ("pose" in ran) is occupied and "face" in ran


def test_alignment_expects_what_ran_and_fusion_carries_the_rest_within_max_carry():
    grouper = FrameGrouper(list(ALL), 100.0)
    items = [
        FramePresence("cam0", 0, 0, scheduled=("face", "quality")),
        Observation("face", "cam0", 0, 0),
        Observation("quality", "cam0", 0, 0),
        FramePresence("cam0", 1, FRAME_NS, scheduled=()),
    ]
    fos = [fo for fo in grouper((0, items)) if isinstance(fo, FrameObservations)]
    assert fos[0].missing == () and set(fos[0].not_due) == {"pose", "gesture"}
    assert fos[1].missing == () and set(fos[1].not_due) == set(ALL)
    cfg = Config()
    cfg.budget.mode = "on"
    cfg.budget.max_carry_s = 0.5
    fuser = Fuser(cfg)
    state, _ = fuser(None, fos[0])
    state, _ = fuser(state, fos[1])
    assert set(fos[1].observations) == {"face", "quality"}  # carried from frame 0
    late = FrameObservations("cam0", 30, 30 * FRAME_NS, {}, not_due=ALL)
    fuser(state, late)
    assert set(late.missing) == set(ALL)  # 1 s later: too old to carry


def test_a_declared_rate_frame_carries_within_max_carry_when_the_budget_skipped_the_due_one():
    # pose declared every 2nd frame; under load the budget skipped it on frame 2 too, so
    # on frame 3 the last pose result is from frame 0, three frames back: carried, not missing.
    cfg = load_config(env={"FACEMOMENT__EXTRACT__EVERY": "pose=2"})
    cfg.budget.mode = "on"
    cfg.budget.max_carry_s = 0.5
    fuser = Fuser(cfg)
    pose = Observation("pose", "cam0", 0, 0)
    first = FrameObservations("cam0", 0, 0, {"pose": pose})
    state, _ = fuser(None, first)
    skipped = FrameObservations("cam0", 2, 2 * FRAME_NS, {}, not_due=("pose",))
    state, _ = fuser(state, skipped)
    off_rate = FrameObservations("cam0", 3, 3 * FRAME_NS, {}, not_due=("pose",))
    state, records = fuser(state, off_rate)
    assert off_rate.missing == () and off_rate.observations["pose"].frame_id == 3
    late = FrameObservations("cam0", 31, 31 * FRAME_NS, {}, not_due=("pose",))
    fuser(state, late)
    assert late.missing == ("pose",)  # a second later: too old to carry
    unbudgeted = Fuser(load_config(env={"FACEMOMENT__EXTRACT__EVERY": "pose=2"}))
    state, _ = unbudgeted(None, FrameObservations("cam0", 0, 0, {"pose": pose}))
    off_rate = FrameObservations("cam0", 3, 3 * FRAME_NS, {}, not_due=("pose",))
    unbudgeted(state, off_rate)
    assert off_rate.missing == ("pose",)  # without a budget the declared rate alone decides


@pytest.mark.parametrize("key,value", [("budget.mode", "sometimes"), ("budget.idle_fps", "0"), ("budget.floor_fps", "face=fast")])
def test_bad_budget_settings_are_refused(key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError):
        load_config(env={f"FACEMOMENT__{section.upper()}__{name.upper()}": value})


def test_a_camera_table_sets_its_own_budget_and_the_others_keep_the_section(tmp_path):
    toml = tmp_path / "park.toml"
    toml.write_text(
        '[budget]\nmode = "on"\nstill_fps = 2.0\n'
        '[cameras.gate]\nsource = "sample"\nstill_fps = 5.0\nfloor_fps = ["face=15"]\n'
        '[cameras.pit]\nsource = "sample"\n'
    )
    cfg = load_config(env={}, path=toml)
    budget = process_budget(cfg, live=False)
    assert budget is not None
    # Nobody and no motion on either: each looks at its own still rate.
    gate = _run(budget, [_frame(i, "gate") for i in range(60)])
    pit = _run(budget, [_frame(i, "pit") for i in range(60)])
    assert sum(1 for c in gate.values() if c) == 10  # 5 fps over 2 s
    assert sum(1 for c in pit.values() if c) == 4  # the section's 2 fps
    assert budget.settings.floor_fps == BudgetConfig().floor_fps


@pytest.mark.parametrize("entry", ['still_fps = 0', 'idle_fps = nan', 'floor_fps = ["face"]', 'motion_threshold = 300'])
def test_a_bad_camera_budget_setting_names_the_camera(tmp_path, entry):
    toml = tmp_path / "bad.toml"
    toml.write_text(f'[cameras.gate]\nsource = "sample"\n{entry}\n')
    with pytest.raises(ConfigError, match=r"cameras\.gate\." + entry.split(" ")[0]):
        load_config(env={}, path=toml)


def test_lane_load_is_the_busiest_lanes_share_of_each_half_second():
    from types import SimpleNamespace

    from operators.extraction.lanes import LaneLoad

    now = [0]
    face, pose = SimpleNamespace(busy_ns=0), SimpleNamespace(busy_ns=0)
    load = LaneLoad({"face": face, "pose": pose}, span_s=0.5, clock=lambda: now[0])
    face.busy_ns, pose.busy_ns = 100_000_000, 450_000_000
    now[0] = 200_000_000
    assert load.sample() == 0.0  # not half a second yet: the last figure stands
    now[0] = 500_000_000
    assert load.sample() == pytest.approx(0.9)
    face.busy_ns, pose.busy_ns = 300_000_000, 550_000_000
    now[0] = 1_000_000_000
    assert load.sample() == pytest.approx(0.4)



def _occupied_budget(live: bool, **settings) -> Budget:
    budget = Budget(BudgetConfig(**settings), ALL, live=live, clock=_Clock())
    budget.saw_face("cam0", 0, True)
    budget.saw_face("cam0", 100_000_000_000, True)  # occupied throughout
    return budget


def test_a_lane_behind_defers_its_extractor_down_to_its_floor_and_counts_it():
    # Pose's lane could not finish a job before the deadline on any frame: pose runs at
    # its floor (5 fps: every 6th frame at 30 fps) and fusion carries it between.
    budget = _occupied_budget(True, floor_fps=["face=10", "pose=5", "gesture=5", "quality=5"], step_s=3600)
    pose_ran = [i for i in range(30) if "pose" in budget.plan(_frame(i), ALL, 0, behind=("pose",))[0]]
    assert pose_ran == [0, 6, 12, 18, 24]  # 1 s at 5 fps: the floor, no lower
    cam = budget._cameras["cam0"]
    # Every frame pose was due on but not run: all but its 5 runs and the frames right
    # after them once level 1 (a period of 2 frames) was in force (7, 13, 19, 25).
    assert cam.deferred == {"pose": 30 - 5 - 4}
    # A lane behind is overload: the level rose (once: step_s is long), and the others
    # run at its rate, not deferred: frames 0 and 1, then every 2nd frame.
    assert budget.level == 1 and cam.runs["face"] == cam.runs["gesture"] == 2 + 14


def test_deferral_keeps_a_result_within_max_carry_when_the_extractor_has_no_floor():
    budget = _occupied_budget(True, floor_fps=["face=10"], max_carry_s=0.5, step_s=3600)
    pose_ran = [i for i in range(60) if "pose" in budget.plan(_frame(i), ALL, 0, behind=("pose",))[0]]
    gaps = [b - a for a, b in zip(pose_ran, pose_ran[1:])]
    assert pose_ran[0] == 0 and gaps and max(gaps) <= 15  # 0.5 s at 30 fps


def test_the_deferred_runs_are_in_the_camera_rates_records():
    budget = _occupied_budget(True, step_s=3600)
    records: List[CameraRates] = []
    for i in range(200):  # past the 5 s report period
        records.extend(budget.plan(_frame(i), ALL, 0, behind=("gesture",) if i < 20 else ())[1])
    last = records[-1]
    assert last.deferred.get("gesture", 0) > 0 and "pose" not in last.deferred
    assert last.deferred["gesture"] + last.runs["gesture"] >= 20


def test_files_and_empty_cameras_never_defer():
    # A file keeps every extractor (no load control), whatever the lanes say.
    budget = _occupied_budget(False)
    assert all("pose" in budget.plan(_frame(i), ALL, 0, behind=("pose",))[0] for i in range(30))
    # An empty camera's lookout is how a rider is found: face runs at the idle rate.
    empty = Budget(BudgetConfig(still_fps=10.0, idle_fps=10.0), ALL, live=True, clock=_Clock())
    face_ran = sum("face" in empty.plan(_frame(i), ALL, 0, behind=("face",))[0] for i in range(30))
    assert face_ran >= 9


def test_a_lanes_expected_wait_counts_the_running_job_and_the_queue():
    import threading
    import time

    from operators.extraction.lanes import Job, Lane

    release = threading.Event()
    started = threading.Event()

    class Slow:
        def extract(self, frame):
            started.set()
            release.wait(10)
            return frame.frame_id

    lane = Lane("slow", Slow)
    try:
        lane.ready.wait(10)
        # Nothing run yet: no cost known, no wait.
        assert lane.expected_wait_ns(0) == 0
        # One run teaches the lane its cost.
        release.set()
        done = lane.submit(Job(_frame(0), None))
        assert done.future.result(10) == 0
        cost = lane._last_ns
        assert cost > 0 and lane.expected_wait_ns(time.perf_counter_ns()) == cost
        # A running job and one queued behind it: a new job waits for both.
        release.clear()
        started.clear()
        running = lane.submit(Job(_frame(1), None))
        assert started.wait(10)
        queued = lane.submit(Job(_frame(2), None))
        now = time.perf_counter_ns()
        wait = lane.expected_wait_ns(now)
        assert wait >= 2 * cost
        # A job running far longer than the usual cost makes the lane look that slow.
        later = now + 100 * cost + 1_000_000_000
        assert lane.expected_wait_ns(later) >= 2 * (later - lane._running_since)
        release.set()
        assert running.future.result(10) == 1 and queued.future.result(10) == 2
    finally:
        release.set()
        lane.close()


def test_a_settling_frame_interval_is_no_new_schedule_each_frame():
    # Three frames lost on the wire: the measured interval jumps, then settles back over
    # the next frames. The effective rates move a little on each; one record says so.
    budget = _occupied_budget(True, step_s=3600)
    for i in range(10):
        budget.plan(_frame(i), ALL, 0)
    budget.level = 1
    records: List[CameraRates] = []
    for i in list(range(10, 20)) + list(range(23, 60)):
        records.extend(budget.plan(_frame(i), ALL, 0)[1])
    # The rates settle over about 30 frames (a record on each before): a record per
    # move of over a tenth.
    assert 2 <= len(records) <= 5
    assert all(r.level == 1 for r in records)
    assert records[-1].rates_fps["pose"] >= 0.9 * 15


def test_a_missed_deadline_is_carried_within_the_floor_under_the_budget():
    # Pose was scheduled on frames 2 and 9 but missed the deadline: on frame 2 its result
    # from frame 0 (67 ms) keeps it at its 5 fps floor, so fusion fills it in and says so;
    # on frame 9 the last result is 300 ms old, past the floor: pose stays missing.
    cfg = Config()
    cfg.budget.mode = "on"
    cfg.budget.floor_fps = ["pose=5"]
    fuser = Fuser(cfg)
    pose = Observation("pose", "cam0", 0, 0)
    state, _ = fuser(None, FrameObservations("cam0", 0, 0, {"pose": pose}))
    missed = FrameObservations("cam0", 2, 2 * FRAME_NS, {}, missing=("pose",))
    state, records = fuser(state, missed)
    assert missed.missing == () and missed.observations["pose"].frame_id == 2
    carries = [r for r in records if r.TYPE == "frame_carry"]
    assert [(r.source, r.from_frame_id, r.missed) for r in carries] == [("pose", 0, True)]
    too_old = FrameObservations("cam0", 9, 9 * FRAME_NS, {}, missing=("pose",))
    state, records = fuser(state, too_old)
    assert too_old.missing == ("pose",) and "pose" not in too_old.observations
    assert not [r for r in records if r.TYPE == "frame_carry"]  # its frame_drop record says it
    # Without a budget a missed deadline is a gap, as before.
    plain = Fuser(Config())
    state, _ = plain(None, FrameObservations("cam0", 0, 0, {"pose": pose}))
    missed = FrameObservations("cam0", 2, 2 * FRAME_NS, {}, missing=("pose",))
    plain(state, missed)
    assert missed.missing == ("pose",)


def test_a_missed_deadline_is_carried_within_a_cameras_own_floor(tmp_path):
    path = tmp_path / "cameras.toml"
    path.write_text('[budget]\nmode = "on"\nfloor_fps = ["pose=5"]\n'
                    '[cameras.slow]\nsource = "sample"\nfloor_fps = ["pose=2"]\n'
                    '[cameras.fast]\nsource = "sample"\n')
    fuser = Fuser(load_config(env={}, path=path))
    results = {}
    for stream in ("slow", "fast"):
        state, _ = fuser(None, FrameObservations(stream, 0, 0, {"pose": Observation("pose", stream, 0, 0)}))
        missed = FrameObservations(stream, 12, 12 * FRAME_NS, {}, missing=("pose",))  # 400 ms on
        fuser(state, missed)
        results[stream] = missed.missing
    assert results == {"slow": (), "fast": ("pose",)}


def test_a_cameras_first_occupied_frame_runs_what_its_declared_rate_skips_if_nothing_is_carried():
    # Pose is declared on even frames. The camera becomes occupied on frame 5 (odd): pose
    # has no result to carry there, so it runs; from then on its declared rate decides.
    budget = Budget(BudgetConfig(still_fps=30.0, idle_fps=30.0), ALL, live=False)
    plans = {}
    for i in range(12):
        frame = _frame(i)
        declared = tuple(n for n in ALL if n != "pose" or i % 2 == 0)
        skipped = tuple(n for n in ALL if n not in declared)
        plans[i] = budget.plan(frame, declared, 0, skipped=skipped)[0]
        if "face" in plans[i]:
            budget.saw_face("cam0", frame.t_src_ns, i >= 4)
    assert [i for i in range(12) if "pose" in plans[i]] == [5, 6, 8, 10]
    # Occupied again within the floor's period of its last pose run: carried, not run.
    budget.saw_face("cam0", 0, False)
    cam = budget._cameras["cam0"]
    cam.occupied_until_ns, cam.was_occupied = None, False
    quiet = budget.plan(_frame(12), ("face", "gesture", "quality"), 0, skipped=("pose",))[0]
    assert "pose" not in quiet  # empty: pose does not run at all
    budget.saw_face("cam0", 12 * FRAME_NS, True)
    back = budget.plan(_frame(13), ("face", "gesture", "quality"), 0, skipped=("pose",))[0]
    assert "pose" not in back  # its frame-10 result is 100 ms old: within its 5 fps floor


# Cost per run (s) as the lanes measured it. With pose and hands on every other frame
# (lean), 30 fps costs 0.89 cores, level 1 (15 fps) 0.72, level 2 0.39: face at 10 fps,
# pose and hands at 7.5.
COSTS = {"face": 0.010, "pose": 0.025, "gesture": 0.012, "quality": 0.001}
LEAN = {"pose": 2, "gesture": 2}


def _occupied_runs(budget: Budget, frames: range, costs=COSTS, stream: str = "cam0") -> Dict[str, int]:
    runs = {name: 0 for name in ALL}
    for i in frames:
        declared = tuple(n for n in ALL if i % LEAN.get(n, 1) == (1 if n == "gesture" else 0))
        chosen, _ = budget.plan(_frame(i, stream), declared, 0, costs=costs)
        for name in chosen:
            runs[name] += 1
    return runs


def _lean_budget(settings: BudgetConfig, live: bool = True) -> Budget:
    budget = Budget(settings, ALL, live=live, clock=_Clock(), declared=lambda sid, name: LEAN.get(name, 1))
    budget.saw_face("cam0", 100_000_000_000, True)
    return budget


def _cores(runs: Dict[str, int], seconds: float) -> float:
    return sum(COSTS[name] * n for name, n in runs.items()) / seconds


def test_an_occupied_camera_is_held_to_its_allowance_by_the_lowest_level_that_fits():
    free = _occupied_runs(_lean_budget(BudgetConfig()), range(60))
    assert _cores(free, 2.0) > 0.6  # every frame's face, pose and hands on every other one
    budget = _lean_budget(BudgetConfig(camera_cores=0.4))
    held = _occupied_runs(budget, range(60))
    assert _cores(held, 2.0) <= 0.4
    assert budget._cameras["cam0"].own_level == 2 and budget.level == 0  # the allowance, not load
    # Each extractor still runs at least at its floor.
    assert held["face"] >= 19 and held["pose"] >= 9 and held["gesture"] >= 9 and held["quality"] >= 9
    # Dearer runs (a busier box) take it further, to the floors and no further.
    budget.plan(_frame(60), ALL, 0, costs={name: 10 * c for name, c in COSTS.items()})
    floors = budget._cameras["cam0"].own_level
    assert floors > 2 and floors < budget.settings.max_level
    # Cheaper runs bring the rates back up.
    _occupied_runs(budget, range(61, 70), costs={name: c / 4 for name, c in COSTS.items()})
    assert budget._cameras["cam0"].own_level == 0


def test_the_allowance_is_in_the_camera_rates_records_and_leaves_files_and_empty_cameras_alone():
    budget = _lean_budget(BudgetConfig(camera_cores=0.4))
    records = []
    for i in range(30):
        records += budget.plan(_frame(i), ALL, 0, costs=COSTS)[1]
    assert records[-1].reason == "allowance" and records[-1].level == 2
    assert records[-1].rates_fps["face"] == 10.0
    # The record says what the schedule costs: face and quality at 10 fps, pose and hands at 7.5.
    assert records[-1].cores == pytest.approx(10 * 0.011 + 7.5 * 0.037, abs=0.002)
    # A file keeps every declared run (no wall clock to hold it to).
    replay = _occupied_runs(_lean_budget(BudgetConfig(camera_cores=0.4), live=False), range(60))
    assert replay["face"] == 60
    # An empty camera's lookout is not held back: a rider coming in is found as fast.
    empty = Budget(BudgetConfig(camera_cores=0.01, idle_fps=15.0), ALL, live=True, clock=_Clock())
    plans = [empty.plan(_frame(i, "gate", moving=True), ALL, 0, costs=COSTS) for i in range(90)]
    assert 40 <= sum("face" in chosen for chosen, _ in plans) <= 47
    gate = [record for _, records in plans for record in records]
    assert gate[-1].cores == pytest.approx(15 * 0.011, abs=0.002)  # face and quality at the idle rate


def test_a_cameras_own_allowance_and_the_park_preset(tmp_path):
    toml = tmp_path / "park.toml"
    toml.write_text('preset = "realtime,lean,park"\n[cameras.gate]\nsource = "sample"\ncamera_cores = 1.5\n'
                    '[cameras.pit]\nsource = "sample"\n')
    cfg = load_config(env={}, path=toml)
    assert cfg.budget.camera_cores == 0.4
    budget = process_budget(cfg, live=True)
    assert budget is not None
    for sid in ("gate", "pit"):
        budget.saw_face(sid, 100_000_000_000, True)
    gate = _occupied_runs(budget, range(60), stream="gate")
    pit = _occupied_runs(budget, range(60), stream="pit")
    # lean's declared rates come from the configuration: pose on every other frame.
    assert gate["face"] == 60 and gate["pose"] == 30
    assert _cores(pit, 2.0) <= 0.4 < _cores(gate, 2.0)


def test_in_the_park_preset_an_empty_camera_looks_at_5_fps_while_something_moves():
    cfg = load_config(env={}, presets=["realtime", "lean", "park"])
    budget = Budget(cfg.budget, ALL, live=False)
    runs = sum("face" in budget.plan(_frame(i, moving=True), ALL, 0)[0] for i in range(90))
    assert 14 <= runs <= 16  # 5 fps over 3 s (15 at the section's default rate)


def test_an_empty_cameras_missed_lookout_runs_again_on_the_next_frame_once():
    budget = Budget(BudgetConfig(still_fps=2.0), ALL, live=True, clock=_Clock())
    first = budget.plan(_frame(0), ALL, 0)[0]
    assert "face" in first and "face" not in budget.plan(_frame(1), ALL, 0)[0]
    budget.missed_deadline("cam0", _frame(0).t_src_ns, ["face"])
    assert set(budget.plan(_frame(2), ALL, 0)[0]) == {"face"}  # again, without waiting 0.5 s
    budget.missed_deadline("cam0", _frame(2).t_src_ns, ["face"])
    assert budget.plan(_frame(3), ALL, 0)[0] == ()  # a missed redo waits for the still rate
    # An occupied camera's missed run is fusion's to carry, not redone.
    budget.saw_face("cam0", _frame(3).t_src_ns, True)
    budget.plan(_frame(4), ALL, 0)
    budget.missed_deadline("cam0", _frame(4).t_src_ns, ["pose"])
    assert budget._cameras["cam0"].redo == set()
