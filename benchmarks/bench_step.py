"""Time the paper's MNIST step on this machine: the same as ``ibhebb bench`` (same options)."""
import sys

from ibhebb.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
