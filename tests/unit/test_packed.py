"""Packed face sets (pipelines/packed.py, crossres-pack): insightface's RecordIO and webdataset
shards, built from real faces, read back by DALI's own readers as an independent check of the
format, trained on exactly as the folder they were packed from, resumed bitwise, and refused in
one line naming the file and the offset when damaged."""

import json
import shutil
import struct

import numpy as np
import pytest

from crossres_dist.data import check as check_data
from crossres_dist.data.pack import main as pack_main
from pipelines.packed import (
    MAGIC_BYTES,
    pack_record,
    parse_locator,
    read_encoded,
    read_record,
)
from pipelines.sources import DataError, SplitSpec, load_source, load_splits
from tests.conftest import LFW, ORL, needs_dali, needs_lfw
from tests.golden import pretrain_in_process as _train


def packed(tmp_path_factory, source, name: str) -> dict:
    out = tmp_path_factory.mktemp(name)
    for kind in ("rec", "wds"):
        assert (
            pack_main([str(source), str(out / kind), "--format", kind, "--per-shard", "150"]) == 0
        )
    return {"folder": source, "rec": out / "rec", "wds": out / "wds"}


@pytest.fixture(scope="module")
def lfw_packed(tmp_path_factory):
    return packed(tmp_path_factory, LFW, "lfw")


@pytest.fixture(scope="module")
def orl_packed(tmp_path_factory):
    return packed(tmp_path_factory, ORL, "orl")


@needs_lfw
def test_a_packed_set_lists_the_folders_samples_and_splits_alike(lfw_packed):
    folder = load_source(str(lfw_packed["folder"]))
    for kind in ("rec", "wds"):
        other = load_source(str(lfw_packed[kind]))
        assert other.identities == folder.identities
        assert [s.label for s in other.samples] == [s.label for s in folder.samples]
        assert all(parse_locator(s.path) for s in other.samples)
        pairs = zip(folder.samples, other.samples)
        assert all(read_encoded(a.path) == read_encoded(b.path) for a, b in pairs)
        a = load_splits(SplitSpec(str(lfw_packed["folder"]), "split:2", "split:3"))
        b = load_splits(SplitSpec(str(lfw_packed[kind]), "split:2", "split:3"))
        for part in ("val", "test"):
            x, y = a.part(part).samples, b.part(part).samples
            assert [read_encoded(s.path) for s in x] == [read_encoded(s.path) for s in y], part


@needs_lfw
@needs_dali
def test_dalis_own_mxnet_reader_reads_the_recordio_we_write(lfw_packed):
    from nvidia.dali import fn, pipeline_def

    rec = lfw_packed["rec"]
    folder = load_source(str(lfw_packed["folder"]))

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, exec_dynamic=False)
    def reader():
        data, label = fn.readers.mxnet(
            path=[str(rec / "train.rec")], index_path=[str(rec / "train.idx")], name="r"
        )
        return data, label

    pipe = reader()
    pipe.build()
    records = pipe.epoch_size("r")
    n, identities = len(folder.samples), folder.num_classes
    assert records == 1 + n + identities
    read = []
    for _ in range(records):
        data, label = pipe.run()
        read.append((np.array(data[0]).tobytes(), np.array(label[0]).tolist()))
    assert read[0] == (b"", [n + 1, n + 1 + identities])  # the header record
    for sample, (data, label) in zip(folder.samples, read[1 : n + 1]):
        assert data == read_encoded(sample.path) and label == [sample.label]
    starts = {}
    for i, s in enumerate(folder.samples, 1):
        starts.setdefault(s.label, [i, i])[1] = i + 1
    assert [label for _, label in read[n + 1 :]] == [starts[k] for k in sorted(starts)]


@needs_lfw
@needs_dali
def test_dalis_own_webdataset_reader_reads_the_shards_we_write(lfw_packed):
    from nvidia.dali import fn, pipeline_def

    wds = lfw_packed["wds"]
    shards = sorted(str(p) for p in wds.glob("shard-*.tar"))
    folder = load_source(str(lfw_packed["folder"]))
    assert len(shards) == -(-len(folder.samples) // 150)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, exec_dynamic=False)
    def reader():
        image, label = fn.readers.webdataset(paths=shards, ext=["jpg;png", "cls"], name="r")
        return image, label

    pipe = reader()
    pipe.build()
    assert pipe.epoch_size("r") == len(folder.samples)
    for sample in folder.samples:
        image, label = pipe.run()
        assert np.array(image[0]).tobytes() == read_encoded(sample.path)
        assert int(np.array(label[0]).tobytes()) == sample.label


@needs_dali
def test_a_payload_holding_the_magic_is_split_and_read_back_by_us_and_by_dali(tmp_path):
    from nvidia.dali import fn, pipeline_def

    from pipelines.packed import image_payload

    image = b"\xff\xd8" + b"ab" + MAGIC_BYTES + b"cdef" + MAGIC_BYTES + b"xy" + MAGIC_BYTES + b"z"
    payload = image_payload(image, 3, 1)
    record = pack_record(payload)
    flags = [struct.unpack_from("<I", record, 4)[0] >> 29]
    assert flags == [1]  # the magic at a word boundary starts a continued record
    path = tmp_path / "train.rec"
    path.write_bytes(record)
    (tmp_path / "train.idx").write_text("0\t0\n")
    with open(path, "rb") as f:
        assert read_record(f, 0, str(path)) == payload

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, exec_dynamic=False)
    def reader():
        data, label = fn.readers.mxnet(path=[str(path)], index_path=[str(tmp_path / "train.idx")])
        return data, label

    pipe = reader()
    pipe.build()
    data, label = pipe.run()
    assert np.array(data[0]).tobytes() == image and np.array(label[0]).tolist() == [3.0]


