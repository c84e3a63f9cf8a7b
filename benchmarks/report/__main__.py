"""`python -m benchmarks.report RUN [RUN ...] [--out DIR] [--step N]`: see `cli`."""

from benchmarks.report.cli import main

if __name__ == "__main__":
    main()
