"""Full-precision pretraining of the CIFAR ResNet (the float model BSQ starts from).

    python cifar_train.py -a resnet --depth 20 --checkpoint checkpoints/cifar10/resnet-20
"""
from models import build_model, load_model
from utils.checkpoint import load_model_state
from utils.cli import (RECIPE, Parser, add_data_flags, add_device_flags, add_model_flags,
                       add_output_flags, add_run_flags, add_schedule_flags, add_seed_flags,
                       add_speed_flags)
from utils.console import summary
from utils.engine import evaluate
from utils.errors import BSQError, run_main
from utils.fit import Schedule, fit
from utils.rundir import check_run, interrupted, open_run
from utils.setup import loaders, model_config, setup, speed


def get_args_parser(add_help=True):
    parser = Parser(description="Full-precision CIFAR ResNet training", add_help=add_help)
    add_model_flags(parser)
    add_data_flags(parser)
    add_schedule_flags(parser, RECIPE["train"])
    add_run_flags(parser, checkpoint="checkpoints/cifar10/resnet-20", resume=True,
                  evaluate="only evaluate --model; write nothing")
    add_seed_flags(parser)
    add_device_flags(parser)
    add_speed_flags(parser)
    add_output_flags(parser)
    return parser


def main(args):
    resume = None if args.evaluate else check_run(args)
    device = setup(args, resume)
    run_speed = speed(args, device)
    train_loader, test_loader = loaders(args, device)
    if resume is not None:
        model = load_model_state(build_model(**model_config(args)), resume, args.resume)
    elif args.model:
        model, _ = load_model(args.model, **model_config(args))
    else:
        model = build_model(**model_config(args))
    if model.form != "float":
        raise BSQError(f"{args.resume or args.model} is a {model.form} model; cifar_train.py "
                       "trains float models (use cifar_finetune.py)")
    model.to(device)
    if args.evaluate:
        acc = evaluate(model, test_loader)["acc"]
        return summary(model, acc, acc, args.model)

    print(f"ResNet-{args.depth} on {args.dataset}, {sum(p.numel() for p in model.parameters())} "
          f"parameters, seed {args.manualSeed}, {device}", flush=True)
    with open_run(args):
        test, best_acc = fit(model, train_loader, test_loader, Schedule.from_args(args),
                             args.checkpoint, speed=run_speed, resume=resume,
                             start_epoch=args.start_epoch, progress_every=args.progress,
                             record=args)
    return summary(model, test["acc"], best_acc, f"{args.checkpoint}/checkpoint.pth.tar")


if __name__ == "__main__":
    run_main(main, get_args_parser(), interrupted=interrupted)
