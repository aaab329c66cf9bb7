"""AudioCaps prepare throughput against the number of decoding workers (`make bench`; `make test`
runs each once, untimed, at a smaller size). Each round prepares a folder of 10 s stereo 44.1 kHz
clips (the common YouTube download: mixed to mono, resampled with soxr HQ to 16 kHz, hashed, and
with data.store_decoded the decoded WAV written) from scratch; clips/s is in benchmark.extra_info
and printed."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from siren_bench.config import AudioCapsConfig
from siren_bench.data import audiocaps as ac
from tests.conftest import tone, write_audio

FULL = os.environ.get("SIREN_BENCH_FULL") == "1"
CLIPS = 32 if FULL else 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("audiocaps_bench")
    rows = []
    for i in range(CLIPS):
        wave = tone(10.0, 44100, channels=2, freq=110.0 * (1 + i % 7)) + 0.01 * np.random.default_rng(i).standard_normal((2, 441000)).T
        write_audio(root / "audio" / f"clip{i:03d}.wav", wave, 44100)
        rows.append((str(i), f"clip{i:03d}", "0", f"caption {i}"))
    pd.DataFrame(rows, columns=["audiocap_id", "youtube_id", "start_time", "caption"]).to_csv(root / "test.csv", index=False)
    return root


@pytest.mark.parametrize("store", [False, True], ids=["no-decoded-copy", "store-decoded"])
@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_clips_per_second(benchmark, folder, workers, store):
    config = AudioCapsConfig(audio_dir=str(folder / "audio"), test_list=str(folder / "test.csv"), protocol="custom",
                             workers=workers, store_decoded=store)
    sources = ac.resolve_sources(config)
    work = folder / f"work{workers}-{store}"

    def once():
        shutil.rmtree(work, ignore_errors=True)
        return ac.decode_all(sources, config, work)

    records = benchmark.pedantic(once, rounds=3 if FULL else 1, iterations=1)
    assert len(records) == CLIPS
    if benchmark.stats is not None:
        benchmark.extra_info["clips_per_s"] = CLIPS / benchmark.stats.stats.mean
        print(f"\nprepare, {workers} worker(s), store_decoded={store}: {benchmark.extra_info['clips_per_s']:.1f} clips/s")
