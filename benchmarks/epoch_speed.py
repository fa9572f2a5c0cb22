"""Epoch speed: ResNet-110 -> ResNet-8 Annealing-KD phase-1 training steps, reference vs ours.

Both paths run in this process, on the same device, with the same batch size, the same
student (kd.models resnet8) and the same teacher architecture (resnet110, random weights:
speed does not depend on them), on random CIFAR-shaped uint8 images:

(i)  reference, built the way the official code trains (huawei-noah/Efficient-NLP,
     Annealing_KD/computer_vision_tasks): a torchvision-style dataset (HWC uint8 -> PIL
     image -> RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), a
     DataLoader with 2 worker processes and shuffling, and a teacher forward pass on every
     step. The teacher runs under no_grad here (the official code even tracks gradients
     through it; --teacher-grad reproduces that and makes the reference slower still).
(ii) ours: kd.train.train() itself -- uint8 tensors on the device, augmentation by batched
     indexing of the drawn views, no worker processes -- reading the teacher's logits from
     a TeacherBank instead of running the teacher. The bank used for timing has the real
     shape and dtype ([images, 162, classes] float16) but random contents (they do not
     affect speed; tests/test_bank.py checks the real bank's exactness). The real bank's
     build time is measured on a subset with the real teacher and extrapolated.

Per-step times are measured over --steps steps after a warm-up (reference: --warmup
steps; ours: one whole epoch of --steps steps, then one timed epoch) and extrapolated to an
epoch of 45,000 images. On CPU the time per step is the fastest measured step (as timeit
does: on a shared 2-core machine other processes only ever add time, and far more to the
reference's OpenMP threads plus worker processes than to ours; the median and mean are
printed too); on CUDA it is the mean over a synchronised window. The last line,
`speedup: X.XX`, is the reference's time per training step divided by ours (data +
teacher-or-bank + student forward/backward + SGD step, at the same batch size; bank build
and evaluation excluded).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from _common import GpuSampler, machine_line, setup_device, sync

import numpy as np
import torch
import torch.nn.functional as F

from kd.bank import TeacherBank, build_bank, estimate_bank_bytes, format_bytes
from kd.checkpoints import save_model
from kd.config import TrainConfig
from kd.data import Data
from kd.data.augment import NUM_CIFAR_VIEWS
from kd.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from kd.models import build_model
from kd.runtime import load_teacher
from kd.train import train

TRAIN_IMAGES = 45_000  # CIFAR training set minus the 5,000 validation images


class PILCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10/100.__getitem__ does: HWC uint8 -> PIL -> transform."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform):
        self.data, self.targets, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), int(self.targets[index])


def reference_step_seconds(args, device, teacher_path, images, labels, mean, std, num_classes):
    import torchvision.transforms as T

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    dataset = PILCifar(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers, pin_memory=device.type == "cuda",
                                         drop_last=True)
    teacher = load_teacher(str(teacher_path), device)
    if args.teacher_grad:  # the official code: teacher parameters track gradients
        teacher = teacher.model
        teacher.requires_grad_(True)
    student = build_model("resnet8", num_classes).to(device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    student.train()
    phi = 1.0  # T = 1; the value does not change the cost
    sampler = GpuSampler(device)
    stamps = []
    for step, (x, y) in enumerate(loader):
        if step == args.warmup:
            sync(device)
            sampler.__enter__()
        if step >= args.warmup:
            stamps.append(time.perf_counter())  # the step includes waiting for its batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        output = student(x)
        teacher_logits = teacher(x)  # FrozenTeacher: no_grad, eval mode (unless --teacher-grad)
        loss = F.mse_loss(output, teacher_logits * phi)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    stamps.append(time.perf_counter())  # the loader holds exactly warmup + steps batches
    sampler.__exit__()
    return step_statistics(stamps, device), sampler


def step_statistics(stamps: list[float], device: torch.device) -> dict[str, float]:
    """Per-step seconds from consecutive step start times. On CPU the fastest step is used
    (as timeit does: other processes on a shared machine only ever add time, and they hurt
    the reference's OpenMP threads plus DataLoader workers far more than our single process);
    on CUDA the steps are asynchronous, so the mean over the synchronised window is used."""
    steps = np.diff(np.asarray(stamps))
    mean = float((stamps[-1] - stamps[0]) / len(steps))
    return {"mean": mean, "median": float(np.median(steps)), "min": float(steps.min()),
            "used": mean if device.type == "cuda" else float(steps.min()), "count": len(steps)}


class TimedBank(TeacherBank):
    """The bank, noting when each training step asks for its logits (one lookup per step)."""

    stamps: list[float]

    def lookup(self, example_indices, views=None):
        self.stamps.append(time.perf_counter())
        return super().lookup(example_indices, views)


def our_step_seconds(args, device, teacher_path, images, labels, mean, std, num_classes):
    n = len(images)
    g = torch.Generator().manual_seed(1)
    small = lambda k: torch.randint(0, 256, (k, 3, 32, 32), generator=g, dtype=torch.uint8)
    data = Data(f"cifar{num_classes}", num_classes, images, labels, small(256), labels[:256],
                small(256), labels[:256], num_views=NUM_CIFAR_VIEWS, mean=mean, std=std)
    logits = torch.randn(n, NUM_CIFAR_VIEWS, num_classes, generator=g).to(torch.float16)
    bank = TimedBank(logits.to(device))  # real shape and dtype, random contents
    bank.stamps = []
    cfg = TrainConfig(dataset=f"cifar{num_classes}", data_dir="/unused", model="resnet8",
                      method="annealing", teacher="resnet110", teacher_checkpoint=str(teacher_path),
                      epochs=3, tau_max=2, stage_epochs=1, batch_size=args.batch_size, lr=0.1,
                      weight_decay=1e-4, device=device.type, compile=args.compile).validate()
    seen = []
    sampler = GpuSampler(device)

    class Done(Exception):
        pass

    def report(metrics, save_state):
        seen.append(metrics)
        if len(seen) == 1:
            sampler.__enter__()  # sample during the timed (second) epoch
            bank.stamps.clear()
        if len(seen) == 2:
            raise Done

    try:
        train(cfg, report=report, data=data, bank=bank)
    except Done:
        pass
    sampler.__exit__()
    timed = seen[1]  # epoch 1 is the warm-up; both are phase 1 (teacher logits from the bank)
    assert timed["phase"] == 1 and len(bank.stamps) == args.steps
    stats = step_statistics(bank.stamps, device)  # steps 1 .. steps-1 of the timed epoch
    stats["mean"] = args.batch_size / timed["samples_per_s"]  # the whole epoch, as train() reports it
    if device.type == "cuda":
        stats["used"] = stats["mean"]
    return stats, sampler


def bank_build(args, device, teacher_path, mean, std, num_classes):
    k = max(1, math.ceil(args.bank_pairs / NUM_CIFAR_VIEWS))
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (k, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)
    y = torch.zeros(k, dtype=torch.long, device=device)
    data = Data(f"cifar{num_classes}", num_classes, x, y, x, y, x, y, num_views=NUM_CIFAR_VIEWS,
                mean=mean, std=std)
    teacher = load_teacher(str(teacher_path), device)
    with torch.no_grad():  # warm-up of the kernels at the build batch size
        teacher(data.inputs(x[:1].expand(min(args.bank_batch, 64), -1, -1, -1)))
    bank = build_bank(teacher, data, batch_size=args.bank_batch, amp=device.type == "cuda")
    return k * NUM_CIFAR_VIEWS, bank.build_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on CPU, 200 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="reference warm-up steps (default: 3 / 20)")
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader workers (official: 2)")
    parser.add_argument("--num-classes", type=int, default=100, choices=(10, 100))
    parser.add_argument("--bank-pairs", type=int, default=None,
                        help="(image, view) pairs of the measured bank build (default: 648 CPU / 16,200 CUDA)")
    parser.add_argument("--bank-batch", type=int, default=256, help="batch size of the bank build")
    parser.add_argument("--teacher-grad", action="store_true",
                        help="reference tracks teacher gradients as the official code does")
    parser.add_argument("--compile", action="store_true", help="ours: torch.compile the student")
    args = parser.parse_args()
    device = setup_device(args.device, args.threads)
    cuda = device.type == "cuda"
    args.steps = args.steps or (200 if cuda else 30)
    args.warmup = args.warmup if args.warmup is not None else (20 if cuda else 3)
    args.bank_pairs = args.bank_pairs or (16_200 if cuda else 648)
    num_classes = args.num_classes
    mean, std = (CIFAR100_MEAN, CIFAR100_STD) if num_classes == 100 else (CIFAR10_MEAN, CIFAR10_STD)

    print(f"epoch_speed: ResNet-110 -> ResNet-8, Annealing-KD phase 1, CIFAR-{num_classes} shapes "
          f"(random uint8 images), batch {args.batch_size}, {device}")
    print(machine_line(device))
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        teacher = build_model("resnet110", num_classes)
        for name, module in teacher.named_modules():
            # A random 54-block ResNet's logits overflow float16; zero-initialised residual
            # branches ("bn2" weights 0) keep them in range without changing any cost.
            if name.endswith("bn2"):
                torch.nn.init.zeros_(module.weight)
        teacher_path = save_model(Path(folder) / "teacher.pt", "resnet110", num_classes,
                                  teacher.state_dict())
        g = torch.Generator().manual_seed(0)
        ref_images = torch.randint(0, 256, ((args.warmup + args.steps) * args.batch_size, 3, 32, 32),
                                   generator=g, dtype=torch.uint8)
        ref_labels = torch.randint(0, num_classes, (len(ref_images),), generator=g)
        our_images, our_labels = ref_images[:args.steps * args.batch_size], ref_labels[:args.steps * args.batch_size]

        ref_step, ref_gpu = reference_step_seconds(args, device, teacher_path, ref_images, ref_labels,
                                                   mean, std, num_classes)
        our_step, our_gpu = our_step_seconds(args, device, teacher_path, our_images, our_labels,
                                             mean, std, num_classes)
        pairs, build_seconds = bank_build(args, device, teacher_path, mean, std, num_classes)

    steps_per_epoch = math.ceil(TRAIN_IMAGES / args.batch_size)
    ref_median, our_median = ref_step["median"], our_step["median"]
    ref_mean, our_mean = ref_step["mean"], our_step["mean"]
    statistic = "mean" if cuda else "fastest"
    ref_step, our_step = ref_step["used"], our_step["used"]
    ref_epoch, our_epoch = ref_step * steps_per_epoch, our_step * steps_per_epoch
    full_pairs = TRAIN_IMAGES * NUM_CIFAR_VIEWS
    full_build = build_seconds / pairs * full_pairs
    full_bytes = estimate_bank_bytes(TRAIN_IMAGES, NUM_CIFAR_VIEWS, num_classes, torch.float16)
    reference_name = "reference: DataLoader(2 workers) + live teacher" + (" (grad)" if args.teacher_grad else "")
    print()
    print(f"{'path':<56}{'s/step':>9}{'median':>9}{'mean':>9}{'images/s':>10}{'s/epoch':>10}")
    print(f"{reference_name:<56}{ref_step:>9.3f}{ref_median:>9.3f}{ref_mean:>9.3f}"
          f"{args.batch_size / ref_step:>10.1f}{ref_epoch:>10.0f}{ref_gpu.text()}")
    print(f"{'ours: tensor pipeline + teacher bank (train())':<56}{our_step:>9.3f}{our_median:>9.3f}"
          f"{our_mean:>9.3f}{args.batch_size / our_step:>10.1f}{our_epoch:>10.0f}{our_gpu.text()}")
    print(f"  s/step: {statistic} of {args.steps} measured steps of batch {args.batch_size} after warm-up "
          f"(median and mean beside it); images/s and s/epoch from s/step, the epoch extrapolated to "
          f"{TRAIN_IMAGES:,} images ({steps_per_epoch} steps)")
    if not cuda and ref_median > 1.5 * ref_step:
        print("  note: the reference's steps vary a lot: other processes are competing for the cores")
    print(f"bank build: measured {pairs:,} (image, view) pairs in {build_seconds:.1f} s "
          f"({pairs / build_seconds:.0f} pairs/s, batch {args.bank_batch}); extrapolated to "
          f"{TRAIN_IMAGES:,} x {NUM_CIFAR_VIEWS} = {full_pairs:,} pairs: {full_build:,.0f} s "
          f"({full_build / 3600:.1f} h), bank {format_bytes(full_bytes)} float16")
    saved = ref_epoch - our_epoch
    if saved > 0:
        break_even = full_build / saved
        print(f"break-even: {break_even:.0f} teacher-using epochs (bank build / (reference epoch - our "
              f"epoch)), summed over all trials sharing the bank; the official budget has 200 "
              f"phase-1 epochs per trial")
    else:
        print("break-even: never (our epoch is not faster than the reference's)")
    print(f"speedup: {ref_step / our_step:.2f}")


if __name__ == "__main__":
    main()
