"""llmbench: latency and tokens/s of LLM generation, split into prefill (TTFT) and decode (TPOT).

    python benchmark.py yamls/tiny.yaml                      # the built-in CPU example
    python benchmark.py yamls/7b.yaml batch_sizes=[1,8] output_lengths=[64]   # dotlist overrides
    deepspeed --num_gpus 2 benchmark.py yamls/7b_tp.yaml     # DeepSpeed tensor parallelism

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
    from llmbench.config import ConfigError, check_environment, load_config

    yaml_path, overrides = split_argv(argv)
    try:
        cfg = load_config(yaml_path, overrides)
        check_environment(cfg)
        from llmbench.run import run_benchmark

        rows = run_benchmark(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if all(row["status"] in ("ok", "oom", "skipped") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
