from hemascope.cli import main

main()
