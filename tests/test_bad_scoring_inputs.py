"""Bad input on the scoring side, by class: results files an audit cannot use, folder entries that
are not audio files one can read, cache and output paths of the wrong kind, pins that name no
checkpoint. Each is a clear error naming the path (or a listed difference), never a traceback
or a silent skip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from siren_bench.cache import ContentCache
from siren_bench.cli import main
from siren_bench.errors import AuditError, ClipSetError
from siren_bench.evaluation.audit import AuditReport, _compare_per_clip, audit
from siren_bench.evaluation.clipsets import folder_clips, manifest_clips
from siren_bench.evaluation.score import SCHEMA_VERSION

SR = 16000


def _results(tmp_path: Path, **overrides) -> Path:
    clip_set = {"clips": [], "n_clips": 0, "source": "x", "kind": "folder"}
    record = {"schema_version": SCHEMA_VERSION, "recipe": {"id": "smoke@1", "sha256": "0" * 64}, "generated": clip_set,
              "reference": clip_set, "metrics": {}, "weights_dir": "w", "cache_dir": "c", "n_bootstrap": 10,
              "allow_clipped": False, "captions": None}
    record.update(overrides)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({k: v for k, v in record.items() if v is not ...}))
    return path


@pytest.mark.parametrize("content, message", [
    (b"not json", "not a JSON file"),
    (b"\xff\xfe\x00", "not a JSON file"),
    (b"[1, 2]", "holds a JSON list, not the object"),
])
def test_audit_refuses_a_file_that_is_not_a_results_object(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(AuditError, match=message) as info:
        audit(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("overrides, message", [
    (dict(metrics=...), r"missing \['metrics'\]"),
    (dict(n_bootstrap="many"), r"of the wrong type \['n_bootstrap'\]"),
    (dict(recipe={"id": 3}), r"recipe \(needs string id and sha256\)"),
    (dict(generated={"clips": []}), r"clip sets without .*\['generated'\]"),
    (dict(recipe={"id": "nonexistent@9", "sha256": "0"}), "unknown recipe 'nonexistent@9'"),
    (dict(generated={"clips": [{"clip_id": "a"}], "n_clips": 1, "source": "x", "kind": "folder"}), "clip entry is malformed"),
])
def test_audit_refuses_an_incomplete_record_by_name(tmp_path, overrides, message):
    path = _results(tmp_path, **overrides)
    with pytest.raises(AuditError, match=message) as info:
        audit(tmp_path)  # the folder holding results.json
    assert str(path) in str(info.value)


def test_audit_of_a_missing_path_and_through_the_command_line(tmp_path, capsys):
    with pytest.raises(AuditError, match="no such file"):
        audit(tmp_path / "nowhere.json")
    (tmp_path / "a.json").write_text("{")
    assert main(["audit", str(tmp_path / "a.json")]) == 2
    assert "a.json: not a JSON file" in capsys.readouterr().err


def test_an_older_schema_is_a_listed_difference_not_a_refusal(tmp_path):
    _results(tmp_path, schema_version=SCHEMA_VERSION - 1)
    report = audit(tmp_path)
    assert not report.ok and report.differences == [f"schema: version {SCHEMA_VERSION - 1} is not {SCHEMA_VERSION}"]


@pytest.mark.parametrize("content, detail", [
    (b'clip_id,value\n"a,1\n', "cannot be read as CSV"),
    (b"", "cannot be read as CSV"),
    (b"clip_id,value\na,not-a-number\n", "values that are not numbers"),
])
def test_a_malformed_per_clip_table_is_a_listed_difference(tmp_path, content, detail):
    path = tmp_path / "per_clip.csv"
    path.write_bytes(content)
    report = AuditReport(tmp_path / "results.json")
    _compare_per_clip(path, pd.DataFrame({"clip_id": ["a"], "value": [1.0]}), report)
    assert not report.ok and detail in report.differences[0]


def _audio_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "gen"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"clip{i}.wav", np.sin(np.arange(SR) * (i + 1) * 0.01), SR)
    return folder


def test_a_dangling_symlink_or_a_folder_named_like_audio_is_refused_by_name(tmp_path):
    folder = _audio_folder(tmp_path)
    (folder / "clip9.wav").symlink_to(tmp_path / "gone.wav")
    with pytest.raises(ClipSetError, match=r"clip9\.wav: a broken symbolic link"):
        folder_clips(folder)
    (folder / "clip9.wav").unlink()
    (folder / "clip8.flac").mkdir()
    with pytest.raises(ClipSetError, match=r"clip8\.flac: not a regular file"):
        folder_clips(folder)


def test_a_file_name_that_is_not_utf8_is_refused_by_name(tmp_path):
    folder = _audio_folder(tmp_path)
    bad = os.fsencode(folder) + b"/clip\xff.wav"
    with open(bad, "wb") as handle:
        handle.write((folder / "clip0.wav").read_bytes())
    with pytest.raises(ClipSetError, match=r"not valid UTF-8.*clip\\udcff\.wav|not valid UTF-8"):
        folder_clips(folder)


def test_a_manifest_path_with_a_nul_byte_is_refused_by_name(tmp_path, monkeypatch):
    import siren_bench.evaluation.clipsets as clipsets
    frame = pd.DataFrame({"clip_id": ["a"], "audio_path": ["audio/a\x00.wav"], "sha256": ["0" * 64], "caption": [""],
                          "split": ["test"], "decode": [""]})  # as read_manifest returns it (decode "": a prepared file)
    monkeypatch.setattr(clipsets, "read_manifest", lambda path: frame)
    with pytest.raises(ClipSetError, match=r"manifest\.csv.*clip 'a'.*NUL byte"):
        manifest_clips(tmp_path / "manifest.csv")


def test_a_cache_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "cache").write_text("")
    with pytest.raises(NotADirectoryError, match=r"cache: .*a file, not a folder"):
        ContentCache(tmp_path / "cache")


def test_a_pin_that_names_no_checkpoint_of_the_recipe_is_refused(tmp_path, capsys):
    folder = _audio_folder(tmp_path)
    status = main(["score", "--generated", str(folder), "--reference", str(folder), "--out", str(tmp_path / "out"),
                   "--recipe", "smoke", "--weights-dir", str(tmp_path), "--pin", "nothing.pt=" + "0" * 64])
    err = capsys.readouterr().err
    assert status == 2 and "--pin nothing.pt" in err and "tagger.safetensors" in err
    assert not (tmp_path / "out").exists()
