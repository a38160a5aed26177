"""Train's CPU thread default and the note it gives when throughput collapses."""
import json

import pytest
import torch

from s1kernels.runtime import SMALL_MODEL_PARAMS, default_threads, idle_cpus, set_cpu_threads
from s1kernels.train import TINY_DEFAULTS, TrainConfig, train
from s1kernels.train.throughput import ThroughputWatch


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_threads(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpu = torch.device("cpu")
    torch.set_num_threads(2)
    assert default_threads(None, cpu, SMALL_MODEL_PARAMS - 1) == 1  # small model on a CPU: one thread
    torch.set_num_threads(2)
    idle = lambda: (0.1, 0.1, 0.1)  # noqa: E731
    assert default_threads(None, cpu, SMALL_MODEL_PARAMS, idle) == 2  # large, idle CPUs: torch's own choice
    assert default_threads(None, torch.device("meta"), 10) == 2  # not a CPU run
    assert default_threads(2, cpu, 10) == 2  # --threads wins
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert default_threads(None, cpu, 10) == 2  # the user's OMP_NUM_THREADS wins
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="--threads: expected an int >= 1"):
            default_threads(bad, cpu, 10)
    # generate and eval apply the same rule to their model
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(2)
    assert set_cpu_threads(torch.nn.Linear(4, 4), None) == 1


def test_a_larger_model_uses_no_more_threads_than_idle_cpus(monkeypatch, restore_threads):
    """A 135M model on a 2-core machine that another process keeps busy: one thread (torch's
    default of 2 made generation 4x slower there); on an idle machine torch's default."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    cpu, n = torch.device("cpu"), 135_000_000
    for load, want in [(0.2, 2), (1.0, 1), (1.4, 1), (3.5, 1)]:
        torch.set_num_threads(2)
        assert default_threads(None, cpu, n, lambda: (load, load, load)) == want, load
    assert idle_cpus(lambda: (0.2, 0, 0)) == 2 and idle_cpus(lambda: (5.0, 0, 0)) == 0

    def no_load():
        raise OSError("no load average here")
    torch.set_num_threads(2)
    assert idle_cpus(no_load) is None and default_threads(None, cpu, n, no_load) == 2
    torch.set_num_threads(2)
    assert default_threads(2, cpu, n, lambda: (3.5, 0, 0)) == 2  # --threads still wins


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _watch(load=0.0, threads=1, cpu=True, cpus=2):
    clock = _Clock()
    loads = [load]
    w = ThroughputWatch(cpu=cpu, threads=threads, interval=5.0, factor=3.0, clock=clock,
                        loadavg=lambda: (loads[0], 0.0, 0.0), cpus=cpus)
    return w, clock, loads


def _run(w, clock, seconds, tokens_per_s, step=1.0):
    notes = []
    for _ in range(int(seconds / step)):
        clock.t += step
        notes.append(w.update(int(tokens_per_s * step)))
    return [n for n in notes if n]


def test_a_collapse_is_noted_once_and_shown_while_it_lasts():
    w, clock, loads = _watch(threads=2)
    assert _run(w, clock, 20, 8000) == [] and w.status == ""
    loads[0] = 4.1  # another 2-thread process starts
    notes = _run(w, clock, 20, 460)
    assert len(notes) == 1  # said once, when it starts
    assert "460 tokens/s, 17.4x below this run's best (8,000)" in notes[0]
    assert "load average 4.1 on 2 CPUs" in notes[0] and "--threads 1" in notes[0]
    assert w.status == "17x below best; load average 4.1 on 2 CPUs"
    loads[0] = 2.0
    assert _run(w, clock, 10, 7900) == [] and w.status == ""  # recovered: the bar clears


def test_a_machine_busy_from_the_start_is_noted():
    """No earlier interval to compare with: the load average shows the CPUs are taken."""
    w, clock, _ = _watch(load=3.2, threads=1)
    notes = _run(w, clock, 10, 3000)
    assert len(notes) == 1 and "with the CPUs busy (load average 3.2 on 2 CPUs)" in notes[0]
    assert "--threads 1" not in notes[0]  # already on one thread
    w, clock, _ = _watch(load=2.1, threads=2)  # the run's own two threads: not busy
    assert _run(w, clock, 10, 8000) == [] and w.status == ""
    w, clock, _ = _watch(load=9.0, threads=1, cpu=False)  # on a GPU the host load says little
    assert _run(w, clock, 10, 8000) == []


def test_short_jitter_inside_an_interval_is_not_a_collapse():
    w, clock, _ = _watch()
    _run(w, clock, 10, 8000)
    clock.t += 0.5
    assert w.update(10) is None  # one slow step: the interval is not over yet
    assert _run(w, clock, 10, 8000) == [] and w.status == ""


def test_train_records_threads_and_load(tmp_path, monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cfg = TrainConfig(**{**TINY_DEFAULTS, "hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64,
                         "block_size": 256, "synthetic_rows": 20, "max_steps": 2, "eval_rows": 0,
                         "progress": False, "output": str(tmp_path / "run")})
    train(cfg)
    used = json.load(open(tmp_path / "run" / "train_config.json"))
    assert used["threads_used"] == 1
    log = [json.loads(line) for line in open(tmp_path / "run" / "train_log.jsonl")]
    assert all(isinstance(r["load1"], float) for r in log)
