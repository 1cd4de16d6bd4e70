"""The embedding pass picks its own batch size and layout: the search rule, explicit settings winning, the
cache, the logged choice, and scores that do not depend on it."""

import json
import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from synbench import app
from synbench.encoders import Precision
from synbench.encoders import tune
from synbench.encoders.timm_encoder import load_timm_encoder

CPU = torch.device("cpu")


def encoder():
    return load_timm_encoder("test_vit", False, None, "model", 0)


def plan(enc, cache_dir=None, batch_size="auto", channels_last="auto", batches=(4, 8, 16, 32), max_pass=10.0,
         budget=1e9, largest=10**6, images=1000, compile=False, compile_min_seconds=600.0):
    return tune.plan_embedding(enc, CPU, Precision.fp32, batch_size, channels_last, list(batches), max_pass, 0.01,
                               budget, images=images, largest=largest, cache_dir=cache_dir, compile=compile,
                               compile_min_seconds=compile_min_seconds)


def fake_rates(monkeypatch, rates, seconds_per_image=0.0):
    """Replace the clock: ``rates[(batch, channels_last)]`` images/s; records what was timed."""
    timed = []

    def fake(enc, x, dtype, min_seconds):
        key = (len(x), x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        timed.append(key)
        return rates[key], seconds_per_image * len(x)

    monkeypatch.setattr(tune, "_time", fake)
    return timed


def test_search_stops_once_a_batch_is_clearly_slower_and_picks_the_fastest(monkeypatch):
    rates = {(4, False): 10.0, (8, False): 20.0, (16, False): 17.0, (32, False): 30.0,
             (4, True): 12.0, (8, True): 25.0, (16, True): 24.0, (32, True): 19.0}
    timed = fake_rates(monkeypatch, rates)
    p = plan(encoder())
    # side by side; contiguous: 16 is below 0.9 x 20, so 32 is never timed; channels_last: 24 >= 22.5 goes on
    assert timed == [(4, False), (4, True), (8, False), (8, True), (16, False), (16, True), (32, True)]
    assert (p.batch_size, p.channels_last, p.images_per_s, p.source) == (8, True, 25.0, "tuned")


def test_search_stops_when_one_pass_outlasts_the_budget(monkeypatch):
    rates = {(b, cl): float(b) for b in (4, 8, 16, 32) for cl in (False, True)}
    timed = fake_rates(monkeypatch, rates, seconds_per_image=0.1)  # batch 16: 1.6 s a pass
    p = plan(encoder(), max_pass=1.0)
    assert [b for b, cl in timed if not cl] == [4, 8, 16]
    assert p.batch_size == 16


def test_search_stops_at_its_budget_and_never_exceeds_the_largest_split(monkeypatch):
    rates = {(b, cl): float(b) for b in (4, 8, 10, 16, 32) for cl in (False, True)}
    timed = fake_rates(monkeypatch, rates)
    plan(encoder(), budget=1e-12)  # spent after the first batch size
    assert timed == [(4, False), (4, True)]
    timed.clear()
    p = plan(encoder(), largest=10)  # a stream never yields more than 10 samples: no batch above 10
    assert sorted({b for b, _ in timed}) == [4, 8, 10] and p.batch_size == 10


def test_explicit_settings_bypass_the_tuner(monkeypatch, tmp_path):
    timed = fake_rates(monkeypatch, {})
    p = plan(encoder(), tmp_path, batch_size=7, channels_last=False)
    assert (p.batch_size, p.channels_last, p.source, p.images_per_s) == (7, False, "config", None)
    assert timed == [] and not list(tmp_path.iterdir())


def test_one_explicit_knob_is_kept_while_the_other_is_tuned(monkeypatch):
    rates = {(b, cl): 1.0 + b + 5 * cl for b in (4, 8, 16, 32) for cl in (False, True)}
    fake_rates(monkeypatch, rates)
    p = plan(encoder(), batch_size=16)
    assert (p.batch_size, p.channels_last) == (16, True)
    p = plan(encoder(), channels_last=False)
    assert (p.batch_size, p.channels_last) == (32, False)


def test_audio_inputs_have_no_channels_last_candidate(monkeypatch):
    from synbench.encoders.crepe import load_crepe

    timed = fake_rates(monkeypatch, {(b, False): float(b) for b in (4, 8)})
    p = plan(load_crepe("crepe_tiny", "tiny", False, None, 0), batches=(4, 8))
    assert all(not cl for _, cl in timed) and not p.channels_last


def test_the_cache_is_reused_and_a_corrupt_entry_is_a_miss(monkeypatch, tmp_path):
    first = plan(encoder(), tmp_path, batches=(4, 8))  # real timing
    [entry] = list(tmp_path.iterdir())
    assert first.source == "tuned" and first.images_per_s > 0
    fake_rates(monkeypatch, {})  # any timing now would raise KeyError
    again = plan(load_timm_encoder("test_vit", False, None, "model", 1), tmp_path, batches=(4, 8))
    assert again.source == "cache" and (again.batch_size, again.channels_last) == (first.batch_size,
                                                                                  first.channels_last)
    entry.write_text("{not json")
    monkeypatch.undo()
    redo = plan(encoder(), tmp_path, batches=(4, 8))
    assert redo.source == "tuned" and json.loads(entry.read_text())["batch_size"] == redo.batch_size


def fake_compile(monkeypatch, seconds, rate):
    """Replace the compile trial: ``(seconds, rate)``; records each call."""
    calls = []

    def fake(enc, p, device, dtype, min_seconds):
        calls.append((p.batch_size, p.channels_last))
        return (seconds, rate)

    monkeypatch.setattr(tune, "_time_compiled", fake)
    return calls


def test_compile_is_kept_only_where_its_compile_time_is_repaid(monkeypatch, tmp_path):
    rates = {(b, cl): (100.0 if (b, cl) == (8, True) else 10.0) for b in (4, 8) for cl in (False, True)}
    fake_rates(monkeypatch, rates)
    calls = fake_compile(monkeypatch, seconds=30.0, rate=125.0)
    # 10^5 images: eager 1000 s, compiled 30 + 800 s: kept, timed at the eager plan's batch and layout
    p = plan(encoder(), tmp_path, batches=(4, 8), images=10**5, compile="auto")
    assert calls == [(8, True)] and p.compile and p.compile_trial == (30.0, 125.0)
    assert p.params()["embed.tuned.compile"] is True and p.replay.endswith("embed.compile=true")
    # the sweep's next job reads the trial from the cache and decides for its own size, timing nothing
    fake_rates(monkeypatch, {})
    again = plan(encoder(), tmp_path, batches=(4, 8), images=2 * 10**5, compile="auto")
    assert again.source == "cache" and again.compile and calls == [(8, True)]
    # 7 * 10^4 images: eager 700 s against 30 + 560 s compiled; 10^4 images (threshold lowered to 1 s): eager
    # 100 s against 30 + 80 s, so the compile time is not repaid
    assert plan(encoder(), tmp_path, batches=(4, 8), images=7 * 10**4, compile="auto").compile
    assert not plan(encoder(), tmp_path, batches=(4, 8), images=10**4, compile="auto", compile_min_seconds=1).compile
    # 5 * 10^4 images would gain (30 + 400 s against 500 s) but project under 600 s: a short job stays eager,
    # whatever longer jobs stored before it
    assert not plan(encoder(), tmp_path, batches=(4, 8), images=5 * 10**4, compile="auto").compile
    assert calls == [(8, True)]


def test_compile_is_not_tried_for_short_jobs_and_explicit_values_win(monkeypatch, tmp_path):
    fake_rates(monkeypatch, {(b, cl): 100.0 for b in (4, 8) for cl in (False, True)})
    calls = fake_compile(monkeypatch, seconds=0.0, rate=1e9)  # compiling would win by far, were it tried
    assert not plan(encoder(), tmp_path, batches=(4, 8), images=59_999, compile="auto").compile
    assert calls == []  # 600 s of eager embedding projected is the threshold: 59,999 images at 100/s are below
    assert plan(encoder(), tmp_path, batches=(4, 8), images=10, compile=True).compile and calls == []
    assert not plan(encoder(), tmp_path, batches=(4, 8), images=10**7, compile=False).compile and calls == []
    assert not plan(encoder(), tmp_path, batch_size=8, channels_last=True, images=10**7, compile="auto").compile


def test_a_compiler_failure_leaves_the_plan_eager(monkeypatch, tmp_path):
    fake_rates(monkeypatch, {(b, cl): 10.0 for b in (4, 8) for cl in (False, True)})

    def broken(module, dynamic):
        raise RuntimeError("no C++ compiler\nmore detail")

    monkeypatch.setattr(tune.torch, "compile", broken)
    enc = encoder()
    p = plan(enc, tmp_path, batches=(4, 8), images=10**5, compile="auto")
    assert not p.compile and p.compile_trial[1] == 0.0 and not enc.compiled
    [entry] = list(tmp_path.iterdir())
    assert json.loads(entry.read_text())["compile_trial"] == [None, 0.0]  # stored: not tried again
    fake_rates(monkeypatch, {})
    assert not plan(enc, tmp_path, batches=(4, 8), images=10**6, compile="auto").compile


@pytest.mark.slow
def test_a_compiled_plan_runs_the_embedding_pass_only_and_keys_the_cache(tmp_path):
    """Real torch.compile (inductor) of test_vit: the pass runs compiled, its features are keyed apart from the
    eager ones, the model is eager again after the pass, and the compiled pass repeats its own bits."""
    from synbench.data import GaussianMixture, Split
    from synbench.encoders import embed_mixture
    from synbench.encoders.cache import EmbeddingCache

    enc = encoder()
    mixture = GaussianMixture(shape=enc.input_shape, prior=0.5, noise_std=0.2, mean=0.5, direction="ones",
                              direction_seed=0, lowfreq_res=4, chunk_size=16)
    n = {Split.train: 16, Split.test: 16}
    cache = EmbeddingCache(tmp_path)

    def features(compile, cache=None):
        with tune.plan_applied(enc, tune.EmbedPlan(8, False, compile=compile)):
            assert enc.compiled is compile
            emb = embed_mixture(enc, mixture, [1.0], n, 0, 8, CPU, Precision.fp32, False, cache, progress=False)
        assert not enc.compiled
        return emb

    eager = features(False, cache)
    compiled = features(True, cache)
    assert compiled.images_embedded == eager.images_embedded == 32  # the eager entry is not served
    assert torch.allclose(compiled.z[Split.train], eager.z[Split.train], atol=1e-4)
    assert torch.equal(features(True).z[Split.train], compiled.z[Split.train])
    assert features(True, cache).images_embedded == 0  # its own entry is


ALLOCATOR = """
import resource, sys, torch
from synbench.encoders import tune
print(tune.configure_allocator(sys.argv[1] == "keep"))
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3)).eval()
x = torch.randn(8, 3, 224, 224)
with torch.inference_mode():
    for _ in range(6):  # the heap settles at the passes' size (one output kept while the next is made)
        out = net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        out = net(x)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
torch.save(out, sys.argv[2])
"""


def test_kept_freed_memory_ends_the_page_faults_and_changes_no_bit(tmp_path):
    """Each pass's 25 MB activations: glibc maps and unmaps them by default (thousands of page faults a pass);
    kept, the passes after the first fault almost nothing in. The outputs are the same bits."""
    import subprocess
    import sys

    runs = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", ALLOCATOR, mode, str(tmp_path / mode)], capture_output=True,
                             text=True, check=True).stdout.split()
        runs[mode] = (out[0] == "True", int(out[1]))
    assert runs["keep"][0] and not runs["default"][0]
    # the 5 passes allocate 5 x (25 + 12) MB, about 45,000 pages: by default glibc maps many of them afresh (how
    # many depends on its adaptive threshold: 18,000 to 43,000 seen); kept, next to none (0 to 111 seen)
    assert runs["default"][1] > 5000
    assert runs["keep"][1] < 500
    assert torch.equal(torch.load(tmp_path / "keep"), torch.load(tmp_path / "default"))


