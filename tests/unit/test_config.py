import typing

import pytest
import yaml

from crossres_dist.config import MOVED, SECTIONS, ConfigError, load_config
from tests.conftest import REPO, TINY


def test_shipped_configs_load():
    for path in (REPO / "configs").glob("*.yaml"):
        if not path.name.startswith("sweep_"):
            cfg = load_config(path)
            assert cfg.model.layers


def test_overrides_keep_yaml_types():
    cfg = load_config(
        TINY,
        [
            "method.lambda_feat=0.25",
            "method.resolutions=[8, 12]",
            "train.progress_bar=true",
            "teacher.checkpoint=x.pt",
        ],
    )
    assert cfg.method.lambda_feat == 0.25
    assert cfg.method.resolutions == [8, 12]
    assert cfg.train.progress_bar is True
    assert cfg.optim.lr == 0.05  # from the file


def test_yaml_booleans_that_were_words_are_read_back_as_words(tmp_path):
    cfg = load_config(TINY, ["teacher.checkpoint=t.pt", "data.check=off", "val.bn_recalibrate=off"])
    assert cfg.data.check == "off" and cfg.val.bn_recalibrate == "off"
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  check: off\n")
    assert load_config(path, ["teacher.checkpoint=t.pt"]).data.check == "off"
    with pytest.raises(ConfigError, match="data.backend: False is not one of"):
        load_config(TINY, ["teacher.checkpoint=t.pt", "data.backend=off"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown key 'optim.lrr'"),
        ("optimiser.lr=1", "unknown section 'optimiser'"),
        ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
        ("train.max_steps=1.5", "train.max_steps: expected an integer"),
        ("method.p=1.5", "method.p: 1.5 is not a probability"),
        ("data.crop=64", "data.crop: 64 exceeds data.resize_shorter=32"),
        ("data.num_threads=0", "data.num_threads: 0: needs at least 1 thread"),
        ("teacher.sharding=half", "teacher.sharding: 'half' is not one of 'none', 'full'"),
        ("method.curriculum=yes please", "expected true or false"),
        ("lr=1", "is not of the form section.key=value"),
    ],
)
def test_refusals_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, ["teacher.checkpoint=t.pt", override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  momentum: [1]\n")
    with pytest.raises(ConfigError, match=f"{bad}: optim.momentum: expected a number"):
        load_config(bad)
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_crossres_needs_a_teacher():
    with pytest.raises(ConfigError, match="teacher.checkpoint: the crossres stage needs a teacher"):
        load_config(TINY)


def test_teacher_weighting_needs_the_teachers_own_classifier(tmp_path):
    """method.feature_weight weighs faces by the teacher's classifier: refused in one line when
    the config says that classifier is over other identities, or the file holds none."""
    import torch

    from crossres_dist.errors import SetupError
    from crossres_dist.models import build_model, spec_from_config
    from crossres_dist.training.student_teacher import build_teacher

    weighted = ["method.feature_weight=teacher_confidence"]
    with pytest.raises(ConfigError, match="method.feature_weight: teacher_confidence weighs") as e:
        load_config(TINY, ["teacher.checkpoint=t.pt", *weighted, "student.replace_classifier=true"])
    assert "set method.feature_weight=none" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'sometimes' is not one of 'none'"):
        load_config(TINY, ["teacher.checkpoint=t.pt", "method.feature_weight=sometimes"])

    cfg = load_config(TINY, [f"teacher.checkpoint={tmp_path / 'backbone.pt'}", *weighted])
    spec = spec_from_config(cfg.model, 40, input_size=cfg.data.crop)
    state = build_model(spec).state_dict()
    torch.save(state, tmp_path / "with_classifier.pt")
    classifier = type(build_model(spec)).classifier_keys
    torch.save({k: v for k, v in state.items() if k not in classifier}, tmp_path / "backbone.pt")
    with pytest.raises(SetupError, match="backbone.pt holds none"):
        build_teacher(cfg, spec)
    cfg.teacher.checkpoint = str(tmp_path / "with_classifier.pt")
    teacher, _ = build_teacher(cfg, spec)
    assert not teacher.training


def test_a_margin_head_teacher_is_weighed_by_its_nearest_class_centre(tmp_path):
    """A teacher trained with a margin head holds class centres (a cosine classifier): it picks
    an identity by cosine, and its softmax confidence, which depends on the head's scale, is
    refused in one line naming the file."""
    from dataclasses import replace

    import torch

    from crossres_dist.errors import SetupError
    from crossres_dist.models import build_model, spec_from_config
    from crossres_dist.models.registry import CosineClassifier
    from crossres_dist.training.student_teacher import build_teacher

    path = tmp_path / "arcface_teacher.pt"
    cfg = load_config(TINY, [f"teacher.checkpoint={path}", "method.feature_weight=teacher_correct"])
    spec = spec_from_config(cfg.model, 40, input_size=cfg.data.crop)
    cosine = replace(spec, classifier="cosine")
    torch.manual_seed(0)
    torch.save({"student": build_model(cosine).state_dict(), "model_spec": cosine.as_dict()}, path)

    teacher, _ = build_teacher(cfg, spec)
    assert isinstance(teacher.fc, CosineClassifier)
    _, logits = teacher(torch.randn(2, 3, cfg.data.crop, cfg.data.crop))
    assert logits.abs().max() <= 1.0 + 1e-5

    cfg.method.feature_weight = "teacher_confidence"
    with pytest.raises(SetupError, match="arcface_teacher.pt was trained with a margin head") as e:
        build_teacher(cfg, spec)
    assert "set method.feature_weight=teacher_correct" in str(e.value)
    assert "\n" not in str(e.value)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(TINY, ["teacher.checkpoint=t.pt", "method.p=0.3"])
    (tmp_path / "c.yaml").write_text(cfg.dumps())
    again = load_config(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _a_value_for(dotted: str):
    """A value the key's new home takes: its default, or for an entry of a mapping a range."""
    section, key = dotted.split(".", 1)
    key, _, entry = key.partition(".")
    default = getattr(SECTIONS[section](), key)
    return [1.0, 2.0] if entry else default


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_key_is_read_at_its_new_home_and_says_so_in_one_line(old, tmp_path, caplog):
    new = MOVED[old]
    value = _a_value_for(new)
    section, key = old.split(".", 1)
    (tmp_path / "old.yaml").write_text(yaml.safe_dump({section: {key: value}}))
    new_section, new_key = new.split(".", 1)
    for cfg in (
        load_config(TINY, ["teacher.checkpoint=t.pt", f"{old}={_flow(value)}"]),
        load_config(tmp_path / "old.yaml", ["teacher.checkpoint=t.pt"]),
    ):
        held = getattr(cfg, new_section)
        for part in new_key.split("."):
            held = held[part] if isinstance(held, dict) else getattr(held, part)
        assert held == value
    lines = [r.getMessage() for r in caplog.records if "is now" in r.getMessage()]
    assert lines and all(f"{old} is now {new}; read as {new}" in line for line in lines)
    assert "old.yaml" in lines[-1]


def test_a_moved_key_beside_its_new_name_is_refused(tmp_path):
    (tmp_path / "both.yaml").write_text("train:\n  keep_last: 3\ncheckpoint:\n  keep_last: 4\n")
    with pytest.raises(
        ConfigError,
        match=r"both.yaml: train.keep_last and checkpoint.keep_last are one setting; keep checkpoint.keep_last",
    ):
        load_config(tmp_path / "both.yaml")


def test_a_moved_key_on_the_command_line_overrides_the_files_new_key():
    cfg = load_config(TINY, ["teacher.checkpoint=t.pt", "train.checkpoint_every=7"])
    assert cfg.checkpoint.every == 7  # tests/tiny.yaml says checkpoint.every: 3


def test_every_moved_key_lands_on_a_real_setting():
    for new in MOVED.values():
        section, key = new.split(".", 1)
        key = key.split(".")[0]  # method.ranges.jpeg: an entry of method.ranges
        assert key in typing.get_type_hints(SECTIONS[section]), new


def test_evaluation_reads_a_crossres_config_without_a_teacher():
    with pytest.raises(ConfigError, match="teacher.checkpoint: the crossres stage needs a teacher"):
        load_config(TINY)
    cfg = load_config(TINY, purpose="evaluation")
    assert cfg.run.stage == "crossres" and cfg.teacher.checkpoint == ""
