"""`python -m tests.performance`: run every benchmark scenario once and print the table."""

from tests.performance.bench import main

raise SystemExit(main())
