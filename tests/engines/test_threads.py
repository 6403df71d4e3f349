"""The per-step thread chooser: fed step times on a fake clock, it must pick what those times favour."""

from __future__ import annotations

from garrison.engines.threads import ThreadChooser, bucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(chooser: ThreadChooser, clock: Clock, ns_per_token: dict[int, int], steps: int,
        n_tokens: int = 1, step_s: float = 0.01) -> list[int]:
    """Run `steps` steps whose cost per token is given per thread count; the choices made, in order."""
    chosen = []
    for _ in range(steps):
        threads = chooser.choose(n_tokens)
        chooser.record(n_tokens, threads, ns_per_token[threads] * n_tokens)
        clock.now += step_s
        chosen.append(threads)
    return chosen


def test_tries_each_count_then_keeps_the_faster() -> None:
    clock = Clock()
    chooser = ThreadChooser(2, clock=clock)
    quiet = run(chooser, clock, {2: 8_000_000, 1: 15_000_000}, 20)
    assert quiet[:6] == [2, 2, 2, 1, 1, 1]
    assert set(quiet[6:]) == {2}
    busy = ThreadChooser(2, clock=Clock())
    assert set(run(busy, busy.clock, {2: 33_000_000, 1: 16_000_000}, 20)[6:]) == {1}  # type: ignore[arg-type]


def test_one_slow_step_in_a_probe_does_not_decide() -> None:
    clock = Clock()
    chooser = ThreadChooser(2, clock=clock)
    for ns in (8_000_000, 40_000_000, 8_000_000):  # all cores, one step preempted
        chooser.record(1, chooser.choose(1), ns)
    for _ in range(3):
        chooser.record(1, chooser.choose(1), 15_000_000)
    assert chooser.choose(1) == 2


def test_a_neighbour_arriving_moves_to_one_thread_at_once_and_leaving_brings_all_cores_back() -> None:
    clock = Clock()
    chooser = ThreadChooser(2, clock=clock)
    run(chooser, clock, {2: 8_000_000, 1: 15_000_000}, 50)
    after = run(chooser, clock, {2: 33_000_000, 1: 16_000_000}, 3)
    assert after[-1] == 1  # the held count's average passed the other's within a few slow steps
    settled = run(chooser, clock, {2: 33_000_000, 1: 16_000_000}, 1000)
    assert settled.count(2) <= 0.05 * len(settled)  # probes only, backing off
    back = run(chooser, clock, {2: 8_000_000, 1: 15_000_000}, 1000)
    assert back[-100:] == [2] * 100


def test_losing_probes_back_off_to_the_cap_and_a_win_resets_the_interval() -> None:
    clock = Clock()
    chooser = ThreadChooser(2, clock=clock, probe_every_s=1.0, max_probe_every_s=8.0, probe_steps=3)
    chosen = run(chooser, clock, {2: 33_000_000, 1: 16_000_000}, 6000)  # 60 s of one-token steps
    probes = [i for i in range(1, len(chosen)) if chosen[i] == 2 and chosen[i - 1] == 1]
    gaps = [(b - a) * 0.01 for a, b in zip(probes, probes[1:], strict=False)]
    assert [round(g) for g in gaps] == [2, 4, 8, 8, 8, 8, 8, 8]  # each loss doubles the wait, up to 8 s
    assert chosen.count(2) == 3 + 3 * (len(gaps) + 1)  # the first look, then three steps per probe
    won = run(chooser, clock, {2: 8_000_000, 1: 15_000_000}, 1500)  # the neighbour left: the next probe wins
    switched = won.index(2)
    assert switched <= 801
    rest = won[switched:]
    assert rest[:4] == [2, 2, 2, 2] and rest.count(1) <= 0.02 * len(rest)
    assert rest.index(1) in range(799, 804)  # holding every core, one thread is looked at every 8 s


def test_a_new_step_size_follows_the_nearest_measured_one_then_learns_its_own() -> None:
    clock = Clock()
    chooser = ThreadChooser(2, clock=clock)
    run(chooser, clock, {2: 20_000_000, 1: 15_000_000}, 20, n_tokens=1)  # one-token steps: one thread wins
    batches = run(chooser, clock, {2: 1_000_000, 1: 2_000_000}, 200, n_tokens=64)  # prompt batches: all cores
    assert batches.index(2) == 100  # no exploring at first sight: probed on the schedule, 1 s on
    assert batches[100:103] == [2, 2, 2] and batches[-1] == 2 and batches[100:].count(1) <= 3
    assert run(chooser, clock, {2: 20_000_000, 1: 15_000_000}, 4, n_tokens=1) == [2, 2, 2, 1]  # its own probe
    assert [bucket(n) for n in (1, 2, 3, 4, 7, 8, 63, 64, 512)] == [1, 2, 2, 3, 3, 4, 6, 7, 7]


def test_one_core_has_nothing_to_choose_and_pinned_steps_are_counted() -> None:
    single = ThreadChooser(1, clock=Clock())
    assert {single.choose(n) for n in (1, 8, 64)} == {1}
    chooser = ThreadChooser(4, clock=Clock())
    assert chooser.pinned(1) == 1
    assert chooser.state() == {"threads_last": 1, "steps_one_thread_total": 1, "steps_all_threads_total": 0}
