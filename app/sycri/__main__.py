from sycri.cli import main

raise SystemExit(main())
