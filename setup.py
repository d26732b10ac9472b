"""Build pyseg_noise and its C++ extension against the torch that is installed.

Install with ``pip install --no-build-isolation .`` (or ``-e .``): build isolation
would make pip fetch a fresh torch (a multi-GB CUDA build) and compile the
extension against it, which then fails to load beside the torch you run.

Environment:
    PYSEG_NOISE_CPU_CAPABILITY  ``avx512`` | ``avx2`` | ``default``. The CPU
        kernels use ``at::vec::Vectorized``; by default they are compiled for the
        widest SIMD that both the build machine and torch's own CPU dispatch use
        (torch.backends.cpu.get_cpu_capability(): AVX512 -> 16 float lanes,
        AVX2 -> 8), like ``-march=native``: the build runs where the package is
        used. Set ``avx2`` or ``default`` for a build that also loads on older
        CPUs. ``pyseg_noise.cpu_capability()`` says which one was built.
    PYSEG_NOISE_NO_EXTENSION=1  skip the extension (pure-Python install; ops
        fall back to the eager reference with a warning).
    PYSEG_NOISE_DEBUG=1  -O0 -g, for sanitizer builds.
"""
import glob
import os
import platform

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError as exc:  # pragma: no cover - build-time message
    raise SystemExit(
        "pyseg_noise builds its C++ extension against the installed torch, but torch is not "
        "importable. Install torch first (e.g. `pip install torch==2.13.0`), then run "
        "`pip install --no-build-isolation .`"
    ) from exc


_CAPABILITIES = ("avx512", "avx2", "default")


def _cpu_capability():
    choice = os.environ.get("PYSEG_NOISE_CPU_CAPABILITY", "").lower()
    if choice:
        if choice not in _CAPABILITIES:
            raise SystemExit(
                f"PYSEG_NOISE_CPU_CAPABILITY must be one of {', '.join(_CAPABILITIES)}, got {choice!r}"
            )
        return choice
    if platform.machine().lower() in ("x86_64", "amd64"):
        try:
            torch_capability = torch.backends.cpu.get_cpu_capability()
        except Exception:
            torch_capability = ""
        if torch_capability == "AVX512":
            return "avx512"
        if torch_capability == "AVX2":
            return "avx2"
    return "default"


def _extensions():
    if os.environ.get("PYSEG_NOISE_NO_EXTENSION") == "1":
        return []
    debug = os.environ.get("PYSEG_NOISE_DEBUG") == "1"
    cxx = ["-std=c++17", "-fopenmp", "-g0" if not debug else "-g"]
    cxx += ["-O0"] if debug else ["-O3"]
    capability = _cpu_capability()
    if capability == "avx512":
        cxx += ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c", "-mbmi2",
                "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"]
    elif capability == "avx2":
        cxx += ["-mavx2", "-mfma", "-mf16c", "-mbmi2", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    else:
        cxx += ["-DCPU_CAPABILITY=DEFAULT"]
    extra_link = ["-fopenmp"]
    if os.environ.get("PYSEG_NOISE_SANITIZE") == "1":
        cxx += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        extra_link += ["-fsanitize=address,undefined"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    return [
        CppExtension(
            "pyseg_noise._C",
            sources,
            include_dirs=[os.path.abspath("csrc")],
            extra_compile_args={"cxx": cxx},
            extra_link_args=extra_link,
            py_limited_api=False,
        )
    ]


packages = find_packages(include=["pyseg_noise", "pyseg_noise.*"])
packages += ["pyseg_noise.kernels", "pyseg_noise.benchmarks"]

setup(
    name="pyseg-noise",
    version="0.1.0",
    description="Fused CPU/Triton ops and training loops for 3D segmentation with noisy labels (PINT, TSMAN)",
    packages=packages,
    # The Triton kernels and the benchmarks live in top-level folders but install
    # as pyseg_noise.kernels / pyseg_noise.benchmarks: a top-level `kernels`
    # module would collide with PyPI's, and `pyseg-noise bench` needs the
    # benchmarks importable after a plain install.
    package_dir={"pyseg_noise.kernels": "kernels", "pyseg_noise.benchmarks": "benchmarks"},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4",
        "numpy",
        "scipy",
        "nibabel",
        "h5py",
        "tqdm",
        "matplotlib",
        "pyyaml",
    ],
    extras_require={
        "triton": ["triton>=3.0"],
        "test": ["pytest", "pytest-xdist", "pytest-benchmark", "hypothesis", "medpy"],
    },
    entry_points={"console_scripts": ["pyseg-noise=pyseg_noise.cli:main"]},
    zip_safe=False,
)
