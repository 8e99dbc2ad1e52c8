# Everything a fresh machine needs is installed by these targets themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := slurmctld slurmd slurm-client munge openmpi-bin libopenmpi-dev
PYTEST_ARGS ?=
# The tests run in TEST_WORKERS pytest processes (pytest-xdist), the ones that use a SLURM
# cluster all in one of them (tests/conftest.py); make test then runs the ones that assert a
# wall-clock bound (marked `timed`) in one process, with nothing beside them. One thread per
# worker: two workers of two threads each on 2 cores spin against each other (the unit tier took
# 149 s so, 82 s with one thread each, 137 s in one process of two threads).
TEST_WORKERS ?= 2
PARALLEL_PYTEST = OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -ra -n $(TEST_WORKERS) --dist loadgroup

.PHONY: demo demo-band cross-cpu bench-arithmetic demo-dlib demo-dlib-readme demo-readme benchmarks-readme test test-fast lint deps venv bench clean readme golden stale \
	results study-orl study-lfw study-orl-degradations study-orl-heads study-lfw-heads study-lfw-open \
	study-lfw-open-teacher1 study-lfw-open-teacher2 study-lfw-open-teacher3 study-lfw-open-pooled \
	study-orl-feature-terms study-lfw-dlib aligned aligned-extra faces-dlib faces-screen \
	bench-teacher-cache faces-curve study-lfw-dlib-faces study-lfw-dlib-motion teacher-alignment bench-pipeline bench-teacher bench-verification bench-partial-fc \
	bench-startup bench-backend-gap test-timing

# The main job on the embedded ORL faces: teacher pretraining, cross-resolution training on 2
# processes, evaluation; prints the table and writes it to runs/demo/.
demo: $(VENV)/.installed
	$(PY) -m tools.demo

# ---------------------------------------------------------------- published results (results/)
# Each target below makes one result with its provenance (commit, versions, hardware, data digest)
# in results/NAME/ and splices it into README.md or docs/; they refuse uncommitted changes
# (ALLOW_DIRTY=1 records dirty: true instead).
DIRTY := $(if $(ALLOW_DIRTY),--allow-dirty,)
LFW ?= ../shared/data/lfw_deepfunneled_10to19

# The demo, then its table and plot as results/demo/.
demo-readme: $(VENV)/.installed
	$(PY) -m tools.demo --readme $(DIRTY)

# run.reproducible=cross_cpu on this CPU: its digest recorded (tests/assets/cross_cpu_digest.json)
# or checked against the record, and the CPU kinds it has held on as results/cross-cpu/.
cross-cpu: $(VENV)/.installed
	$(PY) -m tools.cross_cpu $(DIRTY)

# What run.reproducible costs: the demo teacher's first 60 steps in each mode (about 4 minutes).
bench-arithmetic: $(VENV)/.installed
	$(PY) bench/arithmetic_cost.py --readme $(DIRTY)

# The band each figure of the demo's table moves in over seeds, as results/demo-band/ (make demo
# says whether a table lies inside it; about 4 x the demo's time).
demo-band: $(VENV)/.installed
	$(PY) -m tools.demo --band 0 1 2 3 $(DIRTY)

# The example benchmark report (every protocol on trees built from the LFW sample, with the
# demo's networks; run make demo-readme first).
benchmarks-readme: $(VENV)/.installed
	$(PY) bench/benchmark_report.py --readme --lfw $(LFW) $(DIRTY)

study-orl: $(VENV)/.installed
	$(PY) bench/recipe_study.py --data embedded:orl --name orl --readme $(DIRTY) --variants \
	  recipe recipe-l0 demo-0 recipe-mse recipe-cos30 recipe-unpaired recipe-stale-bn \
	  recipe-bn-momentum recipe-bn-mixed recipe-bn-frozen recipe-curriculum recipe-p1 \
	  recipe-lr0.001 recipe-e12

study-lfw: $(VENV)/.installed
	$(PY) bench/recipe_study.py --data $(LFW) --name lfw --readme $(DIRTY) --variants \
	  recipe recipe-l0 demo-0 recipe-mse recipe-cos30 recipe-unpaired recipe-stale-bn \
	  recipe-bn-mixed recipe-bn-momentum recipe-e12

# Margin heads with and without the feature term (docs/heads.md).
HEAD_VARIANTS = recipe recipe-l0 recipe-cosface recipe-cosface-l0 recipe-arcface recipe-arcface-l0 \
	recipe-adaface recipe-adaface-l0

