"""Training the decoder, as in the paper (Huang & Belongie 2017, section 6.1).

The encoder is the fixed normalised VGG-19 to relu4_1; only the decoder learns. Loss =
content loss (MSE between f(g(t)) and t, t the AdaIN output) + lambda * style loss (MSE
of per-channel means plus MSE of stds at relu1_1, relu2_1, relu3_1, relu4_1). Adam,
lr / (1 + decay * iteration) as the reference code. Content from MS-COCO, styles from
WikiArt, resized to a 512 px shorter side (aspect kept) and randomly cropped to 256.

One process (GPU or CPU):
    adain train --coco COCO/ --wikiart WIKIART/
Several GPUs on one machine:
    torchrun --standalone --nproc_per_node 4 -m adain_cli train --coco COCO/ --wikiart WIKIART/
Several machines (run on each, NODE_RANK 0..N-1):
    torchrun --nnodes 2 --node_rank NODE_RANK --nproc_per_node 8 \\
        --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m adain_cli train --coco ... --wikiart ...

Under torchrun it trains with DistributedDataParallel: each rank draws its own samples,
and only rank 0 logs and writes checkpoints, metrics and previews.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from . import data, images, install, launch
from .atomic import atomic_write
from .device import DTYPES, PRECISIONS, Precision, compute_dtype, cuda_available, pick_device
from .errors import AdainError, TrainingError, UsageError, WeightsError
from .execution import Execution, memory_layout, tune
from .launch import Launch
from .model import STRIDE, Decoder, Encoder, adain, feature_stats
from .stylizer import Stylizer
from .weights import DECODER_FILE, VGG_FILE, encoder_identity, load_encoder, weights_dir

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; every checkpoint carries it."""

    content_dir: str
    style_dir: str
    out: str
    vgg: str  # the encoder weights file
    iterations: int = 160_000
    batch_size: int = 8
    lr: float = 1e-4
    lr_decay: float = 5e-5  # lr / (1 + lr_decay * iteration), the reference schedule
    content_weight: float = 1.0
    style_weight: float = 10.0  # the paper's lambda
    image_size: int = 512  # shorter side after resizing
    crop_size: int = 256
    workers: int = 4
    seed: int = 0
    save_every: int = 10_000
    preview_every: int = 1_000
    precision: Precision = "fp32"
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "image_size", "crop_size", "save_every", "preview_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1")
        if self.crop_size > self.image_size:
            raise UsageError(f"crop-size {self.crop_size} is larger than image-size {self.image_size}")
        if self.crop_size % STRIDE:
            raise UsageError(f"crop-size must be a multiple of {STRIDE}, got {self.crop_size}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be {', '.join(PRECISIONS)}, got {self.precision!r}")


# What a resumed run must share with its checkpoint: anything that changes the optimisation.
RESUME_MUST_MATCH = ("batch_size", "lr", "lr_decay", "content_weight", "style_weight", "image_size",
                     "crop_size", "seed", "precision")


@dataclass(frozen=True)
class Step:
    """One iteration's numbers, as logged."""

    iteration: int
    loss_content: float
    loss_style: float
    lr: float
    seconds: float
    skipped: int

    @property
    def loss(self) -> float:
        return self.loss_content + self.loss_style


# --- the loss ---------------------------------------------------------------------------

def style_loss(generated: dict[str, Tensor], style: dict[str, Tensor]) -> Tensor:
    """MSE of per-channel means plus MSE of stds, summed over relu1_1 ... relu4_1."""
    total = torch.zeros((), device=next(iter(generated.values())).device)
    for name, target in style.items():
        g, s = feature_stats(generated[name]), feature_stats(target)
        total = total + F.mse_loss(g.mean, s.mean) + F.mse_loss(g.std, s.std)
    return total


def losses(encoder: Encoder, decoder: torch.nn.Module, content: Tensor, style: Tensor) -> tuple[Tensor, Tensor]:
    """(content loss, style loss) for a batch, before weighting."""
    with torch.no_grad():
        style_features = encoder.features(style)
        target = adain(encoder(content), feature_stats(style_features["relu4_1"]))  # (N, 512, S/8, S/8)
    generated = decoder(target)
    generated_features = encoder.features(generated)
    loss_content = F.mse_loss(generated_features["relu4_1"].float(), target.float())
    return loss_content, style_loss(generated_features, style_features)


