"""Run folders that never mix two runs: unique default names and a claim on the folder.

Every entry point (`train`, `analyze`, `prune`, `report`) writes into one run folder. Two rules
keep runs apart:

1. **Unique default names.** The default folders end in `run_stamp()`: the start time to the
   millisecond plus six random hex digits (`2026-11-21_14-03-07.123_5f2a9c`), so jobs started in
   the same second (a `&` loop, two users) get different folders. The Hydra configs use it as the
   `${run_stamp:}` resolver (cached per config, like Hydra's `${now:}`, so every read of
   `hydra.run.dir` - Lightning's DDP re-launch included - sees the same name).
2. **A claim on the folder.** `claim_run_dir` refuses a folder that already holds another run's
   outputs, unless the run resumes from a checkpoint inside it or `overwrite=true` (which deletes
   the old contents first). The claim itself is the exclusive creation of the folder's
   `config.yaml` (`O_CREAT | O_EXCL`), so of two runs started at the same moment into one folder
   exactly one gets it. Hydra's own files (`.hydra/`, the job's `*.log`) are not outputs.

Under `@hydra.main`, `RunDirGuard` (a Hydra callback named in each entry point's config) checks
`hydra.run.dir` before Hydra writes its `.hydra/` files and log there, so a refused run leaves the
other run's folder untouched, and `overwrite=true` clears it before Hydra opens the new log.
Only global rank zero checks, claims and clears (DDP children get the parent's folder).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dnn_modularity.records import atomic_write_text

__all__ = [
    "CLAIM_FILE",
    "RunDirGuard",
    "RunDirInUseError",
    "claim_run_dir",
    "is_rank_zero",
    "run_outputs",
    "run_stamp",
]

#: The file whose exclusive creation claims a run folder (it then receives the resolved config).
CLAIM_FILE = "config.yaml"

#: Entries Hydra writes into its output folder before the task runs: not a run's outputs.
_HYDRA_ENTRIES = (".hydra",)


class RunDirInUseError(FileExistsError):
    """The run folder holds another run's outputs (or another run claimed it first)."""


def run_stamp() -> str:
    """A unique folder name: local time to the millisecond + 6 random hex digits.

    Returns:
        E.g. `2026-11-21_14-03-07.123_5f2a9c` (sorts by start time).
    """
    now = datetime.now()
    return f"{now:%Y-%m-%d_%H-%M-%S}.{now.microsecond // 1000:03d}_{secrets.token_hex(3)}"


def first_set(value: Any, default: Any) -> Any:
    """``value`` unless it is None (or empty), else ``default``: ``${first_set:${run_dir},...}``.

    Hydra's run folder follows ``run_dir=`` (``out_dir=`` for reports), so the log and ``.hydra/``
    of a run land in the folder its outputs go to, not in a second folder under ``outputs/``.
    """
    return default if value is None or value == "" else value


# `${run_stamp:}` in the Hydra configs; cached per config so that one run reads one name.
OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True, replace=True)
OmegaConf.register_new_resolver("first_set", first_set, replace=True)