@pytest.mark.parametrize(
    "backend, kinds",
    [("torchvision", ("rec", "wds")), pytest.param("dali", ("rec",), marks=needs_dali)],
)
def test_training_on_the_folder_the_recordio_and_the_shards_gives_the_same_weights(
    tmp_path, orl_packed, backend, kinds
):
    runs = {
        kind: _train(orl_packed[kind], tmp_path / kind, f"data.backend={backend}")[0]
        for kind in ("folder", *kinds)
    }
    for kind in kinds:
        assert runs[kind]["param_checksum_per_rank"] == runs["folder"]["param_checksum_per_rank"]
        assert runs[kind]["final"] == runs["folder"]["final"]


def test_resume_on_a_packed_set_is_bitwise(tmp_path, orl_packed):
    whole, _ = _train(orl_packed["rec"], tmp_path / "whole", "data.backend=torchvision")
    with pytest.raises(FileNotFoundError):  # stopped at step 3: no results.json yet
        _train(
            orl_packed["rec"],
            tmp_path / "halves",
            "data.backend=torchvision",
            "train.stop_after_step=3",
        )
    resumed, rows = _train(orl_packed["rec"], tmp_path / "halves", "data.backend=torchvision")
    assert rows[0]["step"] == 6  # it did resume
    assert resumed["param_checksum_per_rank"] == whole["param_checksum_per_rank"]
    assert resumed["final"] == whole["final"]


def test_a_truncated_recordio_and_an_index_past_its_end_are_named_with_the_offset(
    tmp_path, orl_packed
):
    rec = tmp_path / "rec"
    shutil.copytree(orl_packed["rec"], rec)
    size = (rec / "train.rec").stat().st_size
    with open(rec / "train.rec", "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(
        DataError,
        match=rf"{rec}/train.idx:\d+: offset \d+ lies past the end of train.rec \({size // 2} bytes\)",
    ):
        load_source(str(rec))
    shutil.rmtree(rec)
    shutil.copytree(orl_packed["rec"], rec)
    with open(rec / "train.idx", "a") as f:
        f.write(f"9999\t{size + 4096}\n")
    lines = len((rec / "train.idx").read_text().splitlines())
    with pytest.raises(
        DataError, match=rf"train.idx:{lines}: offset {size + 4096} lies past the end"
    ):
        load_source(str(rec))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda lines: lines[:5] + ["7 oops"] + lines[6:], r"train.idx:6: expected 'key<TAB>offset', got '7 oops'"),
        (lambda lines: lines[:5] + ["7\t0\t1"] + lines[6:], r"train.idx:6: expected 'key<TAB>offset'"),
        (lambda lines: lines + [lines[3]], r"train.idx: key 3 is listed twice"),
        (lambda lines: lines[:3] + lines[4:], r"train.idx: no offset for record 3 \(of 1 missing\)"),
        (lambda lines: lines[1:], r"train.idx: no record 0"),
        (lambda lines: [], r"train.idx: no record 0"),
    ],
    ids=["not-a-number", "three-columns", "repeated-key", "missing-record", "no-header", "empty"],
)  # fmt: skip
def test_a_damaged_index_is_named_by_line_or_key(tmp_path, orl_packed, damage, message):
    # The index is parsed as arrays for speed; what the arrays refuse is named as by lines.
    rec = tmp_path / "rec"
    shutil.copytree(orl_packed["rec"], rec)
    lines = (rec / "train.idx").read_text().splitlines()
    (rec / "train.idx").write_text("\n".join(damage(lines)) + "\n")
    with pytest.raises(DataError, match=message):
        load_source(str(rec))


def test_a_missing_or_truncated_shard_is_named(tmp_path, orl_packed):
    wds = tmp_path / "wds"
    shutil.copytree(orl_packed["wds"], wds)
    (wds / "shard-000001.tar").unlink()
    with pytest.raises(
        DataError,
        match=rf"{wds}/shard-000001.tar: missing; .*wds-index.npz lists 150 samples in it",
    ):
        load_source(str(wds))
    shutil.copy(orl_packed["wds"] / "shard-000001.tar", wds / "shard-000001.tar")
    with open(wds / "shard-000002.tar", "r+b") as f:
        f.truncate(10_000)
    with pytest.raises(
        DataError,
        match=r"shard-000002.tar: 10000 bytes, but .* has a sample ending at byte \d+: a truncated shard",
    ):
        load_source(str(wds))


def test_check_data_decodes_every_record_names_a_bad_one_by_offset_and_training_uses_its_manifest(
    tmp_path, orl_packed, capsys
):
    rec = tmp_path / "rec"
    shutil.copytree(orl_packed["rec"], rec)
    samples = load_source(str(rec)).samples
    victim = samples[17].path
    _, offset, _ = parse_locator(victim)
    with open(rec / "train.rec", "r+b") as f:  # the image's bytes, past its headers, garbled
        f.seek(offset + 8 + 24 + 60)
        f.write(b"\0" * 400)
    manifest = rec / ".crossres-manifest.jsonl"
    assert check_data.main([str(rec), "--manifest", str(manifest), "--threads", "2"]) == 1
    out = capsys.readouterr().out
    assert victim in out and f"checked {len(samples)} files" in out
    recorded = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(recorded) == len(samples) and {r["path"] for r in recorded} == {
        s.path for s in samples
    }
    assert next(r for r in recorded if r["path"] == victim)["problems"]
    # The trainer reads the index and the manifest only, and leaves the bad record out.
    result, _ = _train(
        rec, tmp_path / "run", "data.backend=torchvision", "data.skip_bad_files=true"
    )
    assert result["step"] == 6 and victim in result["skipped_before_run"]
    assert "data.check on a packed set: the index only" in capsys.readouterr().out
