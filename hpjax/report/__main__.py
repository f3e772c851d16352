import sys

from hpjax.report.summary import main

sys.exit(main())