def is_rank_zero() -> bool:
    """True on the global rank-zero process (or outside distributed runs).

    Reads the launcher's environment like Lightning does (`RANK`, `LOCAL_RANK`, `SLURM_PROCID`,
    `JSM_NAMESPACE_RANK`), so it works before any Trainer exists (DDP children have
    `LOCAL_RANK` > 0 from their start).
    """
    # local: Lightning is slow to import; rundir is read by Hydra callbacks before any Trainer
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def run_outputs(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The entries of `run_dir` that are a run's outputs (not Hydra's `.hydra/` or `*.log`).

    Args:
        run_dir: A folder (missing: no outputs).

    Returns:
        The top-level entries, sorted.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.name not in _HYDRA_ENTRIES and not (entry.suffix == ".log" and entry.is_file())
    )


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _describe(entries: list[Path], limit: int = 6) -> str:
    names = [e.name + ("/" if e.is_dir() else "") for e in entries]
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _clear(run_dir: Path, keep_hydra: bool) -> None:
    """Delete the folder's contents (with `keep_hydra`, Hydra's fresh `.hydra/` and logs stay)."""
    entries = run_outputs(run_dir) if keep_hydra else sorted(run_dir.iterdir())
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def claim_run_dir(
    run_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume_from: str | os.PathLike[str] | None = None,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    config_text: str | None = None,
    hydra_owned: bool = False,
    claim: bool = True,
    can_resume: bool = False,
) -> Path:
    """Make `run_dir` this run's folder, or refuse with a message saying what to do.

    Allowed: a missing or empty folder (only Hydra's `.hydra/` and logs count as empty); a folder
    holding the checkpoint the run resumes from
    (`resume_from` inside it: the run continues its own records); any folder with
    `overwrite=True`, whose contents are deleted first - unless one of the run's `inputs` (or
    `resume_from`) lies inside it, which is refused because it would delete what the run reads.

    Only global rank zero does anything; other ranks return the folder unchanged.

    Args:
        run_dir: The run folder.
        overwrite: Delete the folder's old contents instead of refusing.
        resume_from: The checkpoint a training run resumes from (`ckpt_path`), or None.
        inputs: Files/folders the run reads (e.g. `ckpt_path`, `curve`): never deleted.
        config_text: Written to `config.yaml` once claimed (None: the claim file stays empty
            until the caller writes it).
        hydra_owned: `run_dir` is Hydra's output folder and Hydra has already written its files
            there (`.hydra/`, the log): `overwrite` keeps them.
        claim: Create the claim file (False: only check, or clear with `overwrite`).
        can_resume: The entry point can resume from a checkpoint (train): the refusal says how.

    Returns:
        The absolute folder (created).

    Raises:
        RunDirInUseError: The folder holds another run's outputs (the message lists some of
            them and the three ways out), another run claimed it at the same moment, or
            `overwrite` would delete one of the run's inputs.
    """
    folder = Path(run_dir).resolve()
    if not is_rank_zero():
        return folder
    claim_file = folder / CLAIM_FILE
    resuming = resume_from is not None and _inside(Path(str(resume_from)).resolve(), folder)
    outputs = run_outputs(folder)
    if outputs and not resuming:
        if not overwrite:
            resume = (
                f"resume that run with ckpt_path={folder}/checkpoints/last.ckpt, "
                if can_resume or resume_from is not None
                else ""
            )
            raise RunDirInUseError(
                f"run folder {str(folder)!r} already holds another run's outputs "
                f"({_describe(outputs)}); a run never writes into it. Choose a new folder "
                f"(or leave run_dir / hydra.run.dir unset for a fresh one), {resume}or pass "
                "overwrite=true to delete its contents first"
            )
        protected = [Path(str(p)).resolve() for p in (*inputs, resume_from) if p]
        endangered = [str(p) for p in protected if _inside(p, folder)]
        if endangered:
            raise RunDirInUseError(
                f"overwrite=true would delete {endangered}, which this run reads, from "
                f"{str(folder)!r}; write the run into another folder"
            )
        _clear(folder, keep_hydra=hydra_owned)
    if not claim:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if not resuming:
        try:
            # The claim: of two runs starting together, exactly one creates the file.
            os.close(os.open(claim_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            raise RunDirInUseError(
                f"another run claimed run folder {str(folder)!r} at the same moment; "
                "start this one in another folder"
            ) from None
    if config_text is not None:
        atomic_write_text(claim_file, config_text)
    return folder


class RunDirGuard(Callback):
    """Hydra callback: check (or clear, with `overwrite=true`) `hydra.run.dir` before Hydra uses it.

    Named in the entry points' configs (`hydra.callbacks.run_dir_guard`). Without it a refused
    run would already have overwritten the other run's `.hydra/` files and appended to its log.
    A refusal ends the command (`SystemExit` with the message, exit code 1): Hydra reports a
    callback's exceptions only as warnings.
    Runs in `--multirun` are checked per job by the entry point itself (their default sweep
    folders are unique). `run_dir=` (`out_dir=` for reports) sets `hydra.run.dir` in the entry
    points' configs (`${first_set:...}`), so the folder checked here is the run's own folder.
    Skipped on ranks other than zero.

    Args:
        resumes: The entry point resumes from `ckpt_path` (train): a checkpoint inside the
            folder makes it the run's own folder.
        inputs: Config keys (dotted) of files/folders the run reads; `overwrite` never deletes
            them.
    """

    def __init__(self, resumes: bool = False, inputs: Sequence[str] = ()) -> None:
        self.resumes = bool(resumes)
        self.inputs = [str(key) for key in inputs]

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse or clear a used `hydra.run.dir` (see `claim_run_dir`)."""
        if not is_rank_zero():
            return

        try:
            # `${hydra:...}` interpolations in the folder name need the Hydra config.
            HydraConfig.instance().set_config(config)
            folder = Path(os.path.abspath(str(config.hydra.run.dir)))
        except Exception:  # an unusual folder expression: the entry point still checks it
            return
        try:
            claim_run_dir(
                folder,
                overwrite=bool(config.get("overwrite", False)),
                resume_from=config.get("ckpt_path") if self.resumes else None,
                inputs=[OmegaConf.select(config, key) for key in self.inputs],
                claim=False,
                can_resume=self.resumes,
            )
        except RunDirInUseError as err:
            # Hydra turns a callback's exception into a warning and carries on (writing into
            # the folder); SystemExit ends the command here with the message and exit code 1.
            raise SystemExit(f"Error: {err}") from None