study-orl-heads: $(VENV)/.installed
	$(PY) bench/recipe_study.py --data embedded:orl --name orl-heads --readme $(DIRTY) \
	  --variants $(HEAD_VARIANTS)

# On LFW without CosFace (about 50 min on 2 cores instead of 65; on ORL the three margins were
# within a seed's spread of each other).
study-lfw-heads: $(VENV)/.installed
	$(PY) bench/recipe_study.py --data $(LFW) --name lfw-heads --readme $(DIRTY) \
	  --variants recipe recipe-l0 recipe-arcface recipe-arcface-l0 recipe-adaface recipe-adaface-l0

# Open-set: the LFW sample's networks verified on 600 LFW-style pairs of the 2-9 people, never
# trained on (docs/recipe.md; about 75 min on 2 cores): each variant of the closed-set study, each
# margin head, and the feature terms that do not follow a weak teacher.
OPEN_VARIANTS = recipe recipe-l0 recipe-mse recipe-unpaired recipe-rel recipe-conf recipe-arcface \
  recipe-arcface-l0 recipe-arcface-rel recipe-cosface recipe-adaface

study-lfw-open: $(VENV)/.installed
	$(PY) bench/recipe_study.py --data $(LFW) --name lfw-open --readme $(DIRTY) \
	  --open-set ../shared/data/lfw_deepfunneled_2to9 --variants $(OPEN_VARIANTS)

# The open-set grid's deciding variants again with another teacher (run.seed=1 for its
# pretraining). The spread above is over students only; every student follows one teacher, and
# which teacher a run draws moves them all (about 30 min).
study-lfw-open-teacher1: $(VENV)/.installed
	$(PY) bench/recipe_study.py --data $(LFW) --name lfw-open-teacher1 --readme $(DIRTY) \
	  --open-set ../shared/data/lfw_deepfunneled_2to9 --teacher-overrides run.seed=1 \
	  --variants recipe recipe-l0 recipe-arcface recipe-arcface-l0 recipe-cosface

# A third teacher (run.seed=2): the deciding variants again, and the paper's unpaired batches with
# and without the feature term, which the first grid singled out (about 35 min).
study-lfw-open-teacher2: $(VENV)/.installed
	$(PY) bench/recipe_study.py --data $(LFW) --name lfw-open-teacher2 --readme $(DIRTY) \
	  --open-set ../shared/data/lfw_deepfunneled_2to9 --teacher-overrides run.seed=2 \
	  --variants recipe recipe-l0 recipe-unpaired recipe-unpaired-l0 recipe-arcface recipe-adaface

# A fourth teacher (run.seed=3) for the two open questions the first three left on their spread:
# the feature term against lambda = 0, and unpaired against paired batches (about 30 min).
study-lfw-open-teacher3: $(VENV)/.installed
	$(PY) bench/recipe_study.py --data $(LFW) --name lfw-open-teacher3 --readme $(DIRTY) \
	  --open-set ../shared/data/lfw_deepfunneled_2to9 --teacher-overrides run.seed=3 \
	  --variants recipe recipe-l0 recipe-unpaired recipe-unpaired-l0 recipe-arcface

# The method with a real teacher (docs/recipe.md, "A real teacher"): dlib's face ResNet, read
# without dlib, as the teacher; the student starts as a copy of it. Both LFW samples aligned by
# crossres-align first (dlib's 150 px chips; a few minutes once); then recipe, the paper's MSE,
# lambda = 0 and ArcFace, 3 seeds each, verified open-set on pairs of the 2-9 people.
ALIGNED := runs/aligned
aligned: $(ALIGNED)/lfw_10to19/align_report.csv $(ALIGNED)/lfw_2to9/align_report.csv

$(ALIGNED)/%/align_report.csv: $(VENV)/.installed-dev
	$(PY) -m crossres_dist.eval.align_faces ../shared/data/lfw_deepfunneled_$(subst lfw_,,$*) \
	  $(ALIGNED)/$* --template dlib150

