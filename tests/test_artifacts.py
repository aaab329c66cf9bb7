"""The stage-artifact contract (siren_bench/artifacts.py): every stage records its layout version
in its provenance, and a folder written under another version is refused by name."""

from __future__ import annotations

import json

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
