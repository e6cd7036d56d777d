"""``fl-privacy train-generator``: train the attacker's DCGAN on public auxiliary data.

Wired into ``fl_privacy.launch.cli`` with ``add_train_generator_parser(sub)``; the handler
is set as ``func`` like the other sub-commands.

    fl-privacy train-generator --dataset cifar10 --classes 0,1,2,3,4 --epochs 25 \
        --ngf 32 --nz 64 --out generators/cifar10-c01234.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_train_generator_parser", "cmd_train_generator", "parse_classes"]


def parse_classes(text: str | None) -> list[int] | None:
    """"0,1,2" -> [0, 1, 2]; "" / None / "all" -> None (every class)."""
    if text is None or text.strip() in ("", "all"):
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--classes must be comma-separated class ids, got {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def cmd_train_generator(args: argparse.Namespace) -> int:
    """Train, save, and print the checkpoint path and the training time."""
    from fl_privacy.audit.auxiliary import train_generator

    _check_arguments(args)
    try:
        ckpt = _train(train_generator, args)
    except ValueError as err:  # train_generator checks its arguments (class ids, sizes) before it trains
        from fl_privacy.errors import ConfigError

        raise ConfigError(f"train-generator: {err}") from None
    path = ckpt.save_checkpoint(args.out)
    print(f"generator checkpoint: {path}")
    print(f"trained on {ckpt.num_samples} images of classes {ckpt.classes} ({ckpt.config['generator_parameters']:,} "
          f"generator parameters): {ckpt.epochs:g} epochs, {ckpt.steps} steps in {ckpt.seconds:.1f} s "
          f"({ckpt.seconds_per_epoch:.1f} s/epoch) on {ckpt.config['device']}")
    if ckpt.history.get("d_loss"):
        print(f"last epoch: D loss {ckpt.history['d_loss'][-1]:.3f}, G loss {ckpt.history['g_loss'][-1]:.3f}, "
              f"D(x) {ckpt.history['d_real'][-1]:.2f}, D(G(z)) {ckpt.history['d_fake'][-1]:.2f}")
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """The device exists and the checkpoint can be written, before any data loads."""
    import torch

    from fl_privacy.errors import ConfigError
    from fl_privacy.out_paths import check_creatable

    if args.device is not None:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise ConfigError(f"--device {args.device!r} is not a device: use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device} requested but no CUDA device is visible: use cpu")
    check_creatable(Path(args.out).expanduser().absolute().parent, "--out folder")
    if Path(args.out).is_dir():
        raise ConfigError(f"--out '{args.out}' is a folder: give the checkpoint file path, e.g. {args.out}/gen.pt")


def _train(train_generator, args: argparse.Namespace):
    return train_generator(
        dataset=args.dataset, classes=args.classes, split=args.split, epochs=args.epochs,
        batch_size=args.batch_size, nz=args.nz, ngf=args.ngf, ndf=args.ndf, lr=args.lr,
        conditional=not args.unconditional, max_samples=args.max_samples, max_steps=args.max_steps,
        device=args.device, seed=args.seed, progress=not args.no_progress, data_dir=args.data_dir,
    )


def add_train_generator_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train-generator`` sub-command on ``subparsers``; return its parser."""
    p = subparsers.add_parser(
        "train-generator", help="train a (conditional) DCGAN on public auxiliary data for GIA-L attacks",
        description="Train the attacker's generator (DCGAN, Radford et al. 2016) on the given classes of a dataset "
                    "split: the server's public auxiliary data for latent-space gradient inversion (GIA-L).",
    )
    p.add_argument("--dataset", default="cifar10", help="cifar10, cifar100, mnist, fashion_mnist (default: cifar10)")
    p.add_argument("--split", choices=("train", "test"), default="train", help="split to train on (default: train)")
    p.add_argument("--classes", type=parse_classes, default=None, metavar="IDS",
                   help="comma-separated class ids of the auxiliary data, e.g. 0,1,2,3,4 (default: all)")
    p.add_argument("--epochs", type=_positive, default=25, help="passes over the data (default: 25)")
    p.add_argument("--batch-size", type=_positive, default=128, help="batch size (default: 128, DCGAN)")
    p.add_argument("--nz", type=_positive, default=100, help="latent size (default: 100)")
    p.add_argument("--ngf", type=_positive, default=64, help="generator width (default: 64; 3.6M parameters)")
    p.add_argument("--ndf", type=_positive, default=64, help="discriminator width (default: 64)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default: 2e-4, DCGAN)")
    p.add_argument("--max-samples", type=_positive, default=None, help="train on a random subset of this size")
    p.add_argument("--max-steps", type=_positive, default=None, help="stop after this many batches in total")
    p.add_argument("--unconditional", action="store_true", help="no label conditioning")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: $FL_PRIVACY_DATA_DIR)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, metavar="PATH", help="where to write the checkpoint (.pt)")
    p.set_defaults(func=cmd_train_generator)
    return p
