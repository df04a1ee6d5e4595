"""``pcl-edge``: a thin command line over the Python API. Each sub-command is one call a user could make from
Python (``pcl_edge.evolve.evolve`` ...)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

log = logging.getLogger("pcl_edge")

_EVOLVE_HELP = """\
Learn a task stream continually. With no arguments: PCL on Split Digits (scikit-learn's digits, 5 tasks of 2
classes), preset cpu, written to runs/<strategy>-<data>-<time>/ (runs/latest points at it).

examples:
  pcl-edge evolve
  pcl-edge evolve --data imagefolder:../shared/data/cifar10-train-jpg.tar.xz --preset cpu --out runs/cifar
  pcl-edge evolve --strategy fixed --genome d6_w16_p2.4_x2.4_s0:res-k3_s1:res-k3_s2:res-k3
  pcl-edge evolve --resume runs/cifar          (continue an interrupted run)
"""


def _evolve_parser(sub) -> None:
    try:  # the training side needs torch; the device's CLI (serve, bundle, profile) must not import it
        from .evolve.config import describe_presets

        presets = describe_presets()
    except ImportError:
        presets = "  (install the 'train' extra: pip install 'pcl-edge[train]')"
    p = sub.add_parser("evolve", help="learn a task stream (PCL or a baseline)",
                       description=_EVOLVE_HELP + "\npresets (what --preset sets):\n" + presets + "\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="digits (default) | imagefolder:PATH (dir or .tar[.xz]) | cifar10:PATH | "
                                  "cifar100:PATH | mnist:PATH")
    p.add_argument("--tasks", help="NxK (N tasks of K consecutive classes) or explicit lists 'a,b/c,d' "
                                   "(indices or class names); default 5 equal tasks")
    p.add_argument("--input-size", metavar="HxW", help="resize every image to HxW (an image folder of mixed sizes "
                   "needs it; default: the source's own size)")
    p.add_argument("--strategy", help="pcl (default) | pcl-scratch | fixed | finetune | joint")
    p.add_argument("--preset", help="tiny | cpu (default) | gpu: budgets (listed above); explicit options "
                   "override them")
    p.add_argument("--population", type=int, help="population size N")
    p.add_argument("--generations", type=int, help="generations G per task")
    p.add_argument("--children", type=int, help="children per generation (lambda; default: the preset's, "
                   "N where the preset sets none; the cpu preset sets 4 for natural images, whatever N)")
    p.add_argument("--seed", type=int, help="seed for splits, search and training (default 0)")
    p.add_argument("--genome", help="architecture for fixed/finetune/joint, e.g. d6_w16_p2.4_x2.4_s0:res-k3_...")
    p.add_argument("--proxy-steps", type=int, help="optimizer steps of a candidate's proxy training")
    p.add_argument("--final-steps", type=int, help="optimizer steps of an expert's final training")
    p.add_argument("--max-params", type=int, help="parameter cap of the search space")
    p.add_argument("--rungs", help="multi-fidelity generations: steps each rung adds, e.g. 25,75 (successive "
                                   "halving; default: the preset's, or one rung of --proxy-steps)")
    p.add_argument("--eta", type=int, help="successive halving: 1/eta of a rung's children go on to the next "
                                           "(default 2)")
    p.add_argument("--screen", type=int, help="mutants drawn per child trained; the performance predictor keeps "
                                              "the predicted best (default: the preset's; 1 = no screening)")
    p.add_argument("--selection", choices=["constrained", "pareto"],
                   help="constrained (default): accuracy is the objective, the latency budget, --max-params and "
                        "max_train_cost are constraints; pareto: NSGA-II over accuracy, parameters (and latency with "
                        "--target)")
    p.add_argument("--perf-predictor", help="performance predictor that screens children: pairwise (default) | ridge")
    p.add_argument("--threads", type=int, help="torch threads of every training (default: 1 per proxy training, "
                                               "every usable core for an expert's)")
    p.add_argument("--target", help="hardware profile YAML (e.g. hw_profiles/jetson-orin-nano-8gb.yaml): predicted "
                                    "latency becomes an objective")
    p.add_argument("--latency-budget", type=float, metavar="MS", help="experts must meet MS (minus the margin)")
    p.add_argument("--latency-margin", type=float, help="safety margin on the budget (default 0.10)")
    p.add_argument("--out", help="run directory to create (must not exist or be empty)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its stored configuration")
    p.add_argument("--config", metavar="FILE", help="a run configuration (YAML or JSON; a run's config.json is one): "
                   "every field of the run, what it leaves out from its preset; options given here override it")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="configuration overrides, dotted for the training "
                   "recipes: proxy.steps=50 final.lr=0.1 rungs=[25,75] (values read as YAML)")
    _executor_args(p)


def _executor_args(p) -> None:
    """Where candidates train: evolve and learn take the same options."""
    p.add_argument("--workers", type=int, default=0,
                   help="local executor: processes training candidates side by side (default 0: one per usable "
                        "core, or $PCL_EDGE_WORKERS; 1: in this process); same results either way")
    p.add_argument("--executor", choices=["local", "gpu", "ray"],
                   help="where candidates train: this machine's worker processes (local; see --workers), K "
                        "trainings in flight on one GPU (gpu; see --slots) or Ray tasks. Default: gpu for a new "
                        "evolve run when this process sees a CUDA device and --workers is not given, else local")
    p.add_argument("--slots", type=int, default=16, help="gpu executor: trainings in flight at once (default 16)")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="gpu executor: run each training step eagerly instead of replaying it as a CUDA graph "
                        "(default: graphs on)")
    p.add_argument("--ray-address", help="an existing Ray cluster (auto | HOST:PORT); default: start a local one")
    p.add_argument("--cpus-per-trial", type=float, default=1,
                   help="Ray: CPUs reserved per candidate (its torch threads come from the recipe: --threads; "
                        "default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="Ray: GPUs per candidate (fractions allowed)")


def _config_from_args(args):
    from .evolve import EvolveConfig, preset_config
    from .evolve.config import load_config

    train_over = {"proxy": args.proxy_steps, "final": args.final_steps}
    if args.config or args.overrides:  # the file (and key=value) first; options given on the command line win
        base = load_config(args.config, [*args.overrides, *([f"data={args.data}"] if args.data else []),
                                         *([f"preset={args.preset}"] if args.preset else [])])
    else:
        base = preset_config(args.preset or "cpu", args.data or "digits")
    fields = {f: getattr(args, f) for f in ("tasks", "strategy", "population", "generations", "children", "seed",
                                            "genome", "max_params", "threads", "target", "eta", "screen",
                                            "perf_predictor", "input_size", "selection")}
    fields |= {"latency_budget_ms": args.latency_budget, "latency_margin": args.latency_margin,
               "rungs": _int_list(args.rungs, "--rungs")}
    cfg = dataclasses.replace(base, **{k: v for k, v in fields.items() if v is not None})
    for key, steps in train_over.items():
        if steps is not None:
            cfg = dataclasses.replace(cfg, **{key: dataclasses.replace(getattr(cfg, key), steps=steps)})
    assert isinstance(cfg, EvolveConfig)
    return cfg


def _int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{option} takes comma-separated integers, e.g. 25,75 (got {text!r})") from None


def _explicit(args) -> list[str]:
    names = ("data", "tasks", "strategy", "preset", "population", "generations", "children", "seed", "genome",
             "proxy_steps", "final_steps", "max_params", "threads", "out", "target", "latency_budget",
             "latency_margin", "rungs", "eta", "screen", "perf_predictor", "config", "input_size")
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None] + list(args.overrides)


def _default_executor() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "local"


def _run_options(args) -> dict:
    if args.executor is None:  # a fresh evolve only: a resumed or grown run keeps the local default (graphs round
        # differently from torch's SGD, and a run's numbers must not change under it)
        fresh = args.command == "evolve" and not getattr(args, "resume", None)
        args.executor = _default_executor() if fresh and not args.workers else "local"
    if getattr(args, "slots", 1) < 1:
        raise ValueError(f"--slots must be at least 1 (got {args.slots})")
    options = {"workers": args.workers} if args.executor == "local" else {}
    if args.executor == "gpu":
        options = {"slots": args.slots, "graphs": getattr(args, "cuda_graphs", True)}
    elif not getattr(args, "cuda_graphs", True):
        log.warning("--no-cuda-graphs applies to the gpu executor only; the %s executor ignores it", args.executor)
    if args.executor == "ray":
        options = {"address": args.ray_address, "cpus_per_trial": args.cpus_per_trial,
                   "gpus_per_trial": args.gpus_per_trial}
    return {"progress": not args.quiet, "executor": args.executor, "executor_options": options}


def cmd_evolve(args) -> int:
    from .evolve import evolve

    run = _run_options(args)
    if args.resume:
        given = _explicit(args)
        if given:
            raise ValueError(f"--resume continues a run with its stored configuration; drop {' '.join(given)} "
                             f"(or start a new run with --out)")
        summary = evolve(resume=args.resume, **run)
    else:
        summary = evolve(_config_from_args(args), out=args.out, **run)
    sys.stdout.write(format_summary(summary))
    return 0


_LEARN_HELP = """\
Add tasks to a finished or interrupted run and learn them from its stored population: the population with its
weights, the performance predictor's history, the objectives and the latency target carry on; earlier experts are
never touched (their sha256 is checked before and after). Learning tasks in several calls gives the same experts as
learning them in one (same seed, data and recipe).

