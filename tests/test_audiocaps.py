"""The AudioCaps source, on a small fake AudioCaps folder the tests create."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from siren_bench.cli import main as cli
from siren_bench.config import AudioCapsConfig
from siren_bench.data import audiocaps as ac
from siren_bench.data.decode import read_clip
from siren_bench.data.manifest import ManifestError, audio_sources, read_manifest
from siren_bench.stages import prepare, report
from tests.conftest import REPO, tone, write_audio

PROTOCOLS_DIR = REPO.parent / "shared" / "protocols"


def _write_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    frame = pd.DataFrame(rows, columns=["audiocap_id", "youtube_id", "start_time", "caption"])
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def fake_audiocaps(tmp_path):
    """Four listed clips: mono 16 kHz, stereo 44.1 kHz, a short FLAC, and one not downloaded."""
    audio = tmp_path / "audiocaps_audio"
    write_audio(audio / "aaa.wav", tone(10.0, 16000), 16000)
    write_audio(audio / "sub" / "Ybbb.wav", tone(12.0, 44100, channels=2), 44100)
    write_audio(audio / "ccc_30.flac", tone(6.5, 16000), 16000)
    listing = _write_csv(tmp_path / "list.csv", [
        ("1", "aaa", "0", "A dog barks"), ("2", "aaa", "0", "A dog is barking"),
        ("3", "bbb", "10", "Rain falls"), ("4", "ccc", "30", "An engine idles"), ("5", "ddd", "40", "Wind blows"),
    ])
    return {"audio_dir": str(audio), "test_list": str(listing), "name": "audiocaps", "protocol": "custom",
            "max_missing_fraction": 0.5}


def test_prepare_resamples_pads_and_lists_missing(fake_audiocaps, write_params):
    params = write_params(fake_audiocaps)
    audio_dir = fake_audiocaps["audio_dir"]
    out = prepare.run(params)
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert manifest["clip_id"].tolist() == ["aaa", "bbb", "ccc"]
    assert (manifest["num_samples"] == 160000).all() and (manifest["sample_rate"] == 16000).all()
    by_id = manifest.set_index("clip_id")
    assert bool(by_id.loc["bbb", "resampled"]) and by_id.loc["bbb", "source_sample_rate"] == 44100
    assert by_id.loc["bbb", "source_channels"] == 2 and not bool(by_id.loc["aaa", "resampled"])
    assert by_id.loc["ccc", "padded_seconds"] == pytest.approx(3.5)
    assert json.loads(by_id.loc["aaa", "captions"]) == ["A dog barks", "A dog is barking"]
    # no decoded copy: the manifest names the source and the policy, and a reader decodes it
    assert by_id.loc["bbb", "audio"] == str((Path(audio_dir) / "sub" / "Ybbb.wav").resolve()) and not (out / "audio").exists()
    read = read_manifest(out / "manifest.csv").set_index("clip_id")
    wave, sr = read_clip(read.loc["bbb", "audio_path"], read.loc["bbb", "decode"])
    assert sr == 16000 and wave.shape == (1, 160000)
    wave = wave[0]
    # 44.1 kHz stereo tone, resampled: still a 440 Hz tone at the same level
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.fft.rfftfreq(wave.size, 1 / 16000)[spectrum.argmax()] == pytest.approx(440.0, abs=1.0)
    info = json.loads((out / "dataset.json").read_text())
    test = info["splits"]["test"]
    assert list(info["splits"]) == ["test"] and set(manifest["split"]) == {"test"}
    assert test["clips_missing"] == 1 and test["missing"] == [{"youtube_id": "ddd", "start_time": "40"}]
    assert info["resampled"] == 1 and test["protocol"] == "custom" and test["list_rows"] == 5 and test["missing_fraction"] == 0.25

    report_dir = report.run(params)
    text = (report_dir / "report.md").read_text()
    assert "ddd" in text and "missing 1" in text and "1 files resampled" in text and "| test |" in text
    assert f"| bbb | {audio_dir}/sub/Ybbb.wav | 44100 | 2 |" in text  # the resample is listed by file
    assert json.loads((report_dir / "results.json").read_text())["sections"]["dataset"]["clips_missing"] == 1


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_bytes(b""), "zero-byte"),
        (lambda p: p.write_bytes(b"not a wav file at all" * 50), "corrupt or unreadable"),
        (lambda p: sf.write(str(p), np.full(16000, np.nan), 16000, subtype="FLOAT"), "NaN"),
        (lambda p: sf.write(str(p), np.zeros(16000), 16000), "all samples are zero"),
    ],
    ids=["empty", "corrupt", "nan", "silent"],
)
def test_bad_file_is_named_and_nothing_is_written(fake_audiocaps, write_params, tmp_path, make, problem, capsys):
    bad = Path(fake_audiocaps["audio_dir"]) / "aaa.wav"
    make(bad)
    params = write_params(fake_audiocaps)
    assert cli(["prepare", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and problem in err and "kept for the next run" in err
    # no stage output and no staging folder left behind; the good clips' records (no decoded copy by
    # default) wait in the resume folder, so the run after the fix decodes only what changed
    left = [p.relative_to(tmp_path / "artifacts").parts for p in (tmp_path / "artifacts").rglob("*")]
    assert all(parts[:2] == ("test", "resume") for parts in left if len(parts) > 1), left
    assert {p[-1] for p in left if len(p) == 4} == {"bbb.json", "ccc.json"}


def test_every_bad_file_is_listed_in_one_error(fake_audiocaps, write_params):
    audio = Path(fake_audiocaps["audio_dir"])
    (audio / "aaa.wav").write_bytes(b"")
    sf.write(str(audio / "ccc_30.flac"), np.zeros(800), 16000)
    with pytest.raises(ac.AudioCapsError) as info:
        prepare.run(write_params(fake_audiocaps))
    assert "2 unusable audio file(s)" in str(info.value)
    assert "aaa.wav" in str(info.value) and "ccc_30.flac" in str(info.value)
    # the way out the message gives: moved out of the folder, they count as missing and are listed
    assert "move them out of data.audio_dir: a clip not found counts as missing" in str(info.value)
    (audio / "aaa.wav").unlink()
    (audio / "ccc_30.flac").unlink()
    out = prepare.run(write_params(fake_audiocaps | {"max_missing_fraction": 0.8}))
    assert json.loads((out / "dataset.json").read_text())["splits"]["test"]["clips_missing"] == 3


def test_a_whole_video_in_place_of_its_clip_is_refused_not_cropped_from_zero(fake_audiocaps, write_params):
    audio = Path(fake_audiocaps["audio_dir"])
    write_audio(audio / "aaa.wav", tone(25.0, 16000), 16000)  # 2.5 x data.clip_seconds; Ybbb's 12 s is cropped
    with pytest.raises(ac.AudioCapsError, match=r"1 unusable audio file\(s\)[\s\S]*aaa\.wav: lasts 25\.0 s, more than twice "
                                                 r"data\.clip_seconds \(10\.0 s\): the whole video rather than its AudioCaps clip"):
        prepare.run(write_params(fake_audiocaps))


def test_wrong_sample_rate_can_be_refused(fake_audiocaps, write_params):
    params = write_params(fake_audiocaps | {"on_sample_rate_mismatch": "error"})
    with pytest.raises(ac.AudioCapsError, match=r"Ybbb\.wav: sample rate 44100 Hz, expected 16000 Hz"):
        prepare.run(params)


def test_two_files_for_one_clip_is_an_error(fake_audiocaps, write_params):
    write_audio(Path(fake_audiocaps["audio_dir"]) / "Yaaa.wav", tone(1.0, 16000), 16000)
    with pytest.raises(ac.AudioCapsError, match="clip aaa: several files match"):
        prepare.run(write_params(fake_audiocaps))


def test_unknown_list_is_refused_unless_custom(fake_audiocaps, write_params):
    with pytest.raises(ac.AudioCapsError, match="protocol=custom") as info:
        prepare.run(write_params(fake_audiocaps | {"protocol": "auto"}))
    assert "5 rows" in str(info.value)


def test_protocol_is_named_from_the_list_hash(fake_audiocaps, monkeypatch):
    path = Path(fake_audiocaps["test_list"])
    fake = ac.Protocol("fake_5", "a fake protocol", "csv", 5, 4, ac.sha256_file(path), "test")
    monkeypatch.setattr(ac, "PROTOCOLS", (*ac.PROTOCOLS, fake))
    monkeypatch.setattr(ac, "PROTOCOLS_BY_HASH", {fake.sha256: fake})
    monkeypatch.setattr(ac, "PROTOCOLS_BY_NAME", {fake.name: fake, "audiocaps_test_975x5": ac.PROTOCOLS[0]})
    assert ac.identify_protocol(path, "auto", 5)["protocol"] == "fake_5"
    assert ac.identify_protocol(path, "fake_5", 5)["protocol"] == "fake_5"
    with pytest.raises(ac.AudioCapsError, match="asks for"):
        ac.identify_protocol(path, "audiocaps_test_975x5", 5)
    with pytest.raises(ac.AudioCapsError, match=r"the fake_5 list \(the test split\), given as data.train_list"):
        ac.identify_protocol(path, "auto", 5, split="train")


def test_no_clip_found_is_an_error(tmp_path, fake_audiocaps, write_params):
    empty = tmp_path / "empty_audio"
    empty.mkdir()
    with pytest.raises(ac.AudioCapsError, match="none of the 4 clips"):
        prepare.run(write_params(fake_audiocaps | {"audio_dir": str(empty)}))


def test_missing_list_or_folder(tmp_path, fake_audiocaps, write_params):
    with pytest.raises(ac.AudioCapsError, match="list file not found"):
        prepare.run(write_params(fake_audiocaps | {"test_list": str(tmp_path / "no.csv")}))
    with pytest.raises(ac.AudioCapsError, match="audio folder not found"):
        prepare.run(write_params(fake_audiocaps | {"audio_dir": str(tmp_path / "nowhere")}))


def test_audioldm_json_and_tango_jsonl_lists(tmp_path):
    audio = tmp_path / "audio"
    write_audio(audio / "Yxyz.wav", tone(1.0, 16000), 16000)
    write_audio(audio / "qrs_20.wav", tone(1.0, 16000), 16000)
    audioldm = tmp_path / "subset.json"
    audioldm.write_text(json.dumps({"data": [{"wav": "/somewhere/Yxyz.wav", "caption": "A bell rings", "labels": ""}]}))
    tango = tmp_path / "subset.jsonl"
    tango.write_text(json.dumps({"dataset": "audiocaps", "location": "/data/qrs_20.wav", "captions": "Birds sing"}) + "\n")
    config = AudioCapsConfig(audio_dir=str(audio), protocol="custom")
    for listing, clip_id in ((audioldm, "xyz"), (tango, "qrs")):
        source = ac.resolve_sources(AudioCapsConfig(**(vars(config) | {"test_list": str(listing)})))["test"]
        assert [(e.youtube_id, p.name) for e, p in source.present] == [(clip_id, "Yxyz.wav" if clip_id == "xyz" else "qrs_20.wav")]


def test_malformed_list_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"location": "a_1.wav"}\n')
    with pytest.raises(ac.AudioCapsError, match="not a valid tango_jsonl"):
        ac.parse_list(bad)


SHIPPED = REPO / "protocols" / "audiocaps"


@pytest.mark.parametrize(
    "path, name, rows, clips, split",
    [
        (SHIPPED / "audiocaps_train_49838.csv", "audiocaps_train_49838", 49838, 49838, "train"),
        (SHIPPED / "audiocaps_val_495x5.csv", "audiocaps_val_495x5", 2475, 495, "val"),
        (SHIPPED / "audiocaps_test_975x5.csv", "audiocaps_test_975x5", 4875, 975, "test"),
        (PROTOCOLS_DIR / "audioldm_audiocaps_test_subset_964.json", "audioldm_964", 964, 964, "test"),
        (PROTOCOLS_DIR / "tango_audiocaps_test_subset_886.jsonl", "tango_886", 886, 886, "test"),
    ],
    ids=["train", "val", "test", "audioldm", "tango"],
)
def test_published_lists_are_recognised(path, name, rows, clips, split):
    if not path.is_file():
        pytest.skip(f"{path} is not here (the subsets are not shipped; shared/protocols is not beside this clone)")
    entries, n_rows = ac.parse_list(path)
    assert (n_rows, len(entries)) == (rows, clips)
    assert ac.identify_protocol(path, "auto", n_rows, split)["protocol"] == name
    # every clip of AudioLDM's list (ids alone) takes its start time from the shipped AudioCaps lists
    assert ac.with_start_times(entries, ["{youtube_id}_{start_time}"])[1] == (964 if name == "audioldm_964" else 0)


def test_start_times_without_the_shipped_lists(tmp_path, monkeypatch):
    """A list of ids alone (AudioLDM's) in a checkout that lacks protocols/audiocaps/: files named
    by id still resolve (the default patterns), but if every pattern needs a start time nothing
    could, so that is an error naming the folder, not every clip counted missing."""
    from siren_bench.config import AudioCapsConfig

    monkeypatch.setattr(ac, "SHIPPED_LISTS", tmp_path / "audiocaps")
    (tmp_path / "audiocaps").mkdir()  # there, but empty
    entries = [ac.ListEntry(youtube_id="abc", start_time=None, audiocap_id=None, captions=["a dog barks"])]
    assert ac.with_start_times(entries, AudioCapsConfig().filename_patterns) == (entries, 0)
    with pytest.raises(ac.AudioCapsError, match=r"audiocaps: no shipped AudioCaps lists \(audiocaps_\*\.csv\) .*every "
                                                r"data.filename_patterns entry needs one"):
        ac.with_start_times(entries, ["{youtube_id}_{start_time}", "Y{youtube_id}_{start_time}"])
    timed = [ac.ListEntry(youtube_id="abc", start_time="30", audiocap_id=None, captions=["a dog barks"])]
    assert ac.with_start_times(timed, ["{youtube_id}_{start_time}"]) == (timed, 0)


def test_the_shipped_lists_share_no_clip_and_are_the_default():
    import yaml

    lists = {split: (SHIPPED / name, ac.parse_list(SHIPPED / name)[0]) for split, name in
             (("train", "audiocaps_train_49838.csv"), ("val", "audiocaps_val_495x5.csv"), ("test", "audiocaps_test_975x5.csv"))}
    ac.check_no_leakage(lists)  # raises on any shared clip
    defaults = yaml.safe_load((REPO / "conf" / "data" / "audiocaps.yaml").read_text())
    assert {f"{split}_list": f"protocols/audiocaps/{path.name}" for split, (path, _) in lists.items()} == \
        {k: defaults[k] for k in ("train_list", "val_list", "test_list")}


def _three_splits(tmp_path, missing_train: int = 0):
    """A folder with a train list of 10 clips (the first `missing_train` absent), val 2, test 2."""
    audio = tmp_path / "audio"
    lists = {}
    for split, n in (("train", 10), ("val", 2), ("test", 2)):
        rows = [(str(i), f"{split}{i}", "0", f"{split} caption {i}") for i in range(n)]
        lists[f"{split}_list"] = str(_write_csv(tmp_path / f"{split}.csv", rows))
        for i in range(missing_train if split == "train" else 0, n):
            write_audio(audio / f"{split}{i}.wav", tone(1.0, 16000, freq=220.0 * (i + 1)), 16000)
    return {"name": "audiocaps", "audio_dir": str(audio), "protocol": "custom", "clip_seconds": 1.0, **lists}


def test_three_splits_are_prepared_and_counted_per_split(tmp_path, write_params):
    out = prepare.run(write_params(_three_splits(tmp_path, missing_train=1)))
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert manifest.groupby("split").size().to_dict() == {"test": 2, "train": 9, "val": 2}
    info = json.loads((out / "dataset.json").read_text())["splits"]
    assert {s: (v["clips_found"], v["clips_missing"]) for s, v in info.items()} == {"train": (9, 1), "val": (2, 0), "test": (2, 0)}
    assert info["train"]["missing"] == [{"youtube_id": "train0", "start_time": "0"}]


def test_a_split_missing_too_many_clips_is_refused_by_name(tmp_path, write_params):
    data = _three_splits(tmp_path, missing_train=2)
    with pytest.raises(ac.AudioCapsError, match=r"train.csv \(train\): 2 of 10 clips \(20.0%\) are not in .*"
                                                r"data.max_missing_fraction=0.15; first missing: train0, train1"):
        prepare.run(write_params(data))
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("manifest.csv"))
    out = prepare.run(write_params(data | {"max_missing_fraction": 0.25}))  # accepted when the user says so
    assert json.loads((out / "dataset.json").read_text())["splits"]["train"]["missing_fraction"] == 0.2


def test_a_clip_in_two_splits_is_leakage(tmp_path, write_params):
    data = _three_splits(tmp_path)
    _write_csv(Path(data["val_list"]), [("0", "val0", "0", "v"), ("1", "test1", "0", "also in test")])
    with pytest.raises(ac.AudioCapsError, match=r"val.csv \(val\) and .*test.csv \(test\) share 1 clip\(s\), e.g. test1"):
        prepare.run(write_params(data))


def test_a_list_of_another_split_is_refused(tmp_path):
    shipped_val = SHIPPED / "audiocaps_val_495x5.csv"
    with pytest.raises(ac.AudioCapsError, match="audiocaps_val_495x5 list \\(the val split\\), given as data.test_list"):
        ac.identify_protocol(shipped_val, "auto", 2475, "test")


def test_clip_silent_after_crop_names_the_source(fake_audiocaps, write_params):
    late = np.zeros(12 * 16000)
    late[11 * 16000:] = 0.3  # sound only after the 10 s crop
    sf.write(str(Path(fake_audiocaps["audio_dir"]) / "aaa.wav"), late, 16000)
    with pytest.raises(ac.AudioCapsError, match=r"aaa\.wav: silent after mean channel mix and crop to 10.0 s"):
        prepare.run(write_params(fake_audiocaps))


def test_antiphase_stereo_is_silent_after_mixing(fake_audiocaps, write_params):
    wave = tone(10.0, 16000)
    sf.write(str(Path(fake_audiocaps["audio_dir"]) / "aaa.wav"), np.stack([wave, -wave], axis=1), 16000)
    with pytest.raises(ac.AudioCapsError, match="silent after mean channel mix"):
        prepare.run(write_params(fake_audiocaps))


def test_beyond_full_scale_is_scaled_and_listed(fake_audiocaps, write_params):
    sf.write(str(Path(fake_audiocaps["audio_dir"]) / "aaa.wav"), 10 * tone(10.0, 16000), 16000, subtype="FLOAT")
    params = write_params(fake_audiocaps)
    read = read_manifest(prepare.run(params) / "manifest.csv").set_index("clip_id")
    wave, _ = read_clip(read.loc["aaa", "audio_path"], read.loc["aaa", "decode"])
    assert np.max(np.abs(wave)) == pytest.approx(1.0, abs=1e-3)
    text = (report.run(params) / "report.md").read_text()
    assert "1 such files" in text and "| aaa |" in text.split("### Files beyond full scale")[1]


@pytest.mark.parametrize(
    "row, problem",
    [(("1", "../../evil", "0", "x"), "is not a YouTube id"), (("1", "abc", "0", "  "), "empty caption")],
    ids=["path-in-id", "empty-caption"],
)
def test_list_rows_are_validated(tmp_path, row, problem):
    listing = _write_csv(tmp_path / "list.csv", [row])
    with pytest.raises(ac.AudioCapsError, match=problem) as info:
        ac.parse_list(listing)
    assert str(listing) in str(info.value)


def test_decoding_in_two_workers_gives_the_files_one_worker_gives(tmp_path, write_params, monkeypatch):
    import shutil

    data = _three_splits(tmp_path) | {"store_decoded": True}
    one = pd.read_csv(prepare.run(write_params(data | {"workers": 1})) / "manifest.csv", keep_default_na=False)
    (store,) = (tmp_path / "artifacts").rglob("prepare-audiocaps-*")  # the decoded store stays: the output links it
    output = next((tmp_path / "artifacts").rglob("prepare/audio/train0.wav"))
    assert output.stat().st_ino == (store / "train0.wav").stat().st_ino  # one copy on disk
    assert {"source_file", "source_bytes", "source_sha256"} <= set(one.columns)
    shutil.rmtree(store)  # so that the 2-worker run decodes everything again
    two = pd.read_csv(prepare.run(write_params(data | {"workers": 2})) / "manifest.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(one, two)
    assert one["clip_id"].tolist()[:3] == ["train0", "train1", "train2"]  # list order, whatever order workers finish in
    # the output lost (another experiment checked out: DVC does not cache it): prepare links, decodes nothing
    shutil.rmtree(output.parent.parent)
    monkeypatch.setattr(ac, "_decode_one", lambda job: pytest.fail(f"decoded {job[1]} again"))
    again = pd.read_csv(prepare.run(write_params(data | {"workers": 1})) / "manifest.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(one, again)


def test_a_killed_prepare_resumes_without_decoding_finished_clips(tmp_path, monkeypatch):
    config = AudioCapsConfig(**_three_splits(tmp_path), workers=1)
    sources = ac.resolve_sources(config)
    work = tmp_path / "work"
    first = ac.decode_all(sources, config, work)
    (work / "train3.json").unlink()  # killed after train3's WAV, before its record: not done
    source = Path(config.audio_dir) / "val1.wav"
    write_audio(source, tone(1.0, 16000, freq=880.0), 16000)  # replaced since: decoded again
    decoded = []
    real = ac._decode_one
    monkeypatch.setattr(ac, "_decode_one", lambda job: decoded.append(job[1]) or real(job))
    second = ac.decode_all(sources, config, work)
    assert sorted(decoded) == ["train3", "val1"]
    assert {k: v["sha256"] for k, v in second.items() if k[1] != "val1"} == {k: v["sha256"] for k, v in first.items() if k[1] != "val1"}
    assert second[("val", "val1")]["sha256"] != first[("val", "val1")]["sha256"]


def test_clips_decoded_where_read_are_the_stored_clips_sample_for_sample(tmp_path, write_params, monkeypatch):
    """data.store_decoded=false (the default) keeps no decoded copy, yet every reader gets what a
    stored copy holds: the same content hash in the manifest (so caches are shared) and the same
    samples; and a source changed after prepare is refused by the scorer, by name."""
    import shutil

    from siren_bench.evaluation.clipsets import ClipSetError, manifest_clips

    data = _three_splits(tmp_path)
    write_audio(Path(data["audio_dir"]) / "val0.wav", tone(1.5, 44100, channels=2), 44100)  # resampled, mixed, cut
    stored = read_manifest(prepare.run(write_params(data | {"store_decoded": True})) / "manifest.csv")
    kept = [read_clip(path)[0] for path, _ in audio_sources(stored)]
    shutil.rmtree(tmp_path / "artifacts")
    prepared = prepare.run(write_params(data))
    on_demand = read_manifest(prepared / "manifest.csv")
    assert not list((tmp_path / "artifacts").rglob("*.wav"))  # nothing decoded kept, in the output or the resume folder
    assert stored["sha256"].tolist() == on_demand["sha256"].tolist() and (stored["decode"] == "").all()
    assert on_demand["audio"].tolist() == [str(p) for p in on_demand["audio_path"]] and (on_demand["decode"] != "").all()
    for wave, (source, decode) in zip(kept, audio_sources(on_demand)):
        assert np.array_equal(wave, read_clip(source, decode)[0])
    test = manifest_clips(prepared / "manifest.csv", "test")
    assert {c.sha256 for c in test.clips.values()} == set(on_demand[on_demand["split"] == "test"]["sha256"])
    # verifying the manifest checks each source file against its recorded hash, decoding nothing
    from siren_bench.data import manifest as manifest_module

    with monkeypatch.context() as patched:
        patched.setattr(manifest_module, "decode_source", lambda *a: pytest.fail("decoded a clip to verify it"))
        read_manifest(prepared / "manifest.csv", verify_hashes=True)
    changed = test.clips[test.ids[0]].path
    write_audio(changed, tone(1.0, 16000, freq=880.0), 16000)
    with pytest.raises(ClipSetError, match=rf"{changed}: SHA-256 .* the file changed after the manifest was written"):
        manifest_clips(prepared / "manifest.csv", "test")
    source_sha = on_demand.loc[on_demand["audio_path"] == changed, "source_sha256"].item()
    with pytest.raises(ManifestError, match=rf"{changed}: SHA-256 .* does not match the manifest's {source_sha}"):
        read_manifest(prepared / "manifest.csv", verify_hashes=True)


def test_symlinked_folders_are_searched_once_and_a_link_loop_ends(tmp_path):
    """A split kept on another disk behind a folder link is found; a link back up the tree is
    followed once, not forever."""
    elsewhere, audio = tmp_path / "mnt" / "train", tmp_path / "audio"
    write_audio(elsewhere / "aaa.wav", tone(1.0, 16000), 16000)
    write_audio(audio / "test" / "bbb.wav", tone(1.0, 16000), 16000)
    (audio / "train").symlink_to(elsewhere, target_is_directory=True)
    (audio / "test" / "up").symlink_to(audio, target_is_directory=True)
    index = ac.index_audio_folder(audio, [".wav"])
    assert index == {"aaa": [audio / "train" / "aaa.wav"], "bbb": [audio / "test" / "bbb.wav"]}


def test_a_list_without_start_times_finds_files_named_with_them(tmp_path):
    """AudioLDM's 964-clip list names clips by YouTube id alone; a copy named `{id}_{start}`
    is found through the start times of the shipped AudioCaps lists, and the record says how many."""
    shipped = pd.read_csv(SHIPPED / "audiocaps_test_975x5.csv", dtype=str).drop_duplicates("youtube_id").head(2)
    (first, start), (second, _) = shipped[["youtube_id", "start_time"]].itertuples(index=False)
    audio = tmp_path / "audio"
    write_audio(audio / f"{first}_{start}.wav", tone(1.0, 16000), 16000)
    listing = tmp_path / "subset.json"
    listing.write_text(json.dumps({"data": [{"wav": f"/x/Y{clip}.wav", "caption": "c", "labels": ""}
                                            for clip in (first, second, "notAnAudioCapsId")]}))
    source = ac.resolve_sources(AudioCapsConfig(audio_dir=str(audio), test_list=str(listing), protocol="custom",
                                                max_missing_fraction=0.9))["test"]
    assert [(e.youtube_id, e.start_time, p.name) for e, p in source.present] == [(first, start, f"{first}_{start}.wav")]
    assert sorted(e.youtube_id for e in source.missing) == sorted([second, "notAnAudioCapsId"])
    assert source.protocol["start_times_from_shipped_lists"] == 2