def test_threads_follow_omp_num_threads_when_set(monkeypatch):
    assert tune.physical_cores() >= 1
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    try:
        assert tune.configure_threads() == 1  # left as the user set it
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert tune.configure_threads() == tune.physical_cores()
    finally:
        torch.set_num_threads(before)


AUTO = ["embed.batch_size=auto", "embed.channels_last=auto", "embed.tune_batches=[4,8,16]",
        "embed.tune_min_seconds=0.05", "embed.tune_budget=100", "cache.enabled=false"]


@pytest.mark.slow
def test_a_job_logs_its_plan_and_a_second_job_reuses_it(cfg_factory, tmp_path, monkeypatch):
    cfg = cfg_factory(*AUTO, "tracking.experiment=tuning", "tracking.run_name=tuned",
                      f"cache.tuning_dir={tmp_path / 'tuning'}")
    summary = app.run(cfg, tmp_path / "a")
    [run] = MlflowClient(cfg.tracking.uri).search_runs(
        [MlflowClient(cfg.tracking.uri).get_experiment_by_name("tuning").experiment_id])
    params, metrics = run.data.params, run.data.metrics
    assert params["embed.batch_size"] == "auto" and params["embed.tuned.source"] == "tuned"
    assert int(params["embed.tuned.batch_size"]) in (4, 8, 16)
    assert params["embed.tuned.channels_last"] in ("True", "False")
    assert metrics["embed/tuned_images_per_s"] > 0
    assert summary["embed_plan"]["embed.tuned.batch_size"] == int(params["embed.tuned.batch_size"])
    fake_rates(monkeypatch, {})  # the second job must not time anything
    again = app.run(cfg_factory(*AUTO, "tracking.experiment=tuning", f"cache.tuning_dir={tmp_path / 'tuning'}",
                                "seed=1"), tmp_path / "b")
    assert again["embed_plan"]["embed.tuned.source"] == "cache"


