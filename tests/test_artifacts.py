"""The stage-artifact contract (siren_bench/artifacts.py): every stage records its layout version
in its provenance, and a folder written under another version is refused by name."""

from __future__ import annotations

import json

import numpy as np

import pytest

from siren_bench.artifacts import PROVENANCE_NAME, SCHEMA_VERSIONS, STAGES, ArtifactError, RunArtifacts
from siren_bench.provenance import build_record


def test_every_stage_records_its_layout_version():
    assert set(SCHEMA_VERSIONS) == {a.stage for a in STAGES.values()}
    assert build_record("score", {})["schema_version"] == STAGES["score"].schema_version
    assert "schema_version" not in build_record("compare", {})  # not a stage folder


@pytest.mark.parametrize("recorded, refused", [(None, False), (1, False), (2, True), (0, True)])
def test_a_folder_of_another_layout_version_is_refused(tmp_path, recorded, refused):
    folder = tmp_path / "siren"
    folder.mkdir()
    (folder / "siren.json").write_text(json.dumps({"trained": False}))
    record = {"stage": "train_siren"} | ({} if recorded is None else {"schema_version": recorded})
    (folder / PROVENANCE_NAME).write_text(json.dumps(record))
    store = RunArtifacts(tmp_path)
    if refused:
        with pytest.raises(ArtifactError, match=rf"layout version {recorded} of stage 'train_siren'.*dvc repro train_siren"):
            store.json("siren", "info")
    else:  # recorded before versions were (None), or this version
        assert store.json("siren", "info") == {"trained": False}


def test_codes_are_written_as_shards_with_an_index_and_read_back_exactly(tmp_path, monkeypatch):
    import pandas as pd

    from siren_bench import artifacts

    monkeypatch.setattr(artifacts, "CODES_PER_SHARD", 2)
    rng = np.random.default_rng(0)
    codes = {f"c{i}": rng.integers(0, 1024, size=(3, 4 + i)).astype(np.uint16) for i in range(5)}  # clips of unequal length
    artifacts.write_codes(tmp_path, codes, pd.DataFrame({"clip_id": list(codes), "split": ["train"] * 5}))
    assert sorted(p.name for p in (tmp_path / "codes").iterdir()) == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    index = pd.read_csv(tmp_path / "index.csv")
    assert index[["shard", "offset", "frames"]].values.tolist() == [[0, 0, 4], [0, 4, 5], [1, 0, 6], [1, 6, 7], [2, 0, 8]]
    back = artifacts.load_codes(tmp_path)
    assert list(back) == list(codes) and all(back[c].dtype == np.int64 and (back[c] == codes[c]).all() for c in codes)
    assert list(artifacts.load_codes(tmp_path, required=["c3", "c0"])) == ["c3", "c0"]  # only what is asked for
    with pytest.raises(ValueError, match=rf"{tmp_path}: no codes for 1 clips \(e.g. \['c9'\]\); re-run tokenize"):
        artifacts.load_codes(tmp_path, required=["c0", "c9"])
