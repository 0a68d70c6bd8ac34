"""A folder of audio, searched recursively: unlabelled rows for scoring users' own audio.

``utt_id`` is the path relative to the root (``interviews/2024/a.wav``), so scores map back to
files unambiguously. Hidden folders (``.x``) and ``__pycache__``-style folders are skipped.
Symlinked folders are followed (each real folder once, so a link loop ends).

Nothing under the root is dropped without a word: a sub-folder that cannot be listed (no
permission, I/O error) is a ManifestError naming it, since a manifest missing part of the corpus
would be wrong; a file or folder name that would give an ``utt_id`` with whitespace or control
characters (score files are whitespace-separated) is a ManifestError naming the file; an entry
with an audio extension that is not a regular file (a FIFO named ``x.wav``) stays a row, listed
in ``Manifest.not_regular``, and the shard job quarantines it as ``not_regular_file`` unopened.
"""

from __future__ import annotations

import os
from pathlib import Path

from spoofdet.data.corpora._common import (
    Manifest,
    ManifestError,
    ProblemLog,
    check_text,
    corpus_root,
    finish,
)
from spoofdet.data.schema import TableBuilder

CORPUS = "folder"
#: Extensions libsndfile decodes (compared case-insensitively).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")


def list_audio(root: Path, exts: tuple[str, ...]) -> list[str]:
    """Every path under ``root`` whose name ends in one of ``exts`` (lower case), sorted folder
    by folder, skipping hidden and ``__x`` folders.

    Raises:
        ManifestError: listing every folder that could not be read, with the OS error.
    """
    unreadable: list[str] = []
    seen: set[tuple[int, int]] = set()
    found: list[str] = []

    def on_error(exc: OSError) -> None:
        unreadable.append(f"cannot list folder {exc.filename}: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        try:
            st = os.stat(dirpath)
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = None
        if key is not None and key in seen:  # a symlink loop or a second link to one folder
            dirnames[:] = []
            continue
        if key is not None:
            seen.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        found.extend(
            os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(exts)
        )
    if unreadable:
        raise ManifestError(
            unreadable,
            hint="Their audio would be missing from the manifest. Make them readable "
            "(e.g. chmod -R a+rX FOLDER) or move them out of --root, then run again.",
        )
    return found


def prepare_folder(
    root: str | Path,
    split: str | None = None,
    *,
    check_audio: bool = True,
    progress: bool = False,
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
) -> Manifest:
    """List every audio file under ``root`` (recursively, sorted) as an unlabelled row.

    ``subset`` is ``split`` if given, else ``all``.

    Raises:
        ManifestError: ``root`` is not a folder, holds no audio file, has sub-folders that
            cannot be read, or holds files whose relative path (the ``utt_id``) contains
            whitespace or control characters (each named; rename them).
    """
    root = corpus_root(root)
    if not root.is_dir():
        raise ManifestError([f"{root} is not a folder"])
    exts = tuple(e.lower() for e in extensions)
    found = list_audio(root, exts)
    if not found:
        raise ManifestError([f"no audio files ({', '.join(exts)}) under {root}"])
    builder = TableBuilder()
    log = ProblemLog()
    for path in found:
        utt_id = os.path.relpath(path, root).replace(os.sep, "/")
        if not check_text(utt_id, path, Path(path), None, log):
            continue
        builder.append(utt_id=utt_id, corpus=CORPUS, subset=split or "all", source_path=path)
    log.raise_if_any(
        hint="In a folder corpus the utt_id is the file's path under --root, and score files "
        "are whitespace-separated: rename these files or folders (e.g. spaces to '_'), or list "
        "the files in a CSV manifest (--corpus csv) with an utt_id column."
    )
    return finish(builder, corpus=CORPUS, root=root, check_audio=check_audio, progress=progress)
