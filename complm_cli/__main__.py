from complm_cli.cli.app import main

main()
