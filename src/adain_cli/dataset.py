"""`adain dataset`: a whole image tree restyled with paintings drawn at random (Stylized-ImageNet,
Geirhos et al. 2019), reproducibly, resumably, in shards.

    plan   walk both trees; give each content image its styles and alphas (below); keep this
           shard's images; name the outputs so that OUT mirrors CONTENT_DIR
    run    the stylize runner (batch.run) over the plan, each style's statistics from the
           style bank (style_bank.py), each outcome appended to the manifest as it happens

Reproducible: which styles and alphas an image gets depends only on the seed, the image's
path relative to CONTENT_DIR and the sorted list of style paths relative to STYLE_DIR,
never on shards, workers, the order files were found in or restarts. Draw number k for
an image is the first 8 bytes, big-endian, of BLAKE2b("{seed}\\0{relative path}\\0{k}");
its styles are a partial Fisher-Yates shuffle of the style list taking draw k mod (M - k)
at step k (each further round of M styles, when an image gets more styles than there are,
starts a fresh shuffle); its alpha for output j is A + (B - A) * u, rounded to 6 decimals,
with u the top 53 bits of draw "alpha:{j}" over 2^53.

Sharded by the same hash: image `p` belongs to shard int(BLAKE2b(p)[:8]) mod N, so shards are
disjoint and cover everything for any N, each process finds its own share with no
coordination, and a process that is restarted finds the same share.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import batch, jobs, launch, style_cache
from .atomic import atomic_write, remove_stale_temporaries
from .errors import UsageError
from .inputs import walk_images
from .style_bank import StyleBank, default_location
from .stylizer import Stylizer, check_alpha

MANIFEST_FIELDS = ("content", "style", "output", "alpha", "status", "error")


# --- shards ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shard:
    """This process's share: shard `index` of `count` (0-based), and where that came from."""

    index: int = 0
    count: int = 1
    local: int = 0  # the process's index on its machine: which GPU it takes
    source: str = ""  # "--shard", "torchrun", "srun" or "Slurm array"; "" when not sharded

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise UsageError(f"shard {self.index}/{self.count}: the index must be from 0 to {self.count - 1}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`--shard I/N`: shard I (0-based) of N."""
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not found:
            raise UsageError(f"--shard: expected I/N such as 0/4 (shard I of N, counted from 0), got {text!r}")
        return cls(int(found[1]), int(found[2]), source="--shard")

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> Shard:
        """The share a launcher gave this process (launch.from_environment): torchrun, srun or a Slurm array."""
        started = launch.from_environment(env)
        return cls(started.rank, started.world, started.local, started.source)

    def device_name(self, name: str) -> str:
        """The device `name` means for this shard's process: a launcher's process takes its local rank's
        GPU; a lone process, or one given --shard, keeps `name`."""
        return name if self.source in ("", "--shard") else launch.local_device_name(name, self.local)

    def owns(self, relative: str) -> bool:
        return self.count == 1 or _draw(relative) % self.count == self.index

    @property
    def manifest_name(self) -> str:
        if self.count == 1:
            return "manifest.csv"
        width = max(5, len(str(self.count - 1)))
        return f"manifest-{self.index:0{width}d}-of-{self.count:0{width}d}.csv"

    def __str__(self) -> str:
        return f"shard {self.index}/{self.count}" + (f" ({self.source})" if self.source else "")


# --- the draws -------------------------------------------------------------------------------

def _draw(*parts: object) -> int:
    text = "\0".join(str(part) for part in parts).encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def choose_styles(seed: int, relative: str, pool: int, count: int) -> list[int]:
    """Indices into the sorted style list for one image: `count` of them, no repeats while
    count <= pool (see the module's docstring for the exact recipe)."""
    chosen: list[int] = []
    step = 0
    while len(chosen) < count:
        swapped: dict[int, int] = {}  # a virtual permutation of range(pool): only the swapped places
        for i in range(min(pool, count - len(chosen))):
            j = i + _draw(seed, relative, step) % (pool - i)
            step += 1
            swapped[i], swapped[j] = swapped.get(j, j), swapped.get(i, i)
            chosen.append(swapped[i])
    return chosen


def draw_alpha(seed: int, relative: str, output: int, low: float, high: float) -> float:
    """The alpha of an image's output number `output`: uniform in [low, high], 6 decimals."""
    if low == high:
        return low
    unit = (_draw(seed, relative, f"alpha:{output}") >> 11) / float(1 << 53)
    return round(low + (high - low) * unit, 6)


def parse_alpha(text: str) -> tuple[float, float]:
    """`--alpha A` (every output) or `--alpha A:B` (uniform in [A, B] per output)."""
    low_text, _, high_text = text.partition(":")
    try:
        low = float(low_text)
        high = float(high_text) if high_text else low
    except ValueError:
        raise UsageError(f"--alpha: expected a number or a range A:B such as 0.5:1, got {text!r}") from None
    check_alpha(low), check_alpha(high)
    if low > high:
        raise UsageError(f"--alpha {text}: the range must go from low to high")
    return low, high


# --- the plan ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """What `adain dataset` does besides the shared stylizing settings."""

    styles_per_image: int = 1
    seed: int = 0
    alpha: tuple[float, float] = (1.0, 1.0)
    ext: str | None = None  # None: each output keeps its input's format
    shard: Shard = Shard()

    def __post_init__(self) -> None:
        if self.styles_per_image < 1:
            raise UsageError(f"--styles-per-image must be at least 1, got {self.styles_per_image}")


@dataclass
class Plan:
    """This shard's outputs, checked; nothing has been written yet."""

    content_root: Path
    style_root: Path
    out: Path
    options: Options
    jobs: list[batch.Job]
    notices: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.out / self.options.shard.manifest_name


def plan(content_root: Path, style_root: Path, out: Path, options: Options) -> Plan:
    """Walk both trees and decide every output of this shard; UsageError (nothing written)
    when the trees are empty, OUT would land inside an input tree, or two outputs collide."""
    notices: list[str] = []

    def unreadable(folder: Path, exc: OSError) -> None:
        notices.append(f"{folder}: cannot read this folder ({exc.strerror or exc}); its images are left out")

    contents = _walk(content_root, "CONTENT_DIR", unreadable)
    styles = _walk(style_root, "STYLE_DIR", unreadable)
    _check_out(out, content_root, style_root)
    count = options.styles_per_image
    if count > len(styles):
        notices.append(f"{count} styles per image from {len(styles)} styles: each image gets some styles "
                       "more than once (with different alphas only when --alpha is a range)")
    labels = _style_labels(styles)
    planned: list[batch.Job] = []
    outputs: list[tuple[Path, str]] = []  # every shard's, so that every shard refuses alike
    low, high = options.alpha
    for relative in contents:
        picks = choose_styles(options.seed, relative, len(styles), count)
        mine = options.shard.owns(relative)
        for j, pick in enumerate(picks):
            output = out / _output_name(relative, labels[pick], j // len(styles), count, options.ext)
            outputs.append((output, relative))
            if mine:
                planned.append(batch.Job(content_root / relative, style_root / styles[pick], output,
                                         draw_alpha(options.seed, relative, j, low, high)))
    jobs.refuse_collisions(outputs, _inputs_under(out, ((content_root, contents), (style_root, styles))))
    return Plan(content_root, style_root, out, options, planned, notices)


def _walk(root: Path, what: str, unreadable: Callable[[Path, OSError], None]) -> list[str]:
    if not root.is_dir():
        raise UsageError(f"{root}: {what} must be a folder" + ("" if root.exists() else " (no such folder)"))
    found = walk_images(root, unreadable)
    if not found:
        raise UsageError(f"{root}: no images in this tree")
    return found


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_out(out: Path, content_root: Path, style_root: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: OUT must be a folder, and this is a file")
    target = out.resolve()
    if _inside(target, content_root.resolve()):
        raise UsageError(f"{out}: OUT is inside CONTENT_DIR {content_root}: outputs would become inputs; "
                         "choose a folder outside it")
    if _inside(target, style_root.resolve()):
        raise UsageError(f"{out}: OUT is inside STYLE_DIR {style_root}: outputs would become styles; "
                         "choose a folder outside it")


def _inputs_under(out: Path, trees: tuple[tuple[Path, list[str]], ...]) -> list[Path]:
    """The input files an output could overwrite: those of the trees inside OUT (OUT may hold
    CONTENT_DIR); the other trees are apart from OUT (see _check_out)."""
    target = out.resolve()
    return [root / name for root, names in trees if _inside(root.resolve(), target) for name in names]


def _style_labels(styles: list[str]) -> list[str]:
    """How each style is named in outputs: its stem, or where two styles share a stem, its
    relative path with "-" for "/" (so that their outputs stay apart)."""
    stems = [PurePosixPath(name).stem for name in styles]
    uses = Counter(stems)
    shared = {stem for stem, count in uses.items() if count > 1}
    return [str(PurePosixPath(name).with_suffix("")).replace("/", "-") if stem in shared else stem
            for name, stem in zip(styles, stems, strict=True)]


def _output_name(relative: str, label: str, round_: int, count: int, ext: str | None) -> str:
    """OUT-relative output name: the content's own path when it gets one style, else
    "<stem>_stylized_<style>.<ext>" beside it ("_2", "_3" for further rounds of the styles)."""
    path = PurePosixPath(relative)
    suffix = path.suffix if ext is None else "." + ext
    if count == 1:
        return str(path.with_suffix(suffix))
    again = f"_{round_ + 1}" if round_ else ""
    return str(path.with_name(batch.OUTPUT_PATTERN.format(content=path.stem, style=label + again,
                                                          ext=suffix.lstrip("."))))


# --- the manifest -------------------------------------------------------------------------------

def _alpha_text(alpha: float | None) -> str:
    return "" if alpha is None else f"{alpha:.6g}"


class Manifest:
    """The CSV record of a shard's outputs, one row per output, appended as outcomes come.

    Opening it keeps the rows of a previous run whose outputs are complete (and checks that
    they are the outputs this run would make), drops the rest, and carries on after them.
    """

    def __init__(self, plan: Plan, overwrite: bool) -> None:
        self.path = plan.manifest
        self._plan = plan
        previous = {} if overwrite else self._previous()
        self.done: dict[Path, dict[str, str]] = {}
        for job in plan.jobs:
            row = previous.get(self._relative(job.output, plan.out))
            if row is not None and row["status"] == "written" and jobs.exists(job.output):
                self._check_same(row, job)
                self.done[job.output] = row
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.done.values())
        plan.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(plan.out, {self.path.name})
        with atomic_write(self.path) as handle:
            handle.write(buffer.getvalue().encode("utf-8", "surrogateescape"))
        self._file = open(self.path, "a", encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115
        self._writer = csv.DictWriter(self._file, MANIFEST_FIELDS, lineterminator="\n")

    @staticmethod
    def _relative(path: Path, root: Path) -> str:
        return path.relative_to(root).as_posix()

    def _previous(self) -> dict[str, dict[str, str]]:
        try:
            with open(self.path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
                reader = csv.DictReader(handle)
                if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
                    raise UsageError(f"{self.path}: not an adain dataset manifest (its header is not "
                                     f"{','.join(MANIFEST_FIELDS)}); move it away")
                # A row cut short by a killed process has missing fields: it is dropped.
                return {row["output"]: row for row in reader if None not in row.values()}
        except FileNotFoundError:
            return {}
        except (OSError, csv.Error, UnicodeError) as exc:
            raise UsageError(f"{self.path}: cannot read the manifest ({exc})") from None

    def _check_same(self, row: dict[str, str], job: batch.Job) -> None:
        plan = self._plan
        expected = (self._relative(job.content, plan.content_root), self._relative(job.style, plan.style_root),
                    _alpha_text(job.alpha))
        if (row["content"], row["style"], row["alpha"]) != expected:
            raise UsageError(
                f"{self.path}: {row['output']} was made from {row['style']} at alpha {row['alpha']}, and this run "
                f"would use {expected[1]} at alpha {expected[2]}: the seed, --alpha, --styles-per-image or the "
                "styles changed; write to a new folder, or pass --overwrite")

    def record(self, outcome: jobs.Outcome) -> None:
        job: batch.Job = outcome.job  # type: ignore[assignment]
        plan = self._plan
        self._writer.writerow({
            "content": self._relative(job.content, plan.content_root),
            "style": self._relative(job.style, plan.style_root),
            "output": self._relative(job.output, plan.out), "alpha": _alpha_text(job.alpha),
            "status": outcome.status, "error": outcome.error or ""})
        self._file.flush()  # a killed run keeps every row it reported

    def close(self) -> None:
        self._file.close()


# --- the run ----------------------------------------------------------------------------------

def default_workers() -> int:
    """Decode/save threads: enough to keep a GPU fed, not more than the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    return max(2, min(8, cpus))


def open_style_bank(location: str, stylizer: Stylizer, settings: jobs.Settings) -> StyleBank | None:
    """The bank `--style-bank` names ("": the default location; "off": none), or None where a style's
    statistics hold for one content only (CORAL recolours each style towards its content)."""
    if location == "off" or not style_cache.shared(settings.color_mode):
        return None
    return StyleBank(Path(location) if location else default_location(), stylizer, settings)


@dataclass(frozen=True)
class Result:
    plan: Plan
    resumed: int  # outputs a previous run finished and recorded
    outcomes: list[jobs.Outcome]
    seconds: float

    def count(self, status: jobs.Status) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        return jobs.exit_code(self.outcomes)

    def as_dict(self) -> dict[str, object]:
        written = self.count("written")
        return {"shard": f"{self.plan.options.shard.index}/{self.plan.options.shard.count}",
                "manifest": str(self.plan.manifest), "outputs": len(self.plan.jobs), "written": written,
                "skipped": self.count("skipped"), "failed": self.count("failed"), "resumed": self.resumed,
                "seconds": round(self.seconds, 3), "images_per_second": round(written / self.seconds, 3)
                if self.seconds > 0 else None}


def run(stylizer: Stylizer, plan: Plan, settings: jobs.Settings, *, bank: StyleBank | None = None,
        workers: int = 2, on_outcome: Callable[[jobs.Outcome], None] | None = None,
        on_start: Callable[[int], None] | None = None) -> Result:
    """Make this shard's outputs, skipping those a previous run finished, recording each in the
    manifest as it comes. `on_start(n)` hears first how many outcomes are to come."""
    began = time.perf_counter()
    manifest = Manifest(plan, settings.overwrite)
    try:
        todo = [job for job in plan.jobs if job.output not in manifest.done]
        for folder, names in _names_by_folder(todo).items():
            remove_stale_temporaries(folder, names)
        if on_start is not None:
            on_start(len(todo))

        def record(outcome: jobs.Outcome) -> None:
            manifest.record(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

        outcomes = batch.run(stylizer, todo, settings, record, workers=workers, bank=bank)
    finally:
        manifest.close()
    return Result(plan, len(manifest.done), outcomes, time.perf_counter() - began)


def _names_by_folder(todo: list[batch.Job]) -> dict[Path, set[str]]:
    folders: dict[Path, set[str]] = {}
    for job in todo:
        folders.setdefault(job.output.parent, set()).add(job.output.name)
    return folders
