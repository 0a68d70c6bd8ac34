"""A folder of audio, searched recursively: unlabelled rows for scoring users' own audio.

``utt_id`` is the path relative to the root (``interviews/2024/a.wav``), so scores map back to
files unambiguously. Hidden folders (``.x``) and ``__pycache__``-style folders are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from spoofdet.data.corpora._common import Manifest, ManifestError, finish
from spoofdet.data.schema import TableBuilder

CORPUS = "folder"
#: Extensions libsndfile decodes (compared case-insensitively).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")


def prepare_folder(
    root: str | Path,
    split: str | None = None,
    *,
    check_audio: bool = True,
    progress: bool = False,
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
) -> Manifest:
    """List every audio file under ``root`` (recursively, sorted) as an unlabelled row.

    ``subset`` is ``split`` if given, else ``all``. Raises ManifestError if ``root`` is not a
    folder or holds no audio file.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise ManifestError([f"{root} is not a folder"])
    exts = tuple(e.lower() for e in extensions)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        found.extend(
            os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(exts)
        )
    if not found:
        raise ManifestError([f"no audio files ({', '.join(exts)}) under {root}"])
    builder = TableBuilder()
    for path in found:
        builder.append(
            utt_id=os.path.relpath(path, root).replace(os.sep, "/"),
            corpus=CORPUS,
            subset=split or "all",
            source_path=path,
        )
    # Files were just listed: checking them again would only repeat the walk.
    return finish(builder, corpus=CORPUS, root=root, check_audio=check_audio, progress=progress)