@pytest.mark.slow
def test_scores_do_not_depend_on_the_batch_size_or_layout(cfg_factory, tmp_path):
    def scores(*overrides):
        return app.run(cfg_factory("cache.enabled=false", *overrides), tmp_path / overrides[0])["scalars"]

    a = scores("embed.batch_size=5", "embed.channels_last=false")
    b = scores("embed.batch_size=64", "embed.channels_last=true")
    assert a.keys() == b.keys()
    assert all(math.isclose(a[k], b[k], abs_tol=1e-4) for k in a)


def test_the_plan_applies_to_the_embedding_pass_only():
    """Channels-last moves test_resnet's features in their last bits; after the pass the model computes the
    bits it computed before, so the metrics' own passes do not depend on the plan."""
    enc = load_timm_encoder("test_resnet", False, None, "model", 0).eval()
    x = torch.rand((4, *enc.input_shape), generator=torch.Generator().manual_seed(0))
    conv = next(m for m in enc.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.inference_mode():
        before = enc(x)
        with tune.plan_applied(enc, tune.EmbedPlan(4, True)):
            assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
        assert conv.weight.is_contiguous()
        assert torch.equal(enc(x), before)


@pytest.mark.slow
def test_a_logged_plan_replays_to_the_bit_and_the_cache_never_serves_another_plan(cfg_factory, tmp_path,
                                                                                   monkeypatch):
    rates = {(b, cl): (30.0 if (b, cl) == (8, True) else 10.0) for b in (4, 8, 16) for cl in (False, True)}
    fake_rates(monkeypatch, rates)  # the search picks batch 8, channels_last: not what a config would say
    common = ["embed.tune_batches=[4,8,16]", "tracking.experiment=replay", "cache.enabled=true"]
    tuned = app.run(cfg_factory(*common, "embed.batch_size=auto", "embed.channels_last=auto",
                                f"cache.dir={tmp_path / 'cache_a'}", f"cache.tuning_dir={tmp_path / 'tuning_a'}"),
                    tmp_path / "a")
    replay = tuned["embed_plan"]["embed.tuned.replay"]
    assert replay == "embed.batch_size=8 embed.channels_last=true embed.compile=false"
    # elsewhere (a fresh cache, no tuning cache), with the logged overrides: the same bytes
    again = app.run(cfg_factory(*common, *replay.split(), f"cache.dir={tmp_path / 'cache_b'}"), tmp_path / "b")
    assert again["images_embedded"] > 0 and again["scalars"] == tuned["scalars"]
    # another plan in the first cache: its entries are not served (they hold the other plan's bits)
    other = app.run(cfg_factory(*common, "embed.batch_size=16", "embed.channels_last=false",
                                f"cache.dir={tmp_path / 'cache_a'}"), tmp_path / "c")
    assert other["images_embedded"] == tuned["images_embedded"] > 0
    same = app.run(cfg_factory(*common, *replay.split(), f"cache.dir={tmp_path / 'cache_a'}"), tmp_path / "d")
    assert same["images_embedded"] == 0 and same["scalars"] == tuned["scalars"]


@pytest.mark.slow
def test_a_compiled_plan_is_logged_and_replays_to_the_bit(cfg_factory, tmp_path, monkeypatch):
    """The tuner picks compile (a faked trial; the job compiles for real): the run logs it, its replay overrides
    compile again elsewhere and give the same bytes, and the eager plan's cache entries are not served to it."""
    fake_rates(monkeypatch, {(b, cl): (30.0 if (b, cl) == (8, False) else 10.0) for b in (4, 8, 16)
                             for cl in (False, True)})
    fake_compile(monkeypatch, seconds=0.0, rate=1e6)
    common = ["embed.tune_batches=[4,8,16]", "tracking.experiment=compiled", "cache.enabled=true"]
    tuned = app.run(cfg_factory(*common, "embed.batch_size=auto", "embed.channels_last=auto", "embed.compile=auto",
                                "embed.tune_compile_min_seconds=1e-9", f"cache.dir={tmp_path / 'cache_a'}",
                                f"cache.tuning_dir={tmp_path / 'tuning_a'}"), tmp_path / "a")
    plan = tuned["embed_plan"]
    assert plan["embed.tuned.compile"] is True
    assert plan["embed.tuned.replay"] == "embed.batch_size=8 embed.channels_last=false embed.compile=true"
    again = app.run(cfg_factory(*common, *plan["embed.tuned.replay"].split(), f"cache.dir={tmp_path / 'cache_b'}"),
                    tmp_path / "b")
    assert again["images_embedded"] > 0 and again["scalars"] == tuned["scalars"]
    eager = app.run(cfg_factory(*common, "embed.batch_size=8", "embed.channels_last=false", "embed.compile=false",
                                f"cache.dir={tmp_path / 'cache_a'}"), tmp_path / "c")
    assert eager["images_embedded"] == tuned["images_embedded"] > 0