# The faces beyond the LFW sample that the student may train on (issue 55; each folder's README
# in ../shared/data says what it is): the LFW people with one image, CelebA's 200 people, and
# UTKFace's unlabelled faces. UTKFace's tight crops need the image padded before dlib's detector
# finds 3.5 % of them (7 of a sample of 199; none missed with --pad 0.25); CelebA gets the same
# retry. About 12 minutes on 2 cores, once.
ALIGN_EXTRA := $(ALIGNED)/lfw_1/align_report.csv $(ALIGNED)/celeba/align_report.csv \
	$(ALIGNED)/utkface/align_report.csv
aligned-extra: $(ALIGN_EXTRA)

$(ALIGNED)/celeba/align_report.csv: $(VENV)/.installed-dev
	$(PY) -m crossres_dist.eval.align_faces ../shared/data/celeba_200x30 $(ALIGNED)/celeba \
	  --template dlib150 --pad 0.25

$(ALIGNED)/utkface/align_report.csv: $(VENV)/.installed-dev
	$(PY) -m crossres_dist.eval.align_faces ../shared/data/utkface_crop_part1 $(ALIGNED)/utkface \
	  --template dlib150 --pad 0.25

# Every training face of the study below screened against the test people (the LFW 2-9
# people): dropped when dlib's network matches it with a test face above a one-against-many
# threshold calibrated on the LFW 10-19 people, who share no one with them (crossres-screen;
# about 4 minutes once, seconds again from its feature cache). The kept faces are lists in
# runs/screened/ that configs/dlib_faces.yaml reads.
SCREEN := $(PY) -m crossres_dist.eval.screen $(ALIGNED)/celeba --unlabelled $(ALIGNED)/lfw_1 \
	$(ALIGNED)/utkface --test-people $(ALIGNED)/lfw_2to9 --calibrate $(ALIGNED)/lfw_10to19 \
	--out runs/screened
faces-dlib: runs/screened/screen_report.json

runs/screened/screen_report.json: aligned $(ALIGN_EXTRA)
	$(SCREEN)

# The same, published with the alignment's counts as results/faces-screen.
faces-screen: faces-dlib
	$(PY) -m tools.published run faces-screen $(DIRTY) --data $(ALIGNED)/lfw_2to9 \
	  $(ALIGNED)/lfw_10to19 $(ALIGNED)/celeba $(ALIGNED)/lfw_1 $(ALIGNED)/utkface -- \
	  $(SCREEN) --markdown

# What a training step of the real-teacher recipe costs on this CPU, with the teacher feature
# cache, bf16 and NHWC (about 25 minutes on 2 cores: bf16 alone is 10 of them here).
bench-teacher-cache: aligned
	$(PY) -m tools.published run bench-teacher-cache $(DIRTY) --data $(ALIGNED)/lfw_10to19 -- \
	  $(PY) bench/teacher_cache.py --data $(ALIGNED)/lfw_10to19

# Issue 55's study: the student on 25 times the faces, most without a label
# (configs/dlib_faces.yaml), against lambda = 0, each source left out (one seed), no labelled
# source, ArcFace; open-set on the same pairs as study-lfw-dlib, also against the teacher's
# gallery. Hours on 2 cores; every finished run is kept, so a stopped study goes on where it
# stopped (make study-lfw-dlib-faces again).
FACES_INPUTS := $(ALIGNED)/lfw_10to19 $(ALIGNED)/celeba $(ALIGNED)/lfw_1 $(ALIGNED)/utkface \
	runs/screened/celeba.txt runs/screened/lfw_1.txt runs/screened/utkface.txt
FACES_STUDY := $(PY) bench/recipe_study.py --data config --name lfw-dlib-faces \
	--config configs/dlib_faces.yaml --teacher dlib_face_recognition_resnet_model_v1 \
	--open-set $(ALIGNED)/lfw_2to9 --open-set-only --gallery-teacher --targets 55 \
	--chosen faces-all --without faces-labelled-l0 --parallel 1 --threads 2 --face-fraction 0.667 \
	--out runs/study/lfw-dlib-faces --inputs $(FACES_INPUTS)
# The learning curve on the validation people that chose the study's step budget: every face,
# validated every 100 steps up to 800 (about 30 minutes; a finished run is only read again).
faces-curve: faces-dlib
	$(PY) -m tools.published run faces-curve $(DIRTY) --data $(FACES_INPUTS) -- \
	  $(PY) bench/learning_curve.py --config configs/dlib_faces.yaml --steps 800 --every 100 \
	  --out runs/curve/all-faces

