"""Packed sets as insightface's tools write them, built here from 20 LFW people with a writer of
their own (tests/mxnet_recordio.py, from MXNet's and dmlc-core's code) and with webdataset's own
ShardWriter: sparse labels train, identity records that disagree with the images' own labels are
followed as MXFaceDataset follows them and said, property says the image size, other tools'
sets are indexed by ``crossres-pack --index``, and check_data's manifest of a read-only set goes
to the cache."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from crossres_dist.data import check as check_data
from crossres_dist.data.pack import main as pack_main
from pipelines.packed import read_encoded
from pipelines.sources import DataError, load_source
from tests import mxnet_recordio
from tests.conftest import needs_lfw
from tests.fixtures.insightface_sets import (
    PEOPLE,
    SPARSE,
    train,
)

pytestmark = needs_lfw


def test_sparse_labels_train_as_classes_named_by_their_label_in_both_layouts(
    tmp_path, people, caplog
):
    sparse = [(image, SPARSE[person]) for image, person in people]
    mxnet_recordio.without_identity_records(tmp_path / "shuffled", sparse)
    mxnet_recordio.face2rec2(tmp_path / "recbuilder", sparse)
    expected = {str(label): i for i, label in enumerate(SPARSE)}
    with caplog.at_level(logging.INFO):
        for layout in ("shuffled", "recbuilder"):
            dataset = load_source(str(tmp_path / layout))
            assert dataset.identities == expected, layout
            assert [s.label for s in dataset.samples] == [person for _, person in people]
            assert [read_encoded(s.path) for s in dataset.samples] == [i for i, _ in people]
    said = [r.getMessage() for r in caplog.records if "labels are sparse" in r.getMessage()]
    assert (
        len(said) == 2 and "(20 identities, labels 100..157): trained as classes 0..19" in said[0]
    )
    assert "insightface would size its classifier to 158" in said[0]
    result, _ = train(tmp_path / "shuffled", tmp_path / "run")
    assert result["step"] == 3
    # The run's label map names each class by its label in the .rec.
    assert json.loads((tmp_path / "run" / "identities.json").read_text()) == expected


def test_identity_records_that_disagree_with_the_images_are_followed_as_insightface_and_said(
    tmp_path, people, caplog
):
    # face2rec2 run on a list not grouped by person: two runs of each, 40 identity records.
    halves = [[(i, p) for i, p in people if p == person] for person in range(PEOPLE)]
    ungrouped = [x for h in halves for x in h[: len(h) // 2]]
    ungrouped += [x for h in halves for x in h[len(h) // 2 :]]
    mxnet_recordio.face2rec2(tmp_path / "rec", ungrouped)
    with caplog.at_level(logging.WARNING):
        dataset = load_source(str(tmp_path / "rec"))
    assert dataset.num_classes == PEOPLE  # not 40
    assert [s.label for s in dataset.samples] == [p for _, p in ungrouped]
    first_of_second_run = len([x for h in halves for x in h[: len(h) // 2]]) + 1
    warning = next(r.getMessage() for r in caplog.records if "disagree" in r.getMessage())
    assert (
        f"(first at record {first_of_second_run}: in identity record {PEOPLE}'s range, own "
        "label 0; 40 identity records, 20 labels): trained on each image record's own label, "
        "as insightface's MXFaceDataset does" in warning
    )
    assert check_data.check_dataset(str(tmp_path / "rec"), decode=False).problems == {}


def test_check_data_names_the_first_record_whose_own_label_differs_inside_a_range(tmp_path, people):
    # Grouped by person, but one face inside person 3's run carries person 4's label: the
    # identity records say 3, the record itself says 4 (the quick check reads range ends only).
    items = list(people)
    inside = [k for k, (_, p) in enumerate(items) if p == 3][2]
    items[inside] = (items[inside][0], 4)
    # face2rec2 makes runs of equal labels: write the ranges of the clean set instead.
    mxnet_recordio.face2rec2(tmp_path / "clean", people)
    writer = mxnet_recordio.IndexedWriter(tmp_path / "rec")
    clean = (tmp_path / "clean" / "train.idx").read_text().split()
    for key, (image, label) in enumerate(items, 1):
        writer.write_idx(key, mxnet_recordio.pack([label, 1.0], key, image))
    rec = (tmp_path / "clean" / "train.rec").read_bytes()
    offsets = dict(zip(map(int, clean[0::2]), map(int, clean[1::2])))
    ends = sorted(offsets.values()) + [len(rec)]
    for key in [0, *range(len(items) + 1, len(items) + 1 + PEOPLE)]:
        start = offsets[key]
        writer.idx.write(f"{key}\t{writer.rec.tell()}\n")
        writer.rec.write(rec[start : ends[ends.index(start) + 1]])
    writer.close()
    report = check_data.check_dataset(str(tmp_path / "rec"), decode=False)
    (wrong,) = report.problems["label_disagrees_with_identity_record"]
    located = load_source(str(tmp_path / "rec")).samples[inside].path
    assert wrong.startswith(f"{located}: own label 4, but its identity record gives 3 (1 such")
    assert check_data.main([str(tmp_path / "rec"), "--headers-only"]) == 1


def test_property_says_the_image_size_and_size_112_packs_what_insightface_trains_on(
    tmp_path, people
):
    folder = tmp_path / "faces"
    for n, (image, person) in enumerate(people):
        (folder / f"p{person:02d}").mkdir(parents=True, exist_ok=True)
        (folder / f"p{person:02d}" / f"{n}.jpg").write_bytes(image)
    assert pack_main([str(folder), str(tmp_path / "as-is"), "--format", "rec"]) == 0
    assert (tmp_path / "as-is" / "property").read_text() == f"{PEOPLE},250,250\n"
    assert pack_main([str(folder), str(tmp_path / "112"), "--format", "rec", "--size", "112"]) == 0
    assert (tmp_path / "112" / "property").read_text() == f"{PEOPLE},112,112\n"
    packed = load_source(str(tmp_path / "112"))
    for sample in packed.samples[:: len(packed.samples) // 5]:
        with Image.open(io.BytesIO(read_encoded(sample.path))) as image:
            assert image.size == (112, 112) and image.format == "JPEG"
    # The centre square of a 250 x 250 face is all of it: the same face, resized.
    with Image.open(io.BytesIO(read_encoded(packed.samples[0].path))) as small:
        with Image.open(io.BytesIO(people[0][0])) as large:
            a = np.asarray(small.convert("L"), np.float32)
            b = np.asarray(large.convert("L").resize((112, 112)), np.float32)
    assert np.abs(a - b).mean() < 8
    result, _ = train(tmp_path / "112", tmp_path / "run")
    assert result["step"] == 3


def test_shards_written_by_webdataset_are_refused_with_the_command_then_indexed(
    tmp_path, people, capsys
):
    import webdataset

    shards = tmp_path / "shards"
    shards.mkdir()
    with webdataset.ShardWriter(str(shards / "faces-%04d.tar"), maxcount=100, verbose=0) as sink:
        for n, (image, person) in enumerate(people):
            sink.write({"__key__": f"sample{n:05d}", "jpg": image, "cls": person})
    with pytest.raises(DataError) as refused:
        load_source(str(shards))
    assert str(refused.value) == (
        f"{shards}/wds-index.npz: missing: webdataset shards need an index of their samples; "
        f"make it once with `crossres-pack --index {shards}`"
    )
    assert pack_main(["--index", str(shards)]) == 0
    assert f"indexed {len(people)} samples" in capsys.readouterr().out
    dataset = load_source(str(shards))
    assert [s.label for s in dataset.samples] == [p for _, p in people]
    assert [read_encoded(s.path) for s in dataset.samples] == [i for i, _ in people]
    assert pack_main(["--index", str(shards)]) == 2  # an index is never replaced
    assert "wds-index.npz: exists already; nothing to index" in capsys.readouterr().err


def test_a_rec_without_its_idx_is_refused_with_the_command_then_indexed_as_mxnet_would(
    tmp_path, people, capsys
):
    mxnet_recordio.face2rec2(tmp_path / "rec", people)
    written = (tmp_path / "rec" / "train.idx").read_text()
    (tmp_path / "rec" / "train.idx").unlink()
    with pytest.raises(DataError, match=r"train.idx: missing; index the .rec once with "):
        load_source(str(tmp_path / "rec"))
    assert pack_main(["--index", str(tmp_path / "rec")]) == 0
    # Keyed by each record's id, in the order of the file (the writer wrote record 0 last).
    lines = sorted(written.splitlines(), key=lambda line: int(line.split()[1]))
    assert (tmp_path / "rec" / "train.idx").read_text().splitlines() == lines
    assert len(load_source(str(tmp_path / "rec")).samples) == len(people)
