import sys

from load_tests.runner import main

if __name__ == "__main__":
    sys.exit(main())
