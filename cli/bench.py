"""``bnn bench``: the runtime's images/s and latency against onnxruntime (integer graph, float network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import CliError, parse_ints, positive, stderr_console

# Upper limits of the options: a benchmark is minutes, not days, and its batch fits in memory.
MAX_BATCH = 65536
MAX_ROUNDS = 100
MAX_LATENCY_CALLS = 100_000
MAX_LOAD = 64  # busy processes of --load
MAX_MIN_SECONDS = 600.0


def bench(
    model_path: Annotated[
        Path | None, typer.Argument(metavar="[MODEL.bnn]", help="The .bnn model file (or --arch).")
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="Benchmark the untrained --arch network SPEC instead "
            "(random weights; see bnn train --help for the grammar)."
        ),
    ] = None,
    input_shape: Annotated[str | None, typer.Option(help="With --arch: the uint8 input, C,H,W (or D).")] = None,
    save: Annotated[Path | None, typer.Option(help="With --arch: where to write its .bnn file.")] = None,
    threads: Annotated[
        int, typer.Option(help="Threads of every engine (numba and onnxruntime intra-op).", callback=positive)
    ] = 2,
    batch: Annotated[int, typer.Option(help="Batch size of the throughput runs.", callback=positive)] = 256,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds (engine after engine).", callback=positive)] = 5,
    latency_calls: Annotated[int, typer.Option(help="Batch-1 calls per engine and round.", callback=positive)] = 200,
    min_seconds: Annotated[
        float, typer.Option(help="Seconds of batch runs per engine and round.", callback=positive)
    ] = 0.25,
    load: Annotated[
        int | None,
        typer.Option(
            "--load",
            help="Instead: start N busy background processes and time the runtime at its default thread count, "
            "at 1 thread, and onnxruntime fp32, under that load.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Time the runtime against onnxruntime on the same .bnn and on the float network of the same topology.

    Interleaved in one process with the same thread count: batch-256 throughput, batch-1
    latency (median, p90), their ratios, and the share of this machine's AND+popcount rate
    that the binary layers reach. A benchmark: the numbers depend on the machine and its load.
    """
    for option, value, limit in (
        ("--batch", batch, MAX_BATCH),
        ("--rounds", rounds, MAX_ROUNDS),
        ("--latency-calls", latency_calls, MAX_LATENCY_CALLS),
        ("--min-seconds", min_seconds, MAX_MIN_SECONDS),
    ):
        if value > limit:  # a benchmark told to run for days, or to allocate more than the machine has
            raise CliError(f"{option} {value} is above the limit of {limit}")
    if load is not None and not 0 <= load <= MAX_LOAD:
        raise CliError(f"--load must be from 0 to {MAX_LOAD} busy processes, got {load}")
    from bnn_export.bench import run_bench, run_load_bench

    model_path = _model_path(model_path, arch, input_shape, save)
    # Plain lines rather than a live spinner: its refresh thread would compete with the timed
    # engines for the GIL and the two cores.
    console = stderr_console()
    if load is not None:

        def say(r, n):
            console.print(f"round {r}/{n} done" if r else f"timing {n} rounds under {load} busy processes...")

        result = run_load_bench(
            model_path,
            load,
            batch=batch,
            rounds=rounds,
            latency_calls=latency_calls,
            min_seconds=min_seconds,
            progress=say,
        )
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            _print_load(result)
        return
    result = run_bench(
        model_path,
        threads=threads,
        batch=batch,
        rounds=rounds,
        latency_calls=latency_calls,
        min_seconds=min_seconds,
        progress=lambda r, n: console.print(f"round {r}/{n} done" if r else f"timing {n} interleaved rounds..."),
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print(result)


def _model_path(model_path: Path | None, arch: str | None, input_shape: str | None, save: Path | None) -> Path:
    """The .bnn to time: MODEL.bnn, or the synthetic --arch network written to --save."""
    if (model_path is None) == (arch is None):
        raise CliError("give a MODEL.bnn or --arch SPEC (with --input-shape and --save), not both or neither")
    if arch is None:
        if input_shape is not None or save is not None:
            raise CliError("--input-shape and --save go with --arch")
        return model_path
    if input_shape is None or save is None:
        raise CliError("--arch needs --input-shape C,H,W and --save FILE.bnn")
    from bnn_export.synthetic import synthetic_bnn
    from bnn_runtime.format import write_bnn

    write_bnn(save, *synthetic_bnn(arch, parse_ints("--input-shape", input_shape)))
    return save


def _print_load(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m = result["machine"]
    console.print(
        f"bnn bench {result['model']} under {result['load']} busy processes: {m['cpus']} CPUs, {m['cpu']}, "
        f"load average {m['load_average_1min']:.2f} -> {m['load_average_1min_after']:.2f}"
    )
    table = Table(caption="rounds interleaved in one process; on a shared machine, compare the ratios, not the speeds")
    for col in ("engine", f"img/s @{result['batch']}", "per round", "p50 us", "p90 us"):
        table.add_column(col, justify="right" if col != "engine" else "left", no_wrap=True)
    names = {
        "runtime_default_threads": f"bnn runtime, default: up to {result['default_threads']} threads, the idle cores "
        f"(last batch: {result['default_threads_used']})",
        "runtime_1_thread": "bnn runtime, 1 thread",
        "onnxruntime_fp32": "ORT fp32 (default threads)",
    }
    for name, r in result["results"].items():
        rounds = " ".join(f"{v / 1e3:.0f}k" for v in r["rounds_images_per_second"])
        table.add_row(
            names[name],
            f"{r['images_per_second']:,.0f}",
            rounds,
            f"{r['latency_median_us']:.1f}",
            f"{r['latency_p90_us']:.1f}",
        )
    console.print(table)
    ratios = result["ratios"]
    pairs = result["default_over_1_thread_pairs"]
    taken = ", ".join(f"{n} thread{'s' * (n != '1')}: {c}" for n, c in result["default_threads_histogram"].items())
    console.print(
        f"default / 1 thread: {ratios['default_over_1_thread']:.2f}x (median of {pairs['pairs']} batches timed "
        f"against each other, quartiles {pairs['q25']:.2f}-{pairs['q75']:.2f}; medians of the rounds: "
        f"{result['default_over_1_thread_rounds']:.2f}x); default / ORT fp32: "
        f"{ratios['default_over_onnxruntime_fp32']:.2f}x"
    )
    console.print(f"batches of the default by threads taken: {taken}")


_LABELS = {
    "runtime": "bnn runtime",
    "onnxruntime_exported": "ORT exported .onnx",
    "onnxruntime_integer": "ORT integer",
    "onnxruntime_fp32": "ORT fp32",
}


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from .terminal import markup

    console = Console()
    m = result["machine"]
    console.print(
        f"bnn bench {markup(result['model'])}: {result['threads']} threads, {markup(m['cpu'])}, "
        f"load average {m['load_average_1min']:.2f}"
    )
    table = Table(
        caption="ORT exported .onnx: the exact graph bnn export writes (integer convolutions and dense layers, "
        "float Conv where faster); ORT fp32: "
        "onnxruntime on the float network of the same topology (ReLU, max pooling)"
    )
    for col in ("engine", f"img/s @{result['batch']}", "p50 us", "p90 us", "img/s vs fp32", "p50 vs fp32"):
        table.add_column(col, justify="right" if col != "engine" else "left", no_wrap=True)
    fp32 = result["results"]["onnxruntime_fp32"]
    for name, r in result["results"].items():
        table.add_row(
            _LABELS[name],
            f"{r['images_per_second']:,.0f}",
            f"{r['latency_median_us']:.1f}",
            f"{r['latency_p90_us']:.1f}",
            f"{r['images_per_second'] / fp32['images_per_second']:.2f}x",
            f"{r['latency_median_us'] / fp32['latency_median_us']:.2f}x",
        )
    console.print(table)
    ratios = result["ratios"]
    pairs = result["exported_over_fp32_pairs"]
    console.print(
        f"exported .onnx / fp32 network, both on onnxruntime: throughput "
        f"{ratios['throughput_onnxruntime_exported_over_onnxruntime_fp32']:.2f}x (median of {pairs['pairs']} "
        f"batch-against-batch pairs, quartiles {pairs['q25']:.2f}-{pairs['q75']:.2f}x), "
        f"latency {ratios['latency_onnxruntime_exported_over_onnxruntime_fp32']:.2f}x"
    )
    console.print(
        f"runtime / onnxruntime integer: throughput {ratios['throughput_runtime_over_onnxruntime_integer']:.2f}x, "
        f"latency {ratios['latency_runtime_over_onnxruntime_integer']:.2f}x"
    )
    pc = result["popcount"]
    console.print(
        f"runtime per layer (1 thread, runs of {pc['layers'][0]['images']} of the batch's images); "
        f"AND+popcount peak {pc['peak_word_ops_per_second'] / 1e9:.2f} G word-ops/s per thread"
    )
    prof = Table(
        caption="share of peak: against the AND+popcount microbenchmark, the faster of LLVM's vectorisation and "
        "512-bit vectors ("
        + ", ".join(f"{k} {v / 1e9:.2f}G" for k, v in pc["peak_loops_word_ops_per_second"].items())
        + "); layers under 0.1 us are noise"
    )
    for col in ("layer", "kind", "us/image", "word-ops/image", "share of peak"):
        prof.add_column(col, justify="left" if col in ("layer", "kind") else "right", no_wrap=True)
    for r in pc["layers"]:
        share = f"{r['share_of_peak']:.0%}" if r["share_of_peak"] is not None else "-"
        prof.add_row(
            markup(r["layer"]),
            markup(r["kind"]),
            f"{r['seconds_per_image'] * 1e6:.2f}",
            f"{r['word_ops_per_image']:,}",
            share,
        )
    console.print(prof)
    if pc["binary_layers_share_of_peak"] is not None:
        console.print(f"binary layers together: {pc['binary_layers_share_of_peak']:.0%} of the AND+popcount peak")