A new task may come from the run's own source (further classes) or from another one (an image folder of any size,
resized to the run's input; the channel count must match). Tasks of one source are disjoint; a task of another
source may reuse class names (every task has its own head and expert: "same classes, new conditions").

examples:
  pcl-edge learn runs/latest --tasks 2x2                        (the next 2 tasks of 2 classes of the run's data)
  pcl-edge learn runs/latest --data imagefolder:site_b --tasks cat,dog
  pcl-edge learn runs/latest --data imagefolder:site_b --dry-run   (what would be added; nothing is learned)
then export the grown run against the bundle the device has:
  pcl-edge export runs/latest --out bundles/v2.tar --base bundles/v1.tar --sign-key keys/release.key
"""


def _learn_parser(sub) -> None:
    p = sub.add_parser("learn", help="add tasks to a run and learn them (the stream stays open)",
                       description=_LEARN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished or interrupted run (e.g. runs/latest)")
    p.add_argument("--data", help="source of the new tasks (default: the run's own): digits | imagefolder:PATH | "
                                  "cifar10:PATH | cifar100:PATH | mnist:PATH")
    p.add_argument("--tasks", help="NxK (N tasks of K classes not yet learned, in order) or explicit lists 'a,b/c,d' "
                                   "(indices or class names); default: one task of every class not yet learned")
    p.add_argument("--dry-run", action="store_true", help="check the source and list the tasks that would be added "
                                                          "(their split sizes); learn nothing")
    _executor_args(p)


def cmd_learn(args) -> int:
    from .evolve import learn

    out = learn(args.run_dir, args.data, args.tasks, dry_run=args.dry_run, **_run_options(args))
    if args.dry_run:
        rows = [f"{out['run_dir']}: {out['learned']} tasks learned, {out['planned']} planned; would add:"]
        rows += [f"  task {t['id']}: {','.join(t['class_names'])} from {t['source']} (train {t['train']}, val "
                 f"{t['val']}, test {t['test']})" for t in out["new_tasks"]]
        sys.stdout.write("\n".join(rows) + "\n")
        return 0
    sys.stdout.write(format_summary(out))
    return 0


def format_summary(s: dict) -> str:
    lat = "target" in s
    rows = [f"{'task':>4}  {'classes':<22} {'genome':<58} {'params':>8} {'val':>6} {'test':>6}"
            + (f" {'ms (pred.)':>10}" if lat else "")]
    for t in s["tasks"]:
        names = ",".join(t["class_names"])[:22]
        val = "" if t["val_acc"] is None else f"{t['val_acc']:.3f}"
        params = "" if t["params"] is None else str(t["params"])
        ms = "" if not lat or t.get("latency_ms") is None else f"{t['latency_ms']:.4f}"
        rows.append(f"{t['id']:>4}  {names:<22} {(t['genome'] or '')[:58]:<58} {params:>8} {val:>6} "
                    f"{t['test_acc']:.3f}" + (f" {ms:>10}" if lat else ""))
    fmt = lambda v: "n/a" if v is None else f"{v:+.4f}"  # noqa: E731
    rows.append(f"strategy {s['strategy']}  ACC {s['acc']:.4f}  BWT {fmt(s['bwt'])}  FWT {fmt(s['fwt'])}  "
                f"forgetting {fmt(s['forgetting'])}  wall {s['wall_s']:.1f}s")
    rows.append(f"test split: {s['test_split']}")
    if s.get("selection"):
        sel = s["selection"]
        rows.append(f"selection: {sel['mode']} (" + ("accuracy; constraints " + ", ".join(sel["constraints"])
                                                     if sel["mode"] == "constrained" else
                                                     "Pareto front of " + ", ".join(sel["objectives"])) + ")"
                    + (f"; screening {sel['screening']}" if sel.get("screening") else ""))
    if lat:
        tg = s["target"]
        rows.append(f"target: {tg['name']} ({tg['source']}), budget {tg['latency_budget_ms']} ms, "
                    f"margin {tg['margin']:.0%}")
    rows.append(f"run directory: {s['run_dir']}")
    return "\n".join(rows) + "\n"


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a run's experts to a verified ONNX bundle (or a Triton repository)",
                       description="Export every archived expert of RUN_DIR to ONNX (opset 17, BatchNorm folded, "
                       "dynamic batch), verify it against PyTorch with onnxruntime, and write a bundle: a directory "
                       "with manifest.json + models/, or a .tar when --out ends in .tar.\n\nexamples:\n"
                       "  pcl-edge export runs/latest --out bundles/v1\n"
                       "  pcl-edge export runs/latest --out bundles/v2 --base bundles/v1   (only the new tasks)\n"
                       "  pcl-edge export runs/latest --out triton_repo --format triton",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run (e.g. runs/latest)")
    p.add_argument("--out", required=True, help="new bundle directory, BUNDLE.tar, or Triton repository")
    p.add_argument("--base", help="previous bundle: keep its tasks byte-identical, export only newer ones")
    p.add_argument("--triton-tensorrt", choices=["FP16", "FP32"], help="--format triton: turn on the TensorRT "
                   "accelerator of Triton's ONNX Runtime backend at this precision (default: off)")
    p.add_argument("--format", default="bundle", choices=["bundle", "triton"],
                   help="a bundle (directory or .tar) or a Triton model repository (default bundle)")
    p.add_argument("--sign-key", metavar="KEY", help="sign the bundle with this ed25519 key (pcl-edge keygen)")
    p.add_argument("--calib-samples", type=int, default=0,
                   help="opt-in: store N validation images per task for INT8 calibration on the device (default 0: "
                        "samples of old tasks travelling with the models are a form of rehearsal data)")


def _bundle_parser(sub) -> None:
    p = sub.add_parser("bundle", help="verify or sign bundles")
    bsub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    v = bsub.add_parser("verify", help="check a bundle's schema, manifest digest and every file's sha256 (and, with "
                        "--trusted-key, its signature)")
    v.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar")
    v.add_argument("--trusted-key", metavar="PUB_OR_DIR", help="require a valid signature by this public key (or "
                   "any *.pub in this directory)")
    s = bsub.add_parser("sign", help="sign a bundle (directory in place, .tar re-packed atomically) with an ed25519 "
                        "key from pcl-edge keygen")
    s.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar")
    s.add_argument("--key", required=True, metavar="KEY", help="private key file (NAME.key)")


def _push_parser(sub) -> None:
    p = sub.add_parser("push", help="send a bundle to a running device (over-the-air update)",
                       description="PUT the bundle (a .tar, or a directory packed on the fly) to the device's "
                       "/v2/admin/bundle; the device verifies it (and its signature when it has trusted keys), "
                       "self-tests every task and activates it, or keeps serving the old one and says why. "
                       "POST /v2/admin/rollback returns to the previous bundle.\n\nexample:\n  pcl-edge push "
                       "bundles/v2.tar --url http://jetson:8000 --token-file token.txt",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", metavar="BUNDLE", help="bundle .tar or directory")
    p.add_argument("--url", required=True, help="the device's service, e.g. http://jetson:8000")
    p.add_argument("--token-file", required=True, help="file holding the device's admin bearer token")
    p.add_argument("--insecure", action="store_true", help="send the token over plain http:// to another host (it is "
                   "refused otherwise: use https://, or a loopback address)")
    p.add_argument("--ca-cert", metavar="PEM", help="trust this certificate (e.g. the device's self-signed one) for "
                   "https:// (default: the system's CAs)")


def cmd_push(args) -> int:
    from pathlib import Path

    from .runtime.ota import push

    answer = push(args.bundle, args.url, Path(args.token_file).read_text().strip(), insecure=args.insecure,
                  ca_cert=args.ca_cert)
    sys.stdout.write(f"{args.url}: bundle version {answer['bundle_version']} ({answer['bundle_digest']}) active, "
                     f"tasks {answer['tasks']}\n")
    return 0


def _keygen_parser(sub) -> None:
    p = sub.add_parser("keygen", help="make an ed25519 key pair for signing bundles",
                       description="Writes NAME.key (private, mode 0600: keep it on the build machine) and NAME.pub "
                       "(give it to devices: serve --trusted-key). Never overwrites.")
    p.add_argument("name", metavar="NAME", help="path prefix of the two files (e.g. keys/release-2026)")


def _engine_args(p) -> None:
    """The options of the one EngineSpec: build-engines and serve take the same, so serve finds what
    build-engines built (same spec, same cache key)."""
    from .bundle.engine import DEFAULT_MAX_BATCH

    p.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"],
                   help="TensorRT engine precision (default fp16)")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="largest batch an engine takes; the "
                   f"router splits larger requests (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--opt-batch", type=int, default=1, help="batch TensorRT tunes for (default 1)")
    p.add_argument("--workspace-mb", type=int, default=256, help="TensorRT builder workspace (default 256)")
    p.add_argument("--dla-core", type=int, help="build for this DLA core (Jetson Orin AGX/NX: 0 or 1), layers it "
                   "cannot run fall back to the GPU (default: the GPU only)")


def _engine_spec(args):
    from .bundle.engine import EngineSpec

    return EngineSpec(args.precision, opt_batch=args.opt_batch, max_batch=args.max_batch,
                      workspace_mb=args.workspace_mb, dla_core=args.dla_core)


def _engines_parser(sub) -> None:
    p = sub.add_parser("build-engines", help="build TensorRT engines for a bundle ON the device that runs them",
                       description="Engines are tied to the GPU and the TensorRT version, so they are built on the "
                       "device. Up-to-date engines (matching header) are reused; the timing cache is shared by all "
                       "tasks. The equivalent trtexec command is logged for each task.")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar")
    _engine_args(p)
    p.add_argument("--calib-dir", help="int8: the task's calibration images (.jpg/.png/.npy, HWC uint8)")
    p.add_argument("--cache-dir", help="where engines live (default: BUNDLE.engines next to the bundle)")
    p.add_argument("--bundle-store", help="the service's bundle store (serve --bundle-store): record the engines built "
                   "here in its ledger, so the service loads them instead of rebuilding (run as the service's user)")


def _profile_parser(sub) -> None:
    p = sub.add_parser("profile", help="measure this device into a hardware profile (run it ON the target)",
                       description="Detect which operators the runtime fuses, time the fused kernels inside networks "
                       "drawn the way the search draws them, fit the network model on calibration networks, and "
                       "score it on held-out networks timed in interleaved rounds (with the noise floor); write a "
                       "profile YAML, a report and a predicted-vs-measured plot (PNG, with matplotlib). Needs onnx "
                       "and the backend's runtime, not torch. With --check, re-time an existing profile's reference "
                       "networks instead (seconds) and report the drift; --rescale writes a rescaled copy."
                       "\n\nexamples:\n  pcl-edge profile --backend ort-cpu --cpus 1 --out hw_profiles/my-cpu.yaml"
                       "\n  pcl-edge profile --check hw_profiles/my-cpu.yaml --cpus 1"
                       "\n  pcl-edge profile --check hw_profiles/my-cpu.yaml --rescale hw_profiles/my-cpu-v2.yaml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="ort-cpu", help="ort-cpu | ort-cuda | ort-trt | tensorrt | trtexec "
                   "(default ort-cpu; with --check: the profile's own)")
    p.add_argument("--out", help="profile YAML to write (must not exist); required unless --check")
    p.add_argument("--check", metavar="PROFILE", help="re-time PROFILE's reference networks and report the drift "
                   "ratio (exit 1 when it is beyond --tolerance)")
    p.add_argument("--rescale", metavar="OUT", help="with --check: write a new profile version at OUT with the "
                   "drift folded into its scale (provenance records it)")
    p.add_argument("--max-spread", type=float, default=0.20,
                   help="with --rescale: refuse to rescale when the drift's p10-p90 spread, relative to its median, "
                        "exceeds this (one factor cannot correct a drift that differs by network; default 0.20)")
    p.add_argument("--tolerance", type=float, default=0.10, help="with --check: drift beyond which the profile is "
                   "stale (default 0.10 = 10 %%)")
    p.add_argument("--name", help="profile name (default: the file name)")
    p.add_argument("--input-shapes", default="1x8x8,3x32x32", help="CxHxW list: the input sizes in use "
                   "(default 1x8x8,3x32x32)")
    p.add_argument("--kernel-genomes", type=int, default=400, help="networks per shape whose fused kernels are "
                   "timed in place (default 400)")
    p.add_argument("--calibration", type=int, default=60, help="networks per shape to choose and fit the network "
                   "model (default 60)")
    p.add_argument("--holdout", type=int, default=50, help="held-out networks per shape and per sampler (search-like "
                   "and uniform) for the accuracy block (default 50)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds of every whole network; its "
                   "latency is the least round, their spread the noise (default 5)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, pinned and recorded (default 1)")
    p.add_argument("--cpus", help="pin the process to these CPU ids (e.g. 1 or 0,1); recorded in the profile")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls before each timing (default 20)")
    p.add_argument("--iterations", type=int, default=100, help="timed calls per timing; the median is kept "
                   "(default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled networks (default 0)")
    p.add_argument("--precision", default="fp16", help="tensorrt / trtexec backends: fp32 | fp16 (default fp16)")
    p.add_argument("--jetson-clocks", default="unknown", choices=["on", "off", "unknown"],
                   help="recorded in the profile's power_mode (deploy/profile_jetson.sh sets and passes it; "
                        "default unknown)")


def cmd_profile_check(args) -> int:
    import json
    from pathlib import Path

    from .hw.drift import create_backend_like, rescale_problem
    from .hw.profile import load_profile
    from .hw.profiling import check_profile, pin_like, rescaled

    profile = load_profile(args.check)
    if args.rescale and Path(args.rescale).exists():
        raise ValueError(f"{args.rescale} exists; profiles are never overwritten: choose a new --rescale path")
    if not args.cpus:
        pin_like(profile)  # time it as it was profiled
    backend = create_backend_like(profile, args.threads, args.warmup, args.iterations, args.precision)
    check = check_profile(profile, backend, args.rounds)
    drift = abs(check["ratio"] - 1)
    verdict = "ok" if drift <= args.tolerance else "STALE"
    sys.stdout.write(f"{args.check}: drift ratio {check['ratio']:.3f} (now / profiled, median of {check['n']} "
                     f"reference networks; p10-p90 {check['ratio_p10_p90'][0]:.3f}-{check['ratio_p10_p90'][1]:.3f}; "
                     f"{check['seconds']:.0f} s): {verdict} at tolerance {args.tolerance:.0%}\n")
    if args.rescale:
        problem = rescale_problem(check, args.max_spread)
        if problem:
            raise ValueError(f"not rescaled ({args.rescale} not written): {problem}")
        new = rescaled(profile, check)
        new.save(args.rescale)
        sys.stdout.write(f"wrote {args.rescale}: scale {profile.scale:g} -> {new.scale:g}\n")
        log.info("check: %s", json.dumps({k: v for k, v in check.items() if k != "networks"}))
        return 0
    return 0 if verdict == "ok" else 1


def cmd_profile(args) -> int:
    import json
    import shlex
    from pathlib import Path

    from ._io import write_text
    from .hw.backends import create_backend
    from .hw.profiling import plot_report, run_profile

    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.check:
        return cmd_profile_check(args)
    if args.rescale:
        raise ValueError("--rescale goes with --check PROFILE")
    if not args.out:
        raise ValueError("profile needs --out PATH (a new profile) or --check PROFILE (re-time an existing one)")
    out = Path(args.out)
    if out.exists():
        raise ValueError(f"{out} exists; profiles are never overwritten: choose a new --out")
    shapes = []
    for text in args.input_shapes.split(","):
        try:
            shapes.append(tuple(int(v) for v in text.lower().split("x")))
        except ValueError:
            raise ValueError(f"bad input shape {text!r}; expected CxHxW like 3x32x32") from None
    from .hw.profiling import jetson_power_mode

    backend = create_backend(args.backend, threads=args.threads, warmup=args.warmup, iterations=args.iterations,
                             precision=args.precision)
    command = shlex.join(["pcl-edge", *sys.argv[1:]]) if sys.argv[0].endswith("pcl-edge") else "pcl-edge profile"
    profile, report = run_profile(backend, args.name or out.stem, shapes, args.kernel_genomes, args.calibration,
                                  args.holdout, args.seed, command=command,
                                  power_mode=jetson_power_mode(args.jetson_clocks), rounds=args.rounds)
    profile.save(out)
    write_text(out.with_suffix(".report.json"), json.dumps(report, indent=1) + "\n")
    plotted = plot_report(report, out.with_suffix(".png"), profile.name)
    a = report["accuracy"]
    floor = a.get("noise_floor_within_10pct")
    sys.stdout.write(f"wrote {out} ({len(profile.kernels)} fused kernels, rules {profile.fusion['rules']})\n"
                     f"held-out: n={a['n']} within 10 % {a['within_10pct']:.1%} (noise floor "
                     f"{'n/a' if floor is None else f'{floor:.1%}'}), RMSE {a['rmse_ms']:.4f} ms, "
                     f"Spearman {a['spearman']:.3f}\n" + (f"plot: {out.with_suffix('.png')}\n" if plotted else ""))
    return 0


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a bundle on this device (Open Inference Protocol over HTTP)",
                       description="Route requests by task id to each task's expert. Never imports torch. "
                       "POST /v2/models/task_03/infer with JSON or binary tensors; GET /v2/health/ready, /metrics.")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory or .tar")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--grpc-port", type=int, help="also serve the same protocol over gRPC (KServe v2, what Triton "
                   "serves on 8001; tritonclient.grpc speaks it) on this port (default: off; 0 picks a free one)")
    p.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "ort-trt", "ort"],
                   help="TensorRT engines, onnxruntime with its TensorRT provider (engine and timing caches on disk, "
                   "--precision, --dla-core), onnxruntime with its best provider, or the first that passes a self-test "
                   "(default auto)")
    p.add_argument("--memory-budget", type=float, metavar="MB", help="LRU budget for loaded models")
    p.add_argument("--token-file", help="file holding the bearer token that admin calls need")
    p.add_argument("--trusted-key", metavar="PUB_OR_DIR", help="serve only bundles signed by this public key (or "
                   "any *.pub in this directory: key rotation), at start and on every activation; without it, "
                   "over-the-air uploads and activations are refused unless --allow-unsigned")
    p.add_argument("--allow-unsigned", action="store_true", help="accept over-the-air uploads and activations without "
                   "a signature check (the admin token alone then decides what code runs; warned at start and on every "
                   "activation)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (with --tls-key): the admin "
                   "token never crosses the network in clear")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (with --tls-cert)")
    p.add_argument("--max-body-mb", type=float, default=16, help="largest inference request body (default 16)")
    p.add_argument("--request-timeout", type=float, default=30, metavar="S", help="a request body must arrive within "
                   "S seconds, else 408 and the connection closes (default 30)")
    p.add_argument("--max-connections", type=int, default=64, help="requests served at once; more get 503 instead of "
                   "holding file descriptors (default 64)")
    p.add_argument("--decode-workers", type=int, default=1, help="processes that parse JSON request bodies over 1 MiB, "
                   "so the event loop never stalls on them (default 1; 0: threads, which share the GIL)")
    p.add_argument("--bundle-store", help="the device's bundle store: the active bundle and the rollback history, kept "
                   "across restarts (a restart serves what was last activated; BUNDLE only seeds an empty store or "
                   "replaces an older active one), and over-the-air uploads (default: BUNDLE.store next to the bundle)")
    p.add_argument("--max-bundle-mb", type=float, default=512, help="largest bundle upload (default 512)")
    p.add_argument("--keep", type=int, default=3, help="bundles kept for POST /v2/admin/rollback, the active one "
                   "included (default 3)")
    p.add_argument("--sensors", default="auto", choices=["auto", "tegrastats", "none"], help="power and temperature "
                   "gauges in /metrics: from tegrastats where it runs (auto, the default: on a Jetson), required, or "
                   "none")
    p.add_argument("--serial", metavar="PORT", help="also answer framed requests on this serial port "
                                                    "(e.g. /dev/ttyTHS1; protocol in deploy/README.md)")
    p.add_argument("--baud", type=int, default=115200, help="serial baud rate (default 115200)")
    _engine_args(p)
    p.add_argument("--cache-dir", help="tensorrt: where engines live (default: BUNDLE.engines next to the bundle)")


def cmd_serve(args) -> int:
    from pathlib import Path

    import prometheus_client  # noqa: F401  (the service's own dependencies, checked before any work: one line if absent)
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401

    from .runtime import Router

    if bool(args.tls_cert) != bool(args.tls_key):  # checked before anything is built or started
        raise ValueError("--tls-cert and --tls-key go together")
    token = None
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
        if Path(args.token_file).stat().st_mode & 0o077:
            log.warning("%s is readable by other users: chmod 600 it (it grants the admin API)", args.token_file)
        if len(token) < 16:
            raise ValueError(f"the token in {args.token_file} is shorter than 16 characters")
    budget = None if args.memory_budget is None else int(args.memory_budget * 2**20)
    trusted = None
    if args.trusted_key:
        from .bundle.signing import load_trusted_keys

        trusted = load_trusted_keys(args.trusted_key)
    router = Router(args.bundle, backend=args.backend, memory_budget_bytes=budget, engine_spec=_engine_spec(args),
                    cache_dir=args.cache_dir, trusted_keys=trusted,
                    store=args.bundle_store or Path(args.bundle).with_name(Path(args.bundle).name + ".store"),
                    keep=args.keep)
    log.info("bundle %s: %d tasks, backend %s", args.bundle, len(router.tasks()), args.backend)
    from .runtime.service import ServiceCore

    core = ServiceCore(router, token, args.allow_unsigned)  # one core: HTTP, gRPC and serial translate for it
    if args.sensors != "none":
        _sensor_gauges(core, required=args.sensors == "tegrastats")
    if args.serial:
        import threading

        from .runtime.serial_server import SerialServer, open_port

        serial_server = SerialServer(core, open_port(args.serial, args.baud))
        threading.Thread(target=serial_server.serve_forever, name="serial", daemon=True).start()
        log.info("serial transport on %s at %d baud", args.serial, args.baud)
    if token and not args.trusted_key:
        if args.allow_unsigned:
            log.warning("--allow-unsigned: over-the-air bundles are activated without a signature check; anyone "
                        "holding the token decides what runs here")
        else:
            log.info("no --trusted-key: over-the-air uploads and activations are refused (sign bundles and pass "
                     "--trusted-key, or --allow-unsigned)")
    if token and not args.tls_cert and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("admin token over plain HTTP on %s: pass --tls-cert/--tls-key or put a TLS proxy in front",
                    args.host)
    grpc_server = None
    if args.grpc_port is not None:
        from .runtime.grpc_server import create_grpc_server

        grpc_server = create_grpc_server(core, args.host, args.grpc_port,
                                         max_message_bytes=int(args.max_body_mb * 2**20),
                                         tls=(args.tls_cert, args.tls_key) if args.tls_cert else None)
    try:
        _serve_http(args, router, token, core)
    finally:
        if grpc_server is not None:  # held until here: a grpc.Server that is garbage-collected stops serving
            grpc_server.stop(grace=1)
    return 0


def _serve_http(args, router, token, core) -> None:
    from .runtime.http import serve

    serve(router, args.host, args.port, token, int(args.max_body_mb * 2**20), int(args.max_bundle_mb * 2**20),
          allow_unsigned=args.allow_unsigned, tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
          max_connections=args.max_connections, body_timeout_s=args.request_timeout,
          decode_workers=args.decode_workers, core=core)


def _sensor_gauges(core, required: bool) -> None:
    """Power and temperature gauges in /metrics from tegrastats, where it runs (a Jetson)."""
    import shutil

    if not required and shutil.which("tegrastats") is None:
        return
    from .hw.power.tegrastats import TegrastatsReader, parse_tegrastats_line, parse_tegrastats_temperatures

    reader = TegrastatsReader(interval_s=1.0)
    watts = lambda: parse_tegrastats_line(reader.last_line).get("VDD_IN")  # noqa: E731
    temp = lambda: parse_tegrastats_temperatures(reader.last_line).get("gpu")  # noqa: E731
    core.metrics.gauges |= {"nv_gpu_power_usage": ("Board input power in watts (tegrastats VDD_IN)", watts),
                            "pcl_edge_gpu_temperature_celsius": ("GPU temperature (tegrastats GPU@)", temp)}
    log.info("power and temperature gauges from tegrastats")


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="an HTML page (images embedded) and PNGs of a finished run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run (e.g. runs/latest)")
    p.add_argument("--out", help="folder for index.html and the PNGs (default RUN_DIR/report)")
    p.add_argument("--profile", help="predict every candidate's and expert's latency with this hardware profile "
                                     "(default: the run's --target, if it had one)")
    p.add_argument("--measure", metavar="BACKEND", help="time each expert here with a profiling backend "
                                                         "(ort-cpu | ort-cuda | ort-trt | tensorrt | trtexec)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for --measure (default 1)")


def cmd_report(args) -> int:
    from .report import build_report

    sys.stdout.write(f"{build_report(args.run_dir, args.out, args.profile, args.measure, args.threads)}\n")
    return 0


def cmd_build_engines(args) -> int:
    from pathlib import Path

    from .bundle.engine import EngineLedger
    from .bundle.tensorrt_builder import build_engines
    from .runtime.store import LEDGER

    ledger = EngineLedger(Path(args.bundle_store) / LEDGER) if args.bundle_store else None
    paths = build_engines(args.bundle, _engine_spec(args), args.cache_dir, args.calib_dir, ledger=ledger)
    sys.stdout.write("".join(f"{p}\n" for p in paths))
    return 0


def cmd_export(args) -> int:
    from .export import export_bundle

    if args.triton_tensorrt and args.format != "triton":
        raise ValueError("--triton-tensorrt goes with --format triton")
    m = export_bundle(args.run_dir, args.out, base=args.base, fmt=args.format, calib_samples=args.calib_samples,
                      sign_key=args.sign_key, triton_tensorrt=args.triton_tensorrt)
    worst = max(t["verification"]["max_abs_diff"] for t in m["tasks"] if "verification" in t)
    sys.stdout.write(f"wrote {args.out} ({args.format}): bundle version {m['bundle_version']}, tasks "
                     f"{[t['id'] for t in m['tasks']]}, max |onnx - torch| {worst:.1e}\n")
    return 0


def cmd_bundle(args) -> int:
    from .bundle import verify_bundle
    from .bundle.signing import load_trusted_keys, sign_bundle

    if args.bundle_command == "sign":
        entry = sign_bundle(args.bundle, args.key)
        sys.stdout.write(f"{args.bundle}: signed by key {entry['key_id']}\n")
        return 0
    trusted = load_trusted_keys(args.trusted_key) if args.trusted_key else None
    m = verify_bundle(args.bundle, trusted)
    signed = ", signature by a trusted key verifies" if trusted else ""
    sys.stdout.write(f"{args.bundle}: OK (schema {m['schema_version']}, bundle version {m['bundle_version']}, "
                     f"digest {m['manifest_sha256'][:12]}, {len(m['tasks'])} tasks, every sha256 matches{signed})\n")
    return 0


def cmd_keygen(args) -> int:
    from .bundle.signing import key_id, keygen, load_private_key

    key, pub = keygen(args.name)
    sys.stdout.write(f"wrote {key} (private, 0600) and {pub} (key id {key_id(load_private_key(key).public_key())})\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="pcl-edge", description="Population-based Continual Learning for edge "
                                     "GPUs: evolve per-task experts, export them, serve them on the device.")
    parser.add_argument("--version", action="version", version=f"pcl-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _evolve_parser(sub)
    _learn_parser(sub)
    _export_parser(sub)
    _bundle_parser(sub)
    _keygen_parser(sub)
    _push_parser(sub)
    _engines_parser(sub)
    _profile_parser(sub)
    _serve_parser(sub)
    _report_parser(sub)
    return parser


COMMANDS = {"evolve": cmd_evolve, "learn": cmd_learn, "export": cmd_export, "bundle": cmd_bundle, "keygen": cmd_keygen,
            "build-engines": cmd_build_engines, "profile": cmd_profile, "serve": cmd_serve, "push": cmd_push,
            "report": cmd_report}


# which extra brings a module (the message a missing optional dependency gets); alternatives in order
EXTRAS = {"torch": ("train",), "sklearn": ("train",), "PIL": ("train", "calib"), "prometheus_client": ("serve",),
          "grpc": ("grpc",), "tritonclient": ("grpc",), "tqdm": ("train",),
          "matplotlib": ("train",), "onnx": ("train", "profile"), "scipy": ("train", "profile"),
          "onnxruntime": ("ort", "ort-gpu"), "uvicorn": ("serve",), "starlette": ("serve",),
          "cryptography": ("serve",), "serial": ("serial",), "ray": ("ray",), "tensorrt": ("tensorrt",)}


def missing_dependency(exc: ImportError) -> str:
    text = str(exc)
    if "pip install" in text:  # our own import helpers already name the extra
        return text.splitlines()[0]
    top = (exc.name or "").split(".")[0]
    if not top:  # some libraries raise their own ImportError without a name ("Module onnx is not installed!")
        words = set(text.replace("'", " ").replace('"', " ").replace("!", " ").split())
        top = next((m for m in EXTRAS if m in words), "")
    extras = EXTRAS.get(top)
    if extras is None:
        return f"{top or text} is not installed"
    hint = " or ".join(f"'pcl-edge[{e}]'" for e in extras)
    return f"{top} is not installed: pip install {hint}" + (" (never both)" if top == "onnxruntime" else "")


def main(argv: list[str] | None = None) -> int:
    from .runtime.errors import RuntimeFailure

    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except (ValueError, KeyError, RuntimeError, OSError, RuntimeFailure) as exc:  # DataError, ConfigError, ...
        if args.verbose:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        sys.stderr.write(f"pcl-edge {args.command}: error: {msg}\n")
        return 2
    except ImportError as exc:  # an optional dependency this command needs: one line naming the extra
        if args.verbose:
            raise
        sys.stderr.write(f"pcl-edge {args.command}: error: {missing_dependency(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; the run directory holds the last completed generation: use --resume\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
