from benchmarks.study.cli import main

main()
