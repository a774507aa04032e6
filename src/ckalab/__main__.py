from ckalab.cli import main

raise SystemExit(main())
