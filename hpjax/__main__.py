from hpjax.app import main

main()