# --- what a run starts from -----------------------------------------------------------------

def run_directory(out: Path | None, resume: str | None) -> Path:
    """--out, or runs/<timestamp> for a fresh run; UsageError for --resume latest without --out."""
    if out is not None:
        return out
    if resume == "latest":
        raise UsageError("--resume latest needs --out (the run to continue)")
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def encoder_file(vgg: Path | None, *, offline: bool = False, progress: install.FileProgress | None = None) -> Path:
    """--vgg, or the default VGG weights, fetched on first use unless `offline`."""
    if vgg is not None:
        return vgg
    install.ensure([VGG_FILE], offline=offline or install.offline_requested(), progress=progress)
    return weights_dir() / VGG_FILE


# --- distributed set-up -------------------------------------------------------------------

def is_main_process() -> bool:
    """False in the torchrun processes other than rank 0, which stay silent."""
    return launch.process_group().main


def _start_distributed(config: TrainConfig) -> tuple[Launch, torch.device]:
    """torchrun's ranks, each on its local rank's GPU, in a process group; else one process alone.
    The precision is checked for the device before any group forms, so that every rank fails alike."""
    ranks = launch.process_group()
    name = config.device
    if ranks.world > 1 and name == "auto" and not cuda_available():
        name = "cpu"  # gloo carries no MPS tensors: a group without CUDA trains on CPUs
    device = pick_device(ranks.device_name(name))
    compute_dtype(config.precision, device, training=True)
    if ranks.world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


# --- checkpoints ---------------------------------------------------------------------------

def save(out: Path, decoder: Decoder, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
         iteration: int, config: TrainConfig, encoder_id: str, skipped: set[str], world: int = 1) -> None:
    """checkpoint.pt (everything to resume) and decoder.pth (the public layout), each atomically.

    `decoder` is the plain module, never a DDP or compiled wrapper, so keys stay clean.
    No random-number state is saved: nothing after the decoder's initialisation draws from
    the global generator (samples and crops come from their own, seeded by sample number).
    """
    state = {
        "decoder": decoder.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "iteration": iteration,
        "config": asdict(config),
        "world": world,  # the sample stream depends on it (data.SampleNumbers)
        "encoder": encoder_id,
        "skipped": sorted(skipped),
    }
    with atomic_write(out / CHECKPOINT_FILE) as handle:
        torch.save(state, handle)
    with atomic_write(out / DECODER_FILE) as handle:
        torch.save({k: v.detach().float().cpu() for k, v in decoder.state_dict().items()}, handle)


def resolve_resume(resume: str, out: Path) -> Path:
    """A checkpoint file, a run directory, or "latest" (the checkpoint in --out)."""
    path = out / CHECKPOINT_FILE if resume == "latest" else Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise UsageError(f"{path}: no checkpoint to resume from")
    return path


