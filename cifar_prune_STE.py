"""BSQ training: bit-level group Lasso on the bit planes, re-quantization every --Prun_Int epochs.

    python cifar_prune_STE.py -a resnet --depth 20 --epochs 350 --lr 0.1 --schedule 250 \
        --gamma 0.1 --wd 1e-4 --model checkpoints/cifar10/resnet-20-8/model_best.pth.tar \
        --decay 0.01 --Prun_Int 100 --thre 0.0 --checkpoint checkpoints/cifar10/xxx \
        --Nbits 8 --act 4 --bin --L1 > xxx.txt
"""
import os

from models import build_model, load_model
from utils.checkpoint import checkpoint_state, save_checkpoint
from utils.cli import DATASETS, add_bit_args, base_parser, loaders, setup
from utils.engine import evaluate, fit, rng_state
from utils.errors import run_main
from utils.logs import scheme_report, summary, write_scheme_json


def get_args_parser():
    parser = base_parser("BSQ training of a bit-representation CIFAR ResNet", epochs=350, lr=0.1,
                         schedule=[250], checkpoint="checkpoints/cifar10/bsq")
    add_bit_args(parser, bin_help="train in bit representation (always on; kept for the "
                                  "release's command lines)")
    parser.add_argument("--decay", type=float, default=0.01, help="alpha of Eq. 5")
    parser.add_argument("--L1", action="store_true", help="turn the bit group-Lasso on")
    parser.add_argument("--Prun_Int", type=int, default=100,
                        help="epochs between re-quantizations / precision adjustments")
    parser.add_argument("--thre", type=float, default=0.0,
                        help="drop planes with at most this percentage of nonzero bits")
    return parser


def main(args):
    device = setup(args)
    num_classes = DATASETS[args.dataset]
    train_loader, test_loader, _ = loaders(args, device)
    resume = None
    if args.resume or args.model:
        model, ckpt = load_model(args.resume or args.model, args, num_classes)
        if args.resume:
            resume = ckpt
        if model.form == "float":
            print(f"--model is a float model: converting it to {args.Nbits} bits", flush=True)
    else:
        model = build_model(args, num_classes)
        print(f"no --model: starting from a random {args.Nbits}-bit model", flush=True)
    model.to_bits_(args.Nbits).to(device)
    if resume is None:
        model.requantize_(0.0)  # as the release does once on loading, before the epochs
    if args.evaluate:
        acc = evaluate(model, test_loader)["acc"]
        print(scheme_report(model, acc))
        return summary(model, acc, acc, args.resume or args.model)

    def requantize(epoch):
        """docs/method.md, steps 1-3, at the start of every epoch e with e % Prun_Int == 0."""
        if epoch % args.Prun_Int:
            return False
        model.requantize_(args.thre)
        print(f"re-quantized before epoch {epoch + 1}: {model.avg_bits():.3f} bits per weight, "
              f"compression {model.compression():.2f}x", flush=True)
        return True

    decay = args.decay if args.L1 else 0.0
    print(f"BSQ: ResNet-{args.depth} on {args.dataset}, alpha {decay}, Prun_Int {args.Prun_Int}, "
          f"thre {args.thre}, act {args.act}, seed {args.manualSeed}, {device}", flush=True)
    _, best_acc = fit(model, train_loader, test_loader, args, decay=decay,
                      before_epoch=requantize, resume=resume)

    model.requantize_(0.0)  # the release's final re-quantization drops only empty planes
    acc = evaluate(model, test_loader)["acc"]
    print(scheme_report(model, acc))
    write_scheme_json(model, os.path.join(args.checkpoint, "scheme.json"), acc)
    print(f"final re-quantized model: test accuracy {acc:.2f}%", flush=True)
    path = os.path.join(args.checkpoint, "checkpoint.pth.tar")
    save_checkpoint(checkpoint_state(model, args.epochs, acc, best_acc, None, args,
                                     rng=rng_state()), path)
    return summary(model, acc, best_acc, path)


if __name__ == "__main__":
    run_main(main, get_args_parser())
