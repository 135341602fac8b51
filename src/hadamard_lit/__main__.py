"""``python -m hadamard_lit``: the LightningCLI (fit, validate, test, predict, export), plus
``submit`` (a sweep as one SLURM job array) and ``report`` (the results table)."""

import sys

from hadamard_lit.cli import main as lightning_cli

EXTRA_COMMANDS = """Also:
  submit    submit a sweep (tasks x seeds x methods x any config key) as ONE job array
            through submitit: python -m hadamard_lit submit --help
  report    aggregate finished runs into the paper-style table (Markdown, CSV, plot):
            python -m hadamard_lit report --help
"""


def main() -> None:
    """Entry point of ``python -m hadamard_lit`` and the ``hadamard-lit`` script."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command == "submit":
        from hadamard_lit.submit import main as submit

        sys.exit(submit(sys.argv[2:]))
    if command == "report":
        from hadamard_lit.report import main as report

        sys.exit(report(sys.argv[2:]))
    if command in ("-h", "--help"):
        print(EXTRA_COMMANDS)
    lightning_cli()


if __name__ == "__main__":
    main()
