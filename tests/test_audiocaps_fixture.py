"""The real run's first stages at toy size on the real AudioCaps lists: a few dozen real ids of
each shipped list (train, val, test), synthetic audio named the ways users name AudioCaps files
(some ids missing on purpose), and a random-weight DAC 16 kHz checkpoint in the original
file's exact key layout. prepare -> codec (source dac_original) -> tokenize run as the stages,
on the same code paths the full run takes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from siren_bench.data import audiocaps as ac
from siren_bench.data.synthcaps import generate_clip
from siren_bench.stages import codec as codec_stage
from siren_bench.stages import prepare, tokenize
from tests.conftest import REPO, write_audio
from tests.test_codecs import DAC_16K_KWARGS, LAYOUTS, _random_state

SHIPPED = REPO / "protocols" / "audiocaps"
N = {"train": 12, "val": 4, "test": 4}
MISSING = {"train": 1, "val": 0, "test": 0}  # 8 % of train: under data.max_missing_fraction


def _real_rows(name: str, clips: int) -> pd.DataFrame:
    frame = pd.read_csv(SHIPPED / name, dtype=str, keep_default_na=False)
    keep = list(dict.fromkeys(frame["youtube_id"]))[:clips]  # the first `clips` clips, every caption of each
    return frame[frame["youtube_id"].isin(keep)]


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("audiocaps_fixture")
    lists = {}
    for split, name in (("train", "audiocaps_train_49838.csv"), ("val", "audiocaps_val_495x5.csv"),
                        ("test", "audiocaps_test_975x5.csv")):
        rows = _real_rows(name, N[split])
        rows.to_csv(root / f"{split}.csv", index=False)
        lists[split] = rows
        for i, (ytid, start) in enumerate(dict.fromkeys(zip(rows["youtube_id"], rows["start_time"]))):
            if i < MISSING[split]:
                continue  # "no longer on YouTube"
            clip = generate_clip(7, {"train": 0, "val": 100, "test": 200}[split] + i, 44100 if i % 3 == 0 else 16000, 1.0)
            wave = np.stack([clip.wave, clip.wave]).T if i % 3 == 0 else clip.wave  # some stereo 44.1 kHz downloads
            stem = (f"Y{ytid}", f"{ytid}_{start}", ytid)[i % 3]
            write_audio(root / "audio" / split / f"{stem}.{'flac' if i % 2 else 'wav'}", wave, 44100 if i % 3 == 0 else 16000)
    checkpoint = root / "weights_16khz.pth"
    torch.save({"state_dict": _random_state(LAYOUTS["dac_16khz"]), "metadata": {"kwargs": DAC_16K_KWARGS}}, checkpoint)
    params = {
        "run": {"profile": "fixture", "seed": 0, "device": "cpu", "threads": 2, "artifacts_dir": str(root / "artifacts"),
                "reports_dir": str(root / "reports"), "cache_dir": str(root / "cache")},
        "data": {"name": "audiocaps", "audio_dir": str(root / "audio"), "train_list": str(root / "train.csv"),
                 "val_list": str(root / "val.csv"), "test_list": str(root / "test.csv"), "protocol": "custom",
                 "clip_seconds": 1.0, "workers": 2},
        "codec": {"name": "dac_16khz", "source": "dac_original", "path": str(checkpoint), "batch_clips": 8},
    }
    return root, lists, params


def _write(params: dict, path):
    path.write_text(yaml.safe_dump(params))
    return path


def test_prepare_codec_and_tokenize_run_on_the_real_lists(fixture_run):
    root, lists, data = fixture_run
    params = _write(data, root / "params.yaml")
    manifest = pd.read_csv(prepare.run(params) / "manifest.csv", keep_default_na=False)
    found = {s: N[s] - MISSING[s] for s in N}
    assert manifest.groupby("split").size().to_dict() == found
    assert set(manifest["clip_id"]) <= set().union(*(set(rows["youtube_id"]) for rows in lists.values()))
    info = json.loads((root / "artifacts" / "fixture" / "prepare" / "dataset.json").read_text())
    assert info["splits"]["train"]["clips_missing"] == 1 and info["splits"]["train"]["list_rows"] == N["train"]
    assert info["splits"]["test"]["list_rows"] == len(lists["test"]) > N["test"]  # five captions a clip
    assert info["resampled"] == sum(1 for s in N for i in range(MISSING[s], N[s]) if i % 3 == 0)  # the 44.1 kHz ones

    codec_dir = codec_stage.run(params)
    assert json.loads((codec_dir / "codec.json").read_text())["backend"] == "dac"
    codes = np.load(tokenize.run(params) / "codes.npz")
    assert sorted(codes.files) == sorted(manifest["clip_id"])
    assert {codes[c].shape for c in codes.files} == {(12, 50)}  # 12 codebooks, 1 s at 50 frames/s


def test_a_real_test_clip_put_into_the_train_list_is_leakage(fixture_run, tmp_path):
    root, lists, data = fixture_run
    leaked = pd.concat([lists["train"], lists["test"].iloc[:1]])
    leaked.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ac.AudioCapsError, match=rf"share 1 clip\(s\), e.g. {lists['test'].iloc[0]['youtube_id']}"):
        prepare.run(_write({**data, "data": {**data["data"], "train_list": str(tmp_path / "train.csv")}}, tmp_path / "p.yaml"))
