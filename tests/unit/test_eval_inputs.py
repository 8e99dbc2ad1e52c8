"""Evaluation never reports stale or partial numbers in silence. Trees in the releases' layouts are
built from the LFW faces (tools/benchmark_trees.py); each test changes or breaks one thing and
checks that a reused --out (and a shared --aligned-cache) gives what a fresh folder gives, or that
the change is refused or warned of in one line naming the file. In process, one rank."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from crossres_dist import evaluate
from tests.conftest import LFW, TINY, needs_lfw
from tools import benchmark_trees

pytestmark = needs_lfw


def run(capsys, tiny_teacher, protocol, root, out, *extra):
    """Exit code, stdout, stderr and results.json of one in-process evaluation."""
    code = evaluate.main(
        ["--protocol", protocol, "--root", str(root), "--config", str(TINY),
         "--checkpoint", str(tiny_teacher), "--name", "tiny", "--out", str(out), "--no-plots",
         *extra]
    )  # fmt: skip
    captured = capsys.readouterr()
    report = None
    if code == 0:
        report = json.loads((Path(out) / "results.json").read_text())
    return code, captured.out, captured.err, report


def metrics(report) -> dict:
    """The numbers of a report, without where they were cached."""
    model = dict(report["models"]["tiny"])
    model.pop("feature_cache")
    return model


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    if not LFW.is_dir():
        pytest.skip(f"{LFW} is absent; runs wherever ../shared holds the LFW sample (CI does)")
    base = tmp_path_factory.mktemp("trees")
    benchmark_trees.ijbc(LFW, base / "ijbc", identities=4)
    benchmark_trees.tinyface(LFW, base / "tinyface", identities=4, distractors=2)
    benchmark_trees.survface(LFW, base / "survface", identities=4, unmated=3)
    return base


def copy(trees, name, tmp_path) -> Path:
    return Path(shutil.copytree(trees / name, tmp_path / name))


# ----------------------------------------------------------------------------- stale caches
def test_tinyface_probes_replaced_in_place_are_extracted_again(
    trees, tmp_path, capsys, tiny_teacher
):
    root = copy(trees, "tinyface", tmp_path)
    code, *_, before = run(capsys, tiny_teacher, "tinyface", root, tmp_path / "out")
    assert code == 0
    for probe in sorted((root / "Testing_Set" / "Probe").iterdir()):
        with Image.open(probe) as image:
            image.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(probe)  # same name and size
    *_, reused = run(capsys, tiny_teacher, "tinyface", root, tmp_path / "out")
    *_, fresh = run(capsys, tiny_teacher, "tinyface", root, tmp_path / "fresh")
    assert metrics(reused) == metrics(fresh)
    assert reused["models"]["tiny"]["feature_cache"] != before["models"]["tiny"]["feature_cache"]


def test_shifted_landmarks_are_aligned_again_in_a_shared_aligned_cache(
    trees, tmp_path, capsys, tiny_teacher
):
    root = copy(trees, "ijbc", tmp_path)
    shared = ["--aligned-cache", str(tmp_path / "aligned"), "--resolutions", "8", "full"]
    code, *_, before = run(capsys, tiny_teacher, "ijbc", root, tmp_path / "out", *shared)
    assert code == 0
    marks = root / "meta" / "ijbc_name_5pts_score.txt"
    lines = []
    for line in marks.read_text().splitlines():
        name, *values = line.split()
        points = [f"{float(v) + 9:.2f}" for v in values[:10]]  # every point 9 px off
        lines.append(" ".join([name, *points, values[10]]))
    marks.write_text("\n".join(lines) + "\n")
    *_, reused = run(capsys, tiny_teacher, "ijbc", root, tmp_path / "out", *shared)
    fresh_args = ["--aligned-cache", str(tmp_path / "aligned-fresh"), "--resolutions", "8", "full"]
    *_, fresh = run(capsys, tiny_teacher, "ijbc", root, tmp_path / "fresh", *fresh_args)
    assert metrics(reused) == metrics(fresh)
    assert metrics(reused) != metrics(before)


@pytest.mark.parametrize(
    "first,then",
    [
        (["--backend", "dali"], ["--backend", "torchvision"]),
        (["method.interpolation=linear"], ["method.interpolation=nearest"]),
    ],
    ids=["backend", "interpolation"],
)
def test_another_backend_or_interpolation_is_not_served_from_the_cache(
    trees, tmp_path, capsys, tiny_teacher, first, then
):
    root = trees / "survface"
    code, *_, before = run(capsys, tiny_teacher, "survface", root, tmp_path / "out", *first)
    assert code == 0
    *_, reused = run(capsys, tiny_teacher, "survface", root, tmp_path / "out", *then)
    *_, fresh = run(capsys, tiny_teacher, "survface", root, tmp_path / "fresh", *then)
    assert metrics(reused) == metrics(fresh)
    assert reused["models"]["tiny"]["feature_cache"] != before["models"]["tiny"]["feature_cache"]
    settings = reused["models"]["tiny"]["feature_settings"]
    assert {"backend", "views", "interpolation", "flip"} <= set(settings)
    assert Path(reused["models"]["tiny"]["checkpoint"]).is_absolute()


def test_the_feature_cache_key_is_path_size_and_time_as_the_docs_say(tmp_path, tiny_teacher):
    """The key is each image's path, size and modification time, not its bytes
    (docs/benchmarks.md): a rewritten file is a new key, an edit that keeps both is not."""
    import os

    from crossres_dist.eval.features import cache_key
    from pipelines import Sample

    image = tmp_path / "a.jpg"
    shutil.copy(sorted(LFW.glob("*/*.jpg"))[0], image)
    samples = [Sample(str(image), 0)]
    key = cache_key(str(tiny_teacher), samples, {}, "full")
    stat = image.stat()
    data = bytearray(image.read_bytes())
    data[-3] ^= 0xFF  # same size
    image.write_bytes(bytes(data))
    assert cache_key(str(tiny_teacher), samples, {}, "full") != key  # a new modification time
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache_key(str(tiny_teacher), samples, {}, "full") == key  # the stated limit


# ----------------------------------------------------------------------------- partial results
def test_one_missing_1n_csv_is_refused_and_none_at_all_is_said(
    trees, tmp_path, capsys, tiny_teacher
):
    root = copy(trees, "ijbc", tmp_path)
    (root / "meta" / "ijbc_1N_gallery_G2.csv").unlink()
    code, _, err, _ = run(capsys, tiny_teacher, "ijbc", root, tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "ijbc_1N_gallery_G2.csv: NIST 1:N CSV not found, while the other" in err
    for csv in (root / "meta").glob("*_1N_*.csv"):
        csv.unlink()
    code, out, err, report = run(
        capsys, tiny_teacher, "ijbc", root, tmp_path / "out", "--resolutions", "full"
    )
    assert code == 0 and "1:N identification is left out" in err
    assert "ijbc_1N_gallery_G1.csv, ijbc_1N_gallery_G2.csv, ijbc_1N_probe_mixed.csv" in err
    assert "1:N identification is left out" not in out  # log lines on stderr, tables on stdout
    assert "| full | n/a" in out  # the 1:1 table, on stdout


def test_survface_pairs_stored_two_by_n_are_refused(trees, tmp_path, capsys, tiny_teacher):
    root = copy(trees, "survface", tmp_path)
    mat = root / "Face_Verification_Test_Set" / "positive_pairs_names.mat"
    pairs = [[f"{i + 1}_1.jpg", f"{i + 1}_2.jpg"] for i in range(4)]
    savemat(mat, {"positive_pairs_names": np.array(pairs, dtype=object).T})
    code, _, err, _ = run(capsys, tiny_teacher, "survface", root, tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        "positive_pairs_names.mat: positive_pairs_names is 2 x 4; the release stores N x 2" in err
    )


def test_an_empty_survface_gallery_is_refused_before_any_network_runs(
    trees, tmp_path, capsys, tiny_teacher
):
    root = copy(trees, "survface", tmp_path)
    ident = root / "Face_Identification_Test_Set"
    for image in (ident / "gallery").iterdir():
        image.unlink()
    empty = np.zeros((0, 1), dtype=object)
    savemat(ident / "gallery_img_ID_pairs.mat", {"gallery_set": empty, "gallery_ids": empty})
    code, _, err, _ = run(capsys, tiny_teacher, "survface", root, tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{ident / 'gallery'}: no gallery images (gallery_img_ID_pairs.mat names none)" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_tinyface_probe_without_a_match_is_said_and_not_counted(
    trees, tmp_path, capsys, tiny_teacher
):
    root = copy(trees, "tinyface", tmp_path)
    mat = root / "Testing_Set" / "probe_img_ID_pairs.mat"
    from scipy.io import loadmat

    probes = loadmat(str(mat))
    ids = probes["probe_ids"].copy()
    ids[0, 0] = 99  # an identity the gallery does not hold
    savemat(mat, {"probe_set": probes["probe_set"], "probe_ids": ids})
    code, out, err, report = run(capsys, tiny_teacher, "tinyface", root, tmp_path / "out")
    assert code == 0
    assert "1 of 4 probes have no gallery match (e.g. 1_1.jpg, identity 99)" in err
    identification = report["models"]["tiny"]["identification"]
    assert identification["probes"] == 3 and identification["probes_without_match"] == 1
    assert "3 probes against" in out


def test_empty_unmated_folder_and_ignored_resolutions_are_said(
    trees, tmp_path, capsys, tiny_teacher
):
    root = copy(trees, "survface", tmp_path)
    for image in (root / "Face_Identification_Test_Set" / "unmated_probe").iterdir():
        image.unlink()
    code, _, err, _ = run(
        capsys, tiny_teacher, "survface", root, tmp_path / "out", "--resolutions", "8", "16"
    )
    assert code == 0
    assert "unmated_probe has no images: open-set TPIR at FPIR cannot be measured" in err
    assert "--protocol survface: its images are low-resolution already" in err
    assert "--resolutions 8 16 is not used" in err


def test_survface_columns_and_json_keys_in_numeric_order(trees, tmp_path, capsys, tiny_teacher):
    code, out, _, report = run(capsys, tiny_teacher, "survface", trees / "survface", tmp_path / "o")
    assert code == 0
    assert "| model | 0.001 | 0.01 | 0.1 | 0.3 | AUC |" in out
    keys = [k for k in report["models"]["tiny"]["verification"] if k.startswith("tar@far=")]
    assert keys == ["tar@far=0.001", "tar@far=0.01", "tar@far=0.1", "tar@far=0.3"]


# ----------------------------------------------------------------------------- errors that name the file
@pytest.mark.parametrize(
    "file,edit,message",
    [
        ("ijbc_face_tid_mid.txt", lambda t: t.replace("1.jpg 1 ", "1.jpg one ", 1),
         "ijbc_face_tid_mid.txt:1: template id 'one' is not an integer"),
        ("ijbc_name_5pts_score.txt", lambda t: t.replace(" ", " x", 1),
         "ijbc_name_5pts_score.txt:1: landmark 'x"),
        ("ijbc_name_5pts_score.txt", lambda t: " ".join(t.split(" ", 2)[:1] + ["nan"] + t.split(" ", 2)[2:]),
         "ijbc_name_5pts_score.txt:1: landmark is nan, not a finite number"),
        ("ijbc_1N_gallery_G1.csv", lambda t: t.splitlines()[0] + "\n",
         "ijbc_1N_gallery_G1.csv: lists no template"),
    ],
    ids=["template-id", "landmark", "nan-landmark", "empty-gallery"],
)  # fmt: skip
def test_bad_ijb_fields_name_the_file_and_line(
    trees, tmp_path, capsys, tiny_teacher, file, edit, message
):
    root = copy(trees, "ijbc", tmp_path)
    path = root / "meta" / file
    path.write_text(edit(path.read_text()))
    code, _, err, _ = run(capsys, tiny_teacher, "ijbc", root, tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err


def test_a_zero_byte_image_is_named_and_a_bom_is_no_header(trees, tmp_path, capsys, tiny_teacher):
    root = copy(trees, "tinyface", tmp_path)
    empty = root / "Testing_Set" / "Gallery_Distractor" / "1.jpg"
    empty.write_bytes(b"")
    code, _, err, _ = run(capsys, tiny_teacher, "tinyface", root, tmp_path / "out")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: {empty}: this image cannot be read (zero_byte)")
    ijb = copy(trees, "ijbc", tmp_path)
    for csv in (ijb / "meta").glob("*.csv"):
        csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())  # saved by a spreadsheet
    code, out, err, report = run(
        capsys, tiny_teacher, "ijbc", ijb, tmp_path / "ijb", "--resolutions", "full"
    )
    assert code == 0, err
    assert "identification" in json.dumps(report["models"]["tiny"])
