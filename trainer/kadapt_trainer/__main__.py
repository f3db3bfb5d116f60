"""``python -m kadapt_trainer --config PATH``: the entry point of every worker process.

Exit codes: 0 done (rank 0 writes the final figures, compact JSON, to the termination message,
so that the operator's status shows them instead of its last poll); 2 bad input or a diverged
(NaN/inf) loss, no retry can fix it (one line on stderr and in the container's termination
message); 143 stopped by SIGTERM/SIGINT after a checkpoint (the Job's podFailurePolicy
ignores it); 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from kadapt_trainer.config import CONFIG_DIR, EXIT_BAD_INPUT, EXIT_STOPPED, TRAINER_CONFIG_FILE


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the job, map the outcome to an exit code."""
    parser = argparse.ArgumentParser(prog="python -m kadapt_trainer", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(CONFIG_DIR) / TRAINER_CONFIG_FILE,
        help="the resolved TrainerConfig (JSON), default /etc/kadapt/trainer.json",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("KADAPT_LOG_LEVEL", "WARNING"))
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "TOKENIZERS_PARALLELISM"):
        os.environ.setdefault(name, "1" if name.startswith("HF") else "false")

    from kadapt_trainer.checkpoint import StopSignal
    from kadapt_trainer.errors import BadInputError, record_exit, write_termination_message
    from kadapt_trainer.final_summary import write_final_summary
    from kadapt_trainer.recipe import Stopped, load_config, run

    stop = StopSignal().install()
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        cfg = load_config(args.config)
        report = run(cfg, stop=stop)
    except BadInputError as exc:
        print(f"kadapt-trainer: error: {exc}", file=sys.stderr, flush=True)
        # The cause where Kubernetes shows it (terminationMessagePath) and where the launcher
        # finds this rank's exit code (torchrun itself would turn 2 into 1).
        write_termination_message(str(exc))
        record_exit(EXIT_BAD_INPUT, str(exc))
        return EXIT_BAD_INPUT
    except Stopped as exc:
        if main_rank:
            print(f"kadapt-trainer: stopped at step {exc.report.step}: {exc.report.message}", flush=True)
        return EXIT_STOPPED
    finally:
        stop.restore()
    if main_rank:
        print(
            f"kadapt-trainer: done: {report.step} steps, strategy {report.strategy}, "
            f"metrics {report.eval_metrics}, output {report.output_uri}",
            flush=True,
        )
        write_final_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
