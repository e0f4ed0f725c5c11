#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Scale-out (issue 10) on this machine, and the per-image costs a cluster projection needs.

Scaling: `shapebias dissect` and `shapebias tv` on stores of AlexNet's activations (random weights) on a
generated 224x224 probe set, as one process with one thread, as `mpirun -n 1 … --mpi` (the cost of MPI
start-up and of sending the states), as `mpirun -n 2 … --mpi` with one thread per rank, and for
comparison as one process with two threads. Prints the times, the speed-up of 2 ranks over 1 and the
parallel efficiency (speed-up / 2), and checks that the outputs agree.

Costs (--costs): per image and per core (-@ 1), for AlexNet, GoogLeNet and ResNet-50 with random
weights at 224x224 and every layer the study dissects: the forward pass (`dump` to a stream), and from
a store the analysis of `tv` (one condition), `dissect` (both passes, sketch thresholds) and
`diversity` (top-K and activity only). Then the projection of docs/scale-out.md: core-hours of the
full three-pair study, and its wall time on a CPU cluster and on a GPU cluster under the assumptions
printed with it.

  /usr/bin/python3 benchmarks/scaling_benchmark.py [--build build] [--images 512] [--costs] [--cost-images 16]

Prints every figure; asserts nothing but the agreement of the outputs.
"""
import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1"}

# The layers of each network that the study analyses: every convolution's ReLU for AlexNet, every
# block for GoogLeNet and ResNet-50 (the units NetDissect reports).
LAYERS = {
    "alexnet": "features.1,features.4,features.7,features.9,features.11",
    "googlenet": "conv1,conv2,conv3,inception3a,inception3b,inception4a,inception4b,inception4c,inception4d,"
                 "inception4e,inception5a,inception5b",
    "resnet50": "relu," + ",".join(f"layer{l}.{b}" for l, n in ((1, 3), (2, 4), (3, 6), (4, 3)) for b in range(n)),
}

# The study (docs/scale-out.md): three S/R pairs, so each architecture twice.
STUDY = {"val": 50_000, "train": 1_281_167, "broden": 63_305, "cl_fraction": 0.5, "variants": 5}
# Assumptions for the projection, not measurements (no GPU here): images per second of the forward
# pass on one A100-class GPU (fp32, batch 256, every layer tapped and copied to the host), CPU cores
# per GPU for the analysis, and the cluster sizes.
GPU_IMAGES_PER_S = {"alexnet": 4000, "googlenet": 2000, "resnet50": 1200}
CORES_PER_GPU, GPUS, CPU_NODES, CORES_PER_NODE, EFFICIENCY = 16, 32, 32, 64, 0.9


def run(cmd, env=None):
    t0 = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, env=env)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr.decode()}")
    return time.perf_counter() - t0, p


def rows(path):
    return list(csv.DictReader(io.StringIO(open(path).read())))


def scaling(sb, work, images):
    mpirun = shutil.which("mpirun")
    if not mpirun or not os.path.exists(os.path.join(os.path.dirname(sb), "libshapebias_mpi.so")):
        sys.exit("scaling needs mpirun and a shapebias built with MPI (libshapebias_mpi.so)")
    probe = os.path.join(work, "probe")
    run([sys.executable, os.path.join(SOURCE, "scripts", "make_probe.py"), "--out", probe, "--count", images,
         "--image-size", 224, "--seg-size", 112, "--seed", 1])
    run([sys.executable, os.path.join(SOURCE, "scripts", "make_models.py"), work, "alexnet"])
    model = os.path.join(work, "alexnet.pt")
    # Stores of AlexNet's activations (not timed): each rank is then one process on one core. (A model
    # run live adds a child `dump` process per rank, so one live run already keeps two cores busy.)
    store = lambda name: os.path.join(work, name + ".h5")
    dump = [sb, "dump", model, probe, "-l", LAYERS["alexnet"], "--normalize", "netdissect", "--quiet"]
    run([*dump, "-o", store("clean")])
    run([*dump, "--noise", "0.1", "-o", store("noisy")])
    env = dict(os.environ, **MPI_ENV)
    cases = {"dissect": ["dissect", store("clean"), "--probe", probe],
             "tv": ["tv", store("clean"), "--noisy", store("noisy")]}
    print(f"Scaling on this machine ({os.cpu_count()} cores): stores of AlexNet's activations (random weights) on {images} "
          f"images of 224x224, layers {LAYERS['alexnet']}; one thread per process")
    for verb, args in cases.items():
        out = lambda tag: os.path.join(work, f"{verb}-{tag}")
        t1, _ = run([sb, *args, "-@", 1, "--quiet", "-o", out("1")])
        t1m, _ = run([mpirun, "-n", 1, sb, *args, "--mpi", "-@", 1, "--quiet", "-o", out("1m")], env=env)
        t2, _ = run([mpirun, "-n", 2, sb, *args, "--mpi", "-@", 1, "--quiet", "-o", out("2")], env=env)
        tt, _ = run([sb, *args, "-@", 2, "--quiet", "-o", out("t")])
        # tv merges exactly; dissect's sketch thresholds of 2 ranks may differ within the rank-error
        # bound (tests/tools/test_shard.py checks both), so only its units are compared.
        key = (lambda r: r) if verb == "tv" else (lambda r: (r["network"], r["layer"], r["unit"]))
        table = "units.csv" if verb == "dissect" else "channels.csv"
        if [key(r) for r in rows(os.path.join(out("1"), table))] != [key(r) for r in rows(os.path.join(out("2"), table))]:
            sys.exit(f"{verb}: 2 ranks disagree with 1 process")
        print(f"  {verb:8s} 1 process {t1:6.2f} s | mpirun -n 1 {t1m:6.2f} s | mpirun -n 2 {t2:6.2f} s: speed-up {t1 / t2:.2f}, "
              f"efficiency {t1 / t2 / 2:.0%} (against mpirun -n 1: {t1m / t2:.2f}, {t1m / t2 / 2:.0%}) | "
              f"1 process, 2 threads {tt:6.2f} s (speed-up {t1 / tt:.2f})")


def costs(sb, work, n):
    """Core-seconds per image: forward, and the analyses from a store."""
    probe = os.path.join(work, "cprobe")
    run([sys.executable, os.path.join(SOURCE, "scripts", "make_probe.py"), "--out", probe, "--count", n,
         "--image-size", 224, "--seg-size", 112, "--seed", 2])
    run([sys.executable, os.path.join(SOURCE, "scripts", "make_models.py"), work, "alexnet", "googlenet", "resnet50"])
    out = {}
    print(f"\nPer-image costs, core-seconds (-@ 1, {n} images of 224x224, random weights, every layer listed above):")
    print(f"  {'model':10s} {'forward':>8s} {'MB/image':>9s} {'tv':>8s} {'dissect':>8s} {'diversity':>9s}")
    for name in LAYERS:
        model = os.path.join(work, name + ".pt")
        t0 = time.perf_counter()  # the forward pass alone: a stream to nowhere
        subprocess.run([sb, "dump", model, probe, "--normalize", "imagenet", "-l", LAYERS[name], "-@", "1", "--quiet", "-o", "-"],
                       stdout=subprocess.DEVNULL, check=True)
        fwd = (time.perf_counter() - t0) / n
        store = os.path.join(work, name + ".h5")
        run([sb, "dump", model, probe, "--normalize", "netdissect", "-l", LAYERS[name], "-@", 1, "--quiet", "-o", store])
        mb = os.path.getsize(store) / n / 1e6
        t_tv, _ = run([sb, "tv", store, "-@", 1, "--quiet", "-o", os.path.join(work, name + "-tv")])
        t_dis, _ = run([sb, "dissect", store, "--probe", probe, "-@", 1, "--quiet", "-o", os.path.join(work, name + "-dis")])
        t_div, _ = run([sb, "diversity", store, "-k", min(49, n), "-@", 1, "--quiet", "-o", os.path.join(work, name + "-div")])
        os.remove(store)
        out[name] = {"forward": fwd, "tv": t_tv / n, "dissect": t_dis / n, "diversity": t_div / n}
        print(f"  {name:10s} {fwd:8.3f} {mb:9.1f} {t_tv / n:8.3f} {t_dis / n:8.3f} {t_div / n:9.3f}")
    return out


def projection(c):
    """Core-hours and wall time of the study from per-image costs `c` (core-seconds)."""
    s = STUDY
    cl = s["val"] * s["cl_fraction"]
    print("\nProjection of the full three-pair study (each architecture twice: S and R):")
    print(f"  workload per network: tv {s['val']:,} images clean + noisy; dissect {s['broden']:,} probe images, two passes;"
          f" diversity top-K over {s['train']:,} training images; eval {s['val']:,} clean + {s['variants']} variants on a"
          f" CL set of {s['cl_fraction']:.0%}")
    total_cpu = total_fwd = total_ana = gpu_s = 0.0
    for name, x in c.items():
        forward = 2 * s["val"] + 2 * s["broden"] + s["train"] + s["val"] + s["variants"] * cl  # forward passes
        analysis = 2 * s["val"] * x["tv"] + s["broden"] * x["dissect"] + s["train"] * x["diversity"]
        cpu = 2 * (forward * x["forward"] + analysis)
        total_cpu += cpu
        total_fwd += 2 * forward * x["forward"]
        total_ana += 2 * analysis
        # On a GPU node the forward pass runs on the GPU and the analysis on its cores, overlapped.
        gpu_s += 2 * max(forward / GPU_IMAGES_PER_S[name], analysis / CORES_PER_GPU)
        print(f"  {name:10s} x2: {2 * forward:12,.0f} forward passes, {cpu / 3600:9,.0f} core-hours on CPU "
              f"({2 * forward * x['forward'] / 3600:,.0f} forward + {2 * analysis / 3600:,.0f} analysis)")
    cores = CPU_NODES * CORES_PER_NODE
    print(f"  total: {total_cpu / 3600:,.0f} core-hours ({total_fwd / 3600:,.0f} forward, {total_ana / 3600:,.0f} analysis)")
    print(f"  CPU cluster, {CPU_NODES} nodes x {CORES_PER_NODE} cores at {EFFICIENCY:.0%} efficiency: "
          f"{total_cpu / cores / EFFICIENCY / 3600:,.1f} hours")
    print(f"  GPU cluster, {GPUS} GPUs (assumed {GPU_IMAGES_PER_S} images/s each, {CORES_PER_GPU} analysis cores per GPU), "
          f"{EFFICIENCY:.0%} efficiency: {gpu_s / GPUS / EFFICIENCY / 3600:,.1f} hours")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--costs", action="store_true")
    ap.add_argument("--cost-images", type=int, default=16)
    args = ap.parse_args()
    sb = os.path.join(args.build, "tools", "shapebias")
    with tempfile.TemporaryDirectory(prefix="shapebias-scaling-") as work:
        scaling(sb, work, args.images)
        if args.costs:
            projection(costs(sb, work, args.cost_images))


if __name__ == "__main__":
    main()
