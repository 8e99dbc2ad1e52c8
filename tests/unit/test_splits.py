"""Clean splits: train / validation (selection) / test (reporting), drawn with data.split_seed
only, recorded in every checkpoint, and an evaluator that refuses a checkpoint which trained on the
images it is asked to report."""

import pytest

from crossres_dist.checkpointing.manager import CheckpointManager, load_checkpoint
from pipelines.sources import DataError, SplitSpec, joiner, load_splits, sample_key
from tests.conftest import (
    LFW,
    needs_lfw,
)
from tests.fixtures.splits import (
    paths,
)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_three_parts_are_disjoint_and_cover_the_data(seed):
    splits = load_splits(SplitSpec("embedded:orl", "split:2", "split:3", seed=seed))
    train, val, test = paths(splits.train), paths(splits.val), paths(splits.test)
    assert (len(train), len(val), len(test)) == (200, 80, 120)
    assert not train & test and not train & val and not val & test
    assert len(train | val | test) == 400


def test_the_split_depends_on_split_seed_only_and_test_is_stable():
    base = load_splits(SplitSpec("embedded:orl", "split:2", "split:3", seed=0))
    other_seed = load_splits(SplitSpec("embedded:orl", "split:2", "split:3", seed=1))
    assert paths(base.test) != paths(other_seed.test)
    # A larger validation part leaves the test images where they were.
    more_val = load_splits(SplitSpec("embedded:orl", "split:4", "split:3", seed=0))
    assert paths(more_val.test) == paths(base.test)
    assert paths(more_val.val) > paths(base.val)
    assert base.describe()["fingerprints"] == load_splits(base.spec).describe()["fingerprints"]


def test_too_few_images_names_the_identity_folder():
    with pytest.raises(DataError) as err:
        load_splits(SplitSpec("embedded:orl", "split:5", "split:5"))
    message = str(err.value)
    assert "identity 's1' (" in message and "orl_att_faces/s1)" in message
    assert "has 10 image(s), too few to hold out 5 for test + 5 for val" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "path",
    ["a/b/c.jpg", "/r/n000002/0001_01.jpg", "x.jpg", "/x.jpg", "b/x.jpg", "/d/.hidden/x.jpg",
     "a//b/c.jpg", "./a/c.jpg", "a/./b/c.jpg", "a/b/", "a/b/.", "/r/rec/train.rec@1234",
     "a/../b/c.jpg", "\udcff/\udcfe.jpg"],
)  # fmt: skip
def test_sample_key_is_the_identity_folder_and_file_name_as_pathlib_sees_them(path):
    # The fast string cut must give what Path gives: recorded fingerprints depend on it.
    from pathlib import Path

    assert sample_key(path) == f"{Path(path).parent.name}/{Path(path).name}"


@pytest.mark.parametrize("root", [".", "/", "/data/x", "rel/dir", "/data/x/"])
def test_a_list_files_paths_join_its_root_as_pathlib_does(root):
    from pathlib import Path

    under = joiner(Path(root))
    for rel in ["a/b.jpg", "b.jpg", "./a/b.jpg", "/abs/c.jpg", "a//b.jpg", "a/./b.jpg", "a/b/",
                ".", "..", "../a.jpg", "a/.", ".hidden/x.jpg"]:  # fmt: skip
        assert under(rel) == str(Path(root) / rel), rel


def test_an_image_folder_lists_files_at_any_depth_in_path_order(tmp_path):
    # What sorted(Path.rglob("*")) listed, read with os.scandir: nested and hidden files,
    # parts order ("a/b" before "a-b"), a dangling symlink kept, a symlinked folder not entered.
    import os

    from pipelines.sources import scan_image_folder

    files = ["id1/x.jpg", "id1/sub/y.PNG", "id1/sub/.hid/z.jpg", "id1/a-b/q.jpg", "id1/a/b/r.jpg",
             "id1/a/s.jpeg", "id1/.dot.jpg", "id1/note.txt", "id2/1.jpg", ".hidden/h.jpg",
             "id2/dir.jpg/inner.jpg"]  # fmt: skip
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "id2" / "dangling.jpg")
    os.symlink(tmp_path / "id1" / "sub", tmp_path / "id2" / "linkdir")
    listed = scan_image_folder(tmp_path)
    assert [(s.path[len(str(tmp_path)) + 1 :], s.label) for s in listed.samples] == [
        ("id1/.dot.jpg", 0), ("id1/a/b/r.jpg", 0), ("id1/a/s.jpeg", 0), ("id1/a-b/q.jpg", 0),
        ("id1/sub/.hid/z.jpg", 0), ("id1/sub/y.PNG", 0), ("id1/x.jpg", 0), ("id2/1.jpg", 1),
        ("id2/dangling.jpg", 1), ("id2/dir.jpg/inner.jpg", 1),
    ]  # fmt: skip


def test_checkpoint_records_the_best_metric_it_set(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    manager.save({"step": 1}, 1, 0.5)
    manager.save({"step": 2}, 2, 0.9)
    assert load_checkpoint(manager.step_path(2))["best_metric"] == 0.9
    # A resumed run restores 0.9 from the step-2 checkpoint: a worse step 3 leaves best.pt alone.
    resumed = CheckpointManager(tmp_path, keep_last=3)
    _, state = resumed.find_latest()
    resumed.restore_best(state["best_metric"])
    resumed.save({"step": 3}, 3, 0.7)
    assert load_checkpoint(resumed.best_path)["step"] == 2
    assert load_checkpoint(resumed.step_path(3))["best_metric"] == 0.9


@needs_lfw
def test_lfw_test_split_never_meets_training_for_any_seed():
    for seed in range(3):
        splits = load_splits(SplitSpec(str(LFW), "split:2", "split:3", seed=seed))
        train = {sample_key(s.path) for s in splits.train.samples}
        assert not train & {sample_key(s.path) for s in splits.test.samples}
        assert splits.describe()["counts"]["test"] == 3 * splits.train.num_classes
