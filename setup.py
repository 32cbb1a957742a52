"""Install jbim-reid: cross-resolution person re-id (JBIM) as a torchreid plugin."""
from setuptools import find_packages, setup

# torchreid (PyPI "Torchreid-Pip") imports scipy and tensorboard without declaring them.
INSTALL_REQUIRES = [
    "torch>=2.6",
    "torchvision>=0.21",
    "torchreid>=0.2.5",
    "scipy",
    "tensorboard",
    "numpy",
    "opencv-python-headless",
    "Pillow",
    "gdown",
    "yacs",
    "PyYAML",
    "tqdm",
    "matplotlib",
    "safetensors",
]

# ONNX export / runtime and the FAISS gallery index (jbim-reid export, index; jbim_reid.OnnxMatcher)
DEPLOY_REQUIRES = ["onnx", "onnxruntime", "faiss-cpu"]

setup(
    name="jbim-reid",
    version="0.1.0",
    description="Cross-resolution person re-identification (JBIM, IJCV 2021) for torchreid",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["jbim_reid", "jbim_reid.*"]),
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    extras_require={"deploy": DEPLOY_REQUIRES, "dev": ["pytest>=7"] + DEPLOY_REQUIRES},
    entry_points={"console_scripts": ["jbim-reid=jbim_reid.cli:main"]},
)
