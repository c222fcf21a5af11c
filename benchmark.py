"""llmbench: latency and tokens/s of LLM generation, split into prefill (TTFT) and decode (TPOT).

    python benchmark.py yamls/tiny.yaml                      # the built-in CPU example
    python benchmark.py yamls/7b.yaml batch_sizes=[1,8] output_lengths=[64]   # dotlist overrides
    deepspeed --num_gpus 2 benchmark.py yamls/7b_tp.yaml     # DeepSpeed tensor parallelism
    python benchmark.py plot results/*.jsonl --out assets    # charts from result files (no torch needed)
    python benchmark.py report results/x.jsonl --max-latency 2   # best tokens/s under a latency limit
    python benchmark.py compare a.jsonl b.jsonl --fail-above 5   # B / A per cell; exit 1 on a regression

Exit status: 0 when every cell is ok, oom or skipped; 1 when a cell errored; 2 for bad input
(one line naming the key, before any model is built); 130 after Ctrl-C (every measured row kept).
"""
import sys


def split_argv(argv):
    """-> (yaml path, dotlist overrides). Launchers (deepspeed) add --local_rank=N: accept and drop it."""
    args, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg.startswith("--local_rank"):
            skip = arg == "--local_rank" and i + 1 < len(argv)
        else:
            args.append(arg)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if args else 2)
    return args[0], args[1:]


def main(argv) -> int:
    if argv and argv[0] in ("plot", "report", "compare"):  # analysis of result files: never imports torch
        from llmbench.analysis_cli import main as analysis_main

        return analysis_main(argv)
    import time

    from llmbench.config import ConfigError, check_environment, load_config
    from llmbench.results import ResultsFileError
    from llmbench.run import run_benchmark, seconds_since_process_start

    startup = {"import_s": seconds_since_process_start()}  # interpreter start + imports so far
    yaml_path, overrides = split_argv(argv)
    try:
        start = time.perf_counter()
        cfg = load_config(yaml_path, overrides)
        check_environment(cfg)
        startup["config_s"] = time.perf_counter() - start
        rows = run_benchmark(cfg, startup=startup)
    except (ConfigError, ResultsFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if all(row["status"] in ("ok", "oom", "skipped") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