def load_checkpoint(path: Path, config: TrainConfig, encoder_id: str, world: int = 1) -> dict:
    """A checkpoint that this run of `world` processes can continue; WeightsError saying why not otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same answer
        raise WeightsError(f"{path}: not a loadable checkpoint ({str(exc).splitlines()[0]})") from exc
    if not isinstance(state, dict) or not {"decoder", "optimizer", "iteration", "config", "encoder"} <= set(state):
        raise WeightsError(f"{path}: not an adain-cli training checkpoint")
    if state["encoder"] != encoder_id:
        raise WeightsError(f"{path}: trained against another encoder (identity {state['encoder'][:12]}..., "
                           f"this run's is {encoder_id[:12]}...)")
    differing = [f"{k}={state['config'].get(k)!r} (now {getattr(config, k)!r})"
                 for k in RESUME_MUST_MATCH if state["config"].get(k) != getattr(config, k)]
    if state.get("world", 1) != world:
        differing.append(f"processes={state.get('world', 1)} (now {world}; each process draws its own samples)")
    if differing:
        raise WeightsError(f"{path}: made with another configuration: {', '.join(differing)}")
    return state


# --- the run -------------------------------------------------------------------------------

def _batches(paths: list[Path], config: TrainConfig, start: int, ranks: Launch, pin: bool) -> Iterator:
    dataset = data.RandomCrops(paths, config.image_size, config.crop_size, config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=data.SampleNumbers(start, config.batch_size, ranks.rank, ranks.world),
        num_workers=config.workers,
        collate_fn=data.collate,
        pin_memory=pin,
        persistent_workers=config.workers > 0,
        prefetch_factor=4 if config.workers > 0 else None,
    )
    return iter(loader)


def _autocast(device: torch.device, precision: Precision):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def _preview(stylizer: Stylizer, contents: Tensor, styles: Tensor, path: Path) -> None:
    """Rows of content | style | result for fixed pairs, through the Stylizer that every command uses."""
    decoder = stylizer.decoder
    was_training = decoder.training
    decoder.eval()
    outputs = stylizer.render_batch(stylizer.encode_contents(contents), [stylizer.style_stats(styles)])
    decoder.train(was_training)
    tiles = [t.unsqueeze(0) for triple in zip(contents, styles, outputs, strict=True) for t in triple]
    path.parent.mkdir(parents=True, exist_ok=True)
    images.save_image(images.contact_sheet(tiles, columns=3), path)


def _fixed_pairs(contents: list[Path], styles: list[Path], config: TrainConfig, device: torch.device):
    def load(paths: list[Path]) -> Tensor:
        crops = []
        for path in paths:
            try:
                image = data.load_for_training(path, config.crop_size)
            except AdainError:
                continue
            crops.append(images.to_tensor(images.center_crop_square(image)))
            if len(crops) == 4:
                break
        return torch.cat(crops)

    c, s = load(contents), load(styles)
    count = min(len(c), len(s))
    return c[:count].to(device), s[:count].to(device)


@dataclass
class _Run:
    """What a run holds from one iteration to the next."""

    config: TrainConfig
    ranks: Launch
    device: torch.device
    encoder: Encoder
    encoder_id: str
    decoder: Decoder
    model: torch.nn.Module  # the decoder, wrapped for DDP under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    contents: Iterator
    styles: Iterator
    iteration: int
    skipped: set[str]
    started: float
    previews: tuple[Tensor, Tensor] | None = None  # rank 0 only
    stylizer: Stylizer | None = None  # rank 0 only: the previews' renderer, over the training networks
    metrics: _MetricsLog | None = None  # rank 0 only

    @property
    def out(self) -> Path:
        return Path(self.config.out)


def train(
    config: TrainConfig,
    *,
    resume: str | None = None,
    stop: threading.Event | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> int:
    """Train until config.iterations or until `stop` is set; returns the last iteration done.

    A checkpoint is written every save_every iterations, at the end, and when stopped.
    """
    stop = stop or threading.Event()
    ranks, device = _start_distributed(config)
    try:
        run = _setup(config, ranks, device, resume)
        try:
            while run.iteration < config.iterations:
                step, stopping = _step(run, stop)
                if ranks.main:
                    _record(run, step, stopping, on_step)
                if stopping:
                    break
            return run.iteration
        finally:
            if run.metrics is not None:
                run.metrics.close()  # before the process ends: the CLI exits with os._exit
    finally:
        if ranks.world > 1:
            dist.destroy_process_group()


def _setup(config: TrainConfig, ranks: Launch, device: torch.device, resume: str | None) -> _Run:
    """Data checked, networks built (or restored from a checkpoint), loaders started."""
    out = Path(config.out)
    content_paths = data.find_images(Path(config.content_dir))
    style_paths = data.find_images(Path(config.style_dir))
    data.check_usable(content_paths, config.image_size, Path(config.content_dir))
    data.check_usable(style_paths, config.image_size, Path(config.style_dir))

    encoder = load_encoder(Path(config.vgg)).to(device)
    encoder_id = encoder_identity(encoder)
    torch.manual_seed(config.seed)  # the same initial decoder on every rank
    decoder = Decoder().to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    start, skipped = 0, set()
    if resume is not None:
        state = load_checkpoint(resolve_resume(resume, out), config, encoder_id, ranks.world)
        decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, skipped = int(state["iteration"]), set(state.get("skipped", []))
    tune(device)
    layout = memory_layout(device, training=True)
    encoder.to(memory_format=layout)
    decoder.to(memory_format=layout)
    # The previews' renderer shares the training networks: built before train() (it sets eval).
    stylizer = Stylizer(encoder, decoder, execution=Execution.for_training(device)) if ranks.main else None
    model = torch.nn.parallel.DistributedDataParallel(decoder) if ranks.world > 1 else decoder
    model.train()

    pin = device.type == "cuda"
    run = _Run(config, ranks, device, encoder, encoder_id, decoder, model, optimizer, scaler,
               _batches(content_paths, config, start, ranks, pin), _batches(style_paths, config, start, ranks, pin),
               start, skipped, time.perf_counter(), stylizer=stylizer)
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
        run.previews = _fixed_pairs(content_paths, style_paths, config, device)
        run.metrics = _MetricsLog(out, start)
    return run


def _step(run: _Run, stop: threading.Event) -> tuple[Step, bool]:
    """One iteration on every rank: (what it measured, whether the run is to stop now)."""
    config, device = run.config, run.device
    (content, bad_c), (style, bad_s) = next(run.contents), next(run.styles)
    run.skipped.update(bad_c, bad_s)
    lr = config.lr / (1.0 + config.lr_decay * run.iteration)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    with _autocast(device, config.precision):
        loss_c, loss_s = losses(run.encoder, run.model, content.to(device, non_blocking=True),
                                style.to(device, non_blocking=True))
    loss = config.content_weight * loss_c + config.style_weight * loss_s
    # One all-reduce carries the losses and the stop request, so every rank stops together.
    shared = torch.stack([loss_c.detach().float(), loss_s.detach().float(),
                          torch.tensor(float(stop.is_set()), device=device)])
    if run.ranks.world > 1:
        dist.all_reduce(shared)
        shared[:2] /= run.ranks.world
    if not torch.isfinite(shared[:2]).all():
        raise TrainingError(f"loss became {shared[0].item() + shared[1].item()} at iteration {run.iteration + 1}; "
                            f"stopped, last good checkpoint kept in {run.out}")
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        run.optimizer.step()
    run.iteration += 1
    step = Step(run.iteration, shared[0].item() * config.content_weight, shared[1].item() * config.style_weight,
                lr, time.perf_counter() - run.started, len(run.skipped))
    return step, shared[2].item() > 0


def _record(run: _Run, step: Step, stopping: bool, on_step: Callable[[Step], None] | None) -> None:
    """Rank 0 after each iteration: metrics, progress, and previews and checkpoints when due."""
    config, iteration = run.config, run.iteration
    assert run.metrics is not None and run.previews is not None and run.stylizer is not None
    run.metrics.write(step)
    if on_step is not None:
        on_step(step)
    if iteration % config.preview_every == 0:
        _preview(run.stylizer, *run.previews, run.out / "previews" / f"iter_{iteration:07d}.png")
    if iteration % config.save_every == 0 or iteration == config.iterations or stopping:
        save(run.out, run.decoder, run.optimizer, run.scaler, iteration, config, run.encoder_id, run.skipped,
             run.ranks.world)


class _MetricsLog:
    """metrics.jsonl, plus TensorBoard event files when tensorboard happens to be installed.

    A run resumed from iteration N keeps the lines up to N and drops later ones: they
    belong to iterations the resumed run does again (a newer checkpoint was not used).
    """

    def __init__(self, out: Path, start: int = 0) -> None:
        self.path = out / METRICS_FILE
        if start and self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True)
                    if _iteration_of(line) is not None and _iteration_of(line) <= start]
            with atomic_write(self.path) as handle:
                handle.write("".join(kept).encode("utf-8"))
        elif not start:
            self.path.unlink(missing_ok=True)  # a fresh run in a used folder starts a fresh log
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional, not a dependency
            self.board = None
        else:
            self.board = SummaryWriter(str(out / "tensorboard"))

    def write(self, step: Step) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({**dataclasses.asdict(step), "loss": step.loss}) + "\n")
        if self.board is not None:
            for name in ("loss_content", "loss_style", "lr"):
                self.board.add_scalar(name, getattr(step, name), step.iteration)
            self.board.add_scalar("loss", step.loss, step.iteration)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()  # flushes the last events


def _iteration_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["iteration"])
    except (ValueError, KeyError, TypeError):
        return None