study-lfw-dlib-faces: faces-dlib
	$(FACES_STUDY) --readme $(DIRTY) --variants faces-all faces-labelled faces-labelled-l0
	$(FACES_STUDY) --name lfw-dlib-faces-sources --readme $(DIRTY) --seeds 0 --variants \
	  faces-all faces-all-no-celeba faces-all-no-lfw1 faces-all-no-utkface faces-distill \
	  faces-all-arcface

# Motion blur (issue 56): the dlib recipe with and without motion_blur on half the degraded
# views, 3 seeds, evaluated on clean and motion-blurred probes (alone, and at 16 and 8 px).
study-lfw-dlib-motion: aligned
	$(PY) bench/recipe_study.py --data $(ALIGNED)/lfw_10to19 --name lfw-dlib-motion --readme \
	  $(DIRTY) --config configs/dlib_recipe.yaml --teacher dlib_face_recognition_resnet_model_v1 \
	  --open-set $(ALIGNED)/lfw_2to9 --parallel 1 --threads 2 --chosen none --without none \
	  --variants recipe recipe-motion \
	  --probe-degrade motion_blur:9 downsample:16+motion_blur:5 downsample:8+motion_blur:3

study-lfw-dlib: aligned
	$(PY) bench/recipe_study.py --data $(ALIGNED)/lfw_10to19 --name lfw-dlib --readme $(DIRTY) \
	  --config configs/dlib_recipe.yaml --teacher dlib_face_recognition_resnet_model_v1 \
	  --open-set $(ALIGNED)/lfw_2to9 --parallel 1 --threads 2 \
	  --variants recipe recipe-l0 recipe-mse recipe-arcface

# The demo with the real teacher (docs/recipe.md, "The demo and the real teacher"): the ORL faces
# aligned by dlib, the student trained against dlib's ResNet, both evaluated on the test split
# (about 4 minutes on 2 cores after set-up; 5 of s33's 10 faces have no face dlib finds, so one
# face a person is held out for validation).
$(ALIGNED)/orl/align_report.csv: $(VENV)/.installed-dev
	$(PY) -m crossres_dist.eval.align_faces embedded:orl $(ALIGNED)/orl --template dlib150

demo-dlib: $(ALIGNED)/orl/align_report.csv
	$(PY) -m crossres_dist.train --config configs/dlib_recipe.yaml data.train=$(ALIGNED)/orl \
	  data.val=split:1 val.min_images=20 run.output_dir=runs/demo-dlib train.progress_bar=false
	$(PY) -m crossres_dist.evaluate --config configs/dlib_recipe.yaml data.train=$(ALIGNED)/orl \
	  data.val=split:1 --checkpoint runs/demo-dlib/student/checkpoints/best.pt --name student \
	  --checkpoint dlib_face_recognition_resnet_model_v1 --name teacher --split test \
	  --resolutions 8 12 16 24 32 full --tsne-identities 0 --out runs/demo-dlib/eval

# The same, measured and published as results/demo-dlib (the tables and each stage's wall time).
demo-dlib-readme: $(ALIGNED)/orl/align_report.csv
	$(PY) -m tools.published run demo-dlib --data $(ALIGNED)/orl $(DIRTY) -- $(PY) bench/demo_dlib.py

# What a fixed centre crop of the deep-funnelled images costs the teacher against aligned chips
# (the dlib study's pairs; about 3 min).
teacher-alignment: aligned
	$(PY) -m tools.published run teacher-alignment $(DIRTY) \
	  --data $(ALIGNED)/lfw_2to9 ../shared/data/lfw_deepfunneled_2to9 -- \
	  $(PY) bench/teacher_alignment.py --aligned $(ALIGNED)/lfw_2to9 --raw ../shared/data/lfw_deepfunneled_2to9

# The open-set grids read together (seconds): each choice as paired differences per seed, pooled
# over the teachers, with a verdict only where every teacher agrees (bench/study_compare.py).
OPEN_STUDIES = study-lfw-open study-lfw-open-teacher1 study-lfw-open-teacher2 study-lfw-open-teacher3

study-lfw-open-pooled: $(VENV)/.installed
	$(PY) -m tools.published run study-lfw-open-pooled $(DIRTY) \
	  --data $(foreach s,$(OPEN_STUDIES),results/$(s)/result.json) -- \
	  $(PY) bench/study_compare.py --studies $(OPEN_STUDIES)

# The feature-term alternatives that do not follow a weak teacher, on ORL (closed-set): the
# relational term and the cosine term weighed by the teacher's confidence (about 8 min).
study-orl-feature-terms: $(VENV)/.installed
	$(PY) bench/recipe_study.py --data embedded:orl --name orl-feature-terms --readme $(DIRTY) \
	  --variants recipe recipe-l0 recipe-rel recipe-conf

study-orl-degradations: $(VENV)/.installed
	$(PY) bench/recipe_study.py --data embedded:orl --name orl-degradations --readme $(DIRTY) \
	  --variants recipe recipe-realistic --probe-degrade gaussian_blur:1.5 jpeg:15

bench-pipeline: $(VENV)/.installed
	$(PY) -m tools.published run bench-pipeline --data $(LFW) $(DIRTY) -- \
	  $(PY) bench/pipeline.py --data $(LFW) --repeats 7

# How far DALI's and the twin's probe views (and the demo student's features of them) are apart.
bench-backend-gap: $(VENV)/.installed
	$(PY) -m tools.published run backend-gap --data $(LFW) $(DIRTY) -- \
	  $(PY) bench/backend_gap.py --checkpoint runs/demo/student/checkpoints/best.pt --data $(LFW)

bench-teacher: $(VENV)/.installed
	$(PY) -m tools.published run bench-teacher $(DIRTY) -- $(PY) bench/teacher.py --repeats 3

# Validation on a 6,000-pair .bin set at six resolutions, 1 and 2 ranks (about 15 min on 2 cores).
bench-verification: $(VENV)/.installed
	$(PY) -m tools.published run bench-verification --data ../shared/data/lfw_deepfunneled_2to9 \
	  $(DIRTY) -- $(PY) bench/verification_time.py

# Start-up against the set's size (10k, 100k, 1M samples) for a folder, a list file, RecordIO and
# shards; makes the data under runs/bench-startup once (about 7 GB, minutes).
bench-startup: $(VENV)/.installed
	$(PY) -m tools.published run bench-startup $(DIRTY) -- $(PY) bench/startup.py

# PartialFC's classifier memory per rank, 100k and 1M classes, 1/2/4 gloo ranks (a few minutes).
bench-partial-fc: $(VENV)/.installed
	$(PY) -m tools.published run bench-partial-fc $(DIRTY) -- $(PY) bench/partial_fc.py

# How long set-up, make test-fast and make test take on a fresh clone of HEAD (about 20 min).
test-timing: $(VENV)/.installed
	$(PY) -m tools.published run test-timing $(DIRTY) -- $(PY) bench/test_timing.py

# Every result again (the slow path, a few hours on 2 cores: before a release): the make target of
# every entry in tools/published.py's table, the one list of published results. The GPU table
# needs the device: bench/gpu_check.sh says how.
results: $(VENV)/.installed
	$(MAKE) $$($(PY) -m tools.published targets)

# Splice results/ into README.md and docs/ (seconds); which results the behaviour gate says are
# stale, and how to make each again.
readme: $(VENV)/.installed
	$(PY) -m tools.published splice
	$(PY) -m tools.listings

stale: $(VENV)/.installed
	$(PY) -m tools.published stale

# The behaviour gate's golden files (tests/assets/golden/), about a minute; commit them with the
# change that moved them, then `make stale` names the results to regenerate.
golden: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) -m tests.golden

# The whole suite: lint, then pytest (starts its own SLURM cluster, uses MPI and torchrun).
test: deps $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PARALLEL_PYTEST) -m "not timed" --durations=25 $(PYTEST_ARGS) tests
	$(VENV)/bin/pytest -q -ra -m timed --durations=15 $(PYTEST_ARGS) tests

# Everything that starts no process (no launcher, no SLURM cluster, no MPI): tests/unit, with the
# behaviour gate and the README check, in under two minutes. tests/integration launches.
test-fast: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PARALLEL_PYTEST) --durations=10 $(PYTEST_ARGS) tests/unit

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Debian packages for the SLURM and MPI tests (only as root, only if missing).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not root or no apt-get: SLURM/MPI tests will skip (missing:$$missing)"; fi; \
	fi

$(VENV)/.installed: requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

bench: $(VENV)/.installed-dev
	$(PY) bench/pipeline.py
	$(PY) bench/step.py
	$(PY) bench/teacher.py

clean:
	rm -rf runs build *.egg-info .pytest_cache
